//! A GGUF header walker over raw bytes, for tests that need files our own writer refuses to
//! make (duplicate keys, offsets past the end, counts beyond the file, unknown type ids): it
//! records where each field is, so a test can patch one field of a valid file in place.
//!
//! Layout (ggml/src/gguf.cpp of the bundled llama.cpp): magic, u32 version, u64 tensor count,
//! u64 key count, the keys (u64-length string, u32 type, value), the tensor infos (name, u32
//! n_dims, n_dims x u64 dims, u32 type, u64 offset), padding, data.

/// Where the fields of one metadata entry are.
#[derive(Debug, Clone)]
pub struct RawKv {
    pub key: String,
    /// Offset of the key's u64 length.
    pub key_at: usize,
    /// Offset of the u32 value type.
    pub type_at: usize,
    /// Offset of the value (for arrays: of the u32 element type).
    pub value_at: usize,
    pub value_type: u32,
}

/// Where the fields of one tensor info are.
#[derive(Debug, Clone)]
pub struct RawTensor {
    pub name: String,
    /// Offset of the name's u64 length.
    pub name_at: usize,
    pub n_dims_at: usize,
    pub dims_at: usize,
    pub n_dims: u32,
    pub type_at: usize,
    pub offset_at: usize,
    pub offset: u64,
}

/// A parsed header of a valid GGUF file.
#[derive(Debug, Clone)]
pub struct RawGguf {
    pub bytes: Vec<u8>,
    pub kvs: Vec<RawKv>,
    pub tensors: Vec<RawTensor>,
}

const N_TENSORS_AT: usize = 8;
const N_KV_AT: usize = 16;

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Bytes of a scalar of GGUF type `t` (strings excluded).
fn scalar_size(t: u32) -> usize {
    match t {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        10..=12 => 8,
        other => panic!("no scalar size for type {other}"),
    }
}

impl RawGguf {
    /// Parses the header of a GGUF file the test knows to be valid.
    pub fn parse(bytes: Vec<u8>) -> RawGguf {
        assert_eq!(&bytes[..4], b"GGUF");
        let n_tensors = u64_at(&bytes, N_TENSORS_AT) as usize;
        let n_kv = u64_at(&bytes, N_KV_AT) as usize;
        let mut at = 24;
        let read_str = |at: &mut usize| -> String {
            let len = u64_at(&bytes, *at) as usize;
            let s = String::from_utf8_lossy(&bytes[*at + 8..*at + 8 + len]).into_owned();
            *at += 8 + len;
            s
        };
        let mut kvs = Vec::with_capacity(n_kv);
        for _ in 0..n_kv {
            let key_at = at;
            let key = read_str(&mut at);
            let type_at = at;
            let value_type = u32_at(&bytes, at);
            at += 4;
            let value_at = at;
            match value_type {
                8 => {
                    read_str(&mut at);
                }
                9 => {
                    let elem = u32_at(&bytes, at);
                    let n = u64_at(&bytes, at + 4) as usize;
                    at += 12;
                    for _ in 0..n {
                        if elem == 8 {
                            read_str(&mut at);
                        } else {
                            at += scalar_size(elem);
                        }
                    }
                }
                t => at += scalar_size(t),
            }
            kvs.push(RawKv {
                key,
                key_at,
                type_at,
                value_at,
                value_type,
            });
        }
        let mut tensors = Vec::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            let name_at = at;
            let name = read_str(&mut at);
            let n_dims_at = at;
            let n_dims = u32_at(&bytes, at);
            let dims_at = at + 4;
            let type_at = dims_at + 8 * n_dims as usize;
            let offset_at = type_at + 4;
            let offset = u64_at(&bytes, offset_at);
            at = offset_at + 8;
            tensors.push(RawTensor {
                name,
                name_at,
                n_dims_at,
                dims_at,
                n_dims,
                type_at,
                offset_at,
                offset,
            });
        }
        RawGguf {
            bytes,
            kvs,
            tensors,
        }
    }

    pub fn kv(&self, key: &str) -> &RawKv {
        self.kvs
            .iter()
            .find(|k| k.key == key)
            .unwrap_or_else(|| panic!("no key {key}"))
    }

    /// A copy with `value` written at `at`.
    pub fn with_u32(&self, at: usize, value: u32) -> Vec<u8> {
        let mut b = self.bytes.clone();
        b[at..at + 4].copy_from_slice(&value.to_le_bytes());
        b
    }

    /// A copy with `value` written at `at`.
    pub fn with_u64(&self, at: usize, value: u64) -> Vec<u8> {
        let mut b = self.bytes.clone();
        b[at..at + 8].copy_from_slice(&value.to_le_bytes());
        b
    }

    /// A copy with the text of the string at `at` (u64 length, then bytes) replaced by `text`
    /// of the same length.
    pub fn with_same_length_string(&self, at: usize, text: &str) -> Vec<u8> {
        let len = u64_at(&self.bytes, at) as usize;
        assert_eq!(len, text.len(), "replacement must keep the length");
        let mut b = self.bytes.clone();
        b[at + 8..at + 8 + len].copy_from_slice(text.as_bytes());
        b
    }

    /// The tensor-count field's offset.
    pub fn n_tensors_at(&self) -> usize {
        N_TENSORS_AT
    }

    /// The key-count field's offset.
    pub fn n_kv_at(&self) -> usize {
        N_KV_AT
    }
}
