//! minicpmv-quantize: quantize MiniCPM-V GGUF files — language models and vision projectors
//! (mmproj, `general.architecture = "clip"`) — with llama.cpp's `llama_model_quantize`, safely.
//!
//! ```text
//! GgufFacts::read(path)  minicpmv-gguf's checking reader, then what quantization needs
//!   -> prepare(Request)   checks paths, metadata llama.cpp would abort on, requantizing,
//!                         free space; llama.cpp's own dry run gives the per-tensor plan
//!   -> Prepared::run()    llama.cpp writes OUTPUT_DIR/.NAME.quantize-tmp.PID, renamed to
//!                         NAME only on success; SIGINT/SIGTERM/SIGHUP remove it
//!   -> Outcome::summary(&output_facts)   sizes, time, type histogram, tensors kept in higher
//!                                        precision and why
//! ```
//!
//! **Which rules llama.cpp applies.** `llama_model_quantize` picks every tensor's type with one
//! function (`llama_tensor_get_type`, src/llama-quant.cpp) for both kinds of file; what differs is
//! what it knows about the file. For `general.architecture = "clip"` it creates a dummy
//! `LLM_ARCH_CLIP` model and loads *no* hyper-parameters (`load_hparams` returns early), so the
//! layer count is 0: under Q4_K_M/Q5_K_M every `ffn_down` gets q6_K (the "more bits" test
//! `i >= 7*n/8` is always true with n = 0), while a language model gets q6_K only in the first and
//! last eighth of its layers and every third one in between. The name rules are shared:
//! 1-D tensors, names not ending in `weight`, `*_norm.weight`, `.position_embd`, `.patch_embd`
//! are never quantized; `output.weight` (and tied `token_embd.weight`) get q6_K for k-quants.
//! Rows whose length is not a multiple of the type's block fall back (q4_K -> q5_0,
//! q6_K -> q8_0, ..., f16 when no 32-block fits). The policy is therefore chosen by the file's
//! own `general.architecture`, never by this crate; the pair presets check that the file given
//! as the language model is one and the projector is one. One exception, to avoid an abort in
//! llama.cpp: for clip files and q2_k/iq4_nl/iq4_xs this crate passes the attention-V type that
//! llama.cpp's own rule would give with no heads known ([`tensor_type_overrides`]).
//!
//! **Progress.** llama.cpp logs `[i/n] name ... size = ...` per tensor; while a quantization
//! runs, this crate routes llama.cpp's logger to a parser (and still forwards every line to the
//! previous logger), so [`ProgressProbe::snapshot`] gives tensors done and input bytes done.
//!
//! **Quality report (later).** The [`Summary`] names every tensor and its types; a quality
//! report comparing the quantized pair with the original (logits, embeddings) will take two
//! pairs and live next to it, driven by the `minicpmv` runtime.

#![forbid(unsafe_code)]

mod error;
mod facts;
mod job;
mod plan;
mod preset;
mod report;
mod types;

/// The raw calls (llama.cpp and POSIX) live with the rest of the `unsafe` code in minicpmv-llama.
use minicpmv_llama::quantize as ffi;

pub use error::QuantizeError;
pub use facts::{GgufFacts, MetaFact, TensorFacts, LLAMA_MAX_EXPERTS, LLAMA_MAX_LAYERS};
pub use job::{
    check_space, dry_run, prepare, temp_path, Outcome, Prepared, Request, FAKE_FREE_BYTES_ENV,
    TEMP_MARKER,
};
pub use plan::{tensor_type_overrides, Fallback, Plan, PlannedTensor, Progress, ProgressProbe};
pub use preset::{output_file_name, Preset, PRESETS};
pub use report::{exclusion, KeepReason, KeptTensor, ProgressSource, Summary, TypeStats};
pub use types::{QuantType, TensorType, TypeError, NEEDS_IMATRIX};
