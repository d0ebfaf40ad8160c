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

use crate::gguf::{GgmlType, GgufWriteError, GgufWriter, MetaArray, MetaValue, TensorInfo};
pub use crate::model::family::Scale;
use crate::model::family::{
    self, ModelSpec, TextArch, TextDims, Version, VisionDims, POS_BUCKETS_PER_SIDE,
};

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
    plan_with_seed(version, scale, dims, dtype, None)
}

/// The language model's and the projector's dimensions, for [`synth_with_dims`].
pub type Dims = (TextDims, VisionDims);

fn plan_with_seed(
    version: Version,
    scale: Scale,
    (text, vision): Dims,
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
    let vocab = build_vocab(spec, text.n_vocab).map_err(plan_err)?;
    let seed_note = seed.map(|s| format!(", seed {s}")).unwrap_or_default();
    let model = plan_model(spec, scale, dtype, &text, vocab, &seed_note);
    let mmproj = plan_mmproj(spec, scale, &vision, dtype, &seed_note);
    Ok(SynthPlan {
        version,
        scale,
        dtype,
        model,
        mmproj,
    })
}

// ---------------------------------------------------------------------------------------------
// Vocabulary

/// GGUF token types (llama.cpp `llama_token_type`).
const TOKEN_NORMAL: i32 = 1;
const TOKEN_CONTROL: i32 = 3;
const TOKEN_USER_DEFINED: i32 = 4;

/// Words whose byte-level spellings get merge chains (a leading space is GPT-2's `Ġ`).
const MERGE_WORDS: [&str; 40] = [
    " the",
    " a",
    " an",
    " and",
    " of",
    " to",
    " in",
    " is",
    " it",
    " on",
    " with",
    " for",
    " this",
    " that",
    " what",
    " image",
    " picture",
    " photo",
    " describe",
    " color",
    " cat",
    " dog",
    " man",
    " woman",
    " red",
    " blue",
    " green",
    " white",
    " black",
    " text",
    " there",
    " are",
    " you",
    "What",
    "Describe",
    "The",
    "This",
    "Hello",
    "ing",
    "ed",
];

/// A gpt2-style vocabulary.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Vocab {
    tokens: Vec<String>,
    types: Vec<i32>,
    merges: Vec<String>,
}

impl Vocab {
    fn id(&self, text: &str) -> Option<u32> {
        self.tokens
            .iter()
            .rposition(|t| t == text)
            .and_then(|i| u32::try_from(i).ok())
    }
}

/// GPT-2's `bytes_to_unicode`: the printable stand-in character for each byte, in the order
/// byte-level vocabularies list them (`!` first).
fn byte_chars() -> Vec<(u8, char)> {
    let mut bs: Vec<u32> = (33..=126).chain(161..=172).chain(174..=255).collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    bs.into_iter()
        .zip(cs)
        .filter_map(|(b, c)| Some((u8::try_from(b).ok()?, char::from_u32(c)?)))
        .collect()
}

fn build_vocab(spec: &ModelSpec, n_vocab: Option<u32>) -> Result<Vocab, String> {
    let chars = byte_chars();
    let mut map = ['\0'; 256];
    for &(b, c) in &chars {
        map[usize::from(b)] = c;
    }
    let mut tokens: Vec<String> = chars.iter().map(|&(_, c)| c.to_string()).collect();
    let mut seen: std::collections::HashSet<String> = tokens.iter().cloned().collect();

    // Left-to-right merge chains: "Ġ t" -> "Ġt", "Ġt h" -> "Ġth", "Ġth e" -> "Ġthe".
    let mut merges = Vec::new();
    for word in MERGE_WORDS {
        let spelled: Vec<String> = word
            .bytes()
            .map(|b| map[usize::from(b)].to_string())
            .collect();
        let mut acc = spelled[0].clone();
        for piece in &spelled[1..] {
            let merged = format!("{acc}{piece}");
            if seen.insert(merged.clone()) {
                merges.push(format!("{acc} {piece}"));
                tokens.push(merged.clone());
            }
            acc = merged;
        }
    }

    let t = &spec.tokens;
    let n_added = t.user_defined.len() + t.control.len();
    if let Some(n) = n_vocab {
        let n = n as usize;
        let fixed = tokens.len() + n_added;
        if n < fixed {
            return Err(format!(
                "vocabulary size {n} is smaller than the {fixed} byte, merge and special tokens"
            ));
        }
        for i in 0..n - fixed {
            // decodes to " fill<i>": only printable byte-level characters
            let filler = format!("\u{120}fill{i}");
            if !seen.insert(filler.clone()) {
                return Err(format!("filler token {filler:?} is not unique"));
            }
            tokens.push(filler);
        }
    }
    let mut types = vec![TOKEN_NORMAL; tokens.len()];
    for (list, ty) in [
        (&t.user_defined, TOKEN_USER_DEFINED),
        (&t.control, TOKEN_CONTROL),
    ] {
        for tok in list {
            if !seen.insert(tok.clone()) {
                return Err(format!("special token {tok:?} collides with another token"));
            }
            tokens.push(tok.clone());
            types.push(ty);
        }
    }
    Ok(Vocab {
        tokens,
        types,
        merges,
    })
}

// ---------------------------------------------------------------------------------------------
// Language model

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

fn plan_model(
    spec: &ModelSpec,
    scale: Scale,
    dtype: WeightType,
    d: &TextDims,
    vocab: Vocab,
    seed_note: &str,
) -> FilePlan {
    let arch = spec.text_arch;
    let a = arch.as_str();
    let n_vocab = vocab.tokens.len() as u64;
    let n_embd = u64::from(d.n_embd);
    let n_ff = u64::from(d.n_ff);
    let head_dim = u64::from(d.head_dim());
    let n_embd_kv = head_dim * u64::from(d.n_head_kv);

    let mut m: Vec<(String, MetaValue)> = Vec::new();
    let mut kv = |k: &str, v: MetaValue| m.push((k.to_string(), v));
    kv("general.architecture", MetaValue::String(a.into()));
    kv(
        "general.name",
        MetaValue::String(format!("{} (synthetic {scale})", spec.name)),
    );
    kv(
        "general.description",
        MetaValue::String(format!(
            "synthetic {} language model with random weights ({scale}, {dtype}{seed_note})",
            spec.name
        )),
    );
    kv("general.file_type", MetaValue::U32(dtype.file_type()));
    kv("general.quantization_version", MetaValue::U32(2));
    kv(&format!("{a}.vocab_size"), MetaValue::U32(n_vocab as u32));
    kv(&format!("{a}.context_length"), MetaValue::U32(d.n_ctx));
    kv(&format!("{a}.embedding_length"), MetaValue::U32(d.n_embd));
    kv(&format!("{a}.block_count"), MetaValue::U32(d.n_layer));
    kv(&format!("{a}.feed_forward_length"), MetaValue::U32(d.n_ff));
    kv(
        &format!("{a}.attention.head_count"),
        MetaValue::U32(d.n_head),
    );
    kv(
        &format!("{a}.attention.head_count_kv"),
        MetaValue::U32(d.n_head_kv),
    );
    kv(&format!("{a}.rope.freq_base"), MetaValue::F32(d.rope_theta));
    kv(
        &format!("{a}.attention.layer_norm_rms_epsilon"),
        MetaValue::F32(d.rms_eps),
    );
    match arch {
        TextArch::Llama => kv(
            &format!("{a}.rope.dimension_count"),
            MetaValue::U32(d.head_dim()),
        ),
        TextArch::Qwen3 => {
            kv(
                &format!("{a}.attention.key_length"),
                MetaValue::U32(d.head_dim()),
            );
            kv(
                &format!("{a}.attention.value_length"),
                MetaValue::U32(d.head_dim()),
            );
        }
        TextArch::Qwen2 => {}
    }

    // tokenizer
    let t = &spec.tokens;
    let pre = t.pre.clone().unwrap_or_else(|| "default".to_string());
    let id = |text: &str| vocab.id(text);
    let ids: Vec<(&str, Option<u32>)> = vec![
        ("tokenizer.ggml.bos_token_id", id(&t.bos)),
        ("tokenizer.ggml.eos_token_id", id(&t.eos)),
        ("tokenizer.ggml.eot_token_id", id(&t.eot)),
        (
            "tokenizer.ggml.unknown_token_id",
            t.unk.as_deref().and_then(id),
        ),
        (
            "tokenizer.ggml.padding_token_id",
            t.pad.as_deref().and_then(id),
        ),
    ];
    kv("tokenizer.ggml.model", MetaValue::String("gpt2".into()));
    kv("tokenizer.ggml.pre", MetaValue::String(pre));
    let Vocab {
        tokens,
        types,
        merges,
    } = vocab;
    kv(
        "tokenizer.ggml.tokens",
        MetaValue::Array(MetaArray::String(tokens)),
    );
    kv(
        "tokenizer.ggml.token_type",
        MetaValue::Array(MetaArray::I32(types)),
    );
    kv(
        "tokenizer.ggml.merges",
        MetaValue::Array(MetaArray::String(merges)),
    );
    for (key, id) in ids {
        if let Some(id) = id {
            kv(key, MetaValue::U32(id));
        }
    }
    kv("tokenizer.ggml.add_bos_token", MetaValue::Bool(t.add_bos));
    kv("tokenizer.ggml.add_eos_token", MetaValue::Bool(false));
    kv(
        "tokenizer.chat_template",
        MetaValue::String(spec.chat.jinja.clone()),
    );

    // tensors
    let mut ts = Tensors::new(dtype);
    ts.matrix(
        "token_embd.weight".into(),
        [n_embd, n_vocab],
        fan_in(n_embd),
    );
    ts.vector("output_norm.weight".into(), n_embd, ONES);
    if !d.tied_embeddings {
        ts.matrix("output.weight".into(), [n_embd, n_vocab], fan_in(n_embd));
    }
    let n_q = head_dim * u64::from(d.n_head);
    for i in 0..d.n_layer {
        let b = |s: &str| format!("blk.{i}.{s}");
        ts.vector(b("attn_norm.weight"), n_embd, ONES);
        ts.matrix(b("attn_q.weight"), [n_embd, n_q], fan_in(n_embd));
        ts.matrix(b("attn_k.weight"), [n_embd, n_embd_kv], fan_in(n_embd));
        ts.matrix(b("attn_v.weight"), [n_embd, n_embd_kv], fan_in(n_embd));
        if arch == TextArch::Qwen2 {
            ts.vector(b("attn_q.bias"), n_q, BIAS);
            ts.vector(b("attn_k.bias"), n_embd_kv, BIAS);
            ts.vector(b("attn_v.bias"), n_embd_kv, BIAS);
        }
        ts.matrix(
            b("attn_output.weight"),
            [n_q, n_embd],
            residual(n_q, d.n_layer),
        );
        if arch == TextArch::Qwen3 {
            ts.vector(b("attn_q_norm.weight"), head_dim, ONES);
            ts.vector(b("attn_k_norm.weight"), head_dim, ONES);
        }
        ts.vector(b("ffn_norm.weight"), n_embd, ONES);
        ts.matrix(b("ffn_gate.weight"), [n_embd, n_ff], fan_in(n_embd));
        ts.matrix(b("ffn_up.weight"), [n_embd, n_ff], fan_in(n_embd));
        ts.matrix(
            b("ffn_down.weight"),
            [n_ff, n_embd],
            residual(n_ff, d.n_layer),
        );
    }
    FilePlan {
        role: FileRole::Model,
        metadata: m,
        tensors: ts.list,
    }
}

// ---------------------------------------------------------------------------------------------
// Projector

fn plan_mmproj(
    spec: &ModelSpec,
    scale: Scale,
    v: &VisionDims,
    dtype: WeightType,
    seed_note: &str,
) -> FilePlan {
    let e = u64::from(v.n_embd);
    let f = u64::from(v.n_ff);
    let dd = u64::from(v.projector_dim);
    let q = u64::from(spec.query_tokens);
    let p = u64::from(spec.slicing.patch_size);
    let side = u64::from(POS_BUCKETS_PER_SIDE);
    let n_pos = side * side;

    let mut m: Vec<(String, MetaValue)> = Vec::new();
    let mut kv = |k: &str, val: MetaValue| m.push((k.to_string(), val));
    kv("general.architecture", MetaValue::String("clip".into()));
    kv(
        "general.name",
        MetaValue::String(format!("{} vision (synthetic {scale})", spec.name)),
    );
    kv(
        "general.description",
        MetaValue::String(format!(
            "image encoder for MiniCPM-V: synthetic {} projector with random weights \
             ({scale}, {dtype}{seed_note})",
            spec.name
        )),
    );
    kv("general.file_type", MetaValue::U32(dtype.file_type()));
    kv("clip.has_text_encoder", MetaValue::Bool(false));
    kv("clip.has_vision_encoder", MetaValue::Bool(true));
    kv("clip.has_minicpmv_projector", MetaValue::Bool(true));
    kv("clip.projector_type", MetaValue::String("resampler".into()));
    kv(
        "clip.minicpmv_version",
        MetaValue::I32(spec.minicpmv_version),
    );
    kv("clip.minicpmv_query_num", MetaValue::U32(spec.query_tokens));
    kv(
        "clip.vision.image_size",
        MetaValue::U32(spec.slicing.image_size),
    );
    kv(
        "clip.vision.patch_size",
        MetaValue::U32(spec.slicing.patch_size),
    );
    kv("clip.vision.embedding_length", MetaValue::U32(v.n_embd));
    kv("clip.vision.feed_forward_length", MetaValue::U32(v.n_ff));
    kv("clip.vision.projection_dim", MetaValue::U32(0));
    kv("clip.vision.attention.head_count", MetaValue::U32(v.n_head));
    kv(
        "clip.vision.attention.layer_norm_epsilon",
        MetaValue::F32(v.layer_norm_eps),
    );
    kv("clip.vision.block_count", MetaValue::U32(v.n_layer));
    kv(
        "clip.vision.image_mean",
        MetaValue::Array(MetaArray::F32(spec.normalize.mean.to_vec())),
    );
    kv(
        "clip.vision.image_std",
        MetaValue::Array(MetaArray::F32(spec.normalize.std.to_vec())),
    );
    kv("clip.use_gelu", MetaValue::Bool(true));

    let mut ts = Tensors::new(dtype);
    // SigLIP
    ts.fixed(
        "v.patch_embd.weight".into(),
        &[p, p, 3, e],
        GgmlType::F16,
        fan_in(p * p * 3),
    );
    ts.vector("v.patch_embd.bias".into(), e, BIAS);
    ts.matrix(
        "v.position_embd.weight".into(),
        [e, n_pos],
        Init::Random { std: 0.5 },
    );
    for i in 0..v.n_layer {
        let b = |s: &str| format!("v.blk.{i}.{s}");
        for name in ["attn_q", "attn_k", "attn_v", "attn_out"] {
            let init = if name == "attn_out" {
                residual(e, v.n_layer)
            } else {
                fan_in(e)
            };
            ts.matrix(b(&format!("{name}.weight")), [e, e], init);
            ts.vector(b(&format!("{name}.bias")), e, BIAS);
        }
        ts.vector(b("ln1.weight"), e, ONES);
        ts.vector(b("ln1.bias"), e, ZEROS);
        ts.matrix(b("ffn_up.weight"), [e, f], fan_in(e));
        ts.vector(b("ffn_up.bias"), f, BIAS);
        ts.matrix(b("ffn_down.weight"), [f, e], residual(f, v.n_layer));
        ts.vector(b("ffn_down.bias"), e, BIAS);
        ts.vector(b("ln2.weight"), e, ONES);
        ts.vector(b("ln2.bias"), e, ZEROS);
    }
    ts.vector("v.post_ln.weight".into(), e, ONES);
    ts.vector("v.post_ln.bias".into(), e, ZEROS);
    // resampler
    ts.fixed(
        "resampler.query".into(),
        &[dd, q],
        GgmlType::F32,
        Init::Random { std: 1.0 },
    );
    ts.matrix("resampler.kv.weight".into(), [e, dd], fan_in(e));
    for name in ["q", "k", "v", "out"] {
        // q/k at twice the unit scale: attention logits with std ~4, so each query attends to
        // its own few patches instead of an even average over all of them
        let init = match name {
            "q" | "k" => Init::Random {
                std: 2.0 / (dd as f32).sqrt(),
            },
            _ => fan_in(dd),
        };
        ts.matrix(format!("resampler.attn.{name}.weight"), [dd, dd], init);
        ts.vector(format!("resampler.attn.{name}.bias"), dd, BIAS);
    }
    for name in ["q", "kv", "post"] {
        ts.vector(format!("resampler.ln_{name}.weight"), dd, ONES);
        ts.vector(format!("resampler.ln_{name}.bias"), dd, ZEROS);
    }
    ts.matrix("resampler.proj.weight".into(), [dd, dd], fan_in(dd));
    ts.fixed(
        "resampler.pos_embed_k".into(),
        &[dd, n_pos],
        GgmlType::F32,
        Init::SinCos2d { dim: dd, side },
    );
    FilePlan {
        role: FileRole::Mmproj,
        metadata: m,
        tensors: ts.list,
    }
}

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
    let plan = plan_with_seed(opts.version, opts.scale, dims, opts.dtype, Some(opts.seed))?;
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

fn elem_size(ty: GgmlType) -> u64 {
    match ty {
        GgmlType::F16 => 2,
        _ => 4,
    }
}

/// SplitMix64 step (seeding).
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a, 64 bit.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01B3);
        }
        h ^= 0xFF;
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

/// xoshiro256++ (Blackman & Vigna), a small fast PRNG with a fixed, documented output.
#[derive(Debug, Clone)]
struct Xoshiro256pp {
    s: [u64; 4],
}

impl Xoshiro256pp {
    fn new(seed: u64) -> Self {
        let mut sm = seed;
        let s = [
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
        ];
        Xoshiro256pp { s }
    }

    #[inline(always)]
    fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }
}

/// The value of a 16-bit draw: the midpoint of step `r` of a uniform on `[-a, a]`,
/// `a = std * sqrt(3)`.
fn grid_value(r: u16, std: f32) -> f32 {
    let a = std * 3f32.sqrt();
    ((f32::from(r) + 0.5) / 65536.0 * 2.0 - 1.0) * a
}

/// Per-std lookup tables from a 16-bit draw to the output bytes (little-endian).
#[derive(Default)]
struct TableCache {
    f16: Vec<(u32, Vec<[u8; 2]>)>,
    f32: Vec<(u32, Vec<[u8; 4]>)>,
}

impl TableCache {
    fn f16(&mut self, std: f32) -> &[[u8; 2]] {
        let key = std.to_bits();
        let pos = match self.f16.iter().position(|(k, _)| *k == key) {
            Some(p) => p,
            None => {
                let table = (0..=u16::MAX)
                    .map(|r| half::f16::from_f32(grid_value(r, std)).to_le_bytes())
                    .collect();
                self.f16.push((key, table));
                self.f16.len() - 1
            }
        };
        &self.f16[pos].1
    }

    fn f32(&mut self, std: f32) -> &[[u8; 4]] {
        let key = std.to_bits();
        let pos = match self.f32.iter().position(|(k, _)| *k == key) {
            Some(p) => p,
            None => {
                let table = (0..=u16::MAX)
                    .map(|r| grid_value(r, std).to_le_bytes())
                    .collect();
                self.f32.push((key, table));
                self.f32.len() - 1
            }
        };
        &self.f32[pos].1
    }
}

/// Produces one tensor's bytes sequentially, in chunks of any size that is a multiple of the
/// element size; the output does not depend on the chunking.
struct Generator<'a> {
    kind: GenKind<'a>,
    /// Index of the next element.
    pos: u64,
}

enum GenKind<'a> {
    RandomF16 {
        rng: Xoshiro256pp,
        lanes: u64,
        n_lanes: u32,
        table: &'a [[u8; 2]],
    },
    RandomF32 {
        rng: Xoshiro256pp,
        lanes: u64,
        n_lanes: u32,
        table: &'a [[u8; 4]],
    },
    Const(Vec<u8>),
    SinCos {
        dim: u64,
        side: u64,
        f16: bool,
    },
}

impl<'a> Generator<'a> {
    fn new(t: &TensorSpec, role: FileRole, seed: u64, tables: &'a mut TableCache) -> Self {
        let f16 = t.ty == GgmlType::F16;
        let kind = match t.init {
            Init::Random { std } => {
                let stream = fnv1a(&[role.tag().as_bytes(), t.name.as_bytes()]);
                let rng = Xoshiro256pp::new(seed ^ stream);
                if f16 {
                    GenKind::RandomF16 {
                        rng,
                        lanes: 0,
                        n_lanes: 0,
                        table: tables.f16(std),
                    }
                } else {
                    GenKind::RandomF32 {
                        rng,
                        lanes: 0,
                        n_lanes: 0,
                        table: tables.f32(std),
                    }
                }
            }
            Init::Const(c) => GenKind::Const(if f16 {
                half::f16::from_f32(c).to_le_bytes().to_vec()
            } else {
                c.to_le_bytes().to_vec()
            }),
            Init::SinCos2d { dim, side } => GenKind::SinCos { dim, side, f16 },
        };
        Generator { kind, pos: 0 }
    }

    /// Fills `buf` with the next `buf.len() / elem_size` elements.
    fn fill(&mut self, buf: &mut [u8]) {
        let size = match &mut self.kind {
            GenKind::RandomF16 {
                rng,
                lanes,
                n_lanes,
                table,
            } => {
                fill_random(buf, rng, lanes, n_lanes, table);
                2
            }
            GenKind::RandomF32 {
                rng,
                lanes,
                n_lanes,
                table,
            } => {
                fill_random(buf, rng, lanes, n_lanes, table);
                4
            }
            GenKind::Const(bytes) => {
                for out in buf.chunks_exact_mut(bytes.len()) {
                    out.copy_from_slice(bytes);
                }
                bytes.len()
            }
            GenKind::SinCos { dim, side, f16 } => {
                let size = if *f16 { 2 } else { 4 };
                for (k, out) in buf.chunks_exact_mut(size).enumerate() {
                    let v = sincos_value(self.pos + k as u64, *dim, *side);
                    if *f16 {
                        out.copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
                    } else {
                        out.copy_from_slice(&v.to_le_bytes());
                    }
                }
                size
            }
        };
        self.pos += (buf.len() / size) as u64;
    }
}

/// Fills `buf` with elements of `N` bytes, one per 16-bit lane of the PRNG output (4 lanes per
/// draw, low lane first); unused lanes carry over to the next call, so chunking does not change
/// the output.
fn fill_random<const N: usize>(
    buf: &mut [u8],
    rng: &mut Xoshiro256pp,
    lanes: &mut u64,
    n_lanes: &mut u32,
    table: &[[u8; N]],
) {
    let n = buf.len() / N;
    let mut i = 0;
    while i < n && *n_lanes > 0 {
        buf[i * N..(i + 1) * N].copy_from_slice(&table[(*lanes & 0xFFFF) as usize]);
        *lanes >>= 16;
        *n_lanes -= 1;
        i += 1;
    }
    let mut quads = buf[i * N..n * N].chunks_exact_mut(4 * N);
    for q in &mut quads {
        let r = rng.next_u64();
        q[..N].copy_from_slice(&table[(r & 0xFFFF) as usize]);
        q[N..2 * N].copy_from_slice(&table[((r >> 16) & 0xFFFF) as usize]);
        q[2 * N..3 * N].copy_from_slice(&table[((r >> 32) & 0xFFFF) as usize]);
        q[3 * N..].copy_from_slice(&table[(r >> 48) as usize]);
    }
    let tail = quads.into_remainder();
    if !tail.is_empty() {
        let mut r = rng.next_u64();
        let m = tail.len() / N;
        for out in tail.chunks_exact_mut(N) {
            out.copy_from_slice(&table[(r & 0xFFFF) as usize]);
            r >>= 16;
        }
        *lanes = r;
        *n_lanes = 4 - m as u32;
    }
}

/// Element `k` of the converter's `get_2d_sincos_pos_embed(dim, (side, side))`, stored
/// `[dim, side*side]` (row `m = i*side + j` for grid row `i`, column `j`): the first half of a
/// row encodes the column `j`, the second half the row `i`; each half is `sin` then `cos` of
/// `pos * 10000^(-k/(dim/4))`.
fn sincos_value(k: u64, dim: u64, side: u64) -> f32 {
    let m = k / dim;
    let e = k % dim;
    let (i, j) = (m / side, m % side);
    let half = dim / 2;
    let quarter = dim / 4;
    let (pos, e) = if e < half { (j, e) } else { (i, e - half) };
    let (f, idx) = if e < quarter {
        (0, e)
    } else {
        (1, e - quarter)
    };
    let omega = 1.0 / 10000f64.powf(idx as f64 / quarter as f64);
    let x = pos as f64 * omega;
    (if f == 0 { x.sin() } else { x.cos() }) as f32
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
    })
    .unwrap_or_else(|e| panic!("synth: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::GgufFile;

    fn meta_type(v: &MetaValue) -> &'static str {
        match v {
            MetaValue::U8(_) => "u8",
            MetaValue::I8(_) => "i8",
            MetaValue::U16(_) => "u16",
            MetaValue::I16(_) => "i16",
            MetaValue::U32(_) => "u32",
            MetaValue::I32(_) => "i32",
            MetaValue::F32(_) => "f32",
            MetaValue::Bool(_) => "bool",
            MetaValue::String(_) => "string",
            MetaValue::U64(_) => "u64",
            MetaValue::I64(_) => "i64",
            MetaValue::F64(_) => "f64",
            MetaValue::Array(MetaArray::F32(_)) => "[f32]",
            MetaValue::Array(MetaArray::I32(_)) => "[i32]",
            MetaValue::Array(MetaArray::String(_)) => "[string]",
            MetaValue::Array(_) => "[other]",
        }
    }

    /// Keys and the value types llama.cpp reads them with (clip.cpp get_u32/get_i32/get_f32/
    /// get_bool/get_arr_f32; llama-model-loader get_key).
    const MMPROJ_KEYS: [(&str, &str); 18] = [
        ("general.architecture", "string"),
        ("general.file_type", "u32"),
        ("clip.projector_type", "string"),
        ("clip.has_vision_encoder", "bool"),
        ("clip.use_gelu", "bool"),
        ("clip.minicpmv_version", "i32"),
        ("clip.minicpmv_query_num", "u32"),
        ("clip.vision.image_size", "u32"),
        ("clip.vision.patch_size", "u32"),
        ("clip.vision.embedding_length", "u32"),
        ("clip.vision.feed_forward_length", "u32"),
        ("clip.vision.block_count", "u32"),
        ("clip.vision.projection_dim", "u32"),
        ("clip.vision.attention.head_count", "u32"),
        ("clip.vision.attention.layer_norm_epsilon", "f32"),
        ("clip.vision.image_mean", "[f32]"),
        ("clip.vision.image_std", "[f32]"),
        ("general.name", "string"),
    ];

    fn text_keys(arch: &str) -> Vec<(String, &'static str)> {
        let mut v: Vec<(String, &'static str)> = [
            ("context_length", "u32"),
            ("embedding_length", "u32"),
            ("block_count", "u32"),
            ("feed_forward_length", "u32"),
            ("attention.head_count", "u32"),
            ("attention.head_count_kv", "u32"),
            ("rope.freq_base", "f32"),
            ("attention.layer_norm_rms_epsilon", "f32"),
        ]
        .iter()
        .map(|(k, t)| (format!("{arch}.{k}"), *t))
        .collect();
        for (k, t) in [
            ("general.architecture", "string"),
            ("general.file_type", "u32"),
            ("tokenizer.ggml.model", "string"),
            ("tokenizer.ggml.pre", "string"),
            ("tokenizer.ggml.tokens", "[string]"),
            ("tokenizer.ggml.token_type", "[i32]"),
            ("tokenizer.ggml.merges", "[string]"),
            ("tokenizer.ggml.bos_token_id", "u32"),
            ("tokenizer.ggml.eos_token_id", "u32"),
            ("tokenizer.ggml.eot_token_id", "u32"),
            ("tokenizer.ggml.padding_token_id", "u32"),
            ("tokenizer.ggml.add_bos_token", "bool"),
            ("tokenizer.chat_template", "string"),
        ] {
            v.push((k.to_string(), t));
        }
        v
    }

    fn check_types(file: &GgufFile, keys: &[(String, &'static str)]) {
        for (k, ty) in keys {
            let v = file
                .get(k)
                .unwrap_or_else(|| panic!("{}: missing {k}", file.path.display()));
            assert_eq!(meta_type(v), *ty, "{}: {k}", file.path.display());
        }
    }

    fn tiny(version: Version, dir: &Path, seed: u64) -> SynthOutput {
        synth(&SynthOptions {
            version,
            scale: Scale::Tiny,
            out_dir: dir.to_path_buf(),
            dtype: WeightType::F16,
            seed,
        })
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn tiny_pairs_for_all_versions() {
        let tmp = tempfile::tempdir().expect("tempdir");
        for v in Version::ALL {
            let spec = family::spec(v);
            let dir = tmp.path().join(v.id());
            let out = tiny(v, &dir, 7);
            let p = plan(v, Scale::Tiny, WeightType::F16).expect("plan");
            for (path, bytes) in [
                (&out.model, out.model_bytes),
                (&out.mmproj, out.mmproj_bytes),
            ] {
                assert_eq!(std::fs::metadata(path).expect("exists").len(), bytes);
                assert!((100_000..20_000_000).contains(&bytes), "{v}: {bytes} bytes");
            }

            let m = GgufFile::open(&out.model).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(m.architecture(), Some(spec.text_arch.as_str()));
            check_types(&m, &text_keys(spec.text_arch.as_str()));
            assert_eq!(m.tensors.len(), p.model.tensors.len());
            assert_eq!(m.n_params(), out.text_params);
            let d = spec.text.tiny;
            let n_tensors_per_layer = match spec.text_arch {
                TextArch::Llama => 9,
                TextArch::Qwen2 => 12,
                TextArch::Qwen3 => 11,
            };
            assert_eq!(
                m.tensors.len(),
                3 + n_tensors_per_layer * d.n_layer as usize,
                "{v}"
            );
            let tokens = m.get_str_array("tokenizer.ggml.tokens").expect("tokens");
            let emb = m.tensor("token_embd.weight").expect("token_embd");
            assert_eq!(emb.dims, vec![u64::from(d.n_embd), tokens.len() as u64]);
            for (name, text) in spec.tokens.roles() {
                let key = match name {
                    "bos" => "tokenizer.ggml.bos_token_id",
                    "eos" => "tokenizer.ggml.eos_token_id",
                    "eot" => "tokenizer.ggml.eot_token_id",
                    "pad" => "tokenizer.ggml.padding_token_id",
                    "unk" => "tokenizer.ggml.unknown_token_id",
                    _ => continue,
                };
                let id = m.get_u64(key).expect("id") as usize;
                assert_eq!(tokens[id], text, "{v} {name}");
            }
            let types = match m.get("tokenizer.ggml.token_type") {
                Some(MetaValue::Array(MetaArray::I32(t))) => t.clone(),
                _ => panic!("token types"),
            };
            for special in &spec.tokens.control {
                let id = tokens
                    .iter()
                    .position(|t| t == special)
                    .expect("special present");
                assert_eq!(types[id], TOKEN_CONTROL, "{v} {special}");
            }
            let uniq: std::collections::HashSet<&String> = tokens.iter().collect();
            assert_eq!(uniq.len(), tokens.len(), "{v}: token strings are unique");
            assert!(tokens.iter().any(|t| t == "\u{10A}"), "newline byte token");

            let mp = GgufFile::open(&out.mmproj).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(mp.architecture(), Some("clip"));
            let keys: Vec<(String, &str)> = MMPROJ_KEYS
                .iter()
                .map(|(k, t)| (k.to_string(), *t))
                .collect();
            check_types(&mp, &keys);
            assert_eq!(
                mp.get_i64("clip.minicpmv_version"),
                Some(i64::from(spec.minicpmv_version))
            );
            assert_eq!(
                mp.get_u64("clip.minicpmv_query_num"),
                Some(u64::from(spec.query_tokens))
            );
            let vd = spec.vision.tiny;
            assert_eq!(mp.tensors.len(), 5 + 16 * vd.n_layer as usize + 18, "{v}");
            assert_eq!(mp.tensors.len(), p.mmproj.tensors.len());
            assert_eq!(mp.n_params(), out.vision_params);
            let proj = mp.tensor("resampler.proj.weight").expect("proj");
            assert_eq!(proj.dims[0], u64::from(d.n_embd), "mmproj width == n_embd");
            let query = mp.tensor("resampler.query").expect("query");
            assert_eq!(query.dims, vec![128, u64::from(spec.query_tokens)]);
            assert_eq!(
                mp.tensor("v.patch_embd.weight").expect("patch").dims,
                vec![14, 14, 3, 32]
            );
            assert_eq!(
                mp.tensor("v.position_embd.weight").expect("pos").dims,
                vec![32, 4900]
            );
        }
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let a = tiny(Version::V2_6, &tmp.path().join("a"), 42);
        let b = tiny(Version::V2_6, &tmp.path().join("b"), 42);
        let c = tiny(Version::V2_6, &tmp.path().join("c"), 43);
        let read = |p: &Path| std::fs::read(p).expect("read");
        assert_eq!(read(&a.model), read(&b.model));
        assert_eq!(read(&a.mmproj), read(&b.mmproj));
        assert_ne!(read(&a.model), read(&c.model));
        assert_ne!(read(&a.mmproj), read(&c.mmproj));
    }

    #[test]
    fn weights_are_finite_varied_and_as_planned() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let out = tiny(Version::V4_5, tmp.path(), 1);
        let f = GgufFile::open(&out.mmproj).expect("open");
        let p = plan(Version::V4_5, Scale::Tiny, WeightType::F16).expect("plan");
        for t in &f.tensors {
            let bytes = f.read_tensor_bytes(t).expect("read");
            let vals: Vec<f32> = match t.ggml_type {
                GgmlType::F16 => bytes
                    .chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
                _ => bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            };
            assert!(vals.iter().all(|x| x.is_finite()), "{}", t.name);
            match p.mmproj.tensor(&t.name).expect("planned").init {
                Init::Random { std } => {
                    let n = vals.len() as f64;
                    let mean = vals.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
                    let var = vals
                        .iter()
                        .map(|&x| (f64::from(x) - mean).powi(2))
                        .sum::<f64>()
                        / n;
                    assert!(
                        mean.abs() < 0.2 * f64::from(std) + 0.01,
                        "{} mean {mean}",
                        t.name
                    );
                    if vals.len() >= 1000 {
                        let ratio = var.sqrt() / f64::from(std);
                        assert!((0.9..1.1).contains(&ratio), "{} std ratio {ratio}", t.name);
                    }
                }
                Init::Const(c) => assert!(vals.iter().all(|&x| x == c), "{}", t.name),
                Init::SinCos2d { .. } => {
                    assert!(vals.iter().all(|x| x.abs() <= 1.0));
                    // position 0: sin(0) = 0 then cos(0) = 1 in each half
                    assert_eq!(vals[0], 0.0);
                    assert_eq!(vals[32], 1.0);
                    assert_eq!(vals[64], 0.0);
                }
            }
        }
    }

    #[test]
    fn chunking_does_not_change_the_stream() {
        let t = TensorSpec {
            name: "x".into(),
            dims: vec![1001],
            ty: GgmlType::F16,
            init: Init::Random { std: 0.1 },
        };
        let mut tables = TableCache::default();
        let mut whole = vec![0u8; 2002];
        Generator::new(&t, FileRole::Model, 5, &mut tables).fill(&mut whole);
        let mut tables = TableCache::default();
        let mut g = Generator::new(&t, FileRole::Model, 5, &mut tables);
        let mut parts = vec![0u8; 2002];
        let mut at = 0;
        for step in [2usize, 6, 10, 14, 1000, 970] {
            g.fill(&mut parts[at..at + step]);
            at += step;
        }
        assert_eq!(at, 2002);
        assert_eq!(whole, parts);
    }

    #[test]
    fn real_2_6_parameter_counts() {
        let p = plan(Version::V2_6, Scale::Real, WeightType::F16).expect("plan");
        let text = p.model.n_params() as f64;
        let vision = p.mmproj.n_params() as f64;
        assert!((text - 7.6e9).abs() < 0.1e9, "text params {text}");
        assert!((0.4e9..0.55e9).contains(&vision), "vision params {vision}");
        match p.model.get("tokenizer.ggml.tokens") {
            Some(MetaValue::Array(MetaArray::String(t))) => assert_eq!(t.len(), 151_666),
            _ => panic!("tokens"),
        }
        // F16 text model is ~15 GB
        let bytes = p.model.data_bytes() as f64;
        assert!((14.5e9..15.8e9).contains(&bytes), "{bytes}");
        assert_eq!(
            p.model.tensor("output.weight").expect("output").dims,
            vec![3584, 151_666]
        );
        assert_eq!(
            p.mmproj.tensor("resampler.pos_embed_k").expect("k").dims,
            vec![3584, 4900]
        );
    }

    #[test]
    fn real_plans_for_all_versions() {
        for v in Version::ALL {
            let s = family::spec(v);
            let p = plan(v, Scale::Real, WeightType::F16).expect("plan");
            let n_tok = match p.model.get("tokenizer.ggml.tokens") {
                Some(MetaValue::Array(MetaArray::String(t))) => t.len() as u32,
                _ => panic!("tokens"),
            };
            assert_eq!(Some(n_tok), s.text.real.n_vocab, "{v}");
            for t in p.model.tensors.iter().chain(&p.mmproj.tensors) {
                let want = if t.name == "v.patch_embd.weight"
                    || t.dims.len() == 2 && t.name.ends_with(".weight")
                {
                    GgmlType::F16
                } else {
                    GgmlType::F32
                };
                assert_eq!(t.ty, want, "{v} {}", t.name);
            }
        }
        // F32 keeps only the conv kernel in F16
        let p = plan(Version::V2_5, Scale::Tiny, WeightType::F32).expect("plan");
        for t in p.model.tensors.iter().chain(&p.mmproj.tensors) {
            let want = if t.name == "v.patch_embd.weight" {
                GgmlType::F16
            } else {
                GgmlType::F32
            };
            assert_eq!(t.ty, want, "{}", t.name);
        }
    }
}
