//! A streaming GGUF v3 writer.
//!
//! Metadata and tensor infos are collected first ([`GgufWriter::add_kv`],
//! [`GgufWriter::add_tensor`]); [`GgufWriter::write`] then writes the header and asks a callback
//! for each tensor's data in order, so a file of any size is written with one 8 MiB buffer. The
//! layout is the one llama.cpp's `gguf_write_to_file` produces: header, metadata, tensor infos,
//! zero padding to the alignment, then each tensor's data followed by zero padding to the
//! alignment (the last one too). The file is written to a temporary name in the target folder,
//! fsynced and renamed into place; on any error the temporary file is removed, so `path` never
//! holds a partial file.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::types::{
    GgmlType, MetaArray, MetaValue, TensorInfo, ValueType, GGUF_DEFAULT_ALIGNMENT,
    GGUF_KEY_ALIGNMENT, GGUF_MAGIC, GGUF_MAX_ARRAY_LEN, GGUF_MAX_DIMS, GGUF_MAX_KEY_LEN,
    GGUF_MAX_STRING_LEN, GGUF_MAX_TENSOR_NAME, GGUF_VERSION,
};

/// Size of the output buffer.
const WRITE_BUFFER: usize = 8 << 20;

/// Why a GGUF file could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufWriteError {
    /// A metadata entry given to [`GgufWriter::add_kv`] is unusable (duplicate or empty key,
    /// over-long string or array, bad `general.alignment`). Reported by `write`, before any file
    /// is created.
    #[error("cannot write {}: metadata key {key:?} {reason}", path.display())]
    InvalidMetadata {
        path: PathBuf,
        key: String,
        reason: String,
    },

    #[error("tensor {name:?} is added twice")]
    DuplicateTensor { name: String },

    #[error("tensor {name:?} cannot be stored in a GGUF file: {reason}")]
    InvalidTensor { name: String, reason: String },

    #[error("cannot write {}: {reason}", path.display())]
    InvalidPath { path: PathBuf, reason: String },

    /// The `fill` callback produced the wrong number of bytes for a tensor.
    #[error(
        "writing {} failed: the data written for tensor {name:?} (#{index}) was {written} bytes, \
         expected {expected}",
        path.display()
    )]
    TensorSize {
        path: PathBuf,
        index: usize,
        name: String,
        expected: u64,
        written: u64,
    },

    /// The `fill` callback returned an error (or writing its bytes failed).
    #[error("writing {} failed at the data of tensor {name:?} (#{index}): {source}", path.display())]
    Fill {
        path: PathBuf,
        index: usize,
        name: String,
        #[source]
        source: io::Error,
    },

    #[error("writing {} failed while {what}: {source}", path.display())]
    Io {
        path: PathBuf,
        what: String,
        #[source]
        source: io::Error,
    },
}

/// Collects metadata and tensor infos, then streams a GGUF v3 file; see the module docs.
#[derive(Debug, Clone)]
pub struct GgufWriter {
    alignment: u64,
    metadata: Vec<(String, MetaValue)>,
    keys: HashSet<String>,
    tensors: Vec<TensorInfo>,
    tensor_names: HashSet<String>,
    /// Offset (in the data section) where the next tensor goes.
    next_offset: u64,
    /// The first bad metadata entry, reported by `write` as `(key, reason)`.
    bad_kv: Option<(String, String)>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        Self::new()
    }
}

fn align_up(x: u64, alignment: u64) -> Option<u64> {
    x.checked_add((alignment - x % alignment) % alignment)
}

impl GgufWriter {
    /// An empty writer with alignment 32.
    pub fn new() -> Self {
        GgufWriter {
            alignment: GGUF_DEFAULT_ALIGNMENT,
            metadata: Vec::new(),
            keys: HashSet::new(),
            tensors: Vec::new(),
            tensor_names: HashSet::new(),
            next_offset: 0,
            bad_kv: None,
        }
    }

    /// Appends a metadata entry (file order is insertion order).
    ///
    /// Never fails here: a duplicate or empty key, a key over 65535 bytes, a string over 1 GiB,
    /// an array over 2^30 elements, or a `general.alignment` that is not a `u32` power of two is
    /// remembered (the first one) and returned by [`write`](Self::write) as
    /// [`GgufWriteError::InvalidMetadata`] before any file is created. A valid
    /// `general.alignment` changes the alignment of the file (and the offsets of the tensors).
    pub fn add_kv(&mut self, key: &str, value: MetaValue) {
        if let Err(reason) = self.check_kv(key, &value) {
            if self.bad_kv.is_none() {
                self.bad_kv = Some((key.to_owned(), reason));
            }
            return;
        }
        if key == GGUF_KEY_ALIGNMENT {
            if let MetaValue::U32(a) = value {
                self.alignment = u64::from(a);
                if !self.recompute_offsets() && self.bad_kv.is_none() {
                    self.bad_kv = Some((
                        key.to_owned(),
                        format!("= {a} makes the tensor offsets overflow"),
                    ));
                }
            }
        }
        self.keys.insert(key.to_owned());
        self.metadata.push((key.to_owned(), value));
    }

    fn check_kv(&self, key: &str, value: &MetaValue) -> Result<(), String> {
        if key.is_empty() {
            return Err("is empty".to_owned());
        }
        if key.len() as u64 > GGUF_MAX_KEY_LEN {
            return Err(format!(
                "is {} bytes long, more than {GGUF_MAX_KEY_LEN}",
                key.len()
            ));
        }
        if self.keys.contains(key) {
            return Err("is added twice".to_owned());
        }
        let long_string = |s: &String| s.len() as u64 > GGUF_MAX_STRING_LEN;
        match value {
            MetaValue::String(s) if long_string(s) => {
                return Err(format!(
                    "holds a string of {} bytes, more than {GGUF_MAX_STRING_LEN}",
                    s.len()
                ))
            }
            MetaValue::Array(a) if a.len() as u64 > GGUF_MAX_ARRAY_LEN => {
                return Err(format!(
                    "holds an array of {} elements, more than {GGUF_MAX_ARRAY_LEN}",
                    a.len()
                ))
            }
            MetaValue::Array(MetaArray::String(v)) if v.iter().any(long_string) => {
                return Err(format!(
                    "holds a string longer than {GGUF_MAX_STRING_LEN} bytes"
                ))
            }
            _ => {}
        }
        if key == GGUF_KEY_ALIGNMENT {
            match value {
                MetaValue::U32(a) if a.is_power_of_two() => {}
                MetaValue::U32(a) => return Err(format!("is {a}, which is not a power of two")),
                other => return Err(format!("must be a u32, not a {}", other.type_name())),
            }
        }
        Ok(())
    }

    /// Lays the tensors out again after an alignment change; false if the offsets overflow.
    fn recompute_offsets(&mut self) -> bool {
        let mut offset = Some(0u64);
        for t in &mut self.tensors {
            t.offset = offset.unwrap_or(u64::MAX);
            offset = offset
                .and_then(|o| o.checked_add(t.n_bytes))
                .and_then(|end| align_up(end, self.alignment));
        }
        self.next_offset = offset.unwrap_or(u64::MAX);
        offset.is_some()
    }

    /// Appends a tensor info; its data is produced later by `write`'s `fill`.
    ///
    /// `dims` are in ggml order (row length first). Checks: the name is unique, non-empty and at
    /// most 63 bytes (ggml's limit), 1 to 4 dims, none zero, the row length a multiple of the
    /// type's block size, and sizes that fit in `u64`/`i64`.
    pub fn add_tensor(
        &mut self,
        name: &str,
        dims: &[u64],
        ty: GgmlType,
    ) -> Result<(), GgufWriteError> {
        let invalid = |reason: String| GgufWriteError::InvalidTensor {
            name: name.to_owned(),
            reason,
        };
        if name.is_empty() {
            return Err(invalid("the name is empty".to_owned()));
        }
        if name.len() > GGUF_MAX_TENSOR_NAME {
            return Err(invalid(format!(
                "the name is {} bytes long; ggml allows at most {GGUF_MAX_TENSOR_NAME}",
                name.len()
            )));
        }
        if self.tensor_names.contains(name) {
            return Err(GgufWriteError::DuplicateTensor {
                name: name.to_owned(),
            });
        }
        if dims.is_empty() || dims.len() > GGUF_MAX_DIMS {
            return Err(invalid(format!(
                "it has {} dimensions; ggml needs 1 to {GGUF_MAX_DIMS}",
                dims.len()
            )));
        }
        if dims.contains(&0) {
            return Err(invalid(format!("its shape {dims:?} has a zero dimension")));
        }
        if dims[0] % ty.block_size() != 0 {
            return Err(invalid(format!(
                "its rows have {} elements, not a multiple of the {ty} block size {}",
                dims[0],
                ty.block_size()
            )));
        }
        let too_big = || invalid(format!("its shape {dims:?} is too large"));
        let n_elements = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .ok_or_else(too_big)?;
        if n_elements > i64::MAX as u64 {
            return Err(too_big());
        }
        let n_bytes = ty.tensor_bytes(dims).ok_or_else(too_big)?;
        let offset = self.next_offset;
        let next = offset
            .checked_add(n_bytes)
            .and_then(|end| align_up(end, self.alignment))
            .ok_or_else(too_big)?;
        self.tensor_names.insert(name.to_owned());
        self.tensors.push(TensorInfo {
            name: name.to_owned(),
            dims: dims.to_vec(),
            ggml_type: ty,
            offset,
            n_bytes,
        });
        self.next_offset = next;
        Ok(())
    }

    /// The tensor infos added so far, with their final offsets and sizes.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The metadata added so far (without rejected entries).
    pub fn metadata(&self) -> &[(String, MetaValue)] {
        &self.metadata
    }

    /// The alignment the file will use (32 unless `general.alignment` was added).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Writes the file: header, metadata, tensor infos, then for each tensor in order
    /// `fill(index, info, out)`, which must write exactly `info.n_bytes` bytes to `out`.
    /// Returns the size of the file.
    ///
    /// The file is written as `.NAME.tmp.PID.N` in the target folder, fsynced and renamed to
    /// `path` (replacing an existing file). On any error — including a `fill` error or wrong byte
    /// count, or a panic in `fill` — the temporary file is removed and `path` is untouched.
    pub fn write<F>(self, path: &Path, mut fill: F) -> Result<u64, GgufWriteError>
    where
        F: FnMut(usize, &TensorInfo, &mut dyn Write) -> io::Result<()>,
    {
        if let Some((key, reason)) = self.bad_kv {
            return Err(GgufWriteError::InvalidMetadata {
                path: path.to_path_buf(),
                key,
                reason,
            });
        }
        let invalid_path = |reason: &str| GgufWriteError::InvalidPath {
            path: path.to_path_buf(),
            reason: reason.to_owned(),
        };
        let file_name = path
            .file_name()
            .ok_or_else(|| invalid_path("the path has no file name"))?;
        if path.is_dir() {
            return Err(invalid_path("it is a directory"));
        }
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if !dir.is_dir() {
            return Err(invalid_path("its folder does not exist"));
        }

        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut tmp_name = OsString::from(".");
        tmp_name.push(file_name);
        tmp_name.push(format!(
            ".tmp.{}.{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let tmp_path = dir.join(tmp_name);

        let io_err = |what: &str, source: io::Error| GgufWriteError::Io {
            path: path.to_path_buf(),
            what: what.to_owned(),
            source,
        };
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp_path)
            .map_err(|e| {
                io_err(
                    &format!("creating the temporary file {}", tmp_path.display()),
                    e,
                )
            })?;
        // From here on the guard removes the temporary file unless it is renamed into place.
        let mut guard = TempFile {
            path: tmp_path,
            keep: false,
        };

        let mut out = Out {
            w: BufWriter::with_capacity(WRITE_BUFFER, file),
            pos: 0,
        };
        write_header(&mut out, &self.metadata, &self.tensors, self.alignment)
            .map_err(|e| io_err("writing the header", e))?;
        let data_start = out.pos;

        for (index, t) in self.tensors.iter().enumerate() {
            let mut cw = Counting {
                inner: &mut out.w,
                limit: t.n_bytes,
                written: 0,
            };
            let result = fill(index, t, &mut cw);
            let written = cw.written;
            out.pos += written.min(t.n_bytes);
            let name = || t.name.clone();
            if let Err(source) = result {
                return Err(GgufWriteError::Fill {
                    path: path.to_path_buf(),
                    index,
                    name: name(),
                    source,
                });
            }
            if written != t.n_bytes {
                return Err(GgufWriteError::TensorSize {
                    path: path.to_path_buf(),
                    index,
                    name: name(),
                    expected: t.n_bytes,
                    written,
                });
            }
            debug_assert_eq!(out.pos - data_start, t.offset + t.n_bytes);
            out.pad(self.alignment)
                .map_err(|e| io_err(&format!("padding tensor {:?}", t.name), e))?;
        }

        let bytes = out.pos;
        let file = out
            .w
            .into_inner()
            .map_err(|e| io_err("flushing the data", e.into_error()))?;
        file.sync_all()
            .map_err(|e| io_err("syncing the file to disk", e))?;
        drop(file);
        std::fs::rename(&guard.path, path)
            .map_err(|e| io_err(&format!("renaming {} into place", guard.path.display()), e))?;
        guard.keep = true;
        // Make the rename durable; not every platform or filesystem allows syncing a directory.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(bytes)
    }
}

/// Removes the temporary file when dropped (on error or panic) unless `keep` (after the rename).
struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The output with a byte count.
struct Out {
    w: BufWriter<File>,
    pos: u64,
}

impl Out {
    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.w.write_all(b)?;
        self.pos += b.len() as u64;
        Ok(())
    }

    fn u32(&mut self, v: u32) -> io::Result<()> {
        self.put(&v.to_le_bytes())
    }

    fn u64(&mut self, v: u64) -> io::Result<()> {
        self.put(&v.to_le_bytes())
    }

    fn string(&mut self, s: &str) -> io::Result<()> {
        self.u64(s.len() as u64)?;
        self.put(s.as_bytes())
    }

    fn pad(&mut self, alignment: u64) -> io::Result<()> {
        const ZEROS: [u8; 256] = [0; 256];
        let mut n = (alignment - self.pos % alignment) % alignment;
        while n > 0 {
            let k = n.min(ZEROS.len() as u64);
            self.put(&ZEROS[..k as usize])?;
            n -= k;
        }
        Ok(())
    }

    fn value(&mut self, v: &MetaValue) -> io::Result<()> {
        match v {
            MetaValue::U8(x) => self.put(&x.to_le_bytes()),
            MetaValue::I8(x) => self.put(&x.to_le_bytes()),
            MetaValue::U16(x) => self.put(&x.to_le_bytes()),
            MetaValue::I16(x) => self.put(&x.to_le_bytes()),
            MetaValue::U32(x) => self.put(&x.to_le_bytes()),
            MetaValue::I32(x) => self.put(&x.to_le_bytes()),
            MetaValue::F32(x) => self.put(&x.to_le_bytes()),
            MetaValue::Bool(x) => self.put(&[u8::from(*x)]),
            MetaValue::String(s) => self.string(s),
            MetaValue::U64(x) => self.put(&x.to_le_bytes()),
            MetaValue::I64(x) => self.put(&x.to_le_bytes()),
            MetaValue::F64(x) => self.put(&x.to_le_bytes()),
            MetaValue::Array(a) => self.array(a),
        }
    }

    fn array(&mut self, a: &MetaArray) -> io::Result<()> {
        self.u32(a.elem_type() as u32)?;
        self.u64(a.len() as u64)?;
        macro_rules! each {
            ($v:expr) => {{
                for x in $v {
                    self.put(&x.to_le_bytes())?;
                }
                Ok(())
            }};
        }
        match a {
            MetaArray::U8(v) => self.put(v),
            MetaArray::I8(v) => each!(v),
            MetaArray::U16(v) => each!(v),
            MetaArray::I16(v) => each!(v),
            MetaArray::U32(v) => each!(v),
            MetaArray::I32(v) => each!(v),
            MetaArray::F32(v) => each!(v),
            MetaArray::Bool(v) => each!(v.iter().map(|&b| u8::from(b))),
            MetaArray::String(v) => {
                for s in v {
                    self.string(s)?;
                }
                Ok(())
            }
            MetaArray::U64(v) => each!(v),
            MetaArray::I64(v) => each!(v),
            MetaArray::F64(v) => each!(v),
        }
    }
}

fn write_header(
    out: &mut Out,
    metadata: &[(String, MetaValue)],
    tensors: &[TensorInfo],
    alignment: u64,
) -> io::Result<()> {
    out.put(&GGUF_MAGIC)?;
    out.u32(GGUF_VERSION)?;
    out.u64(tensors.len() as u64)?;
    out.u64(metadata.len() as u64)?;
    for (key, value) in metadata {
        out.string(key)?;
        let ty: ValueType = value.value_type();
        out.u32(ty as u32)?;
        out.value(value)?;
    }
    for t in tensors {
        out.string(&t.name)?;
        out.u32(t.dims.len() as u32)?;
        for &d in &t.dims {
            out.u64(d)?;
        }
        out.u32(t.ggml_type.as_u32())?;
        out.u64(t.offset)?;
    }
    out.pad(alignment)
}

/// Counts what `fill` writes; passes on at most `limit` bytes and swallows (but counts) the rest,
/// so an over-long tensor never shifts the following ones and is reported with its true size.
struct Counting<'a> {
    inner: &'a mut BufWriter<File>,
    limit: u64,
    written: u64,
}

impl Write for Counting<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.limit.saturating_sub(self.written);
        if room == 0 {
            self.written += buf.len() as u64;
            return Ok(buf.len());
        }
        let take = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let n = self.inner.write(&buf[..take])?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GgufError, GgufFile};

    /// Deterministic content for tensor `i`.
    fn pattern(i: usize, n: u64) -> Vec<u8> {
        (0..n)
            .map(|k| (k as usize * 7 + i * 31 + 1) as u8)
            .collect()
    }

    fn fill_pattern(i: usize, t: &TensorInfo, out: &mut dyn Write) -> io::Result<()> {
        let data = pattern(i, t.n_bytes);
        if i % 2 == 0 {
            out.write_all(&data)
        } else {
            // in small pieces, to exercise the counting writer
            for chunk in data.chunks(5) {
                out.write_all(chunk)?;
            }
            Ok(())
        }
    }

    /// The names in a folder (to check that no temporary file is left behind).
    fn listing(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn every_value_type() -> Vec<(String, MetaValue)> {
        let s = |x: &str| x.to_owned();
        vec![
            (s("general.architecture"), MetaValue::from("qwen2")),
            (s("v.u8"), MetaValue::U8(200)),
            (s("v.i8"), MetaValue::I8(-100)),
            (s("v.u16"), MetaValue::U16(60_000)),
            (s("v.i16"), MetaValue::I16(-30_000)),
            (s("v.u32"), MetaValue::U32(4_000_000_000)),
            (s("v.i32"), MetaValue::I32(-2_000_000_000)),
            (s("v.f32"), MetaValue::F32(-1.5e-6)),
            (s("v.bool"), MetaValue::Bool(true)),
            (s("v.bool.false"), MetaValue::Bool(false)),
            (s("v.string"), MetaValue::from("héllo <|im_start|>\n")),
            (s("v.string.empty"), MetaValue::from("")),
            (s("v.u64"), MetaValue::U64(u64::MAX)),
            (s("v.i64"), MetaValue::I64(i64::MIN)),
            (s("v.f64"), MetaValue::F64(std::f64::consts::PI)),
            (s("a.u8"), vec![0u8, 1, 255].into()),
            (s("a.i8"), vec![-128i8, 0, 127].into()),
            (s("a.u16"), vec![1u16, 65_535].into()),
            (s("a.i16"), vec![-1i16, 2].into()),
            (s("a.u32"), vec![7u32; 5].into()),
            (s("a.i32"), vec![-7i32, 8].into()),
            (s("a.f32"), vec![0.5f32, -2.25, 1e30].into()),
            (s("a.bool"), vec![true, false, true].into()),
            (
                s("a.string"),
                vec![s("a"), s(""), s("<image>"), s("ü")].into(),
            ),
            (s("a.u64"), vec![u64::MAX, 0].into()),
            (s("a.i64"), vec![i64::MAX, -1].into()),
            (s("a.f64"), vec![1.0f64, -0.0].into()),
            (s("a.f32.empty"), MetaValue::Array(MetaArray::F32(vec![]))),
            (
                s("a.string.empty"),
                MetaValue::Array(MetaArray::String(vec![])),
            ),
        ]
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.gguf");
        let mut w = GgufWriter::new();
        let meta = every_value_type();
        for (k, v) in &meta {
            w.add_kv(k, v.clone());
        }
        let shapes: [(&str, &[u64], GgmlType); 6] = [
            ("token_embd.weight", &[16, 5], GgmlType::F32),
            ("blk.0.attn_norm.weight", &[7], GgmlType::F16),
            ("blk.0.ffn_up.weight", &[64, 3], GgmlType::Q8_0),
            ("v.patch_embd.weight", &[2, 3, 4, 5], GgmlType::F16),
            ("odd", &[3], GgmlType::F32),
            ("output.weight", &[32], GgmlType::Q8_0),
        ];
        for (name, dims, ty) in shapes {
            w.add_tensor(name, dims, ty).unwrap();
        }
        let infos = w.tensors().to_vec();
        assert_eq!(infos[2].n_bytes, 2 * 34 * 3);
        assert_eq!(w.metadata(), &meta[..]);

        let written = w.write(&path, fill_pattern).unwrap();
        assert_eq!(listing(dir.path()), vec!["model.gguf"]);
        assert_eq!(written, std::fs::metadata(&path).unwrap().len());

        let f = GgufFile::open(&path).unwrap();
        assert_eq!(f.version, 3);
        assert_eq!(f.alignment, 32);
        assert_eq!(f.metadata, meta);
        assert_eq!(f.tensors, infos);
        assert_eq!(f.file_size, written);
        assert_eq!(f.data_offset % 32, 0);
        for (i, t) in f.tensors.iter().enumerate() {
            assert_eq!(t.offset % 32, 0, "{}", t.name);
            assert_eq!(
                f.read_tensor_bytes(t).unwrap(),
                pattern(i, t.n_bytes),
                "{}",
                t.name
            );
            assert_eq!(f.tensor(&t.name), Some(t));
        }
        // the last tensor is padded too, as llama.cpp does
        let last = f.tensors.last().unwrap();
        assert_eq!(
            f.file_size,
            f.data_offset + align_up(last.offset + last.n_bytes, 32).unwrap()
        );
        assert_eq!(f.get_u64("v.u32"), Some(4_000_000_000));
        assert_eq!(f.get_i64("v.i8"), Some(-100));
        assert_eq!(f.get_str_array("a.string").unwrap()[3], "ü");
        assert_eq!(f.n_params(), 80 + 7 + 192 + 120 + 3 + 32);
    }

    #[test]
    fn alignment_from_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.gguf");
        let mut w = GgufWriter::new();
        w.add_tensor("x", &[3], GgmlType::F32).unwrap();
        w.add_tensor("y", &[5], GgmlType::F16).unwrap();
        assert_eq!(w.tensors()[1].offset, 32);
        // added after the tensors: they are laid out again
        w.add_kv("general.alignment", MetaValue::U32(128));
        assert_eq!(w.alignment(), 128);
        assert_eq!(w.tensors()[1].offset, 128);
        w.add_tensor("z", &[1], GgmlType::F32).unwrap();
        assert_eq!(w.tensors()[2].offset, 256);
        let n = w.write(&path, fill_pattern).unwrap();
        let f = GgufFile::open(&path).unwrap();
        assert_eq!(f.alignment, 128);
        assert_eq!(f.data_offset % 128, 0);
        assert_eq!(n % 128, 0);
        assert_eq!(f.read_tensor_bytes(&f.tensors[2]).unwrap(), pattern(2, 4));
    }

    #[test]
    fn exact_layout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("min.gguf");
        let mut w = GgufWriter::new();
        w.add_kv("a", MetaValue::U32(7));
        w.add_tensor("t", &[2], GgmlType::F32).unwrap();
        let n = w
            .write(&path, |_, _, out| {
                out.write_all(&1.0f32.to_le_bytes())?;
                out.write_all(&2.0f32.to_le_bytes())
            })
            .unwrap();

        let mut e: Vec<u8> = Vec::new();
        e.extend_from_slice(b"GGUF");
        e.extend_from_slice(&[3, 0, 0, 0]); // version
        e.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]); // n_tensors
        e.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]); // n_kv
        e.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]); // key length
        e.extend_from_slice(b"a");
        e.extend_from_slice(&[4, 0, 0, 0]); // GGUF_TYPE_UINT32
        e.extend_from_slice(&[7, 0, 0, 0]);
        e.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]); // name length
        e.extend_from_slice(b"t");
        e.extend_from_slice(&[1, 0, 0, 0]); // n_dims
        e.extend_from_slice(&[2, 0, 0, 0, 0, 0, 0, 0]); // ne[0]
        e.extend_from_slice(&[0, 0, 0, 0]); // GGML_TYPE_F32
        e.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]); // offset
        assert_eq!(e.len(), 74);
        e.extend_from_slice(&[0; 22]); // padding to 96
        e.extend_from_slice(&[0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0x40]); // 1.0f, 2.0f
        e.extend_from_slice(&[0; 24]); // padding to 128
        assert_eq!(std::fs::read(&path).unwrap(), e);
        assert_eq!(n, 128);
    }

    fn one_tensor_writer() -> GgufWriter {
        let mut w = GgufWriter::new();
        w.add_kv("general.architecture", "qwen2".into());
        w.add_tensor("first", &[4], GgmlType::F32).unwrap();
        w.add_tensor("second", &[32, 2], GgmlType::Q8_0).unwrap();
        w
    }

    #[test]
    fn fill_with_wrong_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.gguf");
        for delta in [-1i64, 1, -68, 1000] {
            let r = one_tensor_writer().write(&path, |i, t, out| {
                let n = if i == 1 {
                    (t.n_bytes as i64 + delta) as u64
                } else {
                    t.n_bytes
                };
                out.write_all(&vec![9u8; n as usize])
            });
            match r {
                Err(e @ GgufWriteError::TensorSize { .. }) => {
                    let msg = e.to_string();
                    assert!(
                        msg.contains("bad.gguf") && msg.contains("\"second\""),
                        "{msg}"
                    );
                    let GgufWriteError::TensorSize {
                        index,
                        expected,
                        written,
                        ..
                    } = e
                    else {
                        unreachable!()
                    };
                    assert_eq!((index, expected), (1, 68));
                    assert_eq!(written as i64, 68 + delta);
                }
                other => panic!("delta {delta}: {other:?}"),
            }
            assert!(!path.exists());
            assert!(listing(dir.path()).is_empty(), "{:?}", listing(dir.path()));
        }
    }

    #[test]
    fn fill_error_and_panic_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.gguf");
        let r = one_tensor_writer().write(&path, |i, _, _| {
            if i == 0 {
                Err(io::Error::other("source tensor unreadable"))
            } else {
                Ok(())
            }
        });
        match r {
            Err(e @ GgufWriteError::Fill { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("bad.gguf") && msg.contains("\"first\""),
                    "{msg}"
                );
                assert!(msg.contains("source tensor unreadable"), "{msg}");
            }
            other => panic!("{other:?}"),
        }
        assert!(listing(dir.path()).is_empty());

        let caught = std::panic::catch_unwind(|| {
            let _ = one_tensor_writer().write(&path, |_, _, _| panic!("fill panicked"));
        });
        assert!(caught.is_err());
        assert!(listing(dir.path()).is_empty());
    }

    #[test]
    fn failed_write_keeps_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keep.gguf");
        std::fs::write(&path, b"old").unwrap();
        let r = one_tensor_writer().write(&path, |_, _, out| out.write_all(&[0]));
        assert!(r.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        // and a successful write replaces it
        let n = one_tensor_writer().write(&path, fill_pattern).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), n);
        assert_eq!(listing(dir.path()), vec!["keep.gguf"]);
    }

    #[test]
    fn bad_tensors_rejected() {
        let mut w = GgufWriter::new();
        w.add_tensor("w", &[4], GgmlType::F32).unwrap();
        let e = w.add_tensor("w", &[8], GgmlType::F16).unwrap_err();
        assert!(
            matches!(e, GgufWriteError::DuplicateTensor { ref name } if name == "w"),
            "{e:?}"
        );
        assert!(e.to_string().contains("\"w\""));
        let invalid = |r: Result<(), GgufWriteError>, needle: &str| match r {
            Err(e @ GgufWriteError::InvalidTensor { .. }) => {
                assert!(e.to_string().contains(needle), "{needle:?} not in {e}")
            }
            other => panic!("{other:?}"),
        };
        invalid(w.add_tensor("a", &[], GgmlType::F32), "0 dimensions");
        invalid(
            w.add_tensor("a", &[1, 1, 1, 1, 1], GgmlType::F32),
            "5 dimensions",
        );
        invalid(w.add_tensor("a", &[4, 0], GgmlType::F32), "zero");
        invalid(w.add_tensor("a", &[33], GgmlType::Q8_0), "block size 32");
        invalid(w.add_tensor("a", &[255], GgmlType::Q4_K), "block size 256");
        invalid(
            w.add_tensor("a", &[u64::MAX / 2, 4], GgmlType::F32),
            "too large",
        );
        invalid(w.add_tensor(&"n".repeat(64), &[4], GgmlType::F32), "63");
        invalid(w.add_tensor("", &[4], GgmlType::F32), "empty");
        // rejected tensors leave no trace
        assert_eq!(w.tensors().len(), 1);
        w.add_tensor("a", &[256], GgmlType::Q4_K).unwrap();
        assert_eq!(w.tensors()[1].offset, 32);
    }

    #[test]
    fn bad_metadata_reported_by_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        let cases: [(&str, MetaValue, &str); 4] = [
            ("dup", MetaValue::U32(1), "added twice"),
            ("", MetaValue::U32(1), "empty"),
            ("general.alignment", MetaValue::U64(64), "must be a u32"),
            ("general.alignment", MetaValue::U32(24), "power of two"),
        ];
        for (key, value, needle) in cases {
            let mut w = GgufWriter::new();
            w.add_kv("dup", MetaValue::U32(0));
            w.add_kv(key, value);
            let e = w.write(&path, |_, _, _| Ok(())).unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, GgufWriteError::InvalidMetadata { .. }), "{e:?}");
            assert!(msg.contains("m.gguf") && msg.contains(needle), "{msg}");
            assert!(listing(dir.path()).is_empty());
        }
    }

    #[test]
    fn bad_paths() {
        let dir = tempfile::tempdir().unwrap();
        let e = GgufWriter::new().write(&dir.path().join("no/such/dir/x.gguf"), |_, _, _| Ok(()));
        assert!(
            matches!(e, Err(GgufWriteError::InvalidPath { .. })),
            "{e:?}"
        );
        let e = GgufWriter::new().write(dir.path(), |_, _, _| Ok(()));
        assert!(
            matches!(e, Err(GgufWriteError::InvalidPath { .. })),
            "{e:?}"
        );
        assert!(listing(dir.path()).is_empty());
    }

    #[test]
    fn reader_and_writer_agree_on_every_type() {
        // One tensor of every ggml type, at the smallest legal row length.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("all.gguf");
        let mut w = GgufWriter::new();
        for t in GgmlType::ALL {
            w.add_tensor(t.name(), &[t.block_size(), 2], t).unwrap();
        }
        w.write(&path, fill_pattern).unwrap();
        let f = GgufFile::open(&path).unwrap();
        for (i, t) in GgmlType::ALL.iter().enumerate() {
            let info = &f.tensors[i];
            assert_eq!(info.ggml_type, *t);
            assert_eq!(info.n_bytes, 2 * t.type_size());
            assert_eq!(f.read_tensor_bytes(info).unwrap(), pattern(i, info.n_bytes));
        }
        // read_tensor_bytes checks a hand-made info against the file size
        let mut fake = f.tensors[0].clone();
        fake.offset = f.file_size;
        assert!(matches!(
            f.read_tensor_bytes(&fake),
            Err(GgufError::TensorOutOfBounds { .. })
        ));
    }
}
