//! minicpmv-gguf: GGUF reading and writing, in pure Rust (no FFI, no `unsafe`).
//!
//! - [`GgufFile::open`] reads a file's header, metadata and tensor infos, checking everything
//!   llama.cpp would refuse (and hostile input: lengths and counts are bounded by the file size),
//!   so that a bad file is reported with its path instead of reaching llama.cpp.
//! - [`GgufWriter`] streams a GGUF v3 file tensor by tensor through a temporary file and a rename.
//!
//! Format reference: `ggml/include/gguf.h` and `ggml/src/gguf.cpp` of the llama.cpp bundled in
//! `llama-cpp-sys-2` 0.1.161.

#![forbid(unsafe_code)]

mod read;
mod size;
mod types;
mod write;

pub use read::GgufFile;
pub use size::human_bytes;
pub use types::{
    FileKind, GgmlType, GgufError, MetaArray, MetaValue, TensorInfo, GGUF_DEFAULT_ALIGNMENT,
    GGUF_KEY_ALIGNMENT, GGUF_MAGIC, GGUF_MAX_ARRAY_LEN, GGUF_MAX_DIMS, GGUF_MAX_KEY_LEN,
    GGUF_MAX_STRING_LEN, GGUF_MAX_TENSOR_NAME, GGUF_VERSION,
};
pub use write::{GgufWriteError, GgufWriter};

/// What a path that is not a regular file (nor a directory) is, in words ("a FIFO (named
/// pipe)", "a character device", ...); `None` for regular files and directories. Opening a FIFO
/// for reading blocks until a writer comes, and a device never ends: callers refuse them.
pub fn special_file_kind(meta: &std::fs::Metadata) -> Option<&'static str> {
    let t = meta.file_type();
    if t.is_file() || t.is_dir() {
        return None;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return Some("a FIFO (named pipe)");
        }
        if t.is_char_device() {
            return Some("a character device");
        }
        if t.is_block_device() {
            return Some("a block device");
        }
        if t.is_socket() {
            return Some("a socket");
        }
    }
    Some("not a regular file")
}
