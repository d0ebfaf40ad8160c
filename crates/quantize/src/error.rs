//! Errors of this crate: one enum, every variant naming the file(s) at fault.

use std::path::PathBuf;

/// Why a quantization was refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuantizeError {
    /// The input is a GGUF file llama.cpp cannot quantize (or would abort on).
    #[error("{}: {reason}", path.display())]
    Unsupported { path: PathBuf, reason: String },

    #[error(
        "the output {} is the input file{}: quantize into a new file",
        output.display(),
        if input == output { String::new() } else { format!(" {}", input.display()) }
    )]
    SameFile { input: PathBuf, output: PathBuf },

    #[error("{} already exists; refusing to overwrite it", path.display())]
    OutputExists { path: PathBuf },

    #[error("{} is a directory; the output must be a file path", path.display())]
    OutputIsDirectory { path: PathBuf },

    #[error("cannot write {}: the folder {} does not exist", path.display(), dir.display())]
    NoOutputDir { path: PathBuf, dir: PathBuf },

    #[error(
        "not enough free space in {}: the output needs about {} ({need} bytes), only {} are free",
        dir.display(),
        minicpmv_gguf::human_bytes(*need),
        minicpmv_gguf::human_bytes(*free)
    )]
    NoSpace { dir: PathBuf, need: u64, free: u64 },

    #[error(
        "{} is already quantized (tensor {tensor:?} is {ty}); quantizing it again adds a second \
         rounding error: quantize the f16/f32 original instead, or allow requantizing",
        path.display()
    )]
    Requantize {
        path: PathBuf,
        tensor: String,
        ty: String,
    },

    #[error("llama.cpp could not plan the quantization of {}: {message}", path.display())]
    Plan { path: PathBuf, message: String },

    #[error(
        "llama.cpp failed to quantize {} (writing {}): {message}; nothing was written to the output",
        input.display(),
        output.display()
    )]
    Llama {
        input: PathBuf,
        output: PathBuf,
        message: String,
    },

    /// llama.cpp's output stream failed while writing (disk full, file size limit, I/O error).
    #[error(
        "writing {} failed: {reason}; nothing was written to the output",
        output.display()
    )]
    WriteFailed { output: PathBuf, reason: String },

    /// The file is not a GGUF file we can read (the error names it).
    #[error(transparent)]
    Gguf(#[from] minicpmv_gguf::GgufError),

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl QuantizeError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> QuantizeError {
        QuantizeError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
