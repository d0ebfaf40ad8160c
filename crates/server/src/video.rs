//! Videos sent in requests (`input_video` content parts): ffmpeg reads files, so an uploaded
//! video is written to this server's private temporary folder, named by the SHA-256 of its
//! bytes. The same video sent again (every request of a conversation carries it) finds its
//! file and the embedding cache finds its frames. The folder keeps the last
//! [`VideoStore::KEEP`] videos and is removed when the server stops.

use std::collections::VecDeque;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

/// The folder of uploaded videos.
#[derive(Debug)]
pub struct VideoStore {
    dir: tempfile::TempDir,
    /// Files written, oldest first.
    files: Mutex<VecDeque<PathBuf>>,
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
    /// video is already there.
    pub fn store(&self, bytes: &[u8]) -> std::io::Result<PathBuf> {
        let name: String = Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let path = self.dir.path().join(format!("{name}.video"));
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        if path.exists() {
            // Most recently used last.
            files.retain(|p| p != &path);
            files.push_back(path.clone());
            return Ok(path);
        }
        let mut tmp = tempfile::NamedTempFile::new_in(self.dir.path())?;
        tmp.write_all(bytes)?;
        tmp.persist(&path).map_err(|e| e.error)?;
        files.push_back(path.clone());
        while files.len() > Self::KEEP {
            if let Some(old) = files.pop_front() {
                let _ = std::fs::remove_file(old);
            }
        }
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_video_is_stored_once_by_content_and_old_ones_are_removed() {
        let store = VideoStore::new().unwrap();
        let a = store.store(b"video a").unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), b"video a");
        assert_eq!(store.store(b"video a").unwrap(), a);
        let later: Vec<PathBuf> = (0..VideoStore::KEEP)
            .map(|i| store.store(format!("video {i}").as_bytes()).unwrap())
            .collect();
        assert!(!a.exists(), "the oldest is removed past KEEP");
        assert!(later.iter().all(|p| p.exists()));
        let dir = store.dir.path().to_path_buf();
        drop(store);
        assert!(!dir.exists());
    }
}
