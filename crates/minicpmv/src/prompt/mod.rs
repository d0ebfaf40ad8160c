//! Stage 4, the prompt: the chat template ([`template`]), where each version puts its image
//! tokens and embeddings ([`layout`]), the full input sequence of a turn ([`sequence`]), and what
//! a video's frames take of it ([`video`]).

pub mod layout;
pub mod sequence;
pub mod template;
pub mod video;
