//! Reading GGUF headers: metadata and tensor infos, checked against hostile input.
//!
//! [`GgufFile::open`] reads the header, the metadata and the tensor-info table through a
//! `BufReader` and never the tensor data. Everything llama.cpp's `gguf_init_from_file` would
//! refuse is refused here too, with an error naming the file, so that a bad file never reaches
//! llama.cpp (where some loaders abort the process). Every length and count read from the file is
//! bounded by the bytes left in the file before anything is allocated for it.

use std::collections::HashMap;

use crate::GGUF_VERSION;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::types::{
    FileKind, GgmlType, GgufError, MetaArray, MetaValue, TensorInfo, ValueType,
    GGUF_DEFAULT_ALIGNMENT, GGUF_KEY_ALIGNMENT, GGUF_MAGIC, GGUF_MAX_ARRAY_LEN, GGUF_MAX_DIMS,
    GGUF_MAX_KEY_LEN, GGUF_MAX_STRING_LEN, GGUF_MAX_TENSOR_NAME,
};

/// Upper bound on the number of metadata entries and of tensors a header may declare (no real
/// file comes near; the bound only turns absurd counts into a clear [`GgufError::Invalid`]).
const MAX_COUNT: u64 = 1 << 30;
/// Most elements of one metadata array we read: 16 M, far above any vocabulary (a few hundred
/// thousand tokens and merges), and a bound on what a hostile array costs in memory (a 15 GB
/// file could otherwise declare a billion empty strings, each taking 24 bytes of RAM).
const MAX_ARRAY_ELEMENTS: u64 = 1 << 24;
/// Most entries reserved ahead of reading them: vectors grow past it only as entries are
/// actually read (a count in a header is not trusted with memory).
const PREALLOC: u64 = 1 << 12;
/// Smallest possible metadata entry: key length (8) + 1-byte key + value type (4) + u8 value.
const MIN_KV_BYTES: u64 = 14;
/// Smallest possible tensor info: name length (8) + n_dims (4) + type (4) + offset (8).
const MIN_TENSOR_INFO_BYTES: u64 = 24;

/// A parsed GGUF header. The tensor data stays on disk; see [`GgufFile::read_tensor_bytes`].
#[derive(Debug, Clone)]
pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    /// Alignment of the data section and of every tensor (`general.alignment`, default 32).
    pub alignment: u64,
    /// Metadata in file order.
    pub metadata: Vec<(String, MetaValue)>,
    /// Tensor infos in file order.
    pub tensors: Vec<TensorInfo>,
    /// Absolute offset of the data section in the file.
    pub data_offset: u64,
    pub file_size: u64,
    key_index: HashMap<String, usize>,
    tensor_index: HashMap<String, usize>,
}

impl GgufFile {
    /// Reads and checks the header, metadata and tensor infos of `path` (not the tensor data).
    ///
    /// Checks, beyond the layout itself: magic and version (2 or 3), keys non-empty, unique and
    /// valid UTF-8, known value types, no arrays of arrays, `general.alignment` a `u32` power of
    /// two, tensor names unique and shorter than 64 bytes, at most 4 dims, known ggml types, rows
    /// a multiple of the type's block size, tensors stored in order at aligned offsets (as ggml
    /// requires) and every tensor's data inside the file. String values that are not valid UTF-8
    /// are kept with U+FFFD replacements and a logged warning (llama.cpp does not check them).
    pub fn open(path: &Path) -> Result<GgufFile, GgufError> {
        let io_err = |source: std::io::Error| {
            if source.kind() == std::io::ErrorKind::NotFound {
                GgufError::NotFound {
                    path: path.to_path_buf(),
                }
            } else {
                GgufError::Io {
                    path: path.to_path_buf(),
                    source,
                }
            }
        };
        let meta = std::fs::metadata(path).map_err(io_err)?;
        if meta.is_dir() {
            return Err(GgufError::IsDirectory {
                path: path.to_path_buf(),
            });
        }
        if let Some(kind) = crate::special_file_kind(&meta) {
            // A FIFO would block the open until a writer comes; a device has no end.
            return Err(GgufError::NotRegularFile {
                path: path.to_path_buf(),
                kind,
            });
        }
        let file = File::open(path).map_err(io_err)?;
        let file_size = file.metadata().map_err(io_err)?.len();
        if file_size == 0 {
            return Err(GgufError::Empty {
                path: path.to_path_buf(),
            });
        }
        let src = Source {
            r: Box::new(BufReader::with_capacity(1 << 16, file)),
            pos: 0,
            size: file_size,
            path,
        };
        parse(src)
    }

    /// Reads a GGUF file held in memory, with every check of [`GgufFile::open`]; `path` is what
    /// errors call it.
    pub fn parse_bytes(bytes: &[u8], path: &Path) -> Result<GgufFile, GgufError> {
        GgufFile::parse_prefix(bytes, bytes.len() as u64, path)
    }

    /// Reads the header of a GGUF file of `file_size` bytes from its first bytes (`prefix`):
    /// the header is parsed from them and every tensor is checked to lie within `file_size`,
    /// whose data is never read. A header that runs past `prefix` is reported truncated. (The
    /// fuzzers mutate headers this way without copying megabytes of weights.)
    pub fn parse_prefix(prefix: &[u8], file_size: u64, path: &Path) -> Result<GgufFile, GgufError> {
        if file_size == 0 {
            return Err(GgufError::Empty {
                path: path.to_path_buf(),
            });
        }
        parse(Source {
            r: Box::new(prefix),
            pos: 0,
            size: file_size,
            path,
        })
    }

    /// The header of a file that is planned but not written (e.g. a synthetic real-shape pair
    /// of many GB), as [`GgufFile::open`] would read it: tensors laid out in order at
    /// [`GGUF_DEFAULT_ALIGNMENT`] offsets. No file is read; the sizes of the data section and
    /// the header are estimates (the data offset is 0). For checking planned files' metadata
    /// and shapes with the same code that checks real ones.
    pub fn from_header(
        path: &Path,
        metadata: Vec<(String, MetaValue)>,
        tensors: Vec<(String, Vec<u64>, GgmlType)>,
    ) -> GgufFile {
        let align = GGUF_DEFAULT_ALIGNMENT;
        let mut offset = 0u64;
        let tensors: Vec<TensorInfo> = tensors
            .into_iter()
            .map(|(name, dims, ggml_type)| {
                let n_bytes = ggml_type.tensor_bytes(&dims).unwrap_or(0);
                let t = TensorInfo {
                    name,
                    dims,
                    ggml_type,
                    offset,
                    n_bytes,
                };
                offset = (offset + n_bytes).div_ceil(align) * align;
                t
            })
            .collect();
        let key_index = metadata
            .iter()
            .enumerate()
            .map(|(i, (k, _))| (k.clone(), i))
            .collect();
        let tensor_index = tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        GgufFile {
            path: path.to_path_buf(),
            version: GGUF_VERSION,
            alignment: align,
            metadata,
            tensors,
            data_offset: 0,
            file_size: offset,
            key_index,
            tensor_index,
        }
    }

    /// The value of a metadata key (O(1)).
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.key_index.get(key).map(|&i| &self.metadata[i].1)
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key)?.as_str()
    }

    /// Any integer type holding a non-negative value.
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key)?.as_u64()
    }

    /// Any integer type whose value fits in an `i64`.
    pub fn get_i64(&self, key: &str) -> Option<i64> {
        self.get(key)?.as_i64()
    }

    /// An `f32` (or an `f64`, narrowed).
    pub fn get_f32(&self, key: &str) -> Option<f32> {
        self.get(key)?.as_f32()
    }

    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.get(key)?.as_bool()
    }

    /// An `array[f32]` value.
    pub fn get_f32_array(&self, key: &str) -> Option<&[f32]> {
        match self.get(key)? {
            MetaValue::Array(MetaArray::F32(v)) => Some(v),
            _ => None,
        }
    }

    /// An `array[string]` value.
    pub fn get_str_array(&self, key: &str) -> Option<&[String]> {
        match self.get(key)? {
            MetaValue::Array(MetaArray::String(v)) => Some(v),
            _ => None,
        }
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }

    /// `"clip"` is a projector, any other non-empty architecture a language model.
    pub fn kind(&self) -> FileKind {
        match self.architecture() {
            Some("clip") => FileKind::Projector,
            Some(arch) if !arch.is_empty() => FileKind::LanguageModel(arch.to_owned()),
            _ => FileKind::Unknown,
        }
    }

    /// The tensor info for a name (O(1)).
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// Total number of tensor elements.
    pub fn n_params(&self) -> u64 {
        self.tensors
            .iter()
            .fold(0u64, |acc, t| acc.saturating_add(t.n_elements()))
    }

    /// Reads one tensor's data (opens the file, seeks, reads `t.n_bytes`).
    pub fn read_tensor_bytes(&self, t: &TensorInfo) -> Result<Vec<u8>, GgufError> {
        let path = self.path.as_path();
        let start = self.data_offset.saturating_add(t.offset);
        let end = start.saturating_add(t.n_bytes);
        if end > self.file_size {
            return Err(GgufError::TensorOutOfBounds {
                path: path.to_path_buf(),
                name: t.name.clone(),
                end,
                file_size: self.file_size,
            });
        }
        let io_err = |source: std::io::Error| match source.kind() {
            std::io::ErrorKind::NotFound => GgufError::NotFound {
                path: path.to_path_buf(),
            },
            std::io::ErrorKind::UnexpectedEof => GgufError::Truncated {
                path: path.to_path_buf(),
                what: format!(
                    "the data of tensor {:?} (the file shrank after it was opened)",
                    t.name
                ),
                offset: start,
            },
            _ => GgufError::Io {
                path: path.to_path_buf(),
                source,
            },
        };
        let len = usize::try_from(t.n_bytes).map_err(|_| GgufError::Invalid {
            path: path.to_path_buf(),
            reason: format!(
                "tensor {:?} has {} bytes, more than this machine can address",
                t.name, t.n_bytes
            ),
        })?;
        let mut buf = Vec::new();
        buf.try_reserve_exact(len).map_err(|_| {
            io_err(std::io::Error::new(
                std::io::ErrorKind::OutOfMemory,
                format!("cannot allocate {len} bytes for tensor {:?}", t.name),
            ))
        })?;
        let mut file = File::open(path).map_err(io_err)?;
        file.seek(SeekFrom::Start(start)).map_err(io_err)?;
        file.take(t.n_bytes).read_to_end(&mut buf).map_err(io_err)?;
        if buf.len() != len {
            return Err(io_err(std::io::ErrorKind::UnexpectedEof.into()));
        }
        Ok(buf)
    }
}

/// A bounded, position-tracking reader over the file.
struct Source<'a> {
    r: Box<dyn Read + 'a>,
    pos: u64,
    size: u64,
    path: &'a Path,
}

impl Source<'_> {
    fn remaining(&self) -> u64 {
        self.size.saturating_sub(self.pos)
    }

    fn truncated(&self, what: &str) -> GgufError {
        GgufError::Truncated {
            path: self.path.to_path_buf(),
            what: what.to_owned(),
            offset: self.size,
        }
    }

    fn invalid(&self, reason: String) -> GgufError {
        GgufError::Invalid {
            path: self.path.to_path_buf(),
            reason,
        }
    }

    fn io(&self, source: std::io::Error, what: &str) -> GgufError {
        if source.kind() == std::io::ErrorKind::UnexpectedEof {
            // The file shrank while we read it.
            GgufError::Truncated {
                path: self.path.to_path_buf(),
                what: what.to_owned(),
                offset: self.pos,
            }
        } else {
            GgufError::Io {
                path: self.path.to_path_buf(),
                source,
            }
        }
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        if N as u64 > self.remaining() {
            return Err(self.truncated(what));
        }
        let mut b = [0u8; N];
        self.r.read_exact(&mut b).map_err(|e| self.io(e, what))?;
        self.pos += N as u64;
        Ok(b)
    }

    /// `n` raw bytes; the caller has bounded `n`, this checks it against the file again.
    fn bytes(&mut self, n: u64, what: &str) -> Result<Vec<u8>, GgufError> {
        if n > self.remaining() {
            return Err(self.truncated(what));
        }
        let len = usize::try_from(n).map_err(|_| self.truncated(what))?;
        let mut v = vec![0u8; len];
        self.r.read_exact(&mut v).map_err(|e| self.io(e, what))?;
        self.pos += n;
        Ok(v)
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A length-prefixed string's bytes, its length at most `max`.
    fn string_bytes(&mut self, max: u64, what: &str) -> Result<Vec<u8>, GgufError> {
        let len = self.u64(what)?;
        if len > max {
            return Err(self.invalid(format!(
                "{what} is {len} bytes long, more than the {max} bytes allowed"
            )));
        }
        self.bytes(len, what)
    }

    /// A string that must be valid UTF-8 (keys and tensor names).
    fn strict_string(&mut self, max: u64, what: &str) -> Result<String, GgufError> {
        let b = self.string_bytes(max, what)?;
        String::from_utf8(b).map_err(|e| {
            self.invalid(format!(
                "{what} is not valid UTF-8 ({e}): {:?}",
                String::from_utf8_lossy(e.as_bytes())
            ))
        })
    }

    /// A string value; invalid UTF-8 is replaced (and `*lossy` set).
    fn value_string(&mut self, what: &str, lossy: &mut bool) -> Result<String, GgufError> {
        let b = self.string_bytes(GGUF_MAX_STRING_LEN, what)?;
        Ok(match String::from_utf8(b) {
            Ok(s) => s,
            Err(e) => {
                *lossy = true;
                String::from_utf8_lossy(e.as_bytes()).into_owned()
            }
        })
    }

    fn value_type(&mut self, what: &str, key: &str) -> Result<ValueType, GgufError> {
        let id = self.u32(what)?;
        ValueType::from_u32(id).ok_or_else(|| {
            self.invalid(format!(
                "metadata key {key:?} has unknown value type {id} (known: 0..=12)"
            ))
        })
    }

    fn value(
        &mut self,
        ty: ValueType,
        key: &str,
        lossy: &mut bool,
    ) -> Result<MetaValue, GgufError> {
        let what = format!("the value of metadata key {key:?}");
        let what = what.as_str();
        Ok(match ty {
            ValueType::U8 => MetaValue::U8(u8::from_le_bytes(self.array(what)?)),
            ValueType::I8 => MetaValue::I8(i8::from_le_bytes(self.array(what)?)),
            ValueType::U16 => MetaValue::U16(u16::from_le_bytes(self.array(what)?)),
            ValueType::I16 => MetaValue::I16(i16::from_le_bytes(self.array(what)?)),
            ValueType::U32 => MetaValue::U32(u32::from_le_bytes(self.array(what)?)),
            ValueType::I32 => MetaValue::I32(i32::from_le_bytes(self.array(what)?)),
            ValueType::F32 => MetaValue::F32(f32::from_le_bytes(self.array(what)?)),
            ValueType::Bool => MetaValue::Bool(self.array::<1>(what)?[0] != 0),
            ValueType::String => MetaValue::String(self.value_string(what, lossy)?),
            ValueType::U64 => MetaValue::U64(u64::from_le_bytes(self.array(what)?)),
            ValueType::I64 => MetaValue::I64(i64::from_le_bytes(self.array(what)?)),
            ValueType::F64 => MetaValue::F64(f64::from_le_bytes(self.array(what)?)),
            ValueType::Array => MetaValue::Array(self.meta_array(key, what, lossy)?),
        })
    }

    fn meta_array(
        &mut self,
        key: &str,
        what: &str,
        lossy: &mut bool,
    ) -> Result<MetaArray, GgufError> {
        let elem = self.value_type(what, key)?;
        let nested = |src: &Self| {
            src.invalid(format!(
                "metadata key {key:?} is an array of arrays, which is not supported"
            ))
        };
        if elem == ValueType::Array {
            return Err(nested(self));
        }
        let n = self.u64(what)?;
        let max = GGUF_MAX_ARRAY_LEN.min(MAX_ARRAY_ELEMENTS);
        if n > max {
            return Err(self.invalid(format!(
                "metadata key {key:?} declares an array of {n} elements, more than the \
                 {max} allowed"
            )));
        }
        // n <= 2^30 and min_size <= 8: no overflow.
        let min_bytes = n * elem.min_size();
        if min_bytes > self.remaining() {
            return Err(self.truncated(what));
        }
        macro_rules! numeric {
            ($variant:ident, $t:ty) => {{
                const W: usize = std::mem::size_of::<$t>();
                let raw = self.bytes(min_bytes, what)?;
                MetaArray::$variant(
                    raw.chunks_exact(W)
                        .map(|c| {
                            let mut a = [0u8; W];
                            a.copy_from_slice(c);
                            <$t>::from_le_bytes(a)
                        })
                        .collect(),
                )
            }};
        }
        Ok(match elem {
            ValueType::U8 => MetaArray::U8(self.bytes(min_bytes, what)?),
            ValueType::I8 => numeric!(I8, i8),
            ValueType::U16 => numeric!(U16, u16),
            ValueType::I16 => numeric!(I16, i16),
            ValueType::U32 => numeric!(U32, u32),
            ValueType::I32 => numeric!(I32, i32),
            ValueType::F32 => numeric!(F32, f32),
            ValueType::U64 => numeric!(U64, u64),
            ValueType::I64 => numeric!(I64, i64),
            ValueType::F64 => numeric!(F64, f64),
            ValueType::Bool => MetaArray::Bool(
                self.bytes(min_bytes, what)?
                    .into_iter()
                    .map(|b| b != 0)
                    .collect(),
            ),
            ValueType::String => {
                let mut v = Vec::with_capacity(n.min(PREALLOC) as usize);
                for _ in 0..n {
                    v.push(self.value_string(what, lossy)?);
                }
                MetaArray::String(v)
            }
            ValueType::Array => return Err(nested(self)),
        })
    }
}

fn align_up(x: u64, alignment: u64) -> Option<u64> {
    x.checked_add((alignment - x % alignment) % alignment)
}

fn parse(mut src: Source<'_>) -> Result<GgufFile, GgufError> {
    let magic: [u8; 4] = src.array("the magic number \"GGUF\"")?;
    if magic != GGUF_MAGIC {
        return Err(GgufError::BadMagic {
            path: src.path.to_path_buf(),
            found: magic,
        });
    }
    let version = src.u32("the GGUF version")?;
    if !(2..=3).contains(&version) {
        return Err(GgufError::UnsupportedVersion {
            path: src.path.to_path_buf(),
            version,
        });
    }
    let n_tensors = src.u64("the tensor count")?;
    let n_kv = src.u64("the metadata entry count")?;
    if n_kv > MAX_COUNT {
        return Err(src.invalid(format!(
            "the header declares {n_kv} metadata entries, more than the {MAX_COUNT} allowed"
        )));
    }
    if n_tensors > MAX_COUNT {
        return Err(src.invalid(format!(
            "the header declares {n_tensors} tensors, more than the {MAX_COUNT} allowed"
        )));
    }

    // Metadata. Capacities are bounded by what the rest of the file can hold, and by PREALLOC.
    let cap = n_kv.min(src.remaining() / MIN_KV_BYTES).min(PREALLOC) as usize;
    let mut metadata: Vec<(String, MetaValue)> = Vec::with_capacity(cap);
    let mut key_index: HashMap<String, usize> = HashMap::with_capacity(cap);
    for i in 0..n_kv {
        let key =
            src.strict_string(GGUF_MAX_KEY_LEN, &format!("the key of metadata entry #{i}"))?;
        if key.is_empty() {
            return Err(src.invalid(format!("the key of metadata entry #{i} is empty")));
        }
        if key_index.contains_key(&key) {
            return Err(src.invalid(format!("metadata key {key:?} appears more than once")));
        }
        let ty = src.value_type(&format!("the value type of metadata key {key:?}"), &key)?;
        let mut lossy = false;
        let value = src.value(ty, &key, &mut lossy)?;
        if lossy {
            log::warn!(
                "{}: metadata key {key:?} holds text that is not valid UTF-8; \
                 invalid bytes were replaced with U+FFFD",
                src.path.display()
            );
        }
        key_index.insert(key.clone(), metadata.len());
        metadata.push((key, value));
    }

    let alignment = match key_index.get(GGUF_KEY_ALIGNMENT).map(|&i| &metadata[i].1) {
        None => GGUF_DEFAULT_ALIGNMENT,
        Some(MetaValue::U32(a)) if a.is_power_of_two() => u64::from(*a),
        Some(MetaValue::U32(a)) => {
            return Err(src.invalid(format!(
                "{GGUF_KEY_ALIGNMENT} is {a}, which is not a power of two"
            )))
        }
        Some(other) => {
            return Err(src.invalid(format!(
                "{GGUF_KEY_ALIGNMENT} must be a u32, but it is a {}",
                other.type_name()
            )))
        }
    };

    // Tensor infos.
    let cap = n_tensors
        .min(src.remaining() / MIN_TENSOR_INFO_BYTES)
        .min(PREALLOC) as usize;
    let mut tensors: Vec<TensorInfo> = Vec::with_capacity(cap);
    let mut tensor_index: HashMap<String, usize> = HashMap::with_capacity(cap);
    for i in 0..n_tensors {
        let name = src.strict_string(
            GGUF_MAX_TENSOR_NAME as u64,
            &format!("the name of tensor #{i}"),
        )?;
        if tensor_index.contains_key(&name) {
            return Err(src.invalid(format!("tensor name {name:?} appears more than once")));
        }
        let what = format!("the shape of tensor {name:?}");
        let n_dims = src.u32(&what)?;
        if n_dims as usize > GGUF_MAX_DIMS {
            return Err(src.invalid(format!(
                "tensor {name:?} has {n_dims} dimensions; ggml supports at most {GGUF_MAX_DIMS}"
            )));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            let d = src.u64(&what)?;
            if d > i64::MAX as u64 {
                return Err(src.invalid(format!(
                    "tensor {name:?} has a dimension of {d} elements, more than ggml allows"
                )));
            }
            dims.push(d);
        }
        if dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .is_none_or(|n| n > i64::MAX as u64)
        {
            return Err(src.invalid(format!(
                "tensor {name:?} has shape {dims:?}, whose element count overflows"
            )));
        }
        let type_id = src.u32(&format!("the type of tensor {name:?}"))?;
        let ggml_type = GgmlType::from_u32(type_id).ok_or_else(|| {
            src.invalid(format!(
                "tensor {name:?} has unknown ggml type id {type_id}"
            ))
        })?;
        let ne0 = dims.first().copied().unwrap_or(1);
        if ne0 % ggml_type.block_size() != 0 {
            return Err(src.invalid(format!(
                "tensor {name:?} of type {ggml_type} has rows of {ne0} elements, \
                 not a multiple of the block size {}",
                ggml_type.block_size()
            )));
        }
        let n_bytes = ggml_type.tensor_bytes(&dims).ok_or_else(|| {
            src.invalid(format!(
                "tensor {name:?} with shape {dims:?} has a size that overflows"
            ))
        })?;
        let offset = src.u64(&format!("the data offset of tensor {name:?}"))?;
        tensor_index.insert(name.clone(), tensors.len());
        tensors.push(TensorInfo {
            name,
            dims,
            ggml_type,
            offset,
            n_bytes,
        });
    }

    // The data section starts at the next multiple of the alignment (when there are tensors).
    let header_end = src.pos;
    let file_size = src.size;
    let data_offset = if n_tensors > 0 {
        let d = align_up(header_end, alignment)
            .ok_or_else(|| src.invalid("the data section offset overflows".to_owned()))?;
        if d > file_size {
            return Err(src.truncated("the padding before the tensor data"));
        }
        d
    } else {
        header_end
    };

    // ggml requires each tensor right after the previous one, padded to the alignment.
    let mut expected = 0u64;
    for t in &tensors {
        if t.offset % alignment != 0 {
            return Err(src.invalid(format!(
                "tensor {:?} starts at offset {} of the data section, \
                 not a multiple of the alignment {alignment}",
                t.name, t.offset
            )));
        }
        if t.offset != expected {
            return Err(src.invalid(format!(
                "tensor {:?} starts at offset {} of the data section, expected {expected} \
                 (tensors must follow each other in order, each padded to the alignment {alignment})",
                t.name, t.offset
            )));
        }
        let end = data_offset
            .checked_add(t.offset)
            .and_then(|s| s.checked_add(t.n_bytes))
            .unwrap_or(u64::MAX);
        if end > file_size {
            return Err(GgufError::TensorOutOfBounds {
                path: src.path.to_path_buf(),
                name: t.name.clone(),
                end,
                file_size,
            });
        }
        // Bounded by the file size (checked just above), so no overflow.
        expected = align_up(t.offset + t.n_bytes, alignment).unwrap_or(u64::MAX);
    }

    Ok(GgufFile {
        path: src.path.to_path_buf(),
        version,
        alignment,
        metadata,
        tensors,
        data_offset,
        file_size,
        key_index,
        tensor_index,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GgufWriter, GGUF_VERSION};
    use std::io::Write as _;

    /// Hand-assembled GGUF bytes.
    #[derive(Clone, Default)]
    struct Raw(Vec<u8>);

    impl Raw {
        fn header(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
            Raw::default()
                .bytes(b"GGUF")
                .u32(version)
                .u64(n_tensors)
                .u64(n_kv)
        }
        fn bytes(mut self, b: &[u8]) -> Raw {
            self.0.extend_from_slice(b);
            self
        }
        fn u32(self, v: u32) -> Raw {
            self.bytes(&v.to_le_bytes())
        }
        fn u64(self, v: u64) -> Raw {
            self.bytes(&v.to_le_bytes())
        }
        fn str(self, s: &str) -> Raw {
            self.u64(s.len() as u64).bytes(s.as_bytes())
        }
        /// A u32 metadata entry.
        fn kv_u32(self, key: &str, v: u32) -> Raw {
            self.str(key).u32(4).u32(v)
        }
        /// A tensor info.
        fn tensor(self, name: &str, dims: &[u64], ty: u32, offset: u64) -> Raw {
            let mut r = self.str(name).u32(dims.len() as u32);
            for &d in dims {
                r = r.u64(d);
            }
            r.u32(ty).u64(offset)
        }
        /// Zero padding to 32.
        fn pad(self) -> Raw {
            let n = (32 - self.0.len() % 32) % 32;
            self.bytes(&vec![0; n])
        }
    }

    fn open_bytes<B: AsRef<[u8]> + ?Sized>(
        bytes: &B,
    ) -> (tempfile::TempDir, PathBuf, Result<GgufFile, GgufError>) {
        let bytes = bytes.as_ref();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hostile.gguf");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(bytes)
            .unwrap();
        let r = GgufFile::open(&path);
        (dir, path, r)
    }

    /// Opens `bytes`, expects an error matching `pat` whose message names the file and contains
    /// every string in `needles`.
    macro_rules! expect_err {
        ($bytes:expr, $pat:pat, $($needle:expr),*) => {{
            let (_dir, path, r) = open_bytes(&$bytes);
            match r {
                Err(e @ $pat) => {
                    let msg = e.to_string();
                    assert!(msg.contains(&path.display().to_string()), "no path in: {msg}");
                    assert_eq!(e.path(), path.as_path());
                    $( assert!(msg.contains($needle), "{:?} not in: {msg}", $needle); )*
                    e
                }
                Err(e) => panic!("wrong error: {e:?}"),
                Ok(_) => panic!("opened a bad file"),
            }
        }};
    }

    /// A small valid file: 2 kv, 2 tensors (F32 [4] and Q8_0 [32, 2]); no padding after the last
    /// tensor's data (68 bytes, so padding follows; callers use `data_end`).
    fn small_valid() -> (Vec<u8>, u64) {
        let raw = Raw::header(3, 2, 2)
            .str("general.architecture")
            .u32(8)
            .str("qwen2")
            .kv_u32("k.n", 7)
            .tensor("a", &[4], 0, 0)
            .tensor("b", &[32, 2], 8, 32)
            .pad();
        let data_offset = raw.0.len() as u64;
        let raw = raw.bytes(&[1u8; 16]).bytes(&[0; 16]).bytes(&[2u8; 68]);
        (raw.0, data_offset + 32 + 68)
    }

    #[test]
    fn small_valid_file_reads() {
        let (bytes, data_end) = small_valid();
        let (_dir, path, r) = open_bytes(&bytes);
        let f = r.unwrap();
        assert_eq!(f.path, path);
        assert_eq!(f.version, 3);
        assert_eq!(f.kind(), FileKind::LanguageModel("qwen2".into()));
        assert_eq!(f.get_u64("k.n"), Some(7));
        assert_eq!(f.tensors.len(), 2);
        assert_eq!(f.tensor("b").unwrap().n_bytes, 68);
        assert_eq!(f.data_offset % 32, 0);
        assert_eq!(f.file_size, data_end);
        assert_eq!(
            f.read_tensor_bytes(f.tensor("b").unwrap()).unwrap(),
            vec![2u8; 68]
        );
        assert_eq!(f.n_params(), 4 + 64);
    }

    #[test]
    fn version_2_is_accepted() {
        let (_d, _p, r) = open_bytes(&Raw::header(2, 0, 1).kv_u32("x", 1).0);
        assert_eq!(r.unwrap().version, 2);
    }

    #[test]
    fn missing_directory_empty() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.gguf");
        let e = GgufFile::open(&missing).unwrap_err();
        assert!(matches!(e, GgufError::NotFound { .. }), "{e:?}");
        assert!(e.to_string().contains("nope.gguf"));
        let e = GgufFile::open(dir.path()).unwrap_err();
        assert!(matches!(e, GgufError::IsDirectory { .. }), "{e:?}");
        assert!(e.to_string().contains(&dir.path().display().to_string()));
        expect_err!(b"", GgufError::Empty { .. }, "empty");
    }

    #[test]
    fn short_and_foreign_files() {
        let e = expect_err!(b"GGU", GgufError::Truncated { .. }, "truncated", "magic");
        assert!(matches!(e, GgufError::Truncated { offset: 3, .. }));
        let e = expect_err!(
            b"\x7fELF\x02\x01\x01\x00",
            GgufError::BadMagic { .. },
            "not a GGUF file"
        );
        assert!(matches!(e, GgufError::BadMagic { found, .. } if &found == b"\x7fELF"));
        expect_err!(b"GGUF\x03\x00", GgufError::Truncated { .. }, "version");
        expect_err!(
            Raw::header(3, 0, 0).0[..20],
            GgufError::Truncated { .. },
            "metadata entry count"
        );
    }

    #[test]
    fn unsupported_versions() {
        expect_err!(
            Raw::header(99, 0, 0).0,
            GgufError::UnsupportedVersion { version: 99, .. },
            "99"
        );
        expect_err!(
            Raw::header(1, 0, 0).0,
            GgufError::UnsupportedVersion { version: 1, .. },
            "version 1"
        );
        expect_err!(
            Raw::header(0, 0, 0).0,
            GgufError::UnsupportedVersion { version: 0, .. },
            "version 0"
        );
        expect_err!(
            Raw::header(3u32.swap_bytes(), 0, 0).0,
            GgufError::UnsupportedVersion { .. },
            "big-endian"
        );
    }

    #[test]
    fn huge_counts() {
        expect_err!(
            Raw::header(3, 0, u64::MAX).0,
            GgufError::Invalid { .. },
            "metadata entries"
        );
        expect_err!(
            Raw::header(3, 1 << 40, 0).0,
            GgufError::Invalid { .. },
            "tensors"
        );
        // Plausible counts in a file that ends: truncated, and no allocation from the count.
        expect_err!(
            Raw::header(3, 0, 1000).0,
            GgufError::Truncated { .. },
            "metadata entry #0"
        );
        expect_err!(
            Raw::header(3, 1000, 0).0,
            GgufError::Truncated { .. },
            "tensor #0"
        );
    }

    #[test]
    fn huge_string_lengths() {
        // key length
        expect_err!(
            Raw::header(3, 0, 1).u64(1 << 60).0,
            GgufError::Invalid { .. },
            "bytes long"
        );
        expect_err!(
            Raw::header(3, 0, 1).u64(70_000).0,
            GgufError::Invalid { .. },
            "65535"
        );
        // string value length
        let raw = Raw::header(3, 0, 1)
            .str("k")
            .u32(8)
            .u64(1 << 60)
            .bytes(b"abc");
        expect_err!(raw.0, GgufError::Invalid { .. }, "\"k\"", "bytes long");
        // a plausible length past the end of the file
        let raw = Raw::header(3, 0, 1).str("k").u32(8).u64(100).bytes(b"abc");
        expect_err!(raw.0, GgufError::Truncated { .. }, "\"k\"");
        // tensor name length
        expect_err!(
            Raw::header(3, 1, 0).u64(u64::MAX).0,
            GgufError::Invalid { .. },
            "tensor #0"
        );
    }

    #[test]
    fn huge_array_counts() {
        let raw = Raw::header(3, 0, 1)
            .str("arr")
            .u32(9)
            .u32(6)
            .u64(1 << 40)
            .bytes(&[0; 16]);
        expect_err!(raw.0, GgufError::Invalid { .. }, "\"arr\"", "1099511627776");
        let raw = Raw::header(3, 0, 1).str("arr").u32(9).u32(8).u64(u64::MAX);
        expect_err!(raw.0, GgufError::Invalid { .. }, "\"arr\"");
        // plausible but past the end: 1000 u32 in 16 bytes
        let raw = Raw::header(3, 0, 1)
            .str("arr")
            .u32(9)
            .u32(4)
            .u64(1000)
            .bytes(&[0; 16]);
        expect_err!(raw.0, GgufError::Truncated { .. }, "\"arr\"");
        // 1000 strings need at least 8000 bytes
        let raw = Raw::header(3, 0, 1)
            .str("arr")
            .u32(9)
            .u32(8)
            .u64(1000)
            .bytes(&[0; 16]);
        expect_err!(raw.0, GgufError::Truncated { .. }, "\"arr\"");
    }

    #[test]
    fn bad_value_types() {
        let raw = Raw::header(3, 0, 1).str("weird").u32(13).u32(0);
        expect_err!(
            raw.0,
            GgufError::Invalid { .. },
            "\"weird\"",
            "unknown value type 13"
        );
        let raw = Raw::header(3, 0, 1).str("weird").u32(9).u32(77).u64(0);
        expect_err!(raw.0, GgufError::Invalid { .. }, "\"weird\"", "77");
        let raw = Raw::header(3, 0, 1)
            .str("nest")
            .u32(9)
            .u32(9)
            .u64(1)
            .u32(4)
            .u64(1)
            .u32(0);
        expect_err!(
            raw.0,
            GgufError::Invalid { .. },
            "\"nest\"",
            "array of arrays"
        );
    }

    #[test]
    fn bad_keys() {
        let raw = Raw::header(3, 0, 2).kv_u32("dup", 1).kv_u32("dup", 2);
        expect_err!(
            raw.0,
            GgufError::Invalid { .. },
            "\"dup\"",
            "more than once"
        );
        let raw = Raw::header(3, 0, 1).kv_u32("", 1);
        expect_err!(raw.0, GgufError::Invalid { .. }, "empty");
        let raw = Raw::header(3, 0, 1)
            .u64(2)
            .bytes(&[0xff, 0xfe])
            .u32(4)
            .u32(1);
        expect_err!(raw.0, GgufError::Invalid { .. }, "UTF-8");
    }

    #[test]
    fn invalid_utf8_values_are_replaced() {
        let raw = Raw::header(3, 0, 1).str("s").u32(8).u64(3).bytes(b"a\xffb");
        let (_d, _p, r) = open_bytes(&raw.0);
        assert_eq!(r.unwrap().get_str("s"), Some("a\u{fffd}b"));
    }

    #[test]
    fn bad_alignment() {
        let raw = Raw::header(3, 0, 1)
            .str("general.alignment")
            .u32(10)
            .u64(32);
        expect_err!(
            raw.0,
            GgufError::Invalid { .. },
            "general.alignment",
            "u32",
            "u64"
        );
        let raw = Raw::header(3, 0, 1).kv_u32("general.alignment", 48);
        expect_err!(raw.0, GgufError::Invalid { .. }, "power of two");
        let raw = Raw::header(3, 0, 1).kv_u32("general.alignment", 0);
        expect_err!(raw.0, GgufError::Invalid { .. }, "power of two");
    }

    #[test]
    fn bad_tensor_infos() {
        let t = |name: &str, dims: &[u64], ty: u32, off: u64| {
            Raw::header(3, 1, 0)
                .tensor(name, dims, ty, off)
                .pad()
                .bytes(&[0; 256])
                .0
        };
        expect_err!(
            t("w", &[4], 4, 0),
            GgufError::Invalid { .. },
            "\"w\"",
            "ggml type id 4"
        );
        expect_err!(
            t("w", &[4], 999, 0),
            GgufError::Invalid { .. },
            "\"w\"",
            "999"
        );
        let nine = Raw::header(3, 1, 0).str("w").u32(9).bytes(&[1; 128]).0;
        expect_err!(nine, GgufError::Invalid { .. }, "\"w\"", "9 dimensions");
        expect_err!(
            t("w", &[33], 8, 0),
            GgufError::Invalid { .. },
            "\"w\"",
            "block size 32"
        );
        expect_err!(t("w", &[1 << 63], 0, 0), GgufError::Invalid { .. }, "\"w\"");
        expect_err!(
            t("w", &[1 << 40, 1 << 40], 0, 0),
            GgufError::Invalid { .. },
            "overflows"
        );
        expect_err!(
            t("w", &[4], 0, 3),
            GgufError::Invalid { .. },
            "\"w\"",
            "alignment"
        );
        expect_err!(
            t("w", &[4], 0, 64),
            GgufError::Invalid { .. },
            "\"w\"",
            "expected 0"
        );
        expect_err!(
            t(&"n".repeat(64), &[4], 0, 0),
            GgufError::Invalid { .. },
            "63"
        );
        let dup = Raw::header(3, 2, 0)
            .tensor("w", &[4], 0, 0)
            .tensor("w", &[4], 0, 32)
            .pad()
            .bytes(&[0; 64]);
        expect_err!(dup.0, GgufError::Invalid { .. }, "\"w\"", "more than once");
        // zero-size tensors and scalars are what ggml accepts
        let (_d, _p, r) = open_bytes(&t("z", &[0, 3], 0, 0));
        assert_eq!(r.unwrap().tensors[0].n_bytes, 0);
        let (_d, _p, r) = open_bytes(&t("s", &[], 0, 0));
        assert_eq!(r.unwrap().tensors[0].n_bytes, 4);
    }

    #[test]
    fn tensor_data_past_eof() {
        let (bytes, data_end) = small_valid();
        let cut = (data_end - 10) as usize;
        let e = expect_err!(bytes[..cut], GgufError::TensorOutOfBounds { .. }, "\"b\"");
        assert!(
            matches!(e, GgufError::TensorOutOfBounds { end, file_size, .. }
            if end == data_end && file_size == cut as u64)
        );
        // An offset far past the end is also caught (here: as out of order).
        let raw = Raw::header(3, 1, 0).tensor("w", &[8], 0, 1 << 40).pad();
        expect_err!(raw.0, GgufError::Invalid { .. }, "\"w\"");
        let raw = Raw::header(3, 1, 0).tensor("w", &[1 << 40], 0, 0).pad();
        expect_err!(raw.0, GgufError::TensorOutOfBounds { .. }, "\"w\"");
    }

    #[test]
    fn truncated_at_every_byte() {
        let (bytes, data_end) = small_valid();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cut.gguf");
        for cut in 0..bytes.len() {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let r = GgufFile::open(&path);
            if cut as u64 >= data_end {
                assert!(r.is_ok(), "cut at {cut}: {r:?}");
                continue;
            }
            let e = r.expect_err("a truncated file opened");
            assert!(e.to_string().contains(&path.display().to_string()), "{e}");
            match e {
                GgufError::Empty { .. } => assert_eq!(cut, 0),
                GgufError::Truncated { offset, .. } => assert_eq!(offset, cut as u64),
                GgufError::TensorOutOfBounds { .. } => {}
                other => panic!("cut at {cut}: unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn corrupted_bytes_never_panic() {
        // Deterministic mutations of every header byte of a valid file.
        let (bytes, _) = small_valid();
        let header_len = bytes.len() - 100;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mut.gguf");
        for i in 0..header_len {
            for v in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                let mut b = bytes.clone();
                if b[i] == v {
                    continue;
                }
                b[i] = v;
                std::fs::write(&path, &b).unwrap();
                if let Err(e) = GgufFile::open(&path) {
                    assert!(e.to_string().contains(&path.display().to_string()));
                }
            }
        }
    }

    #[test]
    fn reads_writer_output_with_accessors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mmproj.gguf");
        let mut w = GgufWriter::new();
        w.add_kv("general.architecture", "clip".into());
        w.add_kv("clip.vision.image_mean", vec![0.5f32, 0.5, 0.5].into());
        w.add_kv("clip.minicpmv_version", MetaValue::I32(3));
        w.add_kv("clip.use_gelu", true.into());
        w.add_kv("eps", MetaValue::F64(1e-6));
        w.add_kv("tokens", vec!["a".to_string(), "b".to_string()].into());
        w.write(&path, |_, _, _| Ok(())).unwrap();
        let f = GgufFile::open(&path).unwrap();
        assert_eq!(f.version, GGUF_VERSION);
        assert_eq!(f.kind(), FileKind::Projector);
        assert_eq!(
            f.get_f32_array("clip.vision.image_mean"),
            Some(&[0.5f32, 0.5, 0.5][..])
        );
        assert_eq!(f.get_i64("clip.minicpmv_version"), Some(3));
        assert_eq!(f.get_u64("clip.minicpmv_version"), Some(3));
        assert_eq!(f.get_bool("clip.use_gelu"), Some(true));
        assert_eq!(f.get_f32("eps"), Some(1e-6));
        assert_eq!(f.get_str_array("tokens").map(|s| s.len()), Some(2));
        assert_eq!(f.get_str("clip.use_gelu"), None);
        assert_eq!(f.get("nope"), None);
        assert!(f.tensors.is_empty());
        assert_eq!(f.n_params(), 0);

        let mut w = GgufWriter::new();
        w.add_kv("general.architecture", "".into());
        w.write(&path, |_, _, _| Ok(())).unwrap();
        assert_eq!(GgufFile::open(&path).unwrap().kind(), FileKind::Unknown);
    }
}
