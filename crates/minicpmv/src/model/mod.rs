//! Stage 1, the model: each MiniCPM-V version as data ([`family`]) and the checks every file
//! passes before llama.cpp sees it ([`inputs`], with the structural rules of [`shape`]).

pub mod family;
pub mod inputs;
pub mod shape;
