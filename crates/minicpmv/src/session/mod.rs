//! Stage 6, sessions: the library's entry point ([`Pair`], [`Session`]), one-shot runs
//! ([`run`]) and multi-turn chats reusing the KV cache ([`chat`]).

pub mod chat;
mod pair;
pub mod run;

pub use pair::{Pair, RunRequest, Session, SessionOptions};
