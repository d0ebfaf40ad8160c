//! The MiniCPM-V model family as data.
//!
//! Every supported version is described by one TOML file under `models/`, embedded into the
//! binary with `include_str!` and parsed once (serde, `deny_unknown_fields`). The runtime uses
//! the parsed [`ModelSpec`] for prompt formatting, image-token layout and consistency checks;
//! [`crate::tools::synth`] uses it to build synthetic GGUF pairs with the right shapes.
//!
//! # TOML format
//!
//! ```toml
//! id = "2.6"                    # CLI id, see `Version`
//! name = "MiniCPM-V 2.6"        # display name
//! minicpmv_version = 3          # `clip.minicpmv_version` of the mmproj (INT32)
//! text_arch = "qwen2"           # `general.architecture` of the language model: llama|qwen2|qwen3
//! query_tokens = 64             # resampler queries = embeddings per slice (`clip.minicpmv_query_num`)
//!
//! [download]                    # where the official files live (informative)
//! hf_repo, gguf_repo, model_file, mmproj_file
//!
//! [slicing]                     # llava-uhd slicing as implemented by llama.cpp
//! image_size = 448, patch_size = 14, max_slices = 9
//!
//! [normalize]                   # per-channel pixel normalisation (`clip.vision.image_mean/std`)
//! mean = [..3], std = [..3]
//!
//! [tokens]                      # tokenizer facts and special-token texts
//! model = "gpt2"                # tokenizer.ggml.model of the official GGUF ("gpt2" or "llama")
//! pre = "qwen2"                 # tokenizer.ggml.pre (omitted for SentencePiece vocabularies)
//! add_bos = false               # whether tokenization prepends BOS
//! bos, eos, eot, pad, unk       # role -> token text (pad/unk optional)
//! image_start, image_end, slice_start, slice_end   # image markers used by the token layout
//! control = [...]               # every special (CONTROL, type 3) token text, in vocabulary order;
//!                               # all role texts above must be listed here
//! user_defined = [...]          # added tokens that are not special (USER_DEFINED, type 4)
//!
//! [chat]                        # prompt format, see `ChatTemplate`
//! default_system = "..."        # optional: system text used when a conversation has none
//! system / user / assistant     # one turn each; `{content}` is replaced by the message text
//! generation_prompt = "..."     # appended to ask the model for the assistant turn
//! user_content = "{image}{prompt}"  # a user message with images: `{image}` = the media
//!                               # markers (one `<__media__>` per image), `{prompt}` = user text
//! stop = [...]                  # texts that end generation
//! jinja = '''...'''             # tokenizer.chat_template written into synthetic GGUFs
//! [chat.thinking]               # optional (4.5): open/close tags, `disabled` prefix
//!
//! [text.real] / [text.tiny]     # language model dimensions, see `TextDims`
//! [vision.real] / [vision.tiny] # vision tower + resampler dimensions, see `VisionDims`
//! ```
//!
//! Placeholders are substituted in a single pass, so user text containing `{content}` or
//! `{prompt}` is never re-expanded.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// The media marker llama.cpp's mtmd uses in prompt text (`mtmd_default_marker()`).
pub const MEDIA_MARKER: &str = "<__media__>";

/// The `clip.minicpmv_version` values llama.cpp's mtmd accepts for the resampler projector
/// (tools/mtmd/mtmd.cpp:649-681: 2 with the 2.5 layout, the others with the 2.6 layout).
pub const RESAMPLER_VERSIONS: [i32; 6] = [2, 3, 4, 5, 6, 100045];

/// Resampler attention head width, hard-coded in llama.cpp (`tools/mtmd/models/minicpmv.cpp`,
/// `d_head = 128`): the projector width must be a multiple of it.
pub const RESAMPLER_HEAD_DIM: u32 = 128;

/// Side of the fixed SigLIP position-bucket grid (`clip.cpp`: `70*i/pos_h`), so
/// `v.position_embd.weight` has `70 * 70 = 4900` rows.
pub const POS_BUCKETS_PER_SIDE: u32 = 70;

/// A supported MiniCPM-V version, named by its CLI id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Version {
    /// MiniCPM-Llama3-V 2.5 (`"2.5"`, minicpmv_version 2).
    V2_5,
    /// MiniCPM-V 2.6 (`"2.6"`, minicpmv_version 3).
    V2_6,
    /// MiniCPM-o 2.6, vision only (`"o2.6"`, minicpmv_version 4).
    O2_6,
    /// MiniCPM-V 4.0 (`"4.0"`, minicpmv_version 5).
    V4_0,
    /// MiniCPM-V 4.5 (`"4.5"`, minicpmv_version 6).
    V4_5,
    /// MiniCPM-o 4.5, vision only (`"o4.5"`, minicpmv_version 100045).
    O4_5,
}

impl Version {
    /// All versions, oldest first.
    pub const ALL: [Version; 6] = [
        Version::V2_5,
        Version::V2_6,
        Version::O2_6,
        Version::V4_0,
        Version::V4_5,
        Version::O4_5,
    ];

    /// The CLI id: `"2.5"`, `"2.6"`, `"o2.6"`, `"4.0"`, `"4.5"` or `"o4.5"`.
    pub fn id(self) -> &'static str {
        match self {
            Version::V2_5 => "2.5",
            Version::V2_6 => "2.6",
            Version::O2_6 => "o2.6",
            Version::V4_0 => "4.0",
            Version::V4_5 => "4.5",
            Version::O4_5 => "o4.5",
        }
    }

    /// The version for a `clip.minicpmv_version` value read from an mmproj.
    pub fn from_minicpmv_version(v: i64) -> Option<Version> {
        Version::ALL
            .into_iter()
            .find(|ver| i64::from(ver.spec().minicpmv_version) == v)
    }

    /// The `clip.minicpmv_version` of this version's mmproj.
    pub fn minicpmv_version(self) -> i32 {
        self.spec().minicpmv_version
    }

    /// This version's specification.
    pub fn spec(self) -> &'static ModelSpec {
        spec(self)
    }

    fn index(self) -> usize {
        match self {
            Version::V2_5 => 0,
            Version::V2_6 => 1,
            Version::O2_6 => 2,
            Version::V4_0 => 3,
            Version::V4_5 => 4,
            Version::O4_5 => 5,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// A string that is not a version id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown MiniCPM-V version {given:?} (expected one of 2.5, 2.6, o2.6, 4.0, 4.5, o4.5)")]
pub struct UnknownVersion {
    /// The text that was given.
    pub given: String,
}

impl FromStr for Version {
    type Err = UnknownVersion;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Version::ALL
            .into_iter()
            .find(|v| v.id() == s)
            .ok_or_else(|| UnknownVersion {
                given: s.to_string(),
            })
    }
}

impl TryFrom<String> for Version {
    type Error = UnknownVersion;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Version> for String {
    fn from(v: Version) -> String {
        v.id().to_string()
    }
}

/// `general.architecture` of the language model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TextArch {
    /// `llama` (2.5: Llama-3-8B; 4.0: MiniCPM4-3B as LlamaForCausalLM).
    Llama,
    /// `qwen2` (2.6, o2.6).
    Qwen2,
    /// `qwen3` (4.5).
    Qwen3,
}

impl TextArch {
    /// The GGUF architecture name (also the metadata key prefix).
    pub fn as_str(self) -> &'static str {
        match self {
            TextArch::Llama => "llama",
            TextArch::Qwen2 => "qwen2",
            TextArch::Qwen3 => "qwen3",
        }
    }
}

impl fmt::Display for TextArch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which set of dimensions to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scale {
    /// A minimal model that loads and runs in milliseconds (tests, fixtures).
    Tiny,
    /// The real model's shapes (memory planning, realistic synthetic files).
    Real,
}

impl fmt::Display for Scale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scale::Tiny => "tiny",
            Scale::Real => "real",
        })
    }
}

impl FromStr for Scale {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tiny" => Ok(Scale::Tiny),
            "real" => Ok(Scale::Real),
            other => Err(format!("unknown scale {other:?} (expected tiny or real)")),
        }
    }
}

/// The parsed contents of one `models/*.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// The version (TOML key `id`, the CLI id).
    #[serde(rename = "id")]
    pub version: Version,
    /// Display name, e.g. "MiniCPM-V 2.6".
    pub name: String,
    /// `clip.minicpmv_version` written by the converters (one of [`RESAMPLER_VERSIONS`]).
    pub minicpmv_version: i32,
    /// Architecture of the language model.
    pub text_arch: TextArch,
    /// Embeddings per image slice (resampler queries).
    pub query_tokens: u32,
    /// Where the official files are published.
    pub download: Download,
    /// Image slicing parameters.
    pub slicing: Slicing,
    /// Pixel normalisation.
    pub normalize: Normalize,
    /// Tokenizer facts and special tokens.
    pub tokens: TokenSpec,
    /// Prompt format.
    pub chat: ChatTemplate,
    /// Language model dimensions.
    pub text: Scaled<TextDims>,
    /// Vision tower and resampler dimensions.
    pub vision: Scaled<VisionDims>,
}

/// Official download locations (informative; file names as published by OpenBMB).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Download {
    /// Hugging Face repository of the PyTorch checkpoint.
    pub hf_repo: String,
    /// Hugging Face repository of the GGUF files.
    pub gguf_repo: String,
    /// Default language-model file in `gguf_repo`.
    pub model_file: String,
    /// Default mmproj file in `gguf_repo`.
    pub mmproj_file: String,
}

/// llava-uhd slicing parameters (see DESIGN §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slicing {
    /// Side of the overview and the reference slice area (448).
    pub image_size: u32,
    /// ViT patch side (14).
    pub patch_size: u32,
    /// Maximum number of slices besides the overview (llama.cpp: 9).
    pub max_slices: u32,
}

/// Per-channel (R, G, B) normalisation: `(x / 255 - mean) / std`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalize {
    /// Channel means.
    pub mean: [f32; 3],
    /// Channel standard deviations.
    pub std: [f32; 3],
}

/// Tokenizer facts and the texts of the special tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSpec {
    /// `tokenizer.ggml.model` of the official GGUF: `"gpt2"` (byte-level BPE) or `"llama"`
    /// (SentencePiece). Synthetic files always use `"gpt2"`.
    pub model: String,
    /// `tokenizer.ggml.pre` of the official GGUF (BPE only).
    #[serde(default)]
    pub pre: Option<String>,
    /// Whether tokenization prepends the BOS token.
    pub add_bos: bool,
    /// Beginning-of-sequence token.
    pub bos: String,
    /// End-of-sequence token.
    pub eos: String,
    /// End-of-turn token.
    pub eot: String,
    /// Padding token.
    #[serde(default)]
    pub pad: Option<String>,
    /// Unknown token.
    #[serde(default)]
    pub unk: Option<String>,
    /// Opens an overview image (and, for 2.5, every slice).
    pub image_start: String,
    /// Closes an overview image (and, for 2.5, every slice).
    pub image_end: String,
    /// Opens a slice (2.6+) or the slice group (2.5).
    pub slice_start: String,
    /// Closes a slice (2.6+) or the slice group (2.5).
    pub slice_end: String,
    /// Every CONTROL token text, in vocabulary order.
    pub control: Vec<String>,
    /// Added tokens that are not special (USER_DEFINED).
    #[serde(default)]
    pub user_defined: Vec<String>,
}

impl TokenSpec {
    /// The role texts, named, for checks and error messages.
    pub fn roles(&self) -> Vec<(&'static str, &str)> {
        let mut v = vec![
            ("bos", self.bos.as_str()),
            ("eos", self.eos.as_str()),
            ("eot", self.eot.as_str()),
            ("image_start", self.image_start.as_str()),
            ("image_end", self.image_end.as_str()),
            ("slice_start", self.slice_start.as_str()),
            ("slice_end", self.slice_end.as_str()),
        ];
        if let Some(p) = &self.pad {
            v.push(("pad", p.as_str()));
        }
        if let Some(u) = &self.unk {
            v.push(("unk", u.as_str()));
        }
        v
    }

    /// The four image marker texts the token layout needs.
    pub fn image_markers(&self) -> [&str; 4] {
        [
            &self.image_start,
            &self.image_end,
            &self.slice_start,
            &self.slice_end,
        ]
    }
}

/// Optional thinking-mode tags (MiniCPM-V 4.5 / Qwen3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thinking {
    /// Opening tag of a reasoning block.
    pub open: String,
    /// Closing tag of a reasoning block.
    pub close: String,
    /// Text appended after the generation prompt to switch thinking off.
    pub disabled: String,
}

/// The prompt format of one version (see the module docs for the TOML keys).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatTemplate {
    /// System text used when a conversation does not start with a system message.
    #[serde(default)]
    pub default_system: Option<String>,
    /// System turn, with `{content}`.
    pub system: String,
    /// User turn, with `{content}`.
    pub user: String,
    /// Assistant turn (a finished one, in history), with `{content}`.
    pub assistant: String,
    /// Opens the assistant turn the model is asked to write.
    pub generation_prompt: String,
    /// A user message with images: `{image}` = media markers, `{prompt}` = user text.
    pub user_content: String,
    /// Texts that end generation.
    pub stop: Vec<String>,
    /// The Jinja `tokenizer.chat_template` written into synthetic GGUFs.
    pub jinja: String,
    /// Thinking-mode tags, when the model has them.
    #[serde(default)]
    pub thinking: Option<Thinking>,
}

/// A pair of dimension sets: the real model and the tiny test model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scaled<T> {
    /// The real model's dimensions.
    pub real: T,
    /// The tiny test model's dimensions.
    pub tiny: T,
}

impl<T> Scaled<T> {
    /// The dimensions for `scale`.
    pub fn get(&self, scale: Scale) -> &T {
        match scale {
            Scale::Tiny => &self.tiny,
            Scale::Real => &self.real,
        }
    }
}

/// Language model hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextDims {
    /// Hidden width.
    pub n_embd: u32,
    /// Transformer blocks.
    pub n_layer: u32,
    /// Attention heads.
    pub n_head: u32,
    /// Key/value heads (GQA).
    pub n_head_kv: u32,
    /// Feed-forward width.
    pub n_ff: u32,
    /// Vocabulary size; omitted for tiny models (then the smallest vocabulary that holds the
    /// byte tokens, a few merges and the special tokens).
    #[serde(default)]
    pub n_vocab: Option<u32>,
    /// RoPE base frequency.
    pub rope_theta: f32,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// Training context length.
    pub n_ctx: u32,
    /// Whether the output projection reuses the token embeddings (no `output.weight`).
    pub tied_embeddings: bool,
}

impl TextDims {
    /// Width of one attention head.
    pub fn head_dim(&self) -> u32 {
        self.n_embd / self.n_head
    }
}

/// Vision tower (SigLIP) and resampler hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VisionDims {
    /// ViT width E (`clip.vision.embedding_length`).
    pub n_embd: u32,
    /// ViT feed-forward width F (`clip.vision.feed_forward_length`).
    pub n_ff: u32,
    /// ViT blocks (`clip.vision.block_count`).
    pub n_layer: u32,
    /// ViT attention heads (`clip.vision.attention.head_count`).
    pub n_head: u32,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f32,
    /// Resampler width D = the language model's n_embd (`resampler.proj.weight` ne0).
    pub projector_dim: u32,
}

/// Why the embedded family data is inconsistent (only reachable if a TOML is edited badly;
/// the unit tests run [`validate`] on every file).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum FamilyError {
    /// A TOML file does not parse.
    #[error("models/{file}: {message}")]
    Parse {
        /// File name under `models/`.
        file: &'static str,
        /// Parser message.
        message: String,
    },
    /// A file describes a different version than expected.
    #[error("models/{file}: id {found} where {expected} was expected")]
    WrongVersion {
        /// File name under `models/`.
        file: &'static str,
        /// Version the file was loaded for.
        expected: Version,
        /// Version found in the file.
        found: Version,
    },
    /// An invariant does not hold.
    #[error("{version}: {message}")]
    Invalid {
        /// The version.
        version: Version,
        /// What is wrong.
        message: String,
    },
}

const SOURCES: [(Version, &str, &str); 6] = [
    (
        Version::V2_5,
        "minicpm-llama3-v2.5.toml",
        include_str!("../../models/minicpm-llama3-v2.5.toml"),
    ),
    (
        Version::V2_6,
        "minicpm-v2.6.toml",
        include_str!("../../models/minicpm-v2.6.toml"),
    ),
    (
        Version::O2_6,
        "minicpm-o2.6.toml",
        include_str!("../../models/minicpm-o2.6.toml"),
    ),
    (
        Version::V4_0,
        "minicpm-v4.0.toml",
        include_str!("../../models/minicpm-v4.0.toml"),
    ),
    (
        Version::V4_5,
        "minicpm-v4.5.toml",
        include_str!("../../models/minicpm-v4.5.toml"),
    ),
    (
        Version::O4_5,
        "minicpm-o4.5.toml",
        include_str!("../../models/minicpm-o4.5.toml"),
    ),
];

/// Parses and validates every embedded TOML, in [`Version::ALL`] order.
pub fn load() -> Result<Vec<ModelSpec>, FamilyError> {
    SOURCES
        .iter()
        .map(|&(version, file, text)| {
            let spec: ModelSpec = toml::from_str(text).map_err(|e| FamilyError::Parse {
                file,
                message: e.to_string(),
            })?;
            if spec.version != version {
                return Err(FamilyError::WrongVersion {
                    file,
                    expected: version,
                    found: spec.version,
                });
            }
            validate(&spec)?;
            Ok(spec)
        })
        .collect()
}

fn specs() -> &'static [ModelSpec] {
    static SPECS: OnceLock<Vec<ModelSpec>> = OnceLock::new();
    SPECS.get_or_init(|| match load() {
        Ok(v) => v,
        // The data is compiled in and `tests::all_tomls_parse_and_validate` checks it, so
        // this cannot depend on user input.
        Err(e) => panic!("embedded model family data is invalid: {e}"),
    })
}

/// The specification of `v` (parsed once).
pub fn spec(v: Version) -> &'static ModelSpec {
    &specs()[v.index()]
}

/// All specifications, oldest version first.
pub fn all() -> &'static [ModelSpec] {
    specs()
}

/// Checks the invariants of one specification.
pub fn validate(s: &ModelSpec) -> Result<(), FamilyError> {
    let bad = |message: String| FamilyError::Invalid {
        version: s.version,
        message,
    };
    if !RESAMPLER_VERSIONS.contains(&s.minicpmv_version) {
        return Err(bad(format!(
            "minicpmv_version {} is not one llama.cpp's resampler accepts ({RESAMPLER_VERSIONS:?})",
            s.minicpmv_version
        )));
    }
    let expected_q = if s.minicpmv_version == 2 { 96 } else { 64 };
    if s.query_tokens != expected_q {
        return Err(bad(format!(
            "query_tokens {} but llama.cpp's default for minicpmv_version {} is {expected_q}",
            s.query_tokens, s.minicpmv_version
        )));
    }
    let sl = s.slicing;
    if sl.patch_size == 0 || sl.image_size % sl.patch_size != 0 || sl.max_slices == 0 {
        return Err(bad(format!("bad slicing parameters {sl:?}")));
    }
    if s.normalize.std.iter().any(|&x| x.is_nan() || x <= 0.0) {
        return Err(bad("normalize.std must be positive".into()));
    }
    // tokens
    let t = &s.tokens;
    let mut seen = HashSet::new();
    for tok in t.control.iter().chain(t.user_defined.iter()) {
        if tok.is_empty() || !seen.insert(tok.as_str()) {
            return Err(bad(format!(
                "special token {tok:?} is empty or listed twice"
            )));
        }
    }
    for (role, text) in t.roles() {
        if !t.control.iter().any(|c| c == text) {
            return Err(bad(format!(
                "tokens.{role} = {text:?} is not in tokens.control"
            )));
        }
    }
    if t.model != "gpt2" && t.model != "llama" {
        return Err(bad(format!(
            "tokens.model {:?} is not gpt2 or llama",
            t.model
        )));
    }
    if t.model == "gpt2" && t.pre.is_none() {
        return Err(bad("a gpt2 tokenizer needs tokens.pre".into()));
    }
    // chat
    let c = &s.chat;
    for (name, tmpl) in [
        ("system", &c.system),
        ("user", &c.user),
        ("assistant", &c.assistant),
    ] {
        if !tmpl.contains("{content}") {
            return Err(bad(format!("chat.{name} lacks {{content}}")));
        }
    }
    if !c.user_content.contains("{image}") || !c.user_content.contains("{prompt}") {
        return Err(bad("chat.user_content needs {image} and {prompt}".into()));
    }
    if c.stop.is_empty() || c.jinja.is_empty() {
        return Err(bad("chat.stop and chat.jinja must not be empty".into()));
    }
    // dimensions
    for scale in [Scale::Tiny, Scale::Real] {
        let td = s.text.get(scale);
        let vd = s.vision.get(scale);
        let at = |m: String| bad(format!("{scale}: {m}"));
        if td.n_embd == 0 || td.n_layer == 0 || td.n_head == 0 || td.n_head_kv == 0 {
            return Err(at("text dimensions must be non-zero".into()));
        }
        if td.n_embd % td.n_head != 0 || td.n_head % td.n_head_kv != 0 {
            return Err(at(format!(
                "n_embd {} / n_head {} / n_head_kv {} do not divide",
                td.n_embd, td.n_head, td.n_head_kv
            )));
        }
        if td.head_dim() % 2 != 0 {
            return Err(at("RoPE needs an even head dimension".into()));
        }
        match (scale, td.n_vocab) {
            (Scale::Real, None) => return Err(at("real text dims need n_vocab".into())),
            (_, Some(n)) if (n as usize) < 256 + t.control.len() + t.user_defined.len() => {
                return Err(at(format!(
                    "n_vocab {n} cannot hold the byte and special tokens"
                )))
            }
            _ => {}
        }
        if vd.projector_dim != td.n_embd {
            return Err(at(format!(
                "projector_dim {} != text n_embd {}",
                vd.projector_dim, td.n_embd
            )));
        }
        if vd.projector_dim % RESAMPLER_HEAD_DIM != 0 {
            return Err(at(format!(
                "projector_dim {} is not a multiple of {RESAMPLER_HEAD_DIM}",
                vd.projector_dim
            )));
        }
        if vd.n_ff == vd.n_embd {
            // clip.cpp swaps ffn_up/ffn_down when ffn_down ne0 == n_embd, so F == E is ambiguous
            return Err(at("vision n_ff must differ from n_embd".into()));
        }
        if vd.n_head == 0 || vd.n_embd % vd.n_head != 0 || vd.n_layer == 0 {
            return Err(at("vision n_embd must be a multiple of n_head".into()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_tomls_parse_and_validate() {
        let specs = load().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(specs.len(), Version::ALL.len());
        for (s, v) in specs.iter().zip(Version::ALL) {
            assert_eq!(s.version, v);
        }
        assert_eq!(all().len(), 6);
    }

    #[test]
    fn ids_round_trip() {
        for v in Version::ALL {
            assert_eq!(v.id().parse::<Version>(), Ok(v));
            assert_eq!(v.to_string(), v.id());
            assert_eq!(
                Version::from_minicpmv_version(i64::from(v.minicpmv_version())),
                Some(v)
            );
            assert_eq!(spec(v).version, v);
        }
        assert!("2.7".parse::<Version>().is_err());
        assert!("V2.6".parse::<Version>().is_err());
        assert_eq!(Version::from_minicpmv_version(1), None);
        assert_eq!(Version::from_minicpmv_version(7), None);
        assert_eq!(Version::from_minicpmv_version(100045), Some(Version::O4_5));
        let ids: Vec<u32> = Version::ALL
            .iter()
            .map(|v| v.minicpmv_version() as u32)
            .collect();
        assert_eq!(ids, [2, 3, 4, 5, 6, 100045]);
    }

    #[test]
    fn per_version_facts() {
        use TextArch::*;
        let expect = [
            (Version::V2_5, Llama, 96, 4096),
            (Version::V2_6, Qwen2, 64, 3584),
            (Version::O2_6, Qwen2, 64, 3584),
            (Version::V4_0, Llama, 64, 2560),
            (Version::V4_5, Qwen3, 64, 4096),
            (Version::O4_5, Qwen3, 64, 4096),
        ];
        for (v, arch, q, n_embd) in expect {
            let s = spec(v);
            assert_eq!(s.text_arch, arch, "{v}");
            assert_eq!(s.query_tokens, q, "{v}");
            assert_eq!(s.text.real.n_embd, n_embd, "{v}");
            assert_eq!(
                s.slicing,
                Slicing {
                    image_size: 448,
                    patch_size: 14,
                    max_slices: 9
                }
            );
            let vr = s.vision.real;
            assert_eq!(
                (vr.n_embd, vr.n_ff, vr.n_layer, vr.n_head),
                (1152, 4304, 27, 16)
            );
            let vt = s.vision.tiny;
            assert_eq!(
                (vt.n_embd, vt.n_ff, vt.n_layer, vt.projector_dim),
                (32, 64, 2, 128)
            );
            assert_eq!(s.text.tiny.n_embd, 128);
        }
    }

    #[test]
    fn invariants_hold() {
        for s in all() {
            for scale in [Scale::Tiny, Scale::Real] {
                let d = s.vision.get(scale).projector_dim;
                assert_eq!(d, s.text.get(scale).n_embd, "{} {scale}", s.version);
                assert_eq!(d % 128, 0);
                assert_ne!(s.vision.get(scale).n_ff, s.vision.get(scale).n_embd);
            }
            let t = &s.tokens;
            let all_special: Vec<&String> = t.control.iter().chain(&t.user_defined).collect();
            let unique: HashSet<&String> = all_special.iter().copied().collect();
            assert_eq!(unique.len(), all_special.len(), "{}", s.version);
            for m in t.image_markers() {
                assert!(t.control.iter().any(|c| c == m));
            }
        }
    }

    #[test]
    fn validate_rejects_bad_data() {
        let mut s = spec(Version::V2_6).clone();
        s.vision.real.projector_dim = 4096;
        assert!(validate(&s).is_err());
        let mut s = spec(Version::V2_6).clone();
        s.tokens.control.push("<image>".into());
        assert!(validate(&s).is_err());
        let mut s = spec(Version::V2_6).clone();
        s.query_tokens = 96;
        assert!(validate(&s).is_err());
        let bad = format!("{}\nsurprise = 1\n", SOURCES[1].2);
        assert!(toml::from_str::<ModelSpec>(&bad).is_err());
    }
}
