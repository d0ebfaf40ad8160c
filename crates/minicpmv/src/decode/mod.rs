//! Stage 5, decoding: the input sequence fed in packed batches ([`prefill`]), then tokens
//! sampled and streamed ([`generate`]).

pub mod generate;
pub mod prefill;
pub mod thinking;
