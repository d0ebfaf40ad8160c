//! sha256 checks: hashing files on disk, and the `{file}.sha256` sidecar that records a
//! verified hash so a file in place is not hashed again on every run.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::cache::write_atomic;
use crate::error::io_err;
use crate::{Progress, PullError};

/// Bytes read (or received) at a time.
pub(crate) const CHUNK: usize = 1 << 20;

/// The lower-case hex sha256 of what `hasher` was fed.
pub(crate) fn hex_digest(hasher: Sha256) -> String {
    format!("{:x}", hasher.finalize())
}

/// Feeds the first `len` bytes of `path` to `hasher`, with progress under `label`. A file
/// shorter than `len` is an error.
pub(crate) fn hash_prefix(
    path: &Path,
    len: u64,
    hasher: &mut Sha256,
    label: &str,
    progress: &mut dyn Progress,
) -> Result<(), PullError> {
    let file = File::open(path).map_err(io_err(path))?;
    let mut reader = file.take(len);
    let mut buf = vec![0u8; CHUNK];
    progress.start(label, len, 0);
    let mut done = 0u64;
    let result = loop {
        match reader.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => {
                hasher.update(&buf[..n]);
                done += n as u64;
                progress.advance(n as u64);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(io_err(path)(e)),
        }
    };
    progress.finish();
    result?;
    if done != len {
        return Err(io_err(path)(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("expected {len} bytes, read {done}"),
        )));
    }
    Ok(())
}

/// Whether the `len` bytes of `path` hash to `expected` (computed, with progress); a match is
/// recorded in the sidecar.
pub(crate) fn file_matches(
    path: &Path,
    len: u64,
    expected: &str,
    label: &str,
    progress: &mut dyn Progress,
) -> Result<bool, PullError> {
    let mut hasher = Sha256::new();
    hash_prefix(path, len, &mut hasher, label, progress)?;
    if hex_digest(hasher) != expected {
        return Ok(false);
    }
    record(path, expected)?;
    Ok(true)
}

/// `{path}.sha256`.
pub(crate) fn sidecar_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".sha256");
    PathBuf::from(s)
}

/// Whether the sidecar of `path` records `expected` for the file as it is now: the sidecar
/// holds the hash with the size and modification time the file had when it was hashed, and a
/// file changed since (rewritten, truncated, touched) is hashed again.
pub(crate) fn is_recorded(path: &Path, expected: &str) -> bool {
    let Ok(recorded) = fs::read_to_string(sidecar_path(path)) else {
        return false;
    };
    let Some(stamp) = file_stamp(path) else {
        return false;
    };
    recorded.trim() == format!("{expected} {stamp}")
}

/// `SIZE MTIME_NS` of a regular file (not followed through a link); `None` otherwise.
fn file_stamp(path: &Path) -> Option<String> {
    let m = fs::symlink_metadata(path).ok()?;
    if !m.file_type().is_file() {
        return None;
    }
    let mtime = m
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_nanos();
    Some(format!("{} {mtime}", m.len()))
}

/// Records `sha256` as the verified hash of `path` as it is now (size and mtime).
pub(crate) fn record(path: &Path, sha256: &str) -> Result<(), PullError> {
    let stamp = file_stamp(path).ok_or_else(|| PullError::NotRegularFile {
        path: path.to_path_buf(),
    })?;
    write_atomic(
        &sidecar_path(path),
        format!("{sha256} {stamp}\n").as_bytes(),
    )
}

/// Removes the sidecar of `path`, if any.
pub(crate) fn forget(path: &Path) {
    let _ = fs::remove_file(sidecar_path(path));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NoProgress;

    #[test]
    fn digests_are_lower_case_hex() {
        let mut h = Sha256::new();
        h.update(b"abc");
        assert_eq!(
            hex_digest(h),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_matching_file_is_recorded_and_a_short_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.gguf");
        fs::write(&path, b"abc").unwrap();
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert!(!file_matches(&path, 3, &"0".repeat(64), "l", &mut NoProgress).unwrap());
        assert!(!is_recorded(&path, abc));
        assert!(file_matches(&path, 3, abc, "l", &mut NoProgress).unwrap());
        assert!(is_recorded(&path, abc));
        assert!(file_matches(&path, 4, abc, "l", &mut NoProgress).is_err());
    }

    #[test]
    fn a_file_changed_after_it_was_recorded_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.gguf");
        fs::write(&path, b"abc").unwrap();
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        record(&path, abc).unwrap();
        assert!(is_recorded(&path, abc));
        // Same size, other bytes, a later modification time.
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(&path, b"abd").unwrap();
        assert!(!is_recorded(&path, abc));
        // A sidecar of the older format (the hash alone) is not trusted either.
        fs::write(sidecar_path(&path), format!("{abc}\n")).unwrap();
        assert!(!is_recorded(&path, abc));
    }
}
