//! Checks on the user's files before anything reaches llama.cpp, which aborts the whole process
//! on many malformed inputs. Everything here reads GGUF metadata with our own reader.

use std::path::{Path, PathBuf};

use crate::gguf::{FileKind, GgufError, GgufFile, MetaValue};
use crate::model::family::{self, ProjectorKind, Version, MERGER_TYPE, RESAMPLER_TYPE};
use crate::model::shape;

/// Text architectures of the MiniCPM-V family (DESIGN.md §3).
pub const TEXT_ARCHS: &[&str] = &["llama", "qwen2", "qwen3", "qwen35", "minicpm"];

/// The special tokens MiniCPM-V's image layout needs in the vocabulary.
pub const IMAGE_TOKENS: &[&str] = &["<image>", "</image>", "<slice>", "</slice>"];

/// A problem with the model files, found before loading them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// The language model file could not be opened or parsed as GGUF.
    #[error("language model: {0}")]
    ModelFile(#[source] GgufError),
    /// The projector file could not be opened or parsed as GGUF.
    #[error("projector: {0}")]
    ProjectorFile(#[source] GgufError),
    /// The file given as the language model is a vision projector (its
    /// `general.architecture` is `clip`): the two paths were probably swapped.
    #[error("{} is a vision projector (mmproj) file, not a language model", path.display())]
    ProjectorAsModel {
        /// The file given as the language model.
        path: PathBuf,
    },
    /// The file given as the projector is a language model: the two paths were probably
    /// swapped.
    #[error("{} is a language model ({arch}), not a vision projector", path.display())]
    ModelAsProjector {
        /// The file given as the projector.
        path: PathBuf,
        /// Its `general.architecture`.
        arch: String,
    },
    /// The GGUF file has no `general.architecture` key, so llama.cpp cannot tell what it is.
    #[error("{} has no general.architecture key: it is not a llama.cpp model file", path.display())]
    NoArchitecture {
        /// The file without the key.
        path: PathBuf,
    },
    /// The language model's architecture is not one of [`TEXT_ARCHS`].
    #[error("{} is a {arch} model; MiniCPM-V language models are one of: {}", path.display(), TEXT_ARCHS.join(", "))]
    UnsupportedArch {
        /// The language model file.
        path: PathBuf,
        /// Its `general.architecture`.
        arch: String,
    },
    /// The projector is not a MiniCPM-V resampler llama.cpp's clip loader accepts: a required
    /// key or tensor is missing, zero or inconsistent (see `reason`).
    #[error("{}: {reason}", path.display())]
    BadProjector {
        /// The projector file.
        path: PathBuf,
        /// What is wrong, as a sentence fragment for the message.
        reason: String,
    },
    /// The language model lacks something llama.cpp needs (embedding width, vocabulary), or
    /// has it with an unusable value (see `reason`).
    #[error("{}: {reason}", path.display())]
    BadModel {
        /// The language model file.
        path: PathBuf,
        /// What is wrong, as a sentence fragment for the message.
        reason: String,
    },
    /// A metadata key is present with a value type llama.cpp does not accept for it; llama.cpp
    /// would abort the process (GGML_ASSERT) instead of returning an error.
    #[error("{}: metadata key {key} has type {found}, llama.cpp requires {expected}", path.display())]
    KeyType {
        /// The file holding the key.
        path: PathBuf,
        /// The metadata key, e.g. `clip.minicpmv_version`.
        key: String,
        /// The type the file has for it (`string`, `u32`, `array`, ...).
        found: &'static str,
        /// The type llama.cpp reads it as.
        expected: &'static str,
    },
    /// The language model's vocabulary lacks one of [`IMAGE_TOKENS`], so image placeholders
    /// cannot be tokenized.
    #[error("the vocabulary of {} lacks MiniCPM-V's image token {token:?}: this model cannot take images", path.display())]
    MissingImageToken {
        /// The language model file.
        path: PathBuf,
        /// The missing token text, e.g. `<slice>`.
        token: String,
    },
    /// The language model and the projector are of different MiniCPM-V versions (told by the
    /// model's architecture and vocabulary and the projector's `clip.minicpmv_version`).
    #[error("the language model {} is {model_is} but the projector {} is for {}: the two files do not belong together", model.display(), mmproj.display(), family::spec(*projector_is).name)]
    VersionMismatch {
        /// The language model file.
        model: PathBuf,
        /// The projector file.
        mmproj: PathBuf,
        /// The versions the language model can be, in words.
        model_is: String,
        /// The projector's version.
        projector_is: Version,
    },
    /// The projector's output width (the width of `resampler.query`) differs from the
    /// language model's `{arch}.embedding_length`: the files are from different models.
    #[error("the projector {} produces embeddings of width {mmproj_width}, but the language model {} has width {model_width}: the two files do not belong together", mmproj.display(), model.display())]
    WidthMismatch {
        /// The language model file.
        model: PathBuf,
        /// The projector file.
        mmproj: PathBuf,
        /// The language model's embedding width, in floats per token.
        model_width: u64,
        /// The projector's output width, in floats per embedding.
        mmproj_width: u64,
    },
}

/// The MiniCPM-V versions whose language model a file of architecture `arch` with vocabulary
/// `tokens` can be: its architecture is the version's, and its vocabulary holds every control
/// and user-defined token of the version's data (models/*.toml). When several versions match,
/// only those with the most such tokens are kept (MiniCPM-o 2.6's vocabulary holds 2.6's and
/// its audio tokens: it is o2.6, not 2.6).
pub fn text_versions(arch: &str, tokens: &[String]) -> Vec<Version> {
    let vocab: std::collections::HashSet<&str> = tokens.iter().map(String::as_str).collect();
    let matches: Vec<(Version, usize)> = Version::ALL
        .into_iter()
        .filter_map(|v| {
            let spec = family::spec(v);
            let needed: Vec<&str> = spec
                .tokens
                .control
                .iter()
                .chain(&spec.tokens.user_defined)
                .map(String::as_str)
                .collect();
            (spec.text_arch.as_str() == arch && needed.iter().all(|t| vocab.contains(t)))
                .then_some((v, needed.len()))
        })
        .collect();
    let best = matches.iter().map(|&(_, n)| n).max().unwrap_or(0);
    matches
        .into_iter()
        .filter(|&(_, n)| n == best)
        .map(|(v, _)| v)
        .collect()
}

/// Narrows versions that share one language model layout (4.6 and 4.6-Thinking: same
/// architecture, same tokens) by the checkpoint's name (`general.name` and the file name, in
/// `hint`): the variants whose word ("thinking") the name holds, else the versions without a
/// variant.
pub fn pick_variant(versions: Vec<Version>, hint: &str) -> Vec<Version> {
    let hint = hint.to_lowercase();
    let variant = |v: &Version| family::spec(*v).variant.as_deref().map(str::to_lowercase);
    let named: Vec<Version> = versions
        .iter()
        .copied()
        .filter(|v| variant(v).is_some_and(|w| hint.contains(&w)))
        .collect();
    if !named.is_empty() {
        return named;
    }
    let plain: Vec<Version> = versions
        .iter()
        .copied()
        .filter(|v| variant(v).is_none())
        .collect();
    if plain.is_empty() {
        versions
    } else {
        plain
    }
}

/// "MiniCPM-V 2.6", "MiniCPM-V 2.6 or MiniCPM-o 2.6", or "a qwen2 model of no known
/// MiniCPM-V version".
fn describe_versions(m: &ModelFacts) -> String {
    if m.versions.is_empty() {
        return format!("a {} model of no known MiniCPM-V version", m.arch);
    }
    m.versions
        .iter()
        .map(|v| family::spec(*v).name.clone())
        .collect::<Vec<_>>()
        .join(" or ")
}

/// What the checks learned about a language model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelFacts {
    /// `general.architecture`, one of [`TEXT_ARCHS`].
    pub arch: String,
    /// `{arch}.embedding_length`: the width of a token embedding, in floats; always > 0.
    pub n_embd: u64,
    /// Number of tokens in the vocabulary (`tokenizer.ggml.tokens`).
    pub n_vocab: u64,
    /// The Jinja chat template from `tokenizer.chat_template`, if the file has one.
    pub chat_template: Option<String>,
    /// `{arch}.context_length`: the context the model was trained for, in tokens; > 0.
    pub n_ctx_train: u64,
    /// `{arch}.block_count`: transformer blocks, as many as the file's `blk.N` tensors.
    pub n_layer: u64,
    /// The MiniCPM-V versions whose language model this can be ([`text_versions`]); empty for
    /// a language model none of them matches (a fine-tune with its own vocabulary).
    pub versions: Vec<Version>,
}

/// What the checks learned about a projector.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectorFacts {
    /// The projector as the file describes it: a resampler with its `clip.minicpmv_version`
    /// (2 when missing, as llama.cpp) and query count, or 4.6's merger with its scale factor.
    pub kind: ProjectorKind,
    /// The MiniCPM-V version the projector stands for (4.6 for every merger projector: 4.6 and
    /// 4.6-Thinking share it).
    pub version: Version,
    /// Width of the embeddings it produces, in floats: the first dimension of
    /// `resampler.query`, or the second of `mm.down.weight`.
    pub n_embd: u64,
    /// `clip.vision.image_size`: side of the square slice the vision encoder takes, in pixels.
    pub image_size: u64,
    /// `clip.vision.patch_size`: side of a ViT patch, in pixels; divides `image_size`.
    pub patch_size: u64,
}

/// Checks that `path` is a MiniCPM-V language model GGUF llama.cpp can load.
pub fn check_model(path: &Path) -> Result<(GgufFile, ModelFacts), InputError> {
    check_model_file(GgufFile::open(path).map_err(InputError::ModelFile)?)
}

/// [`check_model`] of a file already read (errors name `f.path`).
pub fn check_model_file(f: GgufFile) -> Result<(GgufFile, ModelFacts), InputError> {
    let path = f.path.clone();
    let p = || path.clone();
    let arch = match f.kind() {
        FileKind::Projector => return Err(InputError::ProjectorAsModel { path: p() }),
        FileKind::Unknown => return Err(InputError::NoArchitecture { path: p() }),
        FileKind::LanguageModel(arch) => arch,
    };
    if !TEXT_ARCHS.contains(&arch.as_str()) {
        return Err(InputError::UnsupportedArch { path: p(), arch });
    }
    let key = format!("{arch}.embedding_length");
    let n_embd = match f.get(&key) {
        None => {
            return Err(InputError::BadModel {
                path: p(),
                reason: format!("missing {key}"),
            })
        }
        Some(v) => match v.as_u64() {
            Some(n) if n > 0 => n,
            Some(n) => {
                return Err(InputError::BadModel {
                    path: p(),
                    reason: format!("{key} is {n}"),
                })
            }
            None => {
                return Err(InputError::KeyType {
                    path: p(),
                    key,
                    found: value_kind(v),
                    expected: "an unsigned integer",
                })
            }
        },
    };
    let tokens = f
        .get_str_array("tokenizer.ggml.tokens")
        .ok_or_else(|| InputError::BadModel {
            path: p(),
            reason: "no vocabulary (tokenizer.ggml.tokens)".into(),
        })?;
    for tok in IMAGE_TOKENS {
        if !tokens.iter().any(|t| t == tok) {
            return Err(InputError::MissingImageToken {
                path: p(),
                token: (*tok).to_string(),
            });
        }
    }
    let bad = |reason: String| InputError::BadModel { path: p(), reason };
    shape::check_vocab(&f, tokens).map_err(bad)?;
    let shape = shape::check_text(&f, &arch, n_embd, tokens.len() as u64).map_err(bad)?;
    let ctx_key = format!("{arch}.context_length");
    let n_ctx_train = f
        .get_u64(&ctx_key)
        .filter(|&n| n > 0)
        .ok_or_else(|| bad(format!("missing or zero {ctx_key}")))?;
    let facts = ModelFacts {
        n_vocab: tokens.len() as u64,
        chat_template: f.get_str("tokenizer.chat_template").map(str::to_string),
        versions: pick_variant(
            text_versions(&arch, tokens),
            &format!(
                "{} {}",
                f.get_str("general.name").unwrap_or_default(),
                path.file_name().unwrap_or_default().to_string_lossy()
            ),
        ),
        n_embd,
        n_ctx_train,
        n_layer: shape.n_layer,
        arch,
    };
    Ok((f, facts))
}

/// Checks a GGUF file before llama.cpp's quantizer reads it. The quantizer loads a language
/// model's hyper-parameters (and asserts on a bad block count, as a load does), so a language
/// model of a MiniCPM-V architecture gets every check of [`check_model`]; another
/// architecture gets the block-count check. A projector is quantized tensor by tensor, with no
/// hyper-parameter read, and passes as it is.
pub fn check_quantizable(path: &Path) -> Result<(), InputError> {
    let f = GgufFile::open(path).map_err(InputError::ModelFile)?;
    let FileKind::LanguageModel(arch) = f.kind() else {
        return Ok(());
    };
    shape::check_block_count(&f, &arch).map_err(|reason| InputError::BadModel {
        path: path.to_path_buf(),
        reason,
    })?;
    if TEXT_ARCHS.contains(&arch.as_str()) {
        check_model(path)?;
    }
    Ok(())
}

/// Expected value types of the metadata keys llama.cpp's clip loader reads for a MiniCPM-V
/// projector: it aborts the process (GGML_ASSERT) when a present key has another type.
const PROJECTOR_KEY_TYPES: &[(&str, &str)] = &[
    ("general.name", "string"),
    ("general.description", "string"),
    ("clip.projector_type", "string"),
    ("clip.vision.projector_type", "string"),
    ("clip.has_vision_encoder", "bool"),
    ("clip.has_audio_encoder", "bool"),
    ("clip.has_gen_audio_encoder", "bool"),
    ("clip.use_gelu", "bool"),
    ("clip.use_silu", "bool"),
    ("clip.minicpmv_version", "i32"),
    ("clip.minicpmv_query_num", "u32"),
    ("clip.vision.image_size", "u32"),
    ("clip.vision.patch_size", "u32"),
    ("clip.vision.embedding_length", "u32"),
    ("clip.vision.feed_forward_length", "u32"),
    ("clip.vision.block_count", "u32"),
    ("clip.vision.projection_dim", "u32"),
    ("clip.vision.attention.head_count", "u32"),
    ("clip.vision.attention.head_count_kv", "u32"),
    ("clip.vision.attention.head_dim", "u32"),
    ("clip.vision.attention.layer_norm_epsilon", "f32"),
    ("clip.vision.image_mean", "array"),
    ("clip.vision.image_std", "array"),
    ("clip.vision.mm_patch_merge_type", "string"),
    ("clip.vision.projector.scale_factor", "u32"),
    ("clip.vision.wa_layer_indexes", "array"),
];

fn value_kind(v: &MetaValue) -> &'static str {
    match v {
        MetaValue::String(_) => "string",
        MetaValue::Bool(_) => "bool",
        MetaValue::I32(_) => "i32",
        MetaValue::U32(_) => "u32",
        MetaValue::F32(_) => "f32",
        MetaValue::Array(_) => "array",
        other => other.type_name(),
    }
}

/// Checks that `path` is a MiniCPM-V projector GGUF that llama.cpp's clip loader accepts.
pub fn check_projector(path: &Path) -> Result<(GgufFile, ProjectorFacts), InputError> {
    check_projector_file(GgufFile::open(path).map_err(InputError::ProjectorFile)?)
}

/// [`check_projector`] of a file already read (errors name `f.path`).
pub fn check_projector_file(f: GgufFile) -> Result<(GgufFile, ProjectorFacts), InputError> {
    let path = f.path.clone();
    let p = || path.clone();
    let bad = |reason: String| InputError::BadProjector { path: p(), reason };
    match f.kind() {
        FileKind::Projector => {}
        FileKind::LanguageModel(arch) => {
            return Err(InputError::ModelAsProjector { path: p(), arch })
        }
        FileKind::Unknown => return Err(InputError::NoArchitecture { path: p() }),
    }
    for (key, expected) in PROJECTOR_KEY_TYPES {
        if let Some(v) = f.get(key) {
            let found = value_kind(v);
            if found != *expected {
                return Err(InputError::KeyType {
                    path: p(),
                    key: (*key).to_string(),
                    found,
                    expected,
                });
            }
        }
    }
    if f.get_bool("clip.has_vision_encoder") != Some(true) {
        return Err(bad(
            "not a vision projector (clip.has_vision_encoder is not true)".into(),
        ));
    }
    let proj = f
        .get_str("clip.projector_type")
        .or_else(|| f.get_str("clip.vision.projector_type"));
    let (kind, version) = match proj {
        Some(RESAMPLER_TYPE) => resampler_kind(&f).map_err(bad)?,
        Some(MERGER_TYPE) => merger_kind(&f).map_err(bad)?,
        other => {
            return Err(bad(format!(
                "projector type is {}, MiniCPM-V uses \"{RESAMPLER_TYPE}\" (2.5 to 4.5) or \"{MERGER_TYPE}\" (4.6)",
                other.map_or("missing".to_string(), |s| format!("{s:?}"))
            )))
        }
    };
    for key in ["clip.vision.image_mean", "clip.vision.image_std"] {
        match f.get_f32_array(key) {
            Some(a) if a.len() >= 3 => {}
            Some(a) => return Err(bad(format!("{key} has {} values, 3 are needed", a.len()))),
            None if f.get(key).is_some() => {
                return Err(bad(format!("{key} must be an array of f32")))
            }
            None => return Err(bad(format!("missing {key} (the image normalisation)"))),
        }
    }
    if f.get_u64("clip.vision.projection_dim").is_none() {
        return Err(bad(
            "missing clip.vision.projection_dim (llama.cpp requires it)".into(),
        ));
    }
    let need_u32 = |key: &str| {
        f.get_u64(key)
            .filter(|&v| v > 0)
            .ok_or_else(|| bad(format!("missing or zero {key}")))
    };
    let image_size = need_u32("clip.vision.image_size")?;
    let patch_size = need_u32("clip.vision.patch_size")?;
    need_u32("clip.vision.embedding_length")?;
    need_u32("clip.vision.block_count")?;
    need_u32("clip.vision.attention.head_count")?;
    need_u32("clip.vision.feed_forward_length")?;
    if image_size % patch_size != 0 {
        return Err(bad(format!(
            "image size {image_size} is not a multiple of the patch size {patch_size}"
        )));
    }
    let n_embd = output_width(&f, &kind).map_err(bad)?;
    shape::check_vision(&f, image_size, patch_size, &kind, n_embd).map_err(bad)?;
    Ok((
        f,
        ProjectorFacts {
            kind,
            version,
            n_embd,
            image_size,
            patch_size,
        },
    ))
}

/// A resampler's version and query count, as llama.cpp's clip loader reads them.
fn resampler_kind(f: &GgufFile) -> Result<(ProjectorKind, Version), String> {
    // llama.cpp defaults a missing version to 2 (MiniCPM-Llama3-V 2.5).
    let minicpmv_version = f.get_i64("clip.minicpmv_version").unwrap_or(2);
    let version = Version::from_minicpmv_version(minicpmv_version).ok_or_else(|| {
        let known: Vec<String> = family::RESAMPLER_VERSIONS
            .iter()
            .map(i32::to_string)
            .collect();
        format!(
            "clip.minicpmv_version {minicpmv_version} is not a MiniCPM-V version this tool knows ({})",
            known.join(", ")
        )
    })?;
    // The key when present and non-zero, else 96 for version 2 and 64 for later versions
    // (clip.cpp:1322-1338). The resampler graph reshapes by it and aborts on a mismatch with
    // resampler.query, checked in output_width.
    let query_num = f
        .get_u64("clip.minicpmv_query_num")
        .filter(|&q| q > 0)
        .unwrap_or(if minicpmv_version == 2 { 96 } else { 64 });
    let query_tokens =
        u32::try_from(query_num).map_err(|_| format!("clip.minicpmv_query_num is {query_num}"))?;
    Ok((
        ProjectorKind::Resampler {
            minicpmv_version: minicpmv_version as i32,
            query_tokens,
        },
        version,
    ))
}

/// 4.6's merger and its scale factor: `clip.vision.projector.scale_factor`, 4 when missing;
/// any value but 2 and 4 is a GGML_ASSERT in clip.cpp:1465.
fn merger_kind(f: &GgufFile) -> Result<(ProjectorKind, Version), String> {
    let key = "clip.vision.projector.scale_factor";
    let scale_factor = match f.get_u64(key) {
        None => 4,
        Some(n)
            if family::MERGER_SCALE_FACTORS
                .iter()
                .any(|&m| u64::from(m) == n) =>
        {
            n as u32
        }
        Some(n) => {
            return Err(format!(
                "{key} is {n}; MiniCPM-V 4.6 merges 2 (4x compression) or 4 (16x) patches per side"
            ))
        }
    };
    let version = Version::from_projector_type(MERGER_TYPE)
        .ok_or_else(|| format!("no version uses the {MERGER_TYPE} projector"))?;
    Ok((ProjectorKind::Merger { scale_factor }, version))
}

/// The width of the embeddings the projector produces: `resampler.query`'s first dimension
/// (whose second must be the query count), or `mm.down.weight`'s second (clip.cpp:5996).
fn output_width(f: &GgufFile, kind: &ProjectorKind) -> Result<u64, String> {
    match *kind {
        ProjectorKind::Resampler {
            minicpmv_version,
            query_tokens,
        } => {
            let query = f
                .tensor("resampler.query")
                .ok_or("missing tensor resampler.query (not a MiniCPM-V resampler)")?;
            let n_embd = query.dims.first().copied().unwrap_or(0);
            if n_embd == 0 || query.dims.get(1).copied() != Some(u64::from(query_tokens)) {
                return Err(format!(
                    "resampler.query has shape {:?}, but the projector's metadata implies {query_tokens} queries per slice (clip.minicpmv_query_num, or the default of clip.minicpmv_version {minicpmv_version})",
                    query.dims
                ));
            }
            Ok(n_embd)
        }
        ProjectorKind::Merger { .. } => {
            let down = f
                .tensor("mm.down.weight")
                .ok_or("missing tensor mm.down.weight (not a MiniCPM-V 4.6 projector)")?;
            match down.dims.as_slice() {
                [_, d] if *d > 0 => Ok(*d),
                dims => Err(format!(
                    "tensor mm.down.weight has shape {dims:?}; a 2-D matrix was expected"
                )),
            }
        }
    }
}

/// Both files, and that they belong together.
#[derive(Debug, Clone, PartialEq)]
pub struct PairFacts {
    /// What [`check_model`] learned about the language model.
    pub model: ModelFacts,
    /// What [`check_projector`] learned about the projector; its `n_embd` equals the model's.
    pub projector: ProjectorFacts,
    /// The pair's version: the projector's, or the checkpoint variant the language model is
    /// (4.6-Thinking shares 4.6's projector), which picks the chat template.
    pub version: Version,
}

/// Checks a language model and a projector and that the projector's output width equals the
/// model's embedding width.
pub fn check_pair(model: &Path, mmproj: &Path) -> Result<PairFacts, InputError> {
    let (_, m) = check_model(model)?;
    let (_, pj) = check_projector(mmproj)?;
    if m.n_embd != pj.n_embd {
        return Err(InputError::WidthMismatch {
            model: model.to_path_buf(),
            mmproj: mmproj.to_path_buf(),
            model_width: m.n_embd,
            mmproj_width: pj.n_embd,
        });
    }
    let version = pair_version(&m, &pj).ok_or_else(|| InputError::VersionMismatch {
        model: model.to_path_buf(),
        mmproj: mmproj.to_path_buf(),
        model_is: describe_versions(&m),
        projector_is: pj.version,
    })?;
    Ok(PairFacts {
        model: m,
        projector: pj,
        version,
    })
}

/// The version of a pair, or `None` when the files do not belong together. A language model
/// of no known version (a fine-tune with its own vocabulary) takes the projector's version if
/// its architecture is that version's; otherwise the model's candidates must include one
/// whose projector is the same model's (4.6 and 4.6-Thinking share one), the projector's own version
/// first.
fn pair_version(m: &ModelFacts, pj: &ProjectorFacts) -> Option<Version> {
    let spec = family::spec(pj.version);
    if m.versions.is_empty() {
        return (m.arch == spec.text_arch.as_str()).then_some(pj.version);
    }
    if m.versions.contains(&pj.version) && m.versions.len() == 1 {
        return Some(pj.version);
    }
    m.versions.iter().copied().find(|v| {
        family::spec(*v).projector.same_model(&pj.kind) && v.spec().text_arch == spec.text_arch
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::family::Scale;
    use crate::tools::synth::{self, FilePlan, WeightType};

    /// The header of a planned synthetic file, as `GgufFile::open` would read it.
    fn header(plan: &FilePlan, name: &str) -> GgufFile {
        GgufFile::from_header(
            Path::new(name),
            plan.metadata.clone(),
            plan.tensors
                .iter()
                .map(|t| (t.name.clone(), t.dims.clone(), t.ty))
                .collect(),
        )
    }

    /// The checks accept the synthetic pairs of every version at both scales: the tiny ones
    /// the tests run, and the real-shape ones (the public models' dimensions, many GB, checked
    /// from their planned headers) the benchmarks run. The language model is recognised as
    /// its own version only.
    #[test]
    fn every_synthetic_pair_passes_the_checks_at_both_scales() {
        for version in Version::ALL {
            for scale in [Scale::Tiny, Scale::Real] {
                let plan = synth::plan(version, scale, WeightType::F16).expect("plan");
                let (_, m) = check_model_file(header(&plan.model, "model.gguf"))
                    .unwrap_or_else(|e| panic!("{version} {scale} model: {e}"));
                let (_, p) = check_projector_file(header(&plan.mmproj, "mmproj.gguf"))
                    .unwrap_or_else(|e| panic!("{version} {scale} mmproj: {e}"));
                assert_eq!(m.versions, vec![version], "{version} {scale}");
                // a projector stands for its own version; 4.6-Thinking shares 4.6's, and the
                // pair takes the language model's variant
                let own = if version == Version::V4_6Thinking {
                    Version::V4_6
                } else {
                    version
                };
                assert_eq!(p.version, own, "{version} {scale}");
                assert_eq!(pair_version(&m, &p), Some(version), "{version} {scale}");
                assert_eq!(m.n_embd, p.n_embd, "{version} {scale}");
            }
        }
    }

    #[test]
    fn the_text_version_is_the_most_specific_match() {
        let spec = |v| family::spec(v);
        let vocab = |v: Version| -> Vec<String> {
            let s = spec(v);
            s.tokens
                .control
                .iter()
                .chain(&s.tokens.user_defined)
                .cloned()
                .collect()
        };
        // o2.6's vocabulary holds all of 2.6's control tokens and its audio tokens.
        assert_eq!(
            text_versions("qwen2", &vocab(Version::O2_6)),
            [Version::O2_6]
        );
        assert_eq!(
            text_versions("qwen2", &vocab(Version::V2_6)),
            [Version::V2_6]
        );
        // The architecture must agree.
        assert!(text_versions("llama", &vocab(Version::V2_6)).is_empty());
        assert_eq!(
            text_versions("qwen3", &vocab(Version::V4_5)),
            [Version::V4_5]
        );
        assert_eq!(
            text_versions("llama", &vocab(Version::V4_0)),
            [Version::V4_0]
        );
        assert_eq!(
            text_versions("llama", &vocab(Version::V2_5)),
            [Version::V2_5]
        );
        // A vocabulary of none of them (a fine-tune with its own tokens).
        assert!(text_versions("qwen2", &["a".to_string()]).is_empty());
        let both = text_versions("qwen35", &vocab(Version::V4_6));
        assert_eq!(both, vec![Version::V4_6, Version::V4_6Thinking]);
        let pick = |hint| pick_variant(both.clone(), hint);
        assert_eq!(pick("MiniCPM-V-4.6 model.gguf"), vec![Version::V4_6]);
        assert_eq!(
            pick("MiniCPM-V-4.6-Thinking Q4_K_M.gguf"),
            vec![Version::V4_6Thinking]
        );
        assert_eq!(
            pick(" minicpm-v-4.6-thinking-q4_k_m.gguf"),
            vec![Version::V4_6Thinking]
        );
    }
}
