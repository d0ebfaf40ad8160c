//! Synthetic MiniCPM-V GGUF pairs: a language model (`model.gguf`) and a projector
//! (`mmproj.gguf`) with exactly the metadata keys, value types, tensor names and shapes that
//! llama.cpp (as bundled in `llama-cpp-sys-2` 0.1.161) expects for a version, filled with
//! deterministic random weights.
//!
//! - [`plan`] is pure: it lists the metadata and tensors (name, dims, type, initialiser) of both
//!   files, so tests can check them without writing anything.
//! - [`synth`] writes the pair through the streaming [`GgufWriter`]: every tensor is generated
//!   in 1 MiB chunks straight into the writer, so memory stays far below the file size (a real
//!   2.6 F16 text model is ~15 GB).
//!
//! # What the files contain
//!
//! **Language model** (`general.architecture` = `llama` | `qwen2` | `qwen3`), as
//! `convert_hf_to_gguf.py` writes it: `{arch}.context_length`, `embedding_length`,
//! `block_count`, `feed_forward_length`, `attention.head_count`, `attention.head_count_kv`,
//! `rope.freq_base`, `attention.layer_norm_rms_epsilon`, `vocab_size`, plus
//! `rope.dimension_count` (llama) and `attention.key_length`/`value_length` (qwen3). Tensors
//! (`src/models/{llama,qwen2,qwen3}.cpp`): `token_embd`, `output_norm`, `output` (unless the
//! embeddings are tied), per block `attn_norm`, `attn_q/k/v` (+ biases for qwen2), `attn_out`,
//! `attn_q_norm`/`attn_k_norm` (qwen3), `ffn_norm`, `ffn_gate`, `ffn_up`, `ffn_down`.
//!
//! **Tokenizer**: a gpt2-style byte-level BPE vocabulary: the 256 byte tokens (GPT-2
//! `bytes_to_unicode` order), tokens built by a few merges of common English words, at `real`
//! scale unique filler tokens up to the real vocabulary size (NORMAL), then the version's
//! non-special added tokens (USER_DEFINED) and its special tokens (CONTROL), all unique;
//! `tokenizer.ggml.pre` as the official file (`"default"` for 4.0, whose real tokenizer is
//! SentencePiece), bos/eos/eot/padding/unknown ids, `add_bos_token` and the Jinja
//! `tokenizer.chat_template` from `models/*.toml`.
//!
//! **Projector** (`general.architecture` = `clip`, `clip.projector_type` = `resampler`), with
//! the keys and types of `tools/mtmd/legacy-models/minicpmv-convert-image-encoder-to-gguf.py`
//! (`clip.minicpmv_version` INT32, `clip.minicpmv_query_num` and the `clip.vision.*` sizes
//! UINT32, `layer_norm_epsilon` FLOAT32, `image_mean`/`image_std` FLOAT32 arrays, bools
//! `clip.use_gelu`, `clip.has_vision_encoder`, ...; `clip.vision.projection_dim` is 0 as the
//! converter writes it — the real width is `resampler.proj.weight` ne0). Tensors: SigLIP
//! (`v.patch_embd.weight [14,14,3,E]` always F16 as the converter stores 4-D kernels,
//! `v.patch_embd.bias`, `v.position_embd.weight [E,4900]`, per block `attn_{q,k,v,out}`,
//! `ln1`, `ln2`, `ffn_up [E,F]`, `ffn_down [F,E]` with biases, `v.post_ln`) and the resampler
//! (`resampler.query [D,Q]` F32, `resampler.kv.weight [E,D]`, `resampler.attn.{q,k,v,out}`,
//! `resampler.ln_{q,kv,post}`, `resampler.proj.weight [D,D]`, `resampler.pos_embed_k [D,4900]`
//! F32 holding the converter's 2-D sin/cos table).
//!
//! Types follow the converters: with [`WeightType::F16`], 2-D weight matrices are F16 and
//! 1-D tensors (norms, biases) F32; with [`WeightType::F32`] everything is F32 except the
//! patch-embedding kernel.
//!
//! # Weights
//!
//! Each tensor has its own PRNG stream (xoshiro256++ seeded through SplitMix64 from the seed and
//! an FNV-1a hash of the file role and tensor name — no external RNG crate, so bytes never
//! change with a dependency update). Random tensors are uniform with mean 0 and a chosen
//! standard deviation, quantised to a 65536-step grid (each 16-bit draw indexes a table), so the
//! F16 and F32 files hold the same values up to F16 rounding. Scales keep every activation O(1):
//! matrices whose input is normalised use std `1/sqrt(fan_in)`, matrices that write into a
//! residual stream `1/sqrt(fan_in * 2 * n_layer)` (so deep stacks keep token-specific
//! information instead of collapsing to one vector), norms are 1, LayerNorm biases 0, other
//! biases small (std 0.02). Same seed ⇒ same bytes.

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::gguf::{GgmlType, GgufWriteError, GgufWriter, MetaValue, TensorInfo};
pub use crate::model::family::Scale;
use crate::model::family::{self, ProjectorKind, TextDims, Version, VisionDims};

mod text;
mod vision;
mod vocab;
mod weights;

use weights::{elem_size, Generator, TableCache};

/// Element type of the weight matrices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WeightType {
    /// Half precision (what converters write by default).
    F16,
    /// Single precision.
    F32,
}

impl WeightType {
    fn ggml(self) -> GgmlType {
        match self {
            WeightType::F16 => GgmlType::F16,
            WeightType::F32 => GgmlType::F32,
        }
    }

    /// `general.file_type` (llama_ftype): 0 = ALL_F32, 1 = MOSTLY_F16.
    fn file_type(self) -> u32 {
        match self {
            WeightType::F16 => 1,
            WeightType::F32 => 0,
        }
    }
}

impl fmt::Display for WeightType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WeightType::F16 => "f16",
            WeightType::F32 => "f32",
        })
    }
}

impl std::str::FromStr for WeightType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "f16" => Ok(WeightType::F16),
            "f32" => Ok(WeightType::F32),
            other => Err(format!(
                "unknown weight type {other:?} (expected f16 or f32)"
            )),
        }
    }
}

/// What to synthesise and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthOptions {
    /// Model version.
    pub version: Version,
    /// Tiny (fast test model) or real dimensions.
    pub scale: Scale,
    /// Output folder (created if missing); receives `model.gguf` and `mmproj.gguf`.
    pub out_dir: PathBuf,
    /// Type of the weight matrices.
    pub dtype: WeightType,
    /// PRNG seed.
    pub seed: u64,
    /// 4.6 only: `clip.vision.projector.scale_factor` of the projector, 4 ("16x", the
    /// version's) or 2 ("4x"); the weights are the same for both. `None`: the version's.
    pub scale_factor: Option<u32>,
}

/// The files written by [`synth`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthOutput {
    /// Path of the language model.
    pub model: PathBuf,
    /// Path of the projector.
    pub mmproj: PathBuf,
    /// Size of `model` in bytes.
    pub model_bytes: u64,
    /// Size of `mmproj` in bytes.
    pub mmproj_bytes: u64,
    /// Parameters of the language model.
    pub text_params: u64,
    /// Parameters of the projector (vision tower and resampler).
    pub vision_params: u64,
}

/// Why a synthetic pair could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SynthError {
    /// The output folder could not be created.
    #[error("cannot create output folder {}: {source}", path.display())]
    CreateDir {
        /// The folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Writing a GGUF file failed.
    #[error("cannot write synthetic {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: GgufWriteError,
    },
    /// The family data does not allow a consistent file (e.g. a vocabulary too small for the
    /// special tokens).
    #[error("cannot plan a synthetic {version} {scale} model: {message}")]
    Plan {
        /// The version.
        version: Version,
        /// The scale.
        scale: Scale,
        /// What is wrong.
        message: String,
    },
}

/// How a tensor's values are produced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// Uniform, mean 0, this standard deviation, from the tensor's own PRNG stream.
    Random {
        /// Standard deviation.
        std: f32,
    },
    /// Every element equal to this value.
    Const(f32),
    /// The resampler's fixed 2-D sin/cos table (`get_2d_sincos_pos_embed(dim, (side, side))`
    /// of the converter), `[dim, side*side]` in ggml order.
    SinCos2d {
        /// Embedding width (D).
        dim: u64,
        /// Grid side (70).
        side: u64,
    },
}

/// One tensor of a planned file.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    /// GGUF tensor name.
    pub name: String,
    /// Shape in ggml order (ne0 first).
    pub dims: Vec<u64>,
    /// Element type.
    pub ty: GgmlType,
    /// Value initialiser.
    pub init: Init,
}

impl TensorSpec {
    /// Number of elements.
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Bytes of data (F16/F32 only).
    pub fn n_bytes(&self) -> u64 {
        self.n_elements() * elem_size(self.ty)
    }
}

/// Which file of the pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileRole {
    /// The language model.
    Model,
    /// The projector.
    Mmproj,
}

impl FileRole {
    fn tag(self) -> &'static str {
        match self {
            FileRole::Model => "model",
            FileRole::Mmproj => "mmproj",
        }
    }
}

/// The metadata and tensors of one synthetic file, in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct FilePlan {
    /// Which file.
    pub role: FileRole,
    /// Metadata entries in file order.
    pub metadata: Vec<(String, MetaValue)>,
    /// Tensors in file order.
    pub tensors: Vec<TensorSpec>,
}

impl FilePlan {
    /// A metadata value by key.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// A tensor by name.
    pub fn tensor(&self, name: &str) -> Option<&TensorSpec> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Total number of parameters.
    pub fn n_params(&self) -> u64 {
        self.tensors.iter().map(TensorSpec::n_elements).sum()
    }

    /// Total bytes of tensor data (without alignment padding).
    pub fn data_bytes(&self) -> u64 {
        self.tensors.iter().map(TensorSpec::n_bytes).sum()
    }
}

/// Both files of a synthetic pair.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthPlan {
    /// Version.
    pub version: Version,
    /// Scale.
    pub scale: Scale,
    /// Weight type.
    pub dtype: WeightType,
    /// The language model.
    pub model: FilePlan,
    /// The projector.
    pub mmproj: FilePlan,
}

/// File name of the language model inside `out_dir`.
pub const MODEL_FILE: &str = "model.gguf";
/// File name of the projector inside `out_dir`.
pub const MMPROJ_FILE: &str = "mmproj.gguf";

/// Size of the chunks tensors are generated in.
const CHUNK_BYTES: usize = 1 << 20;

/// Lists the metadata and tensors of the synthetic pair for `version` at `scale` (pure; no
/// weights are generated and nothing is written). The seed only affects the weights, so it is
/// not a parameter; [`synth`] adds it to `general.description`.
pub fn plan(version: Version, scale: Scale, dtype: WeightType) -> Result<SynthPlan, SynthError> {
    let spec = family::spec(version);
    let dims = (*spec.text.get(scale), *spec.vision.get(scale));
    plan_with_seed(version, scale, dims, spec.projector, dtype, None)
}

/// The language model's and the projector's dimensions, for [`synth_with_dims`].
pub type Dims = (TextDims, VisionDims);

/// The projector of `version` with `scale_factor` instead of the version's (4.6 only).
pub fn projector_kind(
    version: Version,
    scale: Scale,
    scale_factor: Option<u32>,
) -> Result<ProjectorKind, SynthError> {
    family::spec(version)
        .projector
        .with_scale_factor(scale_factor)
        .map_err(|message| SynthError::Plan {
            version,
            scale,
            message,
        })
}

fn plan_with_seed(
    version: Version,
    scale: Scale,
    (text, vision): Dims,
    projector: ProjectorKind,
    dtype: WeightType,
    seed: Option<u64>,
) -> Result<SynthPlan, SynthError> {
    let spec = family::spec(version);
    let plan_err = |message: String| SynthError::Plan {
        version,
        scale,
        message,
    };
    if vision.projector_dim != text.n_embd {
        return Err(plan_err(format!(
            "projector width {} != text n_embd {}",
            vision.projector_dim, text.n_embd
        )));
    }
    let vocab = vocab::build_vocab(spec, text.n_vocab).map_err(plan_err)?;
    let seed_note = seed.map(|s| format!(", seed {s}")).unwrap_or_default();
    let model = text::plan_model(spec, scale, dtype, &text, vocab, &seed_note);
    let mmproj = vision::plan_mmproj(spec, projector, scale, &vision, dtype, &seed_note);
    Ok(SynthPlan {
        version,
        scale,
        dtype,
        model,
        mmproj,
    })
}

// ---------------------------------------------------------------------------------------------
// Tensor lists

struct Tensors {
    list: Vec<TensorSpec>,
    dtype: WeightType,
}

impl Tensors {
    fn new(dtype: WeightType) -> Self {
        Tensors {
            list: Vec::new(),
            dtype,
        }
    }

    /// A weight matrix (type follows `dtype`).
    fn matrix(&mut self, name: String, dims: [u64; 2], init: Init) {
        let ty = self.dtype.ggml();
        self.list.push(TensorSpec {
            name,
            dims: dims.to_vec(),
            ty,
            init,
        });
    }

    /// A tensor of a fixed type.
    fn fixed(&mut self, name: String, dims: &[u64], ty: GgmlType, init: Init) {
        self.list.push(TensorSpec {
            name,
            dims: dims.to_vec(),
            ty,
            init,
        });
    }

    /// A 1-D F32 tensor (norm weight or bias).
    fn vector(&mut self, name: String, n: u64, init: Init) {
        self.fixed(name, &[n], GgmlType::F32, init);
    }
}

/// std of a matrix whose input is normalised: keeps outputs at unit scale.
fn fan_in(n: u64) -> Init {
    Init::Random {
        std: 1.0 / (n as f32).sqrt(),
    }
}

/// std of a matrix that writes into the residual stream of an `n_layer`-block transformer
/// (attention output, FFN down): `1/sqrt(fan_in * 2 * n_layer)`, so the 2·n_layer branches
/// together add about unit variance. With unit-scale branches a deep random stack drifts towards
/// a token-independent vector (rank collapse) and e.g. all resampler outputs look alike.
fn residual(n: u64, n_layer: u32) -> Init {
    Init::Random {
        std: 1.0 / (n as f32 * 2.0 * n_layer.max(1) as f32).sqrt(),
    }
}

const BIAS: Init = Init::Random { std: 0.02 };
const ONES: Init = Init::Const(1.0);
const ZEROS: Init = Init::Const(0.0);

// ---------------------------------------------------------------------------------------------
// Writing

/// Writes `out_dir/model.gguf` and `out_dir/mmproj.gguf` (creating `out_dir`); see the module
/// docs. Each file goes to a temporary name first and is renamed into place.
pub fn synth(opts: &SynthOptions) -> Result<SynthOutput, SynthError> {
    let spec = family::spec(opts.version);
    synth_with_dims(
        opts,
        (*spec.text.get(opts.scale), *spec.vision.get(opts.scale)),
    )
}

/// [`synth`] with other dimensions than the version's at `opts.scale` (whose name the files
/// still carry): e.g. a language model a few hundred MB large, where memory tests need the
/// weights, not the runtime's constant, to dominate. Everything else (architecture, tensor
/// names, vocabulary, chat template) is the version's; the projector width must equal the
/// language model's.
pub fn synth_with_dims(opts: &SynthOptions, dims: Dims) -> Result<SynthOutput, SynthError> {
    let projector = projector_kind(opts.version, opts.scale, opts.scale_factor)?;
    let plan = plan_with_seed(
        opts.version,
        opts.scale,
        dims,
        projector,
        opts.dtype,
        Some(opts.seed),
    )?;
    std::fs::create_dir_all(&opts.out_dir).map_err(|source| SynthError::CreateDir {
        path: opts.out_dir.clone(),
        source,
    })?;
    let model = opts.out_dir.join(MODEL_FILE);
    let mmproj = opts.out_dir.join(MMPROJ_FILE);
    let text_params = plan.model.n_params();
    let vision_params = plan.mmproj.n_params();
    let model_bytes = write_file(&plan.model, &model, opts.seed)?;
    let mmproj_bytes = write_file(&plan.mmproj, &mmproj, opts.seed)?;
    Ok(SynthOutput {
        model,
        mmproj,
        model_bytes,
        mmproj_bytes,
        text_params,
        vision_params,
    })
}

/// Writes one planned file with weights from `seed`; returns its size.
pub fn write_file(plan: &FilePlan, path: &Path, seed: u64) -> Result<u64, SynthError> {
    let werr = |source: GgufWriteError| SynthError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut w = GgufWriter::new();
    for (k, v) in &plan.metadata {
        w.add_kv(k, v.clone());
    }
    for t in &plan.tensors {
        w.add_tensor(&t.name, &t.dims, t.ty).map_err(werr)?;
    }
    let mut buf = vec![0u8; CHUNK_BYTES];
    let mut tables = TableCache::default();
    w.write(
        path,
        |index: usize, info: &TensorInfo, out: &mut dyn Write| {
            let t = plan
                .tensors
                .get(index)
                .filter(|t| t.name == info.name && t.n_bytes() == info.n_bytes)
                .ok_or_else(|| {
                    io::Error::other(format!(
                        "tensor #{index} {:?} is not the planned one",
                        info.name
                    ))
                })?;
            let mut gen = Generator::new(t, plan.role, seed, &mut tables);
            let mut left = info.n_bytes;
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                gen.fill(&mut buf[..n]);
                out.write_all(&buf[..n])?;
                left -= n as u64;
            }
            Ok(())
        },
    )
    .map_err(werr)
}

/// Writes the tiny F16 pair of `version` (seed 0) into `dir`; for tests.
#[cfg(test)]
pub(crate) fn tiny_pair(version: crate::model::family::Version, dir: &Path) -> SynthOutput {
    synth(&SynthOptions {
        version,
        scale: Scale::Tiny,
        out_dir: dir.to_path_buf(),
        dtype: WeightType::F16,
        seed: 0,
        scale_factor: None,
    })
    .unwrap_or_else(|e| panic!("synth: {e}"))
}

#[cfg(test)]
mod tests;
