//! A cache of image embeddings (projector outputs), in memory and optionally on disk, so that an
//! image seen before costs no projector call.
//!
//! # Key
//! [`EmbdKey`] is the SHA-256 of, in order: a format tag ([`FORMAT_VERSION`]), the producer
//! (this crate's version and its enabled GPU backend features, because another backend can give
//! slightly different floats), the image content ([`image_digest`]: SHA-256 of the width, the
//! height and the decoded RGB pixels, so the same picture in another file or format hits and an
//! edited file misses), the projector identity ([`ProjectorId`]) and the slice settings that
//! change the projector input (`image_size`, `patch_size`, `max_slices`).
//!
//! **Projector identity** ([`ProjectorId::of_file`]): SHA-256 of the file size, every byte of
//! the GGUF header (metadata and tensor-info table, i.e. `[0, data_offset)`) and a sample of
//! the tensor data (64 KiB at 32 evenly spaced offsets, plus the last 64 KiB): about 2 MiB
//! read, milliseconds, for a 1 GB mmproj. It is content-based, so a renamed, copied or touched
//! file still hits (path + size + mtime would miss there, and would wrongly hit for a file
//! replaced with `cp -p`/`rsync -t`), and much cheaper than hashing a whole 1 GB file at every
//! start. Two projectors with the same metadata whose weights differ only outside every
//! sampled block would collide; any fine-tune or re-quantization changes the sampled blocks.
//!
//! # Disk files
//! One file per key, `DIR/<64 hex digits of the key>.embd`, little-endian:
//!
//! ```text
//! magic           8 bytes  "MCVEMBD\0"
//! format version  u32      FORMAT_VERSION
//! key             32 bytes (must equal the file name's)
//! n_embd          u32      width of one embedding
//! n_chunks        u32      overview + slices
//! plan            10 x u32 source w,h; overview w,h; grid cols,rows; refine w,h; slice w,h
//!                          (0,0 for an absent grid/refine/slice)
//! n_slices        u32, then n_slices x (x, y, w, h) u32
//! chunk lengths   n_chunks x u64, floats per chunk
//! data            f32 x sum(chunk lengths)
//! checksum        32 bytes SHA-256 of everything before it
//! ```
//!
//! Files are written to a temporary name in DIR and renamed (never seen half-written). A file
//! that is truncated, fails its checksum or does not match what the caller expects (plan,
//! width, chunk sizes) is ignored with a warning and deleted, never trusted. The folder is kept
//! under a byte bound by deleting the least recently used `.embd` files (by modification time,
//! which a hit refreshes).

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::encode::ImageEmbeddings;
use crate::gguf::{GgufError, GgufFile};
use crate::vision::{LoadedImage, SliceParams, SlicePlan, SliceRect};

/// Version of the key derivation and of the file format; bumping it invalidates every entry.
pub const FORMAT_VERSION: u32 = 1;

const MAGIC: &[u8; 8] = b"MCVEMBD\0";
const EXT: &str = "embd";
const SAMPLE_BLOCKS: u64 = 32;
const SAMPLE_BYTES: u64 = 64 * 1024;

/// Default bound of the in-memory cache, in bytes (512 MiB).
pub const DEFAULT_MEM_MAX_BYTES: u64 = 512 << 20;
/// Default bound of the disk cache, in bytes (1 GiB).
pub const DEFAULT_DISK_MAX_BYTES: u64 = 1024 << 20;

/// Why the cache could not be set up or a projector identified.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbdCacheError {
    #[error("embedding cache folder {}: {source}", path.display())]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("embedding cache folder {} is not a folder", path.display())]
    NotADir { path: PathBuf },
    #[error("projector (--mmproj): {0}")]
    ProjectorFile(#[source] GgufError),
    #[error("cannot read the projector {} to identify it: {source}", path.display())]
    ProjectorRead {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A 32-byte SHA-256 digest used as a cache key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct EmbdKey(pub [u8; 32]);

impl EmbdKey {
    /// Lower-case hex, the disk file's stem.
    pub fn hex(&self) -> String {
        hex(&self.0)
    }
}

impl fmt::Debug for EmbdKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EmbdKey({})", &self.hex()[..16])
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The identity of an mmproj file (see the module docs).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProjectorId(pub [u8; 32]);

impl fmt::Debug for ProjectorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProjectorId({})", &hex(&self.0)[..16])
    }
}

impl ProjectorId {
    /// Reads the GGUF header and identifies the file.
    pub fn of_file(path: &Path) -> Result<ProjectorId, EmbdCacheError> {
        let gguf = GgufFile::open(path).map_err(EmbdCacheError::ProjectorFile)?;
        ProjectorId::of_gguf(&gguf)
    }

    /// Identifies an already parsed GGUF file: header bytes plus sampled tensor data.
    pub fn of_gguf(gguf: &GgufFile) -> Result<ProjectorId, EmbdCacheError> {
        let path = &gguf.path;
        let io = |source| EmbdCacheError::ProjectorRead {
            path: path.clone(),
            source,
        };
        let mut f = File::open(path).map_err(io)?;
        let size = f.metadata().map_err(io)?.len();
        let mut h = Sha256::new();
        h.update(b"minicpmv-mmproj-id\0");
        h.update(size.to_le_bytes());
        let header_len = gguf.data_offset.min(size);
        let mut header = Vec::new();
        (&mut f)
            .take(header_len)
            .read_to_end(&mut header)
            .map_err(io)?;
        h.update(&header);
        let data_len = size - header_len;
        let mut offsets: Vec<u64> = (0..SAMPLE_BLOCKS)
            .map(|i| header_len + data_len * i / SAMPLE_BLOCKS)
            .collect();
        offsets.push(size.saturating_sub(SAMPLE_BYTES).max(header_len));
        let mut buf = Vec::with_capacity(SAMPLE_BYTES as usize);
        for off in offsets {
            f.seek(SeekFrom::Start(off)).map_err(io)?;
            buf.clear();
            (&mut f)
                .take(SAMPLE_BYTES)
                .read_to_end(&mut buf)
                .map_err(io)?;
            h.update(off.to_le_bytes());
            h.update(&buf);
        }
        Ok(ProjectorId(h.finalize().into()))
    }
}

/// SHA-256 of an image's width, height and decoded RGB pixels.
pub fn image_digest(img: &LoadedImage) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"minicpmv-rgb8\0");
    h.update(img.width.to_le_bytes());
    h.update(img.height.to_le_bytes());
    h.update(&img.rgb);
    h.finalize().into()
}

/// What produced the floats: this crate's version and its GPU backend features.
fn producer() -> String {
    let mut s = format!("minicpmv {}", env!("CARGO_PKG_VERSION"));
    for (on, name) in [
        (cfg!(feature = "metal"), "metal"),
        (cfg!(feature = "cuda"), "cuda"),
        (cfg!(feature = "vulkan"), "vulkan"),
    ] {
        if on {
            s.push('+');
            s.push_str(name);
        }
    }
    s
}

/// The cache key of an image's embeddings (see the module docs).
pub fn embd_key(image: &[u8; 32], projector: &ProjectorId, params: &SliceParams) -> EmbdKey {
    let mut h = Sha256::new();
    h.update(b"minicpmv-embd-key\0");
    h.update(FORMAT_VERSION.to_le_bytes());
    let p = producer();
    h.update((p.len() as u64).to_le_bytes());
    h.update(p.as_bytes());
    h.update(image);
    h.update(projector.0);
    h.update(params.image_size.to_le_bytes());
    h.update(params.patch_size.to_le_bytes());
    h.update(params.max_slices.to_le_bytes());
    EmbdKey(h.finalize().into())
}

/// What a valid entry for a key must look like (checked on every hit).
#[derive(Debug, Clone, PartialEq)]
pub struct Expected<'a> {
    pub plan: &'a SlicePlan,
    pub n_embd: usize,
    /// Floats per chunk (embeddings per chunk x n_embd).
    pub chunk_len: usize,
}

impl Expected<'_> {
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
        if let Some(c) = e.chunks.iter().find(|c| c.len() != self.chunk_len) {
            return Err(format!(
                "a chunk of {} floats instead of {}",
                c.len(),
                self.chunk_len
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

/// Counters since the cache was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CacheStats {
    pub mem_hits: u64,
    pub disk_hits: u64,
    pub misses: u64,
    pub disk_writes: u64,
    pub mem_evictions: u64,
    pub disk_evictions: u64,
    /// Disk files found corrupt, truncated or not matching, and deleted.
    pub corrupt_files: u64,
}

impl CacheStats {
    pub fn hits(&self) -> u64 {
        self.mem_hits + self.disk_hits
    }
}

struct MemEntry {
    emb: Arc<ImageEmbeddings>,
    bytes: u64,
    last_used: u64,
}

/// The cache: an LRU map bounded by bytes, backed by an optional folder.
pub struct EmbeddingCache {
    cfg: CacheConfig,
    map: HashMap<EmbdKey, MemEntry>,
    mem_bytes: u64,
    tick: u64,
    stats: CacheStats,
}

impl fmt::Debug for EmbeddingCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddingCache")
            .field("cfg", &self.cfg)
            .field("entries", &self.map.len())
            .field("mem_bytes", &self.mem_bytes)
            .field("stats", &self.stats)
            .finish()
    }
}

fn emb_bytes(e: &ImageEmbeddings) -> u64 {
    e.chunks.iter().map(|c| c.len() as u64 * 4).sum::<u64>() + 256
}

impl EmbeddingCache {
    /// Creates the cache; the disk folder is created if missing.
    pub fn new(cfg: CacheConfig) -> Result<EmbeddingCache, EmbdCacheError> {
        if let Some(dir) = &cfg.dir {
            if dir.exists() && !dir.is_dir() {
                return Err(EmbdCacheError::NotADir { path: dir.clone() });
            }
            fs::create_dir_all(dir).map_err(|source| EmbdCacheError::Dir {
                path: dir.clone(),
                source,
            })?;
        }
        Ok(EmbeddingCache {
            cfg,
            map: HashMap::new(),
            mem_bytes: 0,
            tick: 0,
            stats: CacheStats::default(),
        })
    }

    pub fn config(&self) -> &CacheConfig {
        &self.cfg
    }

    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    /// Bytes held in memory.
    pub fn mem_bytes(&self) -> u64 {
        self.mem_bytes
    }

    /// The embeddings of `key`, from memory or disk, if present and valid.
    pub fn get(&mut self, key: &EmbdKey, expect: &Expected<'_>) -> Option<Arc<ImageEmbeddings>> {
        self.tick += 1;
        let tick = self.tick;
        let disk_path = self.file_path(key);
        if let Some(e) = self.map.get_mut(key) {
            if expect.matches(&e.emb).is_ok() {
                e.last_used = tick;
                self.stats.mem_hits += 1;
                // keep the disk copy recent too, so the folder's LRU follows use
                if let Some(path) = disk_path {
                    touch(&path);
                }
                return Some(Arc::clone(&e.emb));
            }
            // cannot happen for a sound key; drop the entry rather than trust it
            if let Some(old) = self.map.remove(key) {
                self.mem_bytes -= old.bytes;
            }
        }
        if let Some(emb) = self.read_disk(key, expect) {
            self.stats.disk_hits += 1;
            let emb = Arc::new(emb);
            self.put_mem(*key, Arc::clone(&emb));
            return Some(emb);
        }
        self.stats.misses += 1;
        None
    }

    /// Stores freshly computed embeddings in memory and on disk. Disk problems are logged,
    /// never fatal (the cache is an optimisation).
    pub fn insert(&mut self, key: EmbdKey, emb: Arc<ImageEmbeddings>) {
        self.tick += 1;
        if self.cfg.dir.is_some() {
            match self.write_disk(&key, &emb) {
                Ok(true) => {
                    self.stats.disk_writes += 1;
                    self.enforce_disk_bound();
                }
                Ok(false) => {}
                Err(e) => log::warn!("cannot write the image embedding cache: {e}"),
            }
        }
        self.put_mem(key, emb);
    }

    fn put_mem(&mut self, key: EmbdKey, emb: Arc<ImageEmbeddings>) {
        let bytes = emb_bytes(&emb);
        if bytes > self.cfg.mem_max_bytes {
            return;
        }
        if let Some(old) = self.map.remove(&key) {
            self.mem_bytes -= old.bytes;
        }
        while self.mem_bytes + bytes > self.cfg.mem_max_bytes {
            let Some(oldest) = self
                .map
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| *k)
            else {
                break;
            };
            if let Some(old) = self.map.remove(&oldest) {
                self.mem_bytes -= old.bytes;
                self.stats.mem_evictions += 1;
            }
        }
        self.mem_bytes += bytes;
        self.map.insert(
            key,
            MemEntry {
                emb,
                bytes,
                last_used: self.tick,
            },
        );
    }

    /// The disk file of `key` (when a folder is configured).
    pub fn file_path(&self, key: &EmbdKey) -> Option<PathBuf> {
        self.cfg
            .dir
            .as_ref()
            .map(|d| d.join(format!("{}.{EXT}", key.hex())))
    }

    fn read_disk(&mut self, key: &EmbdKey, expect: &Expected<'_>) -> Option<ImageEmbeddings> {
        let path = self.file_path(key)?;
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                log::warn!(
                    "cannot read the cached image embeddings {}: {e}; computing them again",
                    path.display()
                );
                return None;
            }
        };
        let parsed = decode_file(&bytes, key).and_then(|emb| expect.matches(&emb).map(|_| emb));
        match parsed {
            Ok(emb) => {
                touch(&path);
                Some(emb)
            }
            Err(reason) => {
                log::warn!(
                    "ignoring and deleting the cached image embeddings {}: {reason}",
                    path.display()
                );
                self.stats.corrupt_files += 1;
                if let Err(e) = fs::remove_file(&path) {
                    log::warn!("cannot delete {}: {e}", path.display());
                }
                None
            }
        }
    }

    /// Writes the file of `key`; `Ok(false)` when it is not kept (too large for the bound).
    fn write_disk(&self, key: &EmbdKey, emb: &ImageEmbeddings) -> std::io::Result<bool> {
        let (Some(path), Some(dir)) = (self.file_path(key), self.cfg.dir.as_ref()) else {
            return Ok(false);
        };
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let tmp = dir.join(format!(
            ".{}.{}.{}.tmp",
            key.hex(),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let bytes = encode_file(key, emb);
        if bytes.len() as u64 > self.cfg.disk_max_bytes {
            log::warn!(
                "image embeddings of {:.1} MiB exceed the embedding cache bound of {:.1} MiB: not kept on disk",
                bytes.len() as f64 / (1 << 20) as f64,
                self.cfg.disk_max_bytes as f64 / (1 << 20) as f64
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
    /// temporary files that a crashed writer left behind more than an hour ago.
    fn enforce_disk_bound(&mut self) {
        let Some(dir) = self.cfg.dir.clone() else {
            return;
        };
        let entries = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) => {
                log::warn!("cannot list the embedding cache {}: {e}", dir.display());
                return;
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
                        .is_some_and(|age| age.as_secs() > 3600);
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
        if total <= self.cfg.disk_max_bytes {
            return;
        }
        files.sort();
        for (_, path, len) in files {
            if total <= self.cfg.disk_max_bytes {
                break;
            }
            match fs::remove_file(&path) {
                Ok(()) => {
                    total -= len;
                    self.stats.disk_evictions += 1;
                    log::debug!("embedding cache: evicted {}", path.display());
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => total -= len,
                Err(e) => log::warn!("cannot delete {}: {e}", path.display()),
            }
        }
    }
}

/// Marks a file as just used (its modification time is the disk LRU's clock).
fn touch(path: &Path) {
    if let Ok(f) = File::options().append(true).open(path) {
        let _ = f.set_modified(SystemTime::now());
    }
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn pair(p: Option<(u32, u32)>) -> (u32, u32) {
    p.unwrap_or((0, 0))
}

/// The bytes of a cache file (see the module docs).
pub fn encode_file(key: &EmbdKey, emb: &ImageEmbeddings) -> Vec<u8> {
    let n_floats: usize = emb.chunks.iter().map(Vec::len).sum();
    let mut out = Vec::with_capacity(200 + emb.plan.slices.len() * 16 + n_floats * 4);
    out.extend_from_slice(MAGIC);
    put_u32(&mut out, FORMAT_VERSION);
    out.extend_from_slice(&key.0);
    put_u32(&mut out, emb.n_embd as u32);
    put_u32(&mut out, emb.chunks.len() as u32);
    let p = &emb.plan;
    for (a, b) in [
        p.source,
        p.overview,
        pair(p.grid),
        pair(p.refine),
        pair(p.slice),
    ] {
        put_u32(&mut out, a);
        put_u32(&mut out, b);
    }
    put_u32(&mut out, p.slices.len() as u32);
    for r in &p.slices {
        for v in [r.x, r.y, r.w, r.h] {
            put_u32(&mut out, v);
        }
    }
    for c in &emb.chunks {
        out.extend_from_slice(&(c.len() as u64).to_le_bytes());
    }
    for c in &emb.chunks {
        for v in c {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    let sum: [u8; 32] = Sha256::digest(&out).into();
    out.extend_from_slice(&sum);
    out
}

/// A bounds-checked reader over a byte slice.
struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| "the file is truncated".to_string())?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u32(&mut self) -> Result<u32, String> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }

    fn u64(&mut self) -> Result<u64, String> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_le_bytes(a))
    }

    fn pair(&mut self) -> Result<(u32, u32), String> {
        Ok((self.u32()?, self.u32()?))
    }
}

fn opt(p: (u32, u32)) -> Option<(u32, u32)> {
    (p != (0, 0)).then_some(p)
}

/// Parses and verifies a cache file's bytes; `Err` says what is wrong with it.
pub fn decode_file(bytes: &[u8], key: &EmbdKey) -> Result<ImageEmbeddings, String> {
    if bytes.len() < MAGIC.len() + 4 + 32 + 32 {
        return Err(format!("the file is truncated ({} bytes)", bytes.len()));
    }
    if &bytes[..MAGIC.len()] != MAGIC {
        return Err("not an embedding cache file (bad magic)".into());
    }
    let (body, sum) = bytes.split_at(bytes.len() - 32);
    let actual: [u8; 32] = Sha256::digest(body).into();
    if actual.as_slice() != sum {
        return Err("checksum mismatch (truncated or corrupt)".into());
    }
    let mut c = Cursor { b: body, pos: 0 };
    c.take(MAGIC.len())?;
    let version = c.u32()?;
    if version != FORMAT_VERSION {
        return Err(format!(
            "format version {version}, this build reads {FORMAT_VERSION}"
        ));
    }
    if c.take(32)? != key.0.as_slice() {
        return Err("it holds another key than its name says".into());
    }
    let n_embd = c.u32()? as usize;
    let n_chunks = c.u32()? as usize;
    let source = c.pair()?;
    let overview = c.pair()?;
    let grid = opt(c.pair()?);
    let refine = opt(c.pair()?);
    let slice = opt(c.pair()?);
    let n_slices = c.u32()? as usize;
    if n_slices.saturating_mul(16) > body.len() || n_chunks.saturating_mul(8) > body.len() {
        return Err("impossible counts in the header".into());
    }
    let mut slices = Vec::with_capacity(n_slices);
    for _ in 0..n_slices {
        slices.push(SliceRect {
            x: c.u32()?,
            y: c.u32()?,
            w: c.u32()?,
            h: c.u32()?,
        });
    }
    let mut lens = Vec::with_capacity(n_chunks);
    for _ in 0..n_chunks {
        lens.push(usize::try_from(c.u64()?).map_err(|_| "chunk length overflow".to_string())?);
    }
    let total: usize = lens
        .iter()
        .try_fold(0usize, |a, &l| a.checked_add(l))
        .ok_or_else(|| "chunk length overflow".to_string())?;
    if total.checked_mul(4) != Some(body.len() - c.pos) {
        return Err(format!(
            "the data holds {} bytes, the header announces {total} floats",
            body.len() - c.pos
        ));
    }
    if n_embd == 0 || lens.iter().any(|l| l % n_embd != 0) {
        return Err(format!(
            "chunk lengths {lens:?} are not multiples of n_embd {n_embd}"
        ));
    }
    let mut chunks = Vec::with_capacity(n_chunks);
    for len in lens {
        let raw = c.take(len * 4)?;
        chunks.push(
            raw.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        );
    }
    Ok(ImageEmbeddings {
        plan: SlicePlan {
            source,
            overview,
            grid,
            refine,
            slice,
            slices,
        },
        chunks,
        n_embd,
        encode_secs: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vision::plan_slices;

    fn sample(w: u32, h: u32, n_embd: usize, q: usize, seed: f32) -> ImageEmbeddings {
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

    fn key(n: u8) -> EmbdKey {
        EmbdKey([n; 32])
    }

    fn expected(e: &ImageEmbeddings) -> Expected<'_> {
        Expected {
            plan: &e.plan,
            n_embd: e.n_embd,
            chunk_len: e.chunks[0].len(),
        }
    }

    #[test]
    fn file_round_trip_and_every_truncation_is_refused() {
        let e = sample(1000, 700, 8, 4, 1.0);
        assert_eq!(e.plan.n_chunks(), 5);
        let bytes = encode_file(&key(1), &e);
        let back = decode_file(&bytes, &key(1)).unwrap();
        assert_eq!(back, e);
        assert!(decode_file(&bytes, &key(2)).is_err(), "wrong key accepted");
        for cut in 0..bytes.len() {
            assert!(decode_file(&bytes[..cut], &key(1)).is_err(), "cut at {cut}");
        }
        let mut flipped = bytes.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 1;
        assert!(decode_file(&flipped, &key(1)).is_err());
        // overview-only plan: absent grid/refine/slice survive as None
        let small = sample(300, 200, 8, 4, 2.0);
        let b = encode_file(&key(3), &small);
        assert_eq!(decode_file(&b, &key(3)).unwrap(), small);
    }

    #[test]
    fn key_depends_on_every_input() {
        let img = [7u8; 32];
        let pj = ProjectorId([9u8; 32]);
        let p = SliceParams::default();
        let k = embd_key(&img, &pj, &p);
        assert_eq!(k, embd_key(&img, &pj, &p));
        assert_ne!(k, embd_key(&[8u8; 32], &pj, &p));
        assert_ne!(k, embd_key(&img, &ProjectorId([1u8; 32]), &p));
        for q in [
            SliceParams { max_slices: 4, ..p },
            SliceParams {
                image_size: 224,
                ..p
            },
            SliceParams {
                patch_size: 16,
                ..p
            },
        ] {
            assert_ne!(k, embd_key(&img, &pj, &q));
        }
    }

    #[test]
    fn image_digest_covers_size_and_pixels() {
        let a = LoadedImage {
            path: "a.png".into(),
            width: 2,
            height: 3,
            rgb: vec![1; 18],
        };
        let mut b = a.clone();
        b.path = "elsewhere.jpg".into();
        assert_eq!(image_digest(&a), image_digest(&b));
        b.width = 3;
        b.height = 2;
        assert_ne!(image_digest(&a), image_digest(&b));
        let mut c = a.clone();
        c.rgb[17] = 2;
        assert_ne!(image_digest(&a), image_digest(&c));
    }

    #[test]
    fn memory_cache_is_lru_bounded_by_bytes() {
        let e = Arc::new(sample(1000, 700, 8, 4, 0.0));
        let one = emb_bytes(&e);
        let mut cache = EmbeddingCache::new(CacheConfig {
            mem_max_bytes: one * 2,
            dir: None,
            disk_max_bytes: 0,
        })
        .unwrap();
        let ex = expected(&e);
        cache.insert(key(1), Arc::clone(&e));
        cache.insert(key(2), Arc::clone(&e));
        assert!(cache.get(&key(1), &ex).is_some()); // 1 is now more recent than 2
        cache.insert(key(3), Arc::clone(&e));
        assert!(cache.get(&key(2), &ex).is_none(), "LRU entry kept");
        assert!(cache.get(&key(1), &ex).is_some());
        assert!(cache.get(&key(3), &ex).is_some());
        assert!(cache.mem_bytes() <= one * 2);
        let s = cache.stats();
        assert_eq!((s.mem_hits, s.misses, s.mem_evictions), (3, 1, 1));
        // an entry that does not match what the caller expects is not returned
        let other = sample(300, 200, 8, 4, 0.0);
        assert!(cache.get(&key(1), &expected(&other)).is_none());
    }

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
