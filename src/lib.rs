//! minicpmv: run MiniCPM-V vision-language models from GGUF files on small machines.
//!
//! The library has no CLI concerns (no clap, indicatif or anyhow); `src/main.rs` and `src/cli`
//! are the thin command-line layer on top of it.
//!
//! - [`gguf`]: our own GGUF reader/writer, used to check files before llama.cpp sees them;
//! - [`family`]: the MiniCPM-V versions as data (models/*.toml);
//! - [`synth`]: synthetic GGUF pairs with the real layouts and random weights;
//! - [`inputs`]: checks on the user's files; [`vision`]: image loading;
//! - [`prompt`], [`generate`], [`run`]: the pipeline;
//! - [`pull`]: model pairs downloaded from Hugging Face into a local cache;
//! - [`chat`]: multi-turn sessions reusing the KV cache; [`embd_cache`]: image embeddings
//!   cached by content, in memory and on disk;
//! - [`repack`]: which CPU kernels the weights run on (llama.cpp's repack or its tiled matmul);
//! - [`ffi`]: the only module with `unsafe` (llama.cpp and our C++ shim);
//! - [`session`]: the entry point for library users, one loaded pair serving many runs.
//!
//! ```no_run
//! let mut session = minicpmv::Pair::open("model.gguf", "mmproj.gguf", Default::default())?;
//! let out = session.run(&minicpmv::RunRequest::new("Hello"), &mut |_| {})?;
//! # Ok::<(), minicpmv::RunError>(())
//! ```

pub mod chat;
pub mod embd_cache;
pub mod family;
pub mod ffi;
pub mod generate;
pub mod gguf;
pub mod inputs;
pub mod layout;
pub mod memplan;
pub mod native;
pub mod parity;
pub mod prompt;
pub mod pull;
pub mod quality;
pub mod repack;
pub mod run;
pub mod session;
pub mod synth;
pub mod system;
pub mod vision;

pub use run::{Event, RunError, RunOutput};
pub use session::{Pair, RunRequest, Session, SessionOptions};
