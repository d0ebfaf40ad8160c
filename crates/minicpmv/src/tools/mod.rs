//! Tools around the pipeline: synthetic GGUF pairs ([`synth`]), native vs llama.cpp comparison
//! ([`parity`]) and quantization quality reports ([`quality`]).

pub mod parity;
pub mod quality;
pub mod synth;
