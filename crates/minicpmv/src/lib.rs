//! minicpmv: run MiniCPM-V vision-language models from GGUF files on small machines.
//!
//! Start with [`Pair::open`], which checks a language model and its projector and loads them
//! into a [`Session`]; each [`Session::run`] streams [`Event`]s, and [`Session::chat`] holds a
//! conversation whose turns reuse the KV cache.
//!
//! ```no_run
//! let mut session = minicpmv::Pair::open("model.gguf", "mmproj.gguf", Default::default())?;
//! let out = session.run(&minicpmv::RunRequest::new("Hello"), &mut |_| {})?;
//! # Ok::<(), minicpmv::RunError>(())
//! ```
//!
//! The modules follow the pipeline, in the order data flows:
//! - [`model`]: the MiniCPM-V versions as data, and the checks on the user's files;
//! - [`vision`]: image loading, slice planning and preprocessing;
//! - [`encode`]: one projector call per slice, and the embedding cache;
//! - [`prompt`]: chat template, image layout, the input sequence;
//! - [`decode`]: packed prefill and generation;
//! - [`session`]: runs, chats and the [`Session`] entry point;
//! - [`plan`]: the memory planner;
//! - [`tools`]: synthetic pairs, parity with llama.cpp, quantization quality.
//!
//! Underneath are two crates re-exported here: [`gguf`] (our GGUF reader and writer, no
//! `unsafe`) and [`ffi`] (llama.cpp and our C++ shim, the only `unsafe` code). The library has
//! no command-line concerns; the `minicpmv` binary is the `minicpmv-cli` crate.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use minicpmv_gguf as gguf;
pub use minicpmv_llama as ffi;

pub mod decode;
pub mod encode;
pub mod model;
pub mod plan;
pub mod prompt;
pub mod session;
pub mod tools;
pub mod vision;

pub use session::chat::{ChatConfig, ChatError, ChatSession, TurnOutput};
pub use session::run::{Event, RunError, RunOutput};
pub use session::{Generation, Pair, RunRequest, Session, SessionOptions};
