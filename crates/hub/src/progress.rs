//! Progress reports of long steps, for a caller to draw.

/// Progress of long steps (downloads, hashing files already on disk). All methods default to
/// doing nothing.
pub trait Progress {
    /// A step over `total` bytes starts at `pos`; `label` says what ("downloading FILE").
    fn start(&mut self, _label: &str, _total: u64, _pos: u64) {}
    /// `bytes` more are done.
    fn advance(&mut self, _bytes: u64) {}
    /// The step ended (successfully or not).
    fn finish(&mut self) {}
}

/// No progress reporting.
pub struct NoProgress;

impl Progress for NoProgress {}
