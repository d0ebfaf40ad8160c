//! Stage 5, decoding: the input sequence fed in packed batches ([`prefill`]), then tokens
//! sampled and streamed ([`generate`]), cut at stop strings ([`stop`]).

pub mod generate;
pub mod prefill;
pub mod stop;
pub mod thinking;
