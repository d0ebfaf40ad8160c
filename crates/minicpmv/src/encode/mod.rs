//! Stage 3, encoding: one projector call per slice ([`projector`]), and image embeddings cached
//! by content in memory and on disk ([`cache`]).

pub mod cache;
pub mod projector;

pub use projector::{encode_image, ImageEmbeddings, NativeError};
