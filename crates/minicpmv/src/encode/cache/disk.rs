//! The on-disk layer: one `.embd` file per key in a folder, kept under a byte bound.
//!
//! - A file is `DIR/<64 hex digits of the key>.embd` (format: [`super::encode_file`]).
//! - Files are written to a temporary name in DIR (`.<key>.<pid>.<n>.tmp`) and renamed, so no
//!   reader sees one half-written; temporary files a crashed writer left behind are deleted
//!   after an hour.
//! - A file that is truncated, fails its checksum or does not match what the caller expects
//!   (plan, width, chunk sizes) is ignored with a warning and deleted, never trusted.
//! - The folder is kept under its bound by deleting the least recently used `.embd` files,
//!   by modification time, which every hit refreshes.
//!
//! Disk problems other than a file that cannot be trusted are logged and otherwise ignored:
//! the cache is an optimisation.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use super::{decode_file, encode_file, EmbdCacheError, EmbdKey, Expected};
use crate::encode::ImageEmbeddings;

/// Extension of the cache files.
const EXT: &str = "embd";

/// Age in seconds after which a temporary file is taken as a crashed writer's and deleted.
const STALE_TMP_SECS: u64 = 3600;

/// What [`DiskStore::read`] found.
pub(super) enum DiskRead {
    /// No file for the key (or it could not be read, which was logged).
    Absent,
    /// A valid file, now marked as just used.
    Hit(ImageEmbeddings),
    /// A file that could not be trusted; it was logged and deleted.
    Corrupt,
}

/// The cache folder and its byte bound.
pub(super) struct DiskStore {
    dir: PathBuf,
    max_bytes: u64,
}

impl DiskStore {
    /// Uses `dir` (created if missing) with a bound of `max_bytes` bytes of `.embd` files.
    pub(super) fn open(dir: &Path, max_bytes: u64) -> Result<DiskStore, EmbdCacheError> {
        if dir.exists() && !dir.is_dir() {
            return Err(EmbdCacheError::NotADir {
                path: dir.to_path_buf(),
            });
        }
        fs::create_dir_all(dir).map_err(|source| EmbdCacheError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(DiskStore {
            dir: dir.to_path_buf(),
            max_bytes,
        })
    }

    /// The file of `key`, whether it exists or not.
    pub(super) fn path(&self, key: &EmbdKey) -> PathBuf {
        self.dir.join(format!("{}.{EXT}", key.hex()))
    }

    /// Marks the file of `key` as just used, if it exists (its modification time is the disk
    /// LRU's clock).
    pub(super) fn touch(&self, key: &EmbdKey) {
        touch(&self.path(key));
    }

    /// Reads and verifies the file of `key` against `expect`.
    pub(super) fn read(&self, key: &EmbdKey, expect: &Expected<'_>) -> DiskRead {
        let path = self.path(key);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return DiskRead::Absent,
            Err(e) => {
                log::warn!(
                    "cannot read the cached image embeddings {}: {e}; computing them again",
                    path.display()
                );
                return DiskRead::Absent;
            }
        };
        let parsed = decode_file(&bytes, key).and_then(|emb| expect.matches(&emb).map(|_| emb));
        match parsed {
            Ok(emb) => {
                touch(&path);
                DiskRead::Hit(emb)
            }
            Err(reason) => {
                log::warn!(
                    "ignoring and deleting the cached image embeddings {}: {reason}",
                    path.display()
                );
                if let Err(e) = fs::remove_file(&path) {
                    log::warn!("cannot delete {}: {e}", path.display());
                }
                DiskRead::Corrupt
            }
        }
    }

    /// Writes the file of `key` (temporary file, then rename); `Ok(false)` when it is not
    /// kept because it alone is larger than the bound.
    pub(super) fn write(&self, key: &EmbdKey, emb: &ImageEmbeddings) -> std::io::Result<bool> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let path = self.path(key);
        let tmp = self.dir.join(format!(
            ".{}.{}.{}.tmp",
            key.hex(),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let bytes = encode_file(key, emb);
        if bytes.len() as u64 > self.max_bytes {
            log::warn!(
                "image embeddings of {:.1} MiB exceed the embedding cache bound of {:.1} MiB: not kept on disk",
                bytes.len() as f64 / (1 << 20) as f64,
                self.max_bytes as f64 / (1 << 20) as f64
            );
            return Ok(false);
        }
        let result = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            drop(f);
            fs::rename(&tmp, &path)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map(|()| true)
    }

    /// Deletes the least recently used `.embd` files until the folder is within its bound, and
    /// temporary files that a crashed writer left behind more than an hour ago. Returns the
    /// number of `.embd` files deleted.
    pub(super) fn enforce_bound(&self) -> u64 {
        let entries = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) => {
                log::warn!(
                    "cannot list the embedding cache {}: {e}",
                    self.dir.display()
                );
                return 0;
            }
        };
        let now = SystemTime::now();
        let mut files: Vec<(SystemTime, PathBuf, u64)> = entries
            .filter_map(Result::ok)
            .filter(|e| {
                let path = e.path();
                if path.extension().is_some_and(|x| x == "tmp")
                    && e.file_name().to_string_lossy().starts_with('.')
                {
                    let stale = e
                        .metadata()
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| now.duration_since(t).ok())
                        .is_some_and(|age| age.as_secs() > STALE_TMP_SECS);
                    if stale {
                        let _ = fs::remove_file(&path);
                    }
                    return false;
                }
                path.extension().is_some_and(|x| x == EXT)
            })
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                m.is_file().then(|| {
                    (
                        m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                        e.path(),
                        m.len(),
                    )
                })
            })
            .collect();
        let mut total: u64 = files.iter().map(|f| f.2).sum();
        if total <= self.max_bytes {
            return 0;
        }
        files.sort();
        let mut evicted = 0;
        for (_, path, len) in files {
            if total <= self.max_bytes {
                break;
            }
            match fs::remove_file(&path) {
                Ok(()) => {
                    total -= len;
                    evicted += 1;
                    log::debug!("embedding cache: evicted {}", path.display());
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => total -= len,
                Err(e) => log::warn!("cannot delete {}: {e}", path.display()),
            }
        }
        evicted
    }
}

/// Marks a file as just used (its modification time is the disk LRU's clock).
fn touch(path: &Path) {
    if let Ok(f) = File::options().append(true).open(path) {
        let _ = f.set_modified(SystemTime::now());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::fixtures::{expected, key, sample};
    use super::super::{
        CacheConfig, EmbeddingCache, DEFAULT_DISK_MAX_BYTES, DEFAULT_MEM_MAX_BYTES,
    };
    use super::*;

    #[test]
    fn disk_cache_survives_a_new_cache_and_drops_corrupt_files() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = CacheConfig {
            mem_max_bytes: DEFAULT_MEM_MAX_BYTES,
            dir: Some(dir.path().join("sub")),
            disk_max_bytes: DEFAULT_DISK_MAX_BYTES,
        };
        let e = Arc::new(sample(1000, 700, 8, 4, 3.0));
        let mut a = EmbeddingCache::new(cfg.clone()).unwrap();
        a.insert(key(5), Arc::clone(&e));
        let path = a.file_path(&key(5)).unwrap();
        assert!(path.is_file());
        let mut b = EmbeddingCache::new(cfg.clone()).unwrap();
        assert_eq!(b.get(&key(5), &expected(&e)).as_deref(), Some(&*e));
        assert_eq!(b.stats().disk_hits, 1);
        // truncate: ignored, deleted, counted
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() - 7]).unwrap();
        let mut c = EmbeddingCache::new(cfg.clone()).unwrap();
        assert!(c.get(&key(5), &expected(&e)).is_none());
        assert_eq!((c.stats().corrupt_files, c.stats().misses), (1, 1));
        assert!(!path.exists());
        // no temporary files left behind
        let names: Vec<_> = fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(names.is_empty(), "{names:?}");
    }

    #[test]
    fn disk_cache_evicts_least_recently_used_files() {
        let dir = tempfile::tempdir().unwrap();
        let e = Arc::new(sample(1000, 700, 8, 4, 0.0));
        let file_len = encode_file(&key(0), &e).len() as u64;
        let mut cache = EmbeddingCache::new(CacheConfig {
            mem_max_bytes: 0,
            dir: Some(dir.path().to_path_buf()),
            disk_max_bytes: file_len * 2,
        })
        .unwrap();
        let set_age = |k: u8, secs: u64| {
            let p = dir.path().join(format!("{}.embd", key(k).hex()));
            let f = File::options().append(true).open(p).unwrap();
            f.set_modified(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs))
                .unwrap();
        };
        cache.insert(key(1), Arc::clone(&e));
        set_age(1, 1_000);
        cache.insert(key(2), Arc::clone(&e));
        set_age(2, 2_000);
        // a hit refreshes 1, so 2 is now the oldest
        assert!(cache.get(&key(1), &expected(&e)).is_some());
        cache.insert(key(3), Arc::clone(&e));
        assert_eq!(cache.stats().disk_evictions, 1);
        assert!(cache.file_path(&key(1)).unwrap().exists());
        assert!(!cache.file_path(&key(2)).unwrap().exists());
        assert!(cache.file_path(&key(3)).unwrap().exists());
        // an entry larger than the whole bound is not written (and evicts nothing)
        let big = Arc::new(sample(1000, 700, 8, 12, 0.0));
        cache.insert(key(4), big);
        assert!(!cache.file_path(&key(4)).unwrap().exists());
        assert!(cache.file_path(&key(3)).unwrap().exists());
        assert_eq!(cache.stats().disk_writes, 3);
    }
}
