//! Stage 4, the prompt: the chat template ([`template`]), where each version puts its image
//! tokens and embeddings ([`layout`]), and the full input sequence of a turn ([`sequence`]).

pub mod layout;
pub mod sequence;
pub mod template;
