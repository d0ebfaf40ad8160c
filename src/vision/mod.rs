//! Pure Rust image handling (no FFI): loading and decoding images with limits.

mod load;

pub use load::{load_image, ImageError, LoadedImage, DEFAULT_MAX_PIXELS};
