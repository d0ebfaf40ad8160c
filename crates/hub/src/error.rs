//! The error type of the crate. Messages state what happened, with the values involved as
//! fields; which command-line flag or environment variable changes the outcome is for the
//! caller to say.

use std::io;
use std::path::{Path, PathBuf};

/// Errors of listing, choosing, downloading and finding model files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PullError {
    /// A repository name that is not `OWNER/NAME` with safe characters.
    #[error("bad repository name {0:?}: expected OWNER/NAME (letters, digits, '.', '-', '_')")]
    BadRepo(String),
    /// An endpoint that is not an `http://` or `https://` URL.
    #[error("bad endpoint {0:?}: expected an http:// or https:// URL")]
    BadEndpoint(String),
    /// The request did not get an HTTP answer (DNS, connection, TLS, timeout).
    #[error("cannot reach {url}")]
    Unreachable {
        /// The URL asked for.
        url: String,
        /// The endpoint the client was made for.
        endpoint: String,
        /// What the HTTP client reported.
        #[source]
        source: Box<ureq::Error>,
    },
    /// An HTTP answer other than the one expected.
    #[error("{url}: HTTP {status}{}", http_note(*.status))]
    Http {
        /// The URL asked for.
        url: String,
        /// The HTTP status code.
        status: u16,
    },
    /// A listing that is not JSON of the expected shape, or an unreadable one.
    #[error("{url}: not a valid repository listing: {reason}")]
    BadListing {
        /// Where the listing came from (a URL or a file).
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No language model in the listing has the quant asked for.
    #[error("{repo} has no language model for quant {quant}; available: {}", list(.available))]
    QuantNotFound {
        /// The repository.
        repo: String,
        /// The quant asked for.
        quant: String,
        /// The quants of the language models the repository has.
        available: Vec<String>,
    },
    /// Several language models match the quant asked for.
    #[error("quant {quant} matches several files in {repo}: {}", list(.files))]
    QuantAmbiguous {
        /// The repository.
        repo: String,
        /// The quant asked for.
        quant: String,
        /// The matching file names.
        files: Vec<String>,
    },
    /// The listing has no projector file.
    #[error("{repo} has no projector (a .gguf file whose name starts with mmproj)")]
    NoMmproj {
        /// The repository.
        repo: String,
    },
    /// A file of the cache is a symbolic link (or not a regular file): it is not written
    /// through, since the link could point anywhere.
    #[error("{} is a symbolic link or not a regular file; refusing to write through it (remove it and pull again)", path.display())]
    NotRegularFile {
        /// The path in the cache.
        path: PathBuf,
    },
    /// A download stopped before the end; the partial file is kept so a later download
    /// resumes it.
    #[error("download of {url} stopped at {have} of {size} bytes; {part} is kept for resuming")]
    Interrupted {
        /// The URL downloaded.
        url: String,
        /// The partial file kept.
        part: PathBuf,
        /// Bytes in the partial file.
        have: u64,
        /// The file's size in the listing.
        size: u64,
        /// The read error, if the stop was one (`None`: the body ended early).
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The server sent more bytes than the listing's size.
    #[error("{url}: the server sent more than the {size} bytes of the listing; the partial file was deleted")]
    TooLong {
        /// The URL downloaded.
        url: String,
        /// The file's size in the listing.
        size: u64,
    },
    /// A `206` answer whose range does not start where the partial file ends.
    #[error("{url}: asked for bytes from {start}, the server answered with Content-Range {range:?}; the partial file was deleted")]
    BadRange {
        /// The URL downloaded.
        url: String,
        /// The first byte asked for.
        start: u64,
        /// The `Content-Range` header received (empty when there was none).
        range: String,
    },
    /// A downloaded file whose sha256 is not the listing's.
    #[error(
        "{file}: sha256 mismatch: expected {expected}, got {actual}; the download was deleted"
    )]
    Checksum {
        /// The file name.
        file: String,
        /// The listing's sha256.
        expected: String,
        /// The sha256 of the bytes received.
        actual: String,
    },
    /// A file system error.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder concerned.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The cache does not hold a complete pair for `repo` + `quant`.
    #[error("{} is not in the cache ({dir})", missing.what(repo, quant))]
    NotCached {
        /// The repository asked for.
        repo: String,
        /// The quant asked for.
        quant: String,
        /// The repository's folder in the cache.
        dir: PathBuf,
        /// What is missing.
        missing: Missing,
    },
}

/// What is missing from the cache, in a [`PullError::NotCached`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Missing {
    /// No listing was saved: the repository was never pulled into this cache.
    Listing,
    /// This file of the pair is not there.
    File(String),
    /// This file of the pair is there, but its size or sha256 is not the listing's.
    Mismatch(String),
}

impl Missing {
    /// What is missing, in words, for the pair `repo` + `quant`.
    fn what(&self, repo: &str, quant: &str) -> String {
        match self {
            Missing::Listing => format!("{repo} ({quant})"),
            Missing::File(name) => name.clone(),
            Missing::Mismatch(name) => {
                format!("a complete {name} matching the listing's size and sha256")
            }
        }
    }
}

/// What an HTTP status usually means here, appended to [`PullError::Http`]'s message.
fn http_note(status: u16) -> &'static str {
    match status {
        401 | 403 => " (a gated or private repository: it needs a token that can read it)",
        404 => " (no such repository, revision or file)",
        416 => " (the server refused to resume; the partial file was deleted)",
        429 => " (too many requests: try again later)",
        500..=599 => " (server error: try again later)",
        _ => "",
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}

/// Maps an I/O error on `path` to [`PullError::Io`].
pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> PullError + '_ {
    move |source| PullError::Io {
        path: path.to_path_buf(),
        source,
    }
}
