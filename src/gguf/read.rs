//! Reading GGUF headers: metadata and tensor infos, checked against hostile input.
//!
//! [`GgufFile::open`] reads the header, the metadata and the tensor-info table through a
//! `BufReader` and never the tensor data. Everything llama.cpp's `gguf_init_from_file` would
//! refuse is refused here too, with an error naming the file, so that a bad file never reaches
//! llama.cpp (where some loaders abort the process). Every length and count read from the file is
//! bounded by the bytes left in the file before anything is allocated for it.

use std::collections::HashMap;
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
        let file = File::open(path).map_err(io_err)?;
        let file_size = file.metadata().map_err(io_err)?.len();
        if file_size == 0 {
            return Err(GgufError::Empty {
                path: path.to_path_buf(),
            });
        }
        let src = Source {
            r: BufReader::with_capacity(1 << 16, file),
            pos: 0,
            size: file_size,
            path,
        };
        parse(src)
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
    r: BufReader<File>,
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
        if n > GGUF_MAX_ARRAY_LEN {
            return Err(self.invalid(format!(
                "metadata key {key:?} declares an array of {n} elements, more than the \
                 {GGUF_MAX_ARRAY_LEN} allowed"
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
                // n * 8 <= remaining, so this capacity is bounded by the file size.
                let mut v = Vec::with_capacity(n as usize);
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

    // Metadata. Capacities are bounded by what the rest of the file can hold.
    let cap = n_kv.min(src.remaining() / MIN_KV_BYTES) as usize;
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
    let cap = n_tensors.min(src.remaining() / MIN_TENSOR_INFO_BYTES) as usize;
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
