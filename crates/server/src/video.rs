//! Videos sent in requests (`input_video` content parts): ffmpeg reads files, so an uploaded
//! video is written to this server's private temporary folder, named by the SHA-256 of its
//! bytes. The same video sent again (every request of a conversation carries it) finds its
//! file and the embedding cache finds its frames. The folder keeps the last
//! [`VideoStore::KEEP`] videos, and any that a request still holds ([`StoredVideo`]), and is
//! removed when the server stops.

use std::collections::VecDeque;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

/// The folder of uploaded videos.
#[derive(Debug)]
pub struct VideoStore {
    dir: tempfile::TempDir,
    /// Files written, least recently used first.
    files: Mutex<VecDeque<Arc<StoredVideo>>>,
}

/// A stored video; while a request holds it, its file is not removed.
#[derive(Debug)]
pub struct StoredVideo {
    path: PathBuf,
}

impl StoredVideo {
    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl VideoStore {
    /// Videos kept on disk at once.
    pub const KEEP: usize = 8;

    /// A new empty folder under the system's temporary folder.
    pub fn new() -> std::io::Result<VideoStore> {
        Ok(VideoStore {
            dir: tempfile::Builder::new()
                .prefix("minicpmv-videos-")
                .tempdir()?,
            files: Mutex::new(VecDeque::new()),
        })
    }

    /// The file holding `bytes`: written (to a temporary name, then renamed) unless this
    /// video is already there. Past [`VideoStore::KEEP`] files, the least recently used ones
    /// that no request holds are removed.
    pub fn store(&self, bytes: &[u8]) -> std::io::Result<Arc<StoredVideo>> {
        let name: String = Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let path = self.dir.path().join(format!("{name}.video"));
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = files.iter().position(|f| f.path == path) {
            // Most recently used last.
            if let Some(found) = files.remove(i) {
                files.push_back(Arc::clone(&found));
                return Ok(found);
            }
        }
        let mut tmp = tempfile::NamedTempFile::new_in(self.dir.path())?;
        tmp.write_all(bytes)?;
        tmp.persist(&path).map_err(|e| e.error)?;
        let stored = Arc::new(StoredVideo { path });
        files.push_back(Arc::clone(&stored));
        while files.len() > Self::KEEP {
            // Only the store holds it: no request needs the file.
            let Some(i) = files.iter().position(|f| Arc::strong_count(f) == 1) else {
                break;
            };
            if let Some(old) = files.remove(i) {
                let _ = std::fs::remove_file(&old.path);
            }
        }
        Ok(stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_video_is_stored_once_by_content_and_old_ones_are_removed_unless_held() {
        let store = VideoStore::new().unwrap();
        let a = store.store(b"video a").unwrap().path().to_path_buf();
        assert_eq!(std::fs::read(&a).unwrap(), b"video a");
        assert_eq!(store.store(b"video a").unwrap().path(), a);
        // Held by a request while KEEP others arrive: kept; the next one unheld goes.
        let held = store.store(b"video held").unwrap();
        let later: Vec<PathBuf> = (0..VideoStore::KEEP)
            .map(|i| {
                store
                    .store(format!("video {i}").as_bytes())
                    .unwrap()
                    .path()
                    .to_path_buf()
            })
            .collect();
        assert!(!a.exists(), "the least recently used is removed past KEEP");
        assert!(held.path().exists(), "a held video is never removed");
        assert!(!later[0].exists(), "the oldest unheld one went instead");
        drop(held);
        store.store(b"one more").unwrap();
        assert!(later[1..].iter().all(|p| p.exists()));
        let dir = store.dir.path().to_path_buf();
        drop(store);
        assert!(!dir.exists());
    }
}
