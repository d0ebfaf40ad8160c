//! Process-wide signal settings the command line makes once at start.

/// Ignores SIGXFSZ, so that a write past the file-size limit (`ulimit -f`) fails with `EFBIG`
/// and is reported (and its temporary file removed) instead of killing the process with no
/// message. Call it before any thread starts.
pub fn ignore_file_size_signal() {
    // SAFETY: installing SIG_IGN for SIGXFSZ touches no memory of ours; the call is made from
    // the main thread before other threads exist, and SIG_IGN is always a valid disposition.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}
