//! A cache of image embeddings (projector outputs), in memory and optionally on disk, so that an
//! image seen before costs no projector call.
//!
//! [`EmbeddingCache`] is the whole cache: look an image up with [`EmbeddingCache::get`], store
//! what the projector computed with [`EmbeddingCache::insert`]. It has three parts:
//!
//! - **the key** ([`EmbdKey`], made by [`embd_key`]): a SHA-256 of everything the embeddings
//!   depend on, the decoded pixels ([`image_digest`]), the projector's content
//!   ([`ProjectorId`]), the slice settings, the [`FORMAT_VERSION`] and this build. So the
//!   same picture in another file still hits, and another projector or setting misses;
//! - **memory**: an LRU map bounded by bytes ([`CacheConfig::mem_max_bytes`]), which hands out
//!   shared `Arc`s;
//! - **disk** (when [`CacheConfig::dir`] is set): one checksummed file per key
//!   ([`encode_file`] gives the layout), written atomically, kept under
//!   [`CacheConfig::disk_max_bytes`] by deleting the least recently used files. A file that is
//!   damaged or does not match the image is deleted, never trusted.
//!
//! Every hit, from memory or disk, is also checked against what the caller expects
//! ([`Expected`]: plan, width, chunk sizes), so a wrong entry can cost a projector call but
//! never reach the model.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use crate::encode::ImageEmbeddings;
use crate::gguf::GgufError;
use crate::vision::SlicePlan;

mod disk;
mod format;
mod key;
mod lru;

use disk::{DiskRead, DiskStore};
pub use format::{decode_file, encode_file};
pub use key::{embd_key, image_digest, EmbdKey, ProjectorId};
use lru::MemLru;

/// Version of the key derivation and of the file format. It is hashed into every key and
/// written in every file, so bumping it invalidates every entry (no new key names an old file,
/// and old files age out of the disk bound as the least recently used).
pub const FORMAT_VERSION: u32 = 1;

/// Default bound of the in-memory cache, in bytes (512 MiB).
pub const DEFAULT_MEM_MAX_BYTES: u64 = 512 << 20;
/// Default bound of the disk cache, in bytes (1 GiB).
pub const DEFAULT_DISK_MAX_BYTES: u64 = 1024 << 20;

/// Why the cache could not be set up or a projector identified.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbdCacheError {
    /// The cache folder could not be created.
    #[error("embedding cache folder {}: {source}", path.display())]
    Dir {
        /// The folder configured ([`CacheConfig::dir`]).
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The cache folder's path exists and is not a folder.
    #[error("embedding cache folder {} is not a folder", path.display())]
    NotADir {
        /// The folder configured ([`CacheConfig::dir`]).
        path: PathBuf,
    },
    /// The projector is not a readable GGUF file ([`ProjectorId::of_file`]).
    #[error("projector (--mmproj): {0}")]
    ProjectorFile(#[source] GgufError),
    /// Reading the projector's bytes to hash them failed.
    #[error("cannot read the projector {} to identify it: {source}", path.display())]
    ProjectorRead {
        /// The projector file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// What a valid entry for a key must look like (checked on every hit).
#[derive(Debug, Clone, PartialEq)]
pub struct Expected<'a> {
    /// The slice plan of the image being looked up: the entry's must be equal.
    pub plan: &'a SlicePlan,
    /// The language model's embedding width: the entry's `n_embd` must be equal.
    pub n_embd: usize,
    /// Floats of each chunk, overview first (its embeddings x n_embd).
    pub chunk_lens: Vec<usize>,
}

impl Expected<'_> {
    /// `Ok` when `e` fits; otherwise what differs, in words for a warning.
    fn matches(&self, e: &ImageEmbeddings) -> Result<(), String> {
        if e.n_embd != self.n_embd {
            return Err(format!("width {} instead of {}", e.n_embd, self.n_embd));
        }
        if &e.plan != self.plan {
            return Err("its slice plan differs from this image's".into());
        }
        if e.chunks.len() != self.plan.n_chunks() {
            return Err(format!(
                "{} chunks instead of {}",
                e.chunks.len(),
                self.plan.n_chunks()
            ));
        }
        if let Some((c, want)) = e
            .chunks
            .iter()
            .zip(&self.chunk_lens)
            .find(|(c, want)| c.len() != **want)
        {
            return Err(format!("a chunk of {} floats instead of {want}", c.len()));
        }
        if self.chunk_lens.len() != e.chunks.len() {
            return Err(format!(
                "{} chunks instead of {}",
                e.chunks.len(),
                self.chunk_lens.len()
            ));
        }
        Ok(())
    }
}

/// Where the cache keeps entries and how much.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// Bound of the in-memory cache in bytes (0: no in-memory cache).
    pub mem_max_bytes: u64,
    /// Folder of the disk cache (`None`: memory only).
    pub dir: Option<PathBuf>,
    /// Bound of the disk cache folder in bytes (`.embd` files).
    pub disk_max_bytes: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            mem_max_bytes: DEFAULT_MEM_MAX_BYTES,
            dir: None,
            disk_max_bytes: DEFAULT_DISK_MAX_BYTES,
        }
    }
}

/// Counters since the cache was created. Each [`EmbeddingCache::get`] counts exactly one of
/// `mem_hits`, `disk_hits` and `misses`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CacheStats {
    /// Lookups answered from memory.
    pub mem_hits: u64,
    /// Lookups answered from a disk file (then also kept in memory).
    pub disk_hits: u64,
    /// Lookups that found no valid entry: the caller runs the projector.
    pub misses: u64,
    /// Files written (entries larger than the disk bound are not).
    pub disk_writes: u64,
    /// Entries dropped from memory to stay under its bound.
    pub mem_evictions: u64,
    /// Files deleted to keep the folder under its bound.
    pub disk_evictions: u64,
    /// Disk files found corrupt, truncated or not matching, and deleted.
    pub corrupt_files: u64,
}

impl CacheStats {
    /// Lookups answered without the projector: memory hits plus disk hits.
    pub fn hits(&self) -> u64 {
        self.mem_hits + self.disk_hits
    }
}

/// The cache: an LRU map bounded by bytes, backed by an optional folder (see the module docs).
pub struct EmbeddingCache {
    cfg: CacheConfig,
    mem: MemLru,
    disk: Option<DiskStore>,
    stats: CacheStats,
}

impl fmt::Debug for EmbeddingCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddingCache")
            .field("cfg", &self.cfg)
            .field("entries", &self.mem.len())
            .field("mem_bytes", &self.mem.bytes())
            .field("stats", &self.stats)
            .finish()
    }
}

impl EmbeddingCache {
    /// Creates the cache; the disk folder is created if missing.
    pub fn new(cfg: CacheConfig) -> Result<EmbeddingCache, EmbdCacheError> {
        let disk = match &cfg.dir {
            Some(dir) => Some(DiskStore::open(dir, cfg.disk_max_bytes)?),
            None => None,
        };
        Ok(EmbeddingCache {
            mem: MemLru::new(cfg.mem_max_bytes),
            cfg,
            disk,
            stats: CacheStats::default(),
        })
    }

    /// The configuration it was created with.
    pub fn config(&self) -> &CacheConfig {
        &self.cfg
    }

    /// The counters so far.
    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    /// Bytes held in memory.
    pub fn mem_bytes(&self) -> u64 {
        self.mem.bytes()
    }

    /// The embeddings of `key`, from memory or disk, if present and valid.
    pub fn get(&mut self, key: &EmbdKey, expect: &Expected<'_>) -> Option<Arc<ImageEmbeddings>> {
        if let Some(emb) = self.mem.get(key) {
            if expect.matches(&emb).is_ok() {
                self.stats.mem_hits += 1;
                // keep the disk copy recent too, so the folder's LRU follows use
                if let Some(disk) = &self.disk {
                    disk.touch(key);
                }
                return Some(emb);
            }
            // cannot happen for a sound key; drop the entry rather than trust it
            self.mem.remove(key);
        }
        if let Some(disk) = &self.disk {
            match disk.read(key, expect) {
                DiskRead::Hit(emb) => {
                    self.stats.disk_hits += 1;
                    let emb = Arc::new(emb);
                    self.stats.mem_evictions += self.mem.put(*key, Arc::clone(&emb));
                    return Some(emb);
                }
                DiskRead::Corrupt => self.stats.corrupt_files += 1,
                DiskRead::Absent => {}
            }
        }
        self.stats.misses += 1;
        None
    }

    /// Stores freshly computed embeddings in memory and on disk. Disk problems are logged,
    /// never fatal (the cache is an optimisation).
    pub fn insert(&mut self, key: EmbdKey, emb: Arc<ImageEmbeddings>) {
        if let Some(disk) = &self.disk {
            match disk.write(&key, &emb) {
                Ok(true) => {
                    self.stats.disk_writes += 1;
                    self.stats.disk_evictions += disk.enforce_bound();
                }
                Ok(false) => {}
                Err(e) => log::warn!("cannot write the image embedding cache: {e}"),
            }
        }
        self.stats.mem_evictions += self.mem.put(key, emb);
    }

    /// The disk file of `key` (when a folder is configured), whether it exists or not.
    pub fn file_path(&self, key: &EmbdKey) -> Option<PathBuf> {
        self.disk.as_ref().map(|d| d.path(key))
    }
}

/// Embeddings and keys shared by the tests of the submodules.
#[cfg(test)]
mod fixtures {
    use super::{EmbdKey, Expected};
    use crate::encode::ImageEmbeddings;
    use crate::vision::{plan_slices, SliceParams};

    /// Embeddings of a `w` x `h` image (default slicing), `q` embeddings of width `n_embd` per
    /// chunk, with distinct values derived from `seed`.
    pub(super) fn sample(w: u32, h: u32, n_embd: usize, q: usize, seed: f32) -> ImageEmbeddings {
        let plan = plan_slices(w, h, &SliceParams::default()).unwrap();
        let chunks = (0..plan.n_chunks())
            .map(|c| {
                (0..q * n_embd)
                    .map(|i| seed + c as f32 * 1000.0 + i as f32 * 0.5)
                    .collect()
            })
            .collect();
        ImageEmbeddings {
            plan,
            chunks,
            n_embd,
            encode_secs: Vec::new(),
        }
    }

    /// A key of 32 bytes `n`.
    pub(super) fn key(n: u8) -> EmbdKey {
        EmbdKey([n; 32])
    }

    /// What `e` itself satisfies.
    pub(super) fn expected(e: &ImageEmbeddings) -> Expected<'_> {
        Expected {
            plan: &e.plan,
            n_embd: e.n_embd,
            chunk_lens: e.chunks.iter().map(Vec::len).collect(),
        }
    }
}
