//! The GGUF data model: ggml tensor types, metadata values, tensor infos and the reader's errors.
//!
//! Numbers here are taken from the llama.cpp bundled in `llama-cpp-sys-2` 0.1.161:
//! `ggml/include/ggml.h` (type ids), `ggml/src/ggml.c` `type_traits` (names, block sizes) and
//! `ggml/src/ggml-common.h` (block struct sizes), `ggml/include/gguf.h` and `ggml/src/gguf.cpp`
//! (file layout and limits).

use std::fmt;
use std::path::PathBuf;

/// The four bytes every GGUF file starts with.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// The version the writer produces (llama.cpp's `GGUF_VERSION`).
pub const GGUF_VERSION: u32 = 3;
/// Alignment of the data section and of every tensor when `general.alignment` is absent.
pub const GGUF_DEFAULT_ALIGNMENT: u64 = 32;
/// The metadata key that overrides the alignment (must be a `u32` power of two).
pub const GGUF_KEY_ALIGNMENT: &str = "general.alignment";
/// ggml keeps at most 4 dimensions (`GGML_MAX_DIMS`).
pub const GGUF_MAX_DIMS: usize = 4;
/// ggml stores tensor names in `char name[64]` (`GGML_MAX_NAME`): at most 63 bytes.
pub const GGUF_MAX_TENSOR_NAME: usize = 63;
/// The GGUF specification limits keys to 65535 bytes.
pub const GGUF_MAX_KEY_LEN: u64 = 65_535;
/// llama.cpp's `GGUF_MAX_STRING_LENGTH`: longer strings are rejected by llama.cpp.
pub const GGUF_MAX_STRING_LEN: u64 = 1 << 30;
/// llama.cpp's `GGUF_MAX_ARRAY_ELEMENTS`: longer arrays are rejected by llama.cpp.
pub const GGUF_MAX_ARRAY_LEN: u64 = 1 << 30;

/// A ggml tensor element type, as stored in a GGUF tensor info.
///
/// Ids that ggml has retired (4, 5, 31..=33, 36..=38) are not representable: llama.cpp refuses
/// them in files, and so do we.
#[allow(non_camel_case_types, clippy::upper_case_acronyms)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    IQ2_XXS,
    IQ2_XS,
    IQ3_XXS,
    IQ1_S,
    IQ4_NL,
    IQ3_S,
    IQ2_S,
    IQ4_XS,
    I8,
    I16,
    I32,
    I64,
    F64,
    IQ1_M,
    BF16,
    TQ1_0,
    TQ2_0,
    MXFP4,
    NVFP4,
    Q1_0,
    Q2_0,
}

/// `(type, ggml id, ggml name, block size in elements, bytes per block)`.
const GGML_TYPE_TABLE: [(GgmlType, u32, &str, u64, u64); 35] = {
    use GgmlType::*;
    [
        (F32, 0, "f32", 1, 4),
        (F16, 1, "f16", 1, 2),
        (Q4_0, 2, "q4_0", 32, 18),
        (Q4_1, 3, "q4_1", 32, 20),
        (Q5_0, 6, "q5_0", 32, 22),
        (Q5_1, 7, "q5_1", 32, 24),
        (Q8_0, 8, "q8_0", 32, 34),
        (Q8_1, 9, "q8_1", 32, 36),
        (Q2_K, 10, "q2_K", 256, 84),
        (Q3_K, 11, "q3_K", 256, 110),
        (Q4_K, 12, "q4_K", 256, 144),
        (Q5_K, 13, "q5_K", 256, 176),
        (Q6_K, 14, "q6_K", 256, 210),
        (Q8_K, 15, "q8_K", 256, 292),
        (IQ2_XXS, 16, "iq2_xxs", 256, 66),
        (IQ2_XS, 17, "iq2_xs", 256, 74),
        (IQ3_XXS, 18, "iq3_xxs", 256, 98),
        (IQ1_S, 19, "iq1_s", 256, 50),
        (IQ4_NL, 20, "iq4_nl", 32, 18),
        (IQ3_S, 21, "iq3_s", 256, 110),
        (IQ2_S, 22, "iq2_s", 256, 82),
        (IQ4_XS, 23, "iq4_xs", 256, 136),
        (I8, 24, "i8", 1, 1),
        (I16, 25, "i16", 1, 2),
        (I32, 26, "i32", 1, 4),
        (I64, 27, "i64", 1, 8),
        (F64, 28, "f64", 1, 8),
        (IQ1_M, 29, "iq1_m", 256, 56),
        (BF16, 30, "bf16", 1, 2),
        (TQ1_0, 34, "tq1_0", 256, 54),
        (TQ2_0, 35, "tq2_0", 256, 66),
        (MXFP4, 39, "mxfp4", 32, 17),
        (NVFP4, 40, "nvfp4", 64, 36),
        (Q1_0, 41, "q1_0", 128, 18),
        (Q2_0, 42, "q2_0", 64, 18),
    ]
};

// `GgmlType::entry` indexes the table by discriminant: keep them in the same order.
const _: () = {
    let mut i = 0;
    while i < GGML_TYPE_TABLE.len() {
        assert!(
            GGML_TYPE_TABLE[i].0 as usize == i,
            "GGML_TYPE_TABLE out of order"
        );
        i += 1;
    }
};

impl GgmlType {
    /// Every type, in ggml id order.
    pub const ALL: [GgmlType; 35] = {
        let mut all = [GgmlType::F32; 35];
        let mut i = 0;
        while i < all.len() {
            all[i] = GGML_TYPE_TABLE[i].0;
            i += 1;
        }
        all
    };

    fn entry(self) -> &'static (GgmlType, u32, &'static str, u64, u64) {
        // The table is in declaration order, so the discriminant is the index.
        &GGML_TYPE_TABLE[self as usize]
    }

    /// The type for a ggml id, `None` for ids ggml does not (or no longer) define.
    pub fn from_u32(v: u32) -> Option<GgmlType> {
        GGML_TYPE_TABLE.iter().find(|e| e.1 == v).map(|e| e.0)
    }

    /// The ggml id (`enum ggml_type`).
    pub fn as_u32(self) -> u32 {
        self.entry().1
    }

    /// ggml's name for the type: `"f32"`, `"q4_K"`, `"iq2_xxs"`, ...
    pub fn name(self) -> &'static str {
        self.entry().2
    }

    /// The type for a ggml name, ignoring ASCII case (`"Q4_K"` and `"q4_k"` both work).
    pub fn from_name(name: &str) -> Option<GgmlType> {
        GGML_TYPE_TABLE
            .iter()
            .find(|e| e.2.eq_ignore_ascii_case(name))
            .map(|e| e.0)
    }

    /// Elements per block (1 for plain types).
    pub fn block_size(self) -> u64 {
        self.entry().3
    }

    /// Bytes per block.
    pub fn type_size(self) -> u64 {
        self.entry().4
    }

    /// True for block-quantized types (block size above 1).
    pub fn is_quantized(self) -> bool {
        self.block_size() > 1
    }

    /// Bytes of a row of `n` elements; `None` when `n` is not a multiple of the block size.
    pub fn row_bytes(self, n: u64) -> Option<u64> {
        if n % self.block_size() != 0 {
            return None;
        }
        (n / self.block_size()).checked_mul(self.type_size())
    }

    /// Bytes of a tensor with these ggml dims (`ne[0]` first); `None` when `ne[0]` is not a
    /// multiple of the block size or the size overflows `u64`.
    pub fn tensor_bytes(self, dims: &[u64]) -> Option<u64> {
        // No dims is a scalar: ggml treats it as ne = [1, 1, 1, 1].
        let (first, rest) = dims.split_first().unwrap_or((&1, &[]));
        let row = self.row_bytes(*first)?;
        rest.iter().try_fold(row, |acc, &d| acc.checked_mul(d))
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The GGUF value type ids (`enum gguf_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ValueType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl ValueType {
    pub(crate) fn from_u32(v: u32) -> Option<ValueType> {
        use ValueType::*;
        Some(match v {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// Bytes one value takes at least in a file (strings: their u64 length prefix).
    pub(crate) fn min_size(self) -> u64 {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 | String => 8,
            Array => 12,
        }
    }
}

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    U64(u64),
    I64(i64),
    F64(f64),
    Array(MetaArray),
}

/// A metadata array. GGUF allows arrays of arrays; nothing in llama.cpp's model files uses them
/// and the reader rejects them with [`GgufError::Invalid`].
#[derive(Debug, Clone, PartialEq)]
pub enum MetaArray {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    F32(Vec<f32>),
    Bool(Vec<bool>),
    String(Vec<String>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F64(Vec<f64>),
}

impl MetaValue {
    /// The GGUF name of the type: `"u32"`, `"string"`, `"array[f32]"`, ...
    pub fn type_name(&self) -> &'static str {
        match self {
            MetaValue::U8(_) => "u8",
            MetaValue::I8(_) => "i8",
            MetaValue::U16(_) => "u16",
            MetaValue::I16(_) => "i16",
            MetaValue::U32(_) => "u32",
            MetaValue::I32(_) => "i32",
            MetaValue::F32(_) => "f32",
            MetaValue::Bool(_) => "bool",
            MetaValue::String(_) => "string",
            MetaValue::U64(_) => "u64",
            MetaValue::I64(_) => "i64",
            MetaValue::F64(_) => "f64",
            MetaValue::Array(a) => a.type_name(),
        }
    }

    pub(crate) fn value_type(&self) -> ValueType {
        match self {
            MetaValue::U8(_) => ValueType::U8,
            MetaValue::I8(_) => ValueType::I8,
            MetaValue::U16(_) => ValueType::U16,
            MetaValue::I16(_) => ValueType::I16,
            MetaValue::U32(_) => ValueType::U32,
            MetaValue::I32(_) => ValueType::I32,
            MetaValue::F32(_) => ValueType::F32,
            MetaValue::Bool(_) => ValueType::Bool,
            MetaValue::String(_) => ValueType::String,
            MetaValue::U64(_) => ValueType::U64,
            MetaValue::I64(_) => ValueType::I64,
            MetaValue::F64(_) => ValueType::F64,
            MetaValue::Array(_) => ValueType::Array,
        }
    }

    /// Any integer type holding a non-negative value.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U8(v) => Some(v.into()),
            MetaValue::U16(v) => Some(v.into()),
            MetaValue::U32(v) => Some(v.into()),
            MetaValue::U64(v) => Some(v),
            MetaValue::I8(v) => u64::try_from(v).ok(),
            MetaValue::I16(v) => u64::try_from(v).ok(),
            MetaValue::I32(v) => u64::try_from(v).ok(),
            MetaValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any integer type whose value fits in an `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            MetaValue::U8(v) => Some(v.into()),
            MetaValue::U16(v) => Some(v.into()),
            MetaValue::U32(v) => Some(v.into()),
            MetaValue::U64(v) => i64::try_from(v).ok(),
            MetaValue::I8(v) => Some(v.into()),
            MetaValue::I16(v) => Some(v.into()),
            MetaValue::I32(v) => Some(v.into()),
            MetaValue::I64(v) => Some(v),
            _ => None,
        }
    }

    /// An `f32`, or an `f64` narrowed to `f32`.
    pub fn as_f32(&self) -> Option<f32> {
        match *self {
            MetaValue::F32(v) => Some(v),
            MetaValue::F64(v) => Some(v as f32),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetaValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&MetaArray> {
        match self {
            MetaValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

impl MetaArray {
    /// `"array[u8]"`, `"array[string]"`, ...
    pub fn type_name(&self) -> &'static str {
        match self {
            MetaArray::U8(_) => "array[u8]",
            MetaArray::I8(_) => "array[i8]",
            MetaArray::U16(_) => "array[u16]",
            MetaArray::I16(_) => "array[i16]",
            MetaArray::U32(_) => "array[u32]",
            MetaArray::I32(_) => "array[i32]",
            MetaArray::F32(_) => "array[f32]",
            MetaArray::Bool(_) => "array[bool]",
            MetaArray::String(_) => "array[string]",
            MetaArray::U64(_) => "array[u64]",
            MetaArray::I64(_) => "array[i64]",
            MetaArray::F64(_) => "array[f64]",
        }
    }

    pub(crate) fn elem_type(&self) -> ValueType {
        match self {
            MetaArray::U8(_) => ValueType::U8,
            MetaArray::I8(_) => ValueType::I8,
            MetaArray::U16(_) => ValueType::U16,
            MetaArray::I16(_) => ValueType::I16,
            MetaArray::U32(_) => ValueType::U32,
            MetaArray::I32(_) => ValueType::I32,
            MetaArray::F32(_) => ValueType::F32,
            MetaArray::Bool(_) => ValueType::Bool,
            MetaArray::String(_) => ValueType::String,
            MetaArray::U64(_) => ValueType::U64,
            MetaArray::I64(_) => ValueType::I64,
            MetaArray::F64(_) => ValueType::F64,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            MetaArray::U8(v) => v.len(),
            MetaArray::I8(v) => v.len(),
            MetaArray::U16(v) => v.len(),
            MetaArray::I16(v) => v.len(),
            MetaArray::U32(v) => v.len(),
            MetaArray::I32(v) => v.len(),
            MetaArray::F32(v) => v.len(),
            MetaArray::Bool(v) => v.len(),
            MetaArray::String(v) => v.len(),
            MetaArray::U64(v) => v.len(),
            MetaArray::I64(v) => v.len(),
            MetaArray::F64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

macro_rules! meta_from {
    ($($t:ty => $variant:ident),* $(,)?) => {$(
        impl From<$t> for MetaValue {
            fn from(v: $t) -> Self {
                MetaValue::$variant(v)
            }
        }
        impl From<Vec<$t>> for MetaValue {
            fn from(v: Vec<$t>) -> Self {
                MetaValue::Array(MetaArray::$variant(v))
            }
        }
        impl From<Vec<$t>> for MetaArray {
            fn from(v: Vec<$t>) -> Self {
                MetaArray::$variant(v)
            }
        }
    )*};
}

meta_from!(
    u8 => U8, i8 => I8, u16 => U16, i16 => I16, u32 => U32, i32 => I32, f32 => F32,
    bool => Bool, String => String, u64 => U64, i64 => I64, f64 => F64,
);

impl From<&str> for MetaValue {
    fn from(v: &str) -> Self {
        MetaValue::String(v.to_owned())
    }
}

impl From<MetaArray> for MetaValue {
    fn from(v: MetaArray) -> Self {
        MetaValue::Array(v)
    }
}

/// One tensor's entry in the tensor-info table.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is `ne[0]`, the contiguous row length.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Offset of the tensor's data from the start of the data section.
    pub offset: u64,
    /// Bytes of the tensor's data (without alignment padding).
    pub n_bytes: u64,
}

impl TensorInfo {
    /// Product of the dims (1 for a scalar); saturates instead of overflowing.
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().fold(1u64, |acc, &d| acc.saturating_mul(d))
    }
}

/// What a GGUF file holds, judged by `general.architecture`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileKind {
    /// A text model; the architecture string (`"qwen2"`, `"llama"`, ...).
    LanguageModel(String),
    /// A vision projector (mmproj): `general.architecture = "clip"`.
    Projector,
    /// No (or an empty, or a non-string) `general.architecture`.
    Unknown,
}

impl FileKind {
    /// `"language_model"`, `"projector"` or `"unknown"` (the `kind` of `inspect --json` and of
    /// quantization summaries).
    pub fn tag(&self) -> &'static str {
        match self {
            FileKind::LanguageModel(_) => "language_model",
            FileKind::Projector => "projector",
            FileKind::Unknown => "unknown",
        }
    }

    /// The `general.architecture` value (`"clip"` for a projector, empty when unknown).
    pub fn architecture(&self) -> &str {
        match self {
            FileKind::LanguageModel(arch) => arch,
            FileKind::Projector => "clip",
            FileKind::Unknown => "",
        }
    }
}

/// Why a GGUF file could not be read. Every variant names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    #[error("{}: no such file", path.display())]
    NotFound { path: PathBuf },

    #[error("{} is a directory, not a GGUF file", path.display())]
    IsDirectory { path: PathBuf },

    /// A FIFO, a device or a socket: not something a model file can be read from.
    #[error("{} is {kind}, not a regular GGUF file", path.display())]
    NotRegularFile { path: PathBuf, kind: &'static str },

    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{} is empty (0 bytes), not a GGUF file", path.display())]
    Empty { path: PathBuf },

    #[error(
        "{} is not a GGUF file (it starts with {}, a GGUF file starts with \"GGUF\")",
        path.display(),
        show_bytes(found)
    )]
    BadMagic { path: PathBuf, found: [u8; 4] },

    #[error("{} {}", path.display(), version_message(*version))]
    UnsupportedVersion { path: PathBuf, version: u32 },

    #[error(
        "{} is truncated: the file ended at byte {offset} while reading {what}",
        path.display()
    )]
    Truncated {
        path: PathBuf,
        what: String,
        offset: u64,
    },

    #[error("{} is not a valid GGUF file: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },

    #[error(
        "{} is truncated or corrupt: the data of tensor {name:?} ends at byte {end}, \
         but the file has only {file_size} bytes",
        path.display()
    )]
    TensorOutOfBounds {
        path: PathBuf,
        name: String,
        end: u64,
        file_size: u64,
    },
}

impl GgufError {
    /// The file the error is about.
    pub fn path(&self) -> &std::path::Path {
        match self {
            GgufError::NotFound { path }
            | GgufError::IsDirectory { path }
            | GgufError::NotRegularFile { path, .. }
            | GgufError::Io { path, .. }
            | GgufError::Empty { path }
            | GgufError::BadMagic { path, .. }
            | GgufError::UnsupportedVersion { path, .. }
            | GgufError::Truncated { path, .. }
            | GgufError::Invalid { path, .. }
            | GgufError::TensorOutOfBounds { path, .. } => path,
        }
    }
}

/// `"GGUF"` for printable ASCII, otherwise the bytes in hex: `bytes 7f 45 4c 46 ("\x7fELF")`.
fn show_bytes(b: &[u8; 4]) -> String {
    let escaped: String = b
        .iter()
        .flat_map(|&c| std::ascii::escape_default(c))
        .map(char::from)
        .collect();
    if b.iter().all(|c| c.is_ascii_graphic() || *c == b' ') {
        format!("\"{escaped}\"")
    } else {
        format!(
            "bytes {:02x} {:02x} {:02x} {:02x} (\"{escaped}\")",
            b[0], b[1], b[2], b[3]
        )
    }
}

fn version_message(version: u32) -> String {
    if version != 0 && version & 0xFFFF == 0 {
        format!(
            "has GGUF version {version} (0x{version:08x}), which looks like a big-endian file; \
             only little-endian GGUF versions 2 and 3 are supported"
        )
    } else {
        format!("has GGUF version {version}; only versions 2 and 3 are supported")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ggml_type_table_matches_ggml() {
        // Block sizes and block bytes from ggml.c type_traits / ggml-common.h static_asserts.
        let expect = [
            (GgmlType::F32, 1, 4),
            (GgmlType::F16, 1, 2),
            (GgmlType::Q4_0, 32, 18),
            (GgmlType::Q8_0, 32, 34),
            (GgmlType::Q4_K, 256, 144),
            (GgmlType::Q6_K, 256, 210),
            (GgmlType::Q5_K, 256, 176),
            (GgmlType::BF16, 1, 2),
        ];
        for (t, bs, ts) in expect {
            assert_eq!((t.block_size(), t.type_size()), (bs, ts), "{t}");
        }
        assert_eq!(GgmlType::Q4_K.name(), "q4_K");
        assert_eq!(GgmlType::IQ2_XXS.name(), "iq2_xxs");
        assert_eq!(GgmlType::Q6_K.as_u32(), 14);
        assert_eq!(GgmlType::MXFP4.as_u32(), 39);
    }

    #[test]
    fn ggml_type_ids_round_trip() {
        for (i, t) in GgmlType::ALL.iter().enumerate() {
            assert_eq!(GGML_TYPE_TABLE[i].0, *t);
            assert_eq!(GgmlType::from_u32(t.as_u32()), Some(*t));
            assert_eq!(GgmlType::from_name(t.name()), Some(*t));
            assert_eq!(GgmlType::from_name(&t.name().to_uppercase()), Some(*t));
        }
        for retired in [4, 5, 31, 32, 33, 36, 37, 38, 43, 1000, u32::MAX] {
            assert_eq!(GgmlType::from_u32(retired), None, "{retired}");
        }
    }

    #[test]
    fn row_and_tensor_bytes() {
        assert_eq!(GgmlType::Q4_0.row_bytes(64), Some(36));
        assert_eq!(GgmlType::Q4_0.row_bytes(33), None);
        assert_eq!(GgmlType::F16.row_bytes(7), Some(14));
        assert_eq!(GgmlType::Q4_K.row_bytes(0), Some(0));
        assert_eq!(GgmlType::Q8_0.tensor_bytes(&[64, 3, 2]), Some(68 * 6));
        assert_eq!(GgmlType::F32.tensor_bytes(&[]), Some(4));
        assert_eq!(GgmlType::Q8_0.tensor_bytes(&[]), None);
        assert_eq!(GgmlType::F32.tensor_bytes(&[u64::MAX, 2]), None);
        assert_eq!(GgmlType::Q8_0.tensor_bytes(&[31]), None);
    }

    #[test]
    fn meta_value_accessors() {
        assert_eq!(MetaValue::I32(5).as_u64(), Some(5));
        assert_eq!(MetaValue::I32(-5).as_u64(), None);
        assert_eq!(MetaValue::U64(u64::MAX).as_i64(), None);
        assert_eq!(MetaValue::U8(7).as_i64(), Some(7));
        assert_eq!(MetaValue::F64(0.5).as_f32(), Some(0.5));
        assert_eq!(MetaValue::Bool(true).as_u64(), None);
        assert_eq!(MetaValue::from("x").as_str(), Some("x"));
        assert_eq!(MetaValue::from(vec![1.0f32]).type_name(), "array[f32]");
        assert_eq!(MetaValue::U32(1).type_name(), "u32");
    }

    #[test]
    fn error_messages() {
        let p = PathBuf::from("/m/x.gguf");
        let e = GgufError::BadMagic {
            path: p.clone(),
            found: *b"PK\x03\x04",
        };
        assert!(e.to_string().contains("/m/x.gguf"), "{e}");
        assert!(e.to_string().contains("50 4b 03 04"), "{e}");
        let e = GgufError::UnsupportedVersion {
            path: p,
            version: 3 << 24,
        };
        assert!(e.to_string().contains("big-endian"), "{e}");
    }
}
