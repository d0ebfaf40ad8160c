//! What the caller's GGUF reader learned about a file, and the checks on it that keep llama.cpp
//! from aborting the process.
//!
//! [`GgufFacts::read`] reads a file with minicpmv-gguf's checking reader (structure and bounds),
//! keeping what quantization needs. What llama.cpp asserts on when it loads a model's
//! hyper-parameters for quantization is checked here, in [`GgufFacts::check_loadable`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use minicpmv_gguf::{FileKind, GgufFile, MetaArray, MetaValue};

use crate::error::QuantizeError;
use crate::types::TensorType;

/// llama.cpp's `LLAMA_MAX_LAYERS` (src/llama-hparams.h).
pub const LLAMA_MAX_LAYERS: i128 = 512;
/// llama.cpp's `LLAMA_MAX_EXPERTS` (src/llama-hparams.h).
pub const LLAMA_MAX_EXPERTS: i128 = 1024;
/// The rope scaling types llama.cpp knows (`LLAMA_ROPE_SCALING_TYPES` in src/llama-model.cpp).
const ROPE_SCALING_TYPES: &[&str] = &["none", "linear", "yarn", "longrope"];

/// A scalar metadata value (or an integer array), as far as the checks need it.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaFact {
    Int(i128),
    Float(f64),
    Bool(bool),
    Str(String),
    IntArray(Vec<i128>),
    /// Any other array.
    OtherArray,
}

/// One tensor's entry in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorFacts {
    pub name: String,
    /// ggml order: `dims[0]` is the row length.
    pub dims: Vec<u64>,
    /// ggml type id (`enum ggml_type`).
    pub ggml_type: u32,
    /// Bytes of the tensor's data.
    pub n_bytes: u64,
}

impl TensorFacts {
    /// ggml's `ggml_n_dims`: 1 + the index of the last dimension above 1 (at least 1).
    pub fn n_dims(&self) -> usize {
        self.dims.iter().rposition(|&d| d > 1).map_or(1, |i| i + 1)
    }

    pub fn n_elements(&self) -> u64 {
        self.dims.iter().fold(1u64, |a, &d| a.saturating_mul(d))
    }
}

/// What a checking GGUF reader learned about a file.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufFacts {
    pub path: PathBuf,
    pub kind: FileKind,
    pub file_size: u64,
    /// Offset of the tensor data section (= header + metadata + tensor infos + padding).
    pub data_offset: u64,
    /// Metadata keys with scalar (or integer array) values; big arrays may be left out.
    pub metadata: BTreeMap<String, MetaFact>,
    pub tensors: Vec<TensorFacts>,
}

impl GgufFacts {
    fn int(&self, key: &str) -> Option<Result<i128, ()>> {
        self.metadata.get(key).map(|v| match v {
            MetaFact::Int(i) => Ok(*i),
            _ => Err(()),
        })
    }

    /// The largest value of an integer key that may be a scalar or a per-layer array.
    fn int_or_max(&self, key: &str) -> Option<Result<i128, ()>> {
        self.metadata.get(key).map(|v| match v {
            MetaFact::Int(i) => Ok(*i),
            MetaFact::IntArray(a) => Ok(a.iter().copied().max().unwrap_or(0)),
            _ => Err(()),
        })
    }

    /// Checks what llama.cpp asserts on (aborting the process) when it loads this file's
    /// hyper-parameters for quantization: the tensor types are known to the linked ggml, and for
    /// a language model `block_count`, the expert counts, `nextn_predict_layers` and the rope
    /// scaling type (`llama_model_base::load_hparams`). Missing keys and wrong value types are
    /// left to llama.cpp, which reports them as errors without aborting. A projector (`clip`)
    /// loads no hyper-parameters.
    pub fn check_loadable(&self) -> Result<(), QuantizeError> {
        let bad = |reason: String| QuantizeError::Unsupported {
            path: self.path.clone(),
            reason,
        };
        for t in &self.tensors {
            let Some(ty) = TensorType::from_id(t.ggml_type) else {
                return Err(bad(format!(
                    "tensor {:?} has ggml type id {}, unknown to the linked llama.cpp",
                    t.name, t.ggml_type
                )));
            };
            if ty.tensor_bytes(&t.dims) != Some(t.n_bytes) {
                return Err(bad(format!(
                    "tensor {:?} ({} {:?}) has {} bytes of data, which does not match its shape",
                    t.name, ty, t.dims, t.n_bytes
                )));
            }
        }
        let arch = match &self.kind {
            FileKind::Projector => return Ok(()),
            FileKind::LanguageModel(arch) => arch,
            FileKind::Unknown => return Err(bad(NO_ARCHITECTURE.to_string())),
        };
        let key = |k: &str| format!("{arch}.{k}");
        let int_key = |k: &str, arr: bool| -> Result<Option<i128>, QuantizeError> {
            let full = key(k);
            let v = if arr {
                self.int_or_max(&full)
            } else {
                self.int(&full)
            };
            match v {
                None => Ok(None),
                Some(Ok(i)) => Ok(Some(i)),
                Some(Err(())) => Err(bad(format!("metadata key {full} is not an integer"))),
            }
        };
        match int_key("block_count", false)? {
            None => {
                return Err(bad(format!(
                    "metadata key {} is missing",
                    key("block_count")
                )))
            }
            Some(n) if !(1..=LLAMA_MAX_LAYERS).contains(&n) => {
                return Err(bad(format!(
                    "{} is {n}; llama.cpp accepts 1 to {LLAMA_MAX_LAYERS} layers",
                    key("block_count")
                )))
            }
            Some(_) => {}
        }
        let n_layer = int_key("block_count", false)?.unwrap_or(1);
        if let Some(n) = int_key("nextn_predict_layers", false)? {
            if n < 0 || n > n_layer {
                return Err(bad(format!(
                    "{} is {n}, more than the {n_layer} layers",
                    key("nextn_predict_layers")
                )));
            }
        }
        let n_expert = int_key("expert_count", false)?.unwrap_or(0);
        let n_used = int_key("expert_used_count", true)?.unwrap_or(0);
        let n_groups = int_key("expert_group_count", false)?.unwrap_or(0);
        let n_group_used = int_key("expert_group_used_count", false)?.unwrap_or(0);
        let experts_ok = (0..=LLAMA_MAX_EXPERTS).contains(&n_expert)
            && (0..=n_expert).contains(&n_used)
            && if n_expert > 0 {
                n_used > 0
                    && (0..n_expert).contains(&n_groups)
                    && (n_groups <= 1
                        || (n_expert % n_groups == 0
                            && n_group_used > 0
                            && n_group_used < n_groups))
            } else {
                n_used == 0 && n_groups == 0
            };
        if !experts_ok {
            return Err(bad(format!(
                "inconsistent expert counts ({}={n_expert}, {}={n_used}, {}={n_groups}, {}={n_group_used})",
                key("expert_count"),
                key("expert_used_count"),
                key("expert_group_count"),
                key("expert_group_used_count"),
            )));
        }
        match self.metadata.get(&key("rope.scaling.type")) {
            None => {}
            Some(MetaFact::Str(s)) if ROPE_SCALING_TYPES.contains(&s.as_str()) => {}
            Some(other) => {
                return Err(bad(format!(
                    "{} is {other:?}; llama.cpp knows {}",
                    key("rope.scaling.type"),
                    ROPE_SCALING_TYPES.join(", ")
                )))
            }
        }
        Ok(())
    }

    /// The tensor with this name.
    pub fn tensor(&self, name: &str) -> Option<&TensorFacts> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Sum of the tensors' data bytes.
    pub fn tensor_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.n_bytes).sum()
    }
}

/// Why a file without an architecture cannot be quantized.
const NO_ARCHITECTURE: &str =
    "no general.architecture: it is neither a llama.cpp language model nor an mmproj";

impl GgufFacts {
    /// Reads `path` with minicpmv-gguf's checking reader (a bad or hostile file is an error
    /// naming it) into the facts quantization needs. A file without `general.architecture` is
    /// refused: llama.cpp could not pick its quantization rules.
    pub fn read(path: &Path) -> Result<GgufFacts, QuantizeError> {
        let f = GgufFile::open(path)?;
        let kind = f.kind();
        if kind == FileKind::Unknown {
            return Err(QuantizeError::Unsupported {
                path: path.to_path_buf(),
                reason: NO_ARCHITECTURE.to_string(),
            });
        }
        let metadata = f
            .metadata
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), meta_fact(v)?)))
            .collect();
        let tensors = f
            .tensors
            .iter()
            .map(|t| TensorFacts {
                name: t.name.clone(),
                dims: t.dims.clone(),
                ggml_type: t.ggml_type.as_u32(),
                n_bytes: t.n_bytes,
            })
            .collect();
        Ok(GgufFacts {
            path: path.to_path_buf(),
            kind,
            file_size: f.file_size,
            data_offset: f.data_offset,
            metadata,
            tensors,
        })
    }
}

/// A metadata value as the checks see it; `None` for values they never need.
fn meta_fact(v: &MetaValue) -> Option<MetaFact> {
    Some(match v {
        MetaValue::String(s) => MetaFact::Str(s.clone()),
        MetaValue::Bool(b) => MetaFact::Bool(*b),
        MetaValue::F32(x) => MetaFact::Float(f64::from(*x)),
        MetaValue::F64(x) => MetaFact::Float(*x),
        MetaValue::Array(a) => int_array(a),
        other => match (other.as_i64(), other.as_u64()) {
            (Some(i), _) => MetaFact::Int(i128::from(i)),
            (None, Some(u)) => MetaFact::Int(i128::from(u)),
            _ => return None,
        },
    })
}

/// Integer arrays up to 4096 elements (per-layer hyper-parameters); others are not needed.
fn int_array(a: &MetaArray) -> MetaFact {
    fn conv<T: Copy + Into<i128>>(v: &[T]) -> MetaFact {
        if v.len() > 4096 {
            return MetaFact::OtherArray;
        }
        MetaFact::IntArray(v.iter().map(|&x| x.into()).collect())
    }
    match a {
        MetaArray::U8(v) => conv(v),
        MetaArray::I8(v) => conv(v),
        MetaArray::U16(v) => conv(v),
        MetaArray::I16(v) => conv(v),
        MetaArray::U32(v) => conv(v),
        MetaArray::I32(v) => conv(v),
        MetaArray::U64(v) => conv(v),
        MetaArray::I64(v) => conv(v),
        _ => MetaFact::OtherArray,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lm(meta: &[(&str, MetaFact)]) -> GgufFacts {
        GgufFacts {
            path: "m.gguf".into(),
            kind: FileKind::LanguageModel("qwen2".into()),
            file_size: 0,
            data_offset: 0,
            metadata: meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            tensors: vec![TensorFacts {
                name: "w".into(),
                dims: vec![64, 2],
                ggml_type: 1,
                n_bytes: 256,
            }],
        }
    }

    #[test]
    fn language_model_asserts_are_checked() {
        assert!(lm(&[("qwen2.block_count", MetaFact::Int(2))])
            .check_loadable()
            .is_ok());
        for bad in [
            vec![],
            vec![("qwen2.block_count", MetaFact::Int(0))],
            vec![("qwen2.block_count", MetaFact::Int(513))],
            vec![("qwen2.block_count", MetaFact::Str("2".into()))],
            vec![
                ("qwen2.block_count", MetaFact::Int(2)),
                ("qwen2.expert_used_count", MetaFact::Int(2)),
            ],
            vec![
                ("qwen2.block_count", MetaFact::Int(2)),
                ("qwen2.rope.scaling.type", MetaFact::Str("weird".into())),
            ],
            vec![
                ("qwen2.block_count", MetaFact::Int(2)),
                ("qwen2.nextn_predict_layers", MetaFact::Int(3)),
            ],
        ] {
            assert!(lm(&bad).check_loadable().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tensor_sizes_are_checked() {
        let mut f = lm(&[("qwen2.block_count", MetaFact::Int(2))]);
        f.tensors[0].n_bytes = 255;
        assert!(f.check_loadable().is_err());
        f.tensors[0].n_bytes = 256;
        f.tensors[0].ggml_type = 4;
        assert!(f.check_loadable().is_err());
    }

    #[test]
    fn n_dims_like_ggml() {
        let t = |dims: Vec<u64>| TensorFacts {
            name: String::new(),
            dims,
            ggml_type: 0,
            n_bytes: 0,
        };
        assert_eq!(t(vec![128]).n_dims(), 1);
        assert_eq!(t(vec![128, 1]).n_dims(), 1);
        assert_eq!(t(vec![128, 4]).n_dims(), 2);
        assert_eq!(t(vec![14, 14, 3, 32]).n_dims(), 4);
        assert_eq!(t(vec![]).n_dims(), 1);
    }
}
