//! Stage 6, sessions: the library's entry point ([`Pair`], [`Session`]) and its settings
//! ([`options`]), one-shot runs ([`run`]) and multi-turn chats reusing the KV cache ([`chat`]).

pub mod chat;
pub mod options;
mod pair;
pub mod run;

pub use options::{Generation, RunRequest, SessionOptions};
pub use pair::{Pair, Session};
