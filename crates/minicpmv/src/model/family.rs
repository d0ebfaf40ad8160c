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
//! text_arch = "qwen2"           # `general.architecture` of the language model:
//!                               # llama|qwen2|qwen3|qwen35
//! extends = "minicpm-v4.6.toml" # optional: start from another file's tables (a checkpoint
//!                               # variant with the same files, e.g. 4.6-Thinking)
//! variant = "thinking"          # optional: the word in `general.name` or the file name that
//!                               # tells this variant from the version it extends
//!
//! [projector]                   # how the mmproj turns a slice into embeddings
//! type = "resampler"            # `clip.projector_type`: resampler (2.5 .. 4.5, o4.5) or
//!                               # minicpmv4_6 (4.6)
//! minicpmv_version = 3          # resampler: `clip.minicpmv_version` (INT32)
//! query_tokens = 64             # resampler: queries = embeddings per slice
//! scale_factor = 4              # minicpmv4_6: `clip.vision.projector.scale_factor`, patches
//!                               # merged per side (4: "16x", 2: "4x")
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
//! [chat.thinking]               # optional: reasoning tags and how to switch it, see `Thinking`
//!
//! [text.real] / [text.tiny]     # language model dimensions, see `TextDims`
//! [text.real.hybrid]            # qwen35 only: the linear-attention layers, see `HybridDims`
//! [vision.real] / [vision.tiny] # vision tower + projector dimensions, see `VisionDims`
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
    /// MiniCPM-V 4.6 (`"4.6"`, projector type `minicpmv4_6`, Qwen3.5-0.8B).
    V4_6,
    /// MiniCPM-V 4.6-Thinking (`"4.6-thinking"`): 4.6's files, its own chat template.
    V4_6Thinking,
}

impl Version {
    /// All versions, oldest first.
    pub const ALL: [Version; 8] = [
        Version::V2_5,
        Version::V2_6,
        Version::O2_6,
        Version::V4_0,
        Version::V4_5,
        Version::O4_5,
        Version::V4_6,
        Version::V4_6Thinking,
    ];

    /// The CLI id: `"2.5"`, `"2.6"`, `"o2.6"`, `"4.0"`, `"4.5"`, `"o4.5"`, `"4.6"` or
    /// `"4.6-thinking"`.
    pub fn id(self) -> &'static str {
        match self {
            Version::V2_5 => "2.5",
            Version::V2_6 => "2.6",
            Version::O2_6 => "o2.6",
            Version::V4_0 => "4.0",
            Version::V4_5 => "4.5",
            Version::O4_5 => "o4.5",
            Version::V4_6 => "4.6",
            Version::V4_6Thinking => "4.6-thinking",
        }
    }

    /// The version of a resampler projector with this `clip.minicpmv_version`.
    pub fn from_minicpmv_version(v: i64) -> Option<Version> {
        Version::ALL
            .into_iter()
            .find(|ver| ver.spec().projector.minicpmv_version().map(i64::from) == Some(v))
    }

    /// The version of a projector of type `clip.projector_type`, other than the resampler
    /// (which [`Version::from_minicpmv_version`] tells apart): the first version using it, so
    /// 4.6 for `minicpmv4_6` (4.6-Thinking has the same projector).
    pub fn from_projector_type(t: &str) -> Option<Version> {
        Version::ALL
            .into_iter()
            .find(|ver| ver.spec().projector.type_name() == t && t != RESAMPLER_TYPE)
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
            Version::V4_6 => 6,
            Version::V4_6Thinking => 7,
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
#[error("unknown MiniCPM-V version {given:?} (expected one of 2.5, 2.6, o2.6, 4.0, 4.5, o4.5, 4.6, 4.6-thinking)")]
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
    /// `qwen3` (4.5, o4.5).
    Qwen3,
    /// `qwen35` (4.6: Qwen3.5-0.8B, gated-delta-net linear attention in three layers of four).
    Qwen35,
}

impl TextArch {
    /// The GGUF architecture name (also the metadata key prefix).
    pub fn as_str(self) -> &'static str {
        match self {
            TextArch::Llama => "llama",
            TextArch::Qwen2 => "qwen2",
            TextArch::Qwen3 => "qwen3",
            TextArch::Qwen35 => "qwen35",
        }
    }

    /// Whether the architecture keeps a recurrent state besides the KV cache (llama.cpp's
    /// hybrid memory): its cache cannot be cut back to an earlier position.
    pub fn is_hybrid(self) -> bool {
        self == TextArch::Qwen35
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
    /// Architecture of the language model.
    pub text_arch: TextArch,
    /// For a checkpoint variant that shares its files with another version (4.6-Thinking):
    /// the lower-case word in its `general.name` or file name that tells it apart.
    #[serde(default)]
    pub variant: Option<String>,
    /// How the projector turns a slice into embeddings.
    pub projector: ProjectorKind,
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
    /// Vision tower and projector dimensions.
    pub vision: Scaled<VisionDims>,
    /// How the reference samples and lays out a video.
    pub video: VideoSpec,
}

/// How a version's reference takes a video: which frames ([`FrameRule`], sampled by
/// [`crate::vision::video`]), how many slices per frame, and what stands between frames.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VideoSpec {
    /// Which frames are taken.
    pub frames: FrameRule,
    /// Slices per frame at most (`max_slice_nums` of the reference's video example).
    pub max_slices: u32,
    /// The text between one frame's image block and the next.
    pub separator: String,
}

/// A version's rule for the frames of a video and its limits; the module docs of
/// [`crate::vision::video`] cite each rule's reference.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "kebab-case", deny_unknown_fields)]
pub enum FrameRule {
    /// Every `round(fps)`-th frame, at most `max_frames` (mid-bin subsampled): 2.6.
    Stride {
        /// The cap (2.6: 64).
        max_frames: usize,
    },
    /// `choose_fps` per second, uniform over all frames, at most `max_frames`: 4.5.
    Uniform {
        /// Frames per second wanted (4.5's card: 5).
        choose_fps: f64,
        /// The cap (4.5: 180).
        max_frames: usize,
    },
    /// One frame per second from 0 s, at most `max_frames`: 4.6.
    PerSecond {
        /// The cap (4.6: 128).
        max_frames: usize,
    },
}

/// `clip.projector_type` of the MiniCPM-V resampler (2.5 to 4.5, o4.5).
pub const RESAMPLER_TYPE: &str = "resampler";
/// `clip.projector_type` of MiniCPM-V 4.6's merger projector.
pub const MERGER_TYPE: &str = "minicpmv4_6";

/// How a projector turns one slice into embeddings: the one place that tells a resampler
/// (a fixed number of queries per slice) from 4.6's merger (one embedding per square of
/// `scale_factor` x `scale_factor` patches). Used for the family data, for what the checks
/// read from a file ([`crate::model::inputs::ProjectorFacts`]) and for the image format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum ProjectorKind {
    /// The perceiver resampler (`clip.projector_type = "resampler"`, llama.cpp's
    /// `PROJECTOR_TYPE_MINICPMV`).
    #[serde(rename = "resampler")]
    Resampler {
        /// `clip.minicpmv_version` (one of [`RESAMPLER_VERSIONS`]).
        minicpmv_version: i32,
        /// Resampler queries: embeddings per slice, whatever its size.
        query_tokens: u32,
    },
    /// MiniCPM-V 4.6's window-attention ViT merger and final 2x2 merger
    /// (`clip.projector_type = "minicpmv4_6"`, llama.cpp's `PROJECTOR_TYPE_MINICPMV4_6`).
    #[serde(rename = "minicpmv4_6")]
    Merger {
        /// `clip.vision.projector.scale_factor` (llama.cpp's `n_merge`): patches merged per
        /// side, 4 ("16x" compression, the default) or 2 ("4x").
        scale_factor: u32,
    },
}

/// The scale factors llama.cpp accepts for the 4.6 merger (clip.cpp GGML_ASSERTs
/// `n_merge == 2 || n_merge == 4`).
pub const MERGER_SCALE_FACTORS: [u32; 2] = [2, 4];

impl ProjectorKind {
    /// `clip.projector_type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            ProjectorKind::Resampler { .. } => RESAMPLER_TYPE,
            ProjectorKind::Merger { .. } => MERGER_TYPE,
        }
    }

    /// `clip.minicpmv_version` of a resampler.
    pub fn minicpmv_version(&self) -> Option<i32> {
        match *self {
            ProjectorKind::Resampler {
                minicpmv_version, ..
            } => Some(minicpmv_version),
            ProjectorKind::Merger { .. } => None,
        }
    }

    /// Patches merged per side before the language model (llama.cpp's `n_merge`): 1 for the
    /// resampler (slices are aligned to the patch size), the scale factor for the merger.
    pub fn merge(&self) -> u32 {
        match *self {
            ProjectorKind::Resampler { .. } => 1,
            ProjectorKind::Merger { scale_factor } => scale_factor,
        }
    }

    /// Embeddings of one `w` x `h` chunk (a multiple of `patch_size * merge` for the merger),
    /// as llama.cpp's `clip_n_output_tokens`: the query count for a resampler,
    /// `(w / 14 / merge) * (h / 14 / merge)` for the merger (clip.cpp, the
    /// `PROJECTOR_TYPE_MINICPMV4_6` case: `n_patches / (n_merge * n_merge)`).
    pub fn chunk_tokens(&self, patch_size: u32, (w, h): (u32, u32)) -> usize {
        match *self {
            ProjectorKind::Resampler { query_tokens, .. } => query_tokens as usize,
            ProjectorKind::Merger { scale_factor } => {
                let side = (patch_size * scale_factor).max(1);
                (w / side) as usize * (h / side) as usize
            }
        }
    }

    /// This projector at another scale factor (4.6's merger only; `None` keeps it): the
    /// error says why `f` does not apply.
    pub fn with_scale_factor(self, f: Option<u32>) -> Result<ProjectorKind, String> {
        let Some(f) = f else {
            return Ok(self);
        };
        match self {
            ProjectorKind::Merger { .. } if MERGER_SCALE_FACTORS.contains(&f) => {
                Ok(ProjectorKind::Merger { scale_factor: f })
            }
            ProjectorKind::Merger { .. } => Err(format!(
                "scale factor {f} is not one llama.cpp accepts (2: 4x, 4: 16x)"
            )),
            ProjectorKind::Resampler { .. } => Err(format!(
                "scale factor {f} is for MiniCPM-V 4.6's merger projector; this version has a \
                 resampler of fixed size"
            )),
        }
    }

    /// Whether two projectors are the same model's, up to the merger's scale factor: the same
    /// type and, for resamplers, the same `clip.minicpmv_version` (2.6's and o2.6's resamplers
    /// are not; a 4.6 merger at 4x is 4.6's).
    pub fn same_model(&self, other: &ProjectorKind) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
            && self.minicpmv_version() == other.minicpmv_version()
    }
}

impl std::fmt::Display for ProjectorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            ProjectorKind::Resampler {
                minicpmv_version,
                query_tokens,
            } => write!(
                f,
                "resampler (clip.minicpmv_version {minicpmv_version}, {query_tokens} queries)"
            ),
            ProjectorKind::Merger { scale_factor } => {
                write!(f, "merger (scale factor {scale_factor})")
            }
        }
    }
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

/// Reasoning ("thinking") of the models that have it: the tags around the trace, whether a
/// run thinks by default, and what is appended after the generation prompt to switch it on or
/// off. The trace is streamed apart from the answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thinking {
    /// Opening tag of a reasoning block.
    pub open: String,
    /// Closing tag of a reasoning block.
    pub close: String,
    /// Whether the model thinks unless told otherwise (its model card's default).
    pub default: bool,
    /// Text appended after the generation prompt to think (empty: the model opens the block
    /// itself); absent when the checkpoint cannot think.
    #[serde(default)]
    pub enable: Option<String>,
    /// Text appended after the generation prompt not to think (an empty block); absent when
    /// the template has no way to switch thinking off.
    #[serde(default)]
    pub disable: Option<String>,
}

impl Thinking {
    /// The text to append after the generation prompt for `on` (thinking or not), or `None`
    /// when the template cannot do that.
    pub fn suffix(&self, on: bool) -> Option<&str> {
        if on {
            self.enable.as_deref()
        } else {
            self.disable.as_deref()
        }
    }
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
    /// Width of one attention head (`{arch}.attention.key_length`) when it is not
    /// `n_embd / n_head` (Qwen3.5: 256 with n_embd 1024 and 8 heads).
    #[serde(default)]
    pub head_dim: Option<u32>,
    /// The linear-attention layers of a hybrid model (qwen35).
    #[serde(default)]
    pub hybrid: Option<HybridDims>,
}

impl TextDims {
    /// Width of one attention head.
    pub fn head_dim(&self) -> u32 {
        self.head_dim.unwrap_or(self.n_embd / self.n_head)
    }
}

/// Qwen3.5's hybrid layout (llama.cpp `src/models/qwen35.cpp`): layer `i` is a gated-delta-net
/// (linear attention, recurrent state) layer unless `(i + 1) % full_attention_interval == 0`;
/// the attention layers use interleaved multi-section RoPE over part of the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HybridDims {
    /// Every this many layers, one is full attention (`qwen35.full_attention_interval`).
    pub full_attention_interval: u32,
    /// Rotated dimensions of a head (`qwen35.rope.dimension_count`).
    pub rope_dims: u32,
    /// IMROPE sections (`qwen35.rope.dimension_sections`, exactly 4).
    pub rope_sections: [u32; 4],
    /// Convolution kernel of the linear layers (`qwen35.ssm.conv_kernel`).
    pub conv_kernel: u32,
    /// Key head width = value head width = state size (`qwen35.ssm.state_size`).
    pub state_size: u32,
    /// Key heads (`qwen35.ssm.group_count`).
    pub groups: u32,
    /// Value heads (`qwen35.ssm.time_step_rank`); the inner width is `state_size * this`.
    pub value_heads: u32,
}

impl HybridDims {
    /// Whether layer `il` is a linear-attention (recurrent) layer.
    pub fn is_recurrent(&self, il: u32) -> bool {
        (il + 1) % self.full_attention_interval.max(1) != 0
    }

    /// `qwen35.ssm.inner_size`: value heads times their width.
    pub fn inner_size(&self) -> u32 {
        self.state_size * self.value_heads
    }

    /// Channels of the short convolution: queries and keys of every group, and the values.
    pub fn conv_channels(&self) -> u32 {
        2 * self.state_size * self.groups + self.inner_size()
    }
}

/// Vision tower (SigLIP) and projector hyper-parameters.
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
    /// Output width D = the language model's n_embd (`resampler.proj.weight` ne0, or
    /// `mm.down.weight` ne1 for the merger).
    pub projector_dim: u32,
    /// Merger projector only: the ViT layer after which the window-attention merger runs
    /// (`clip.vision.wa_layer_indexes[0]`, the converter's `insert_layer_id`).
    #[serde(default)]
    pub insert_layer: Option<u32>,
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

const SOURCES: [(Version, &str, &str); 8] = [
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
    (
        Version::V4_6,
        "minicpm-v4.6.toml",
        include_str!("../../models/minicpm-v4.6.toml"),
    ),
    (
        Version::V4_6Thinking,
        "minicpm-v4.6-thinking.toml",
        include_str!("../../models/minicpm-v4.6-thinking.toml"),
    ),
];

/// Parses and validates every embedded TOML, in [`Version::ALL`] order.
pub fn load() -> Result<Vec<ModelSpec>, FamilyError> {
    SOURCES
        .iter()
        .map(|&(version, file, _)| {
            let table = resolve_extends(file, 0)?;
            let spec: ModelSpec =
                ModelSpec::deserialize(table).map_err(|e| FamilyError::Parse {
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

/// The TOML table of `file`, with the tables of the file it `extends` underneath (a key of
/// `file` replaces the same key of its base; tables are merged key by key).
fn resolve_extends(file: &'static str, depth: usize) -> Result<toml::Table, FamilyError> {
    let parse_err = |message: String| FamilyError::Parse { file, message };
    let text = SOURCES
        .iter()
        .find(|s| s.1 == file)
        .map(|s| s.2)
        .ok_or_else(|| parse_err("no such embedded file".into()))?;
    let mut table: toml::Table = toml::from_str(text).map_err(|e| parse_err(e.to_string()))?;
    let Some(base) = table.remove("extends") else {
        return Ok(table);
    };
    let base_file = base
        .as_str()
        .and_then(|b| SOURCES.iter().find(|s| s.1 == b))
        .map(|s| s.1)
        .ok_or_else(|| parse_err(format!("extends {base}, which is not an embedded file")))?;
    if depth > 0 {
        return Err(parse_err(
            "a file that extends another cannot be extended".into(),
        ));
    }
    let mut merged = resolve_extends(base_file, depth + 1)?;
    merge_tables(&mut merged, table);
    Ok(merged)
}

fn merge_tables(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge_tables(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
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
    match s.projector {
        ProjectorKind::Resampler {
            minicpmv_version,
            query_tokens,
        } => {
            if !RESAMPLER_VERSIONS.contains(&minicpmv_version) {
                return Err(bad(format!(
                    "minicpmv_version {minicpmv_version} is not one llama.cpp's resampler accepts ({RESAMPLER_VERSIONS:?})"
                )));
            }
            let expected_q = if minicpmv_version == 2 { 96 } else { 64 };
            if query_tokens != expected_q {
                return Err(bad(format!(
                    "query_tokens {query_tokens} but llama.cpp's default for minicpmv_version {minicpmv_version} is {expected_q}"
                )));
            }
        }
        ProjectorKind::Merger { scale_factor } => {
            if !MERGER_SCALE_FACTORS.contains(&scale_factor) {
                return Err(bad(format!(
                    "scale_factor {scale_factor} is not one llama.cpp accepts ({MERGER_SCALE_FACTORS:?})"
                )));
            }
        }
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
    if let Some(th) = &c.thinking {
        if th.suffix(th.default).is_none() {
            return Err(bad(
                "chat.thinking has no text for its own default (enable or disable)".into(),
            ));
        }
    }
    // dimensions
    for scale in [Scale::Tiny, Scale::Real] {
        let td = s.text.get(scale);
        let vd = s.vision.get(scale);
        let at = |m: String| bad(format!("{scale}: {m}"));
        if td.n_embd == 0 || td.n_layer == 0 || td.n_head == 0 || td.n_head_kv == 0 {
            return Err(at("text dimensions must be non-zero".into()));
        }
        if td.head_dim.is_none() && td.n_embd % td.n_head != 0 || td.n_head % td.n_head_kv != 0 {
            return Err(at(format!(
                "n_embd {} / n_head {} / n_head_kv {} do not divide",
                td.n_embd, td.n_head, td.n_head_kv
            )));
        }
        if td.head_dim() % 2 != 0 {
            return Err(at("RoPE needs an even head dimension".into()));
        }
        match (s.text_arch.is_hybrid(), td.hybrid) {
            (true, None) => return Err(at("a qwen35 model needs text.hybrid".into())),
            (false, Some(_)) => return Err(at("text.hybrid is for qwen35 models only".into())),
            (true, Some(h)) => validate_hybrid(td, &h).map_err(at)?,
            (false, None) => {}
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
        let is_merger = matches!(s.projector, ProjectorKind::Merger { .. });
        if !is_merger && vd.projector_dim % RESAMPLER_HEAD_DIM != 0 {
            return Err(at(format!(
                "projector_dim {} is not a multiple of {RESAMPLER_HEAD_DIM}",
                vd.projector_dim
            )));
        }
        match (is_merger, vd.insert_layer) {
            (true, Some(l)) if l < vd.n_layer => {}
            (true, _) => {
                return Err(at(format!(
                    "the merger needs vision.insert_layer below n_layer {}",
                    vd.n_layer
                )))
            }
            (false, Some(_)) => return Err(at("insert_layer is for the merger only".into())),
            (false, None) => {}
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

/// The invariants llama.cpp's qwen35 graph relies on without checking them (a mismatch is a
/// reshape abort): equal key and value head widths (both `state_size`), value heads a
/// multiple of key heads, at least one layer of each kind, exactly the rotated dimensions the
/// sections cover.
fn validate_hybrid(td: &TextDims, h: &HybridDims) -> Result<(), String> {
    if h.full_attention_interval < 2 || td.n_layer < h.full_attention_interval {
        return Err(format!(
            "full_attention_interval {} must be 2..={} (n_layer) to have layers of both kinds",
            h.full_attention_interval, td.n_layer
        ));
    }
    if h.state_size == 0 || h.groups == 0 || h.value_heads % h.groups != 0 || h.conv_kernel < 2 {
        return Err(format!("bad linear-attention dimensions {h:?}"));
    }
    let sections: u32 = h.rope_sections.iter().sum();
    if h.rope_dims == 0 || h.rope_dims > td.head_dim() || h.rope_dims != 2 * sections {
        return Err(format!(
            "rope_dims {} must be 2 x the sections {:?} and at most the head width {}",
            h.rope_dims,
            h.rope_sections,
            td.head_dim()
        ));
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
        assert_eq!(all().len(), 8);
    }

    #[test]
    fn ids_round_trip() {
        for v in Version::ALL {
            assert_eq!(v.id().parse::<Version>(), Ok(v));
            assert_eq!(v.to_string(), v.id());
            match spec(v).projector.minicpmv_version() {
                Some(n) => assert_eq!(Version::from_minicpmv_version(i64::from(n)), Some(v)),
                None => assert_eq!(
                    Version::from_projector_type(MERGER_TYPE),
                    Some(Version::V4_6),
                    "{v}: 4.6-Thinking takes 4.6's projector"
                ),
            }
            assert_eq!(spec(v).version, v);
        }
        assert!("2.7".parse::<Version>().is_err());
        assert!("V2.6".parse::<Version>().is_err());
        assert_eq!(Version::from_minicpmv_version(1), None);
        assert_eq!(Version::from_minicpmv_version(7), None);
        assert_eq!(Version::from_minicpmv_version(100045), Some(Version::O4_5));
        let ids: Vec<i32> = Version::ALL
            .iter()
            .filter_map(|v| v.spec().projector.minicpmv_version())
            .collect();
        assert_eq!(ids, [2, 3, 4, 5, 6, 100045]);
        assert_eq!(Version::from_projector_type(RESAMPLER_TYPE), None);
        assert_eq!(Version::from_projector_type("mlp"), None);
        assert_eq!("4.6-thinking".parse(), Ok(Version::V4_6Thinking));
    }

    #[test]
    fn per_version_facts() {
        use TextArch::*;
        // (version, text arch, embeddings of a 448x448 slice, LM width, vision layers)
        let expect = [
            (Version::V2_5, Llama, 96, 4096, 27),
            (Version::V2_6, Qwen2, 64, 3584, 27),
            (Version::O2_6, Qwen2, 64, 3584, 27),
            (Version::V4_0, Llama, 64, 2560, 27),
            (Version::V4_5, Qwen3, 64, 4096, 27),
            (Version::O4_5, Qwen3, 64, 4096, 27),
            // 16x: (448 / 14 / 4)^2 = 64 (bundled clip.cpp n_patches / n_merge^2)
            (Version::V4_6, Qwen35, 64, 1024, 27),
            (Version::V4_6Thinking, Qwen35, 64, 1024, 27),
        ];
        for (v, arch, tokens, n_embd, vision_layers) in expect {
            let s = spec(v);
            assert_eq!(s.text_arch, arch, "{v}");
            assert_eq!(s.projector.chunk_tokens(14, (448, 448)), tokens, "{v}");
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
                (1152, 4304, vision_layers, 16)
            );
            let vt = s.vision.tiny;
            assert_eq!((vt.n_embd, vt.n_ff, vt.projector_dim), (32, 64, 128));
            assert_eq!(s.text.tiny.n_embd, 128);
        }
    }

    #[test]
    fn merger_tokens_follow_the_scale_factor() {
        // bundled clip.cpp: clip_n_output_tokens = (w/14)(h/14) / n_merge^2
        let m4 = ProjectorKind::Merger { scale_factor: 4 };
        let m2 = ProjectorKind::Merger { scale_factor: 2 };
        assert_eq!(m4.chunk_tokens(14, (448, 448)), 64);
        assert_eq!(m2.chunk_tokens(14, (448, 448)), 256);
        assert_eq!(m4.chunk_tokens(14, (616, 336)), 66);
        assert_eq!(m2.chunk_tokens(14, (1008, 196)), 252);
        assert_eq!((m4.merge(), m2.merge()), (4, 2));
        let r = spec(Version::V2_6).projector;
        assert_eq!((r.merge(), r.chunk_tokens(14, (1000, 14))), (1, 64));
        assert!(m4.same_model(&m2) && !m4.same_model(&r));
        let o26 = spec(Version::O2_6).projector;
        assert!(!r.same_model(&o26) && r.same_model(&r));
    }

    #[test]
    fn the_thinking_variant_extends_4_6() {
        let (a, b) = (spec(Version::V4_6), spec(Version::V4_6Thinking));
        assert_eq!(
            (&a.text, &a.vision, a.projector),
            (&b.text, &b.vision, b.projector)
        );
        assert_eq!(a.tokens, b.tokens);
        assert_eq!(b.variant.as_deref(), Some("thinking"));
        assert_eq!(a.variant, None);
        assert_ne!(a.chat.jinja, b.chat.jinja);
        assert_eq!(b.download.gguf_repo, "openbmb/MiniCPM-V-4.6-Thinking-gguf");
        assert_eq!(a.download.model_file, b.download.model_file);
        let (ta, tb) = (
            a.chat.thinking.as_ref().unwrap(),
            b.chat.thinking.as_ref().unwrap(),
        );
        assert!(!ta.default && tb.default);
        assert_eq!(
            ta.suffix(true),
            None,
            "the Instruct checkpoint cannot think"
        );
        assert_eq!(tb.suffix(true), Some("<think>\n"));
        assert_eq!(ta.suffix(false), tb.suffix(false));
        let h = a.text.real.hybrid.unwrap();
        let layers: Vec<u32> = (0..24).filter(|&il| !h.is_recurrent(il)).collect();
        assert_eq!(
            layers,
            [3, 7, 11, 15, 19, 23],
            "full attention every 4th layer"
        );
        assert_eq!((h.inner_size(), h.conv_channels()), (2048, 6144));
        assert_eq!(a.text.real.head_dim(), 256);
    }

    #[test]
    fn extends_merges_tables_key_by_key() {
        let mut base: toml::Table = toml::from_str("a = 1\n[t]\nx = 1\ny = 2\n").unwrap();
        let over: toml::Table = toml::from_str("b = 2\n[t]\ny = 3\n").unwrap();
        merge_tables(&mut base, over);
        let want: toml::Table = toml::from_str("a = 1\nb = 2\n[t]\nx = 1\ny = 3\n").unwrap();
        assert_eq!(base, want);
    }

    #[test]
    fn invariants_hold() {
        for s in all() {
            for scale in [Scale::Tiny, Scale::Real] {
                let d = s.vision.get(scale).projector_dim;
                assert_eq!(d, s.text.get(scale).n_embd, "{} {scale}", s.version);
                assert_eq!(d % 128, 0);
                assert_eq!(
                    s.text.get(scale).hybrid.is_some(),
                    s.text_arch == TextArch::Qwen35
                );
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
        s.projector = ProjectorKind::Resampler {
            minicpmv_version: 3,
            query_tokens: 96,
        };
        assert!(validate(&s).is_err());
        let mut s = spec(Version::V4_6).clone();
        s.projector = ProjectorKind::Merger { scale_factor: 3 };
        assert!(validate(&s).is_err());
        let mut s = spec(Version::V4_6).clone();
        s.vision.tiny.insert_layer = Some(3);
        assert!(validate(&s).is_err(), "insert layer past the tower");
        let mut s = spec(Version::V4_6).clone();
        s.text.real.hybrid = None;
        assert!(validate(&s).is_err());
        let mut s = spec(Version::V4_6).clone();
        s.text.tiny.hybrid.as_mut().unwrap().rope_sections = [2, 2, 2, 0];
        assert!(
            validate(&s).is_err(),
            "sections wider than the rotated dims"
        );
        let mut s = spec(Version::V4_6Thinking).clone();
        s.chat.thinking.as_mut().unwrap().enable = None;
        assert!(validate(&s).is_err(), "no text for the default");
        let mut t: toml::Table = toml::from_str(SOURCES[1].2).unwrap();
        assert!(ModelSpec::deserialize(t.clone()).is_ok());
        t["projector"]["type"] = "mlp".into();
        assert!(
            ModelSpec::deserialize(t.clone()).is_err(),
            "unknown projector type"
        );
        t["projector"] = toml::from_str(
            "type = \"resampler\"\nminicpmv_version = 3\nquery_tokens = 64\nextra = 1",
        )
        .unwrap();
        assert!(ModelSpec::deserialize(t).is_err(), "unknown projector key");
        let bad = format!("{}\nsurprise = 1\n", SOURCES[1].2);
        assert!(toml::from_str::<ModelSpec>(&bad).is_err());
    }
}
