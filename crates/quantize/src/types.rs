//! Quantization types the tool offers (llama.cpp "file types") and ggml tensor types.

use std::fmt;

use minicpmv_llama::quantize::sys;
use serde::{Serialize, Serializer};

use crate::ffi;

/// A ggml tensor type, known to the linked ggml (name and block layout come from ggml's own
/// table, so they cannot drift from the library that reads the files).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TensorType {
    id: u32,
    facts: ffi::GgmlTypeFacts,
}

impl TensorType {
    /// The type for a ggml id (`enum ggml_type`); `None` for unknown or retired ids.
    pub fn from_id(id: u32) -> Option<TensorType> {
        ffi::ggml_type_facts(id).map(|facts| TensorType { id, facts })
    }

    /// The type for a ggml name (`"q4_K"`, `"f16"`; ASCII case ignored).
    pub fn from_name(name: &str) -> Option<TensorType> {
        (0..sys::GGML_TYPE_COUNT)
            .filter_map(TensorType::from_id)
            .find(|t| t.name().eq_ignore_ascii_case(name))
    }

    pub fn id(self) -> u32 {
        self.id
    }

    /// ggml's name: `"f32"`, `"q4_K"`, ...
    pub fn name(self) -> &'static str {
        self.facts.name
    }

    /// Elements per block (1 for f32/f16/bf16).
    pub fn block_size(self) -> u64 {
        self.facts.block_size
    }

    /// Bytes per block.
    pub fn type_size(self) -> u64 {
        self.facts.type_size
    }

    /// Storage bits per weight (block bytes * 8 / block elements): f16 16, q8_0 8.5, q4_K 4.5.
    pub fn bits_per_weight(self) -> f64 {
        self.type_size() as f64 * 8.0 / self.block_size() as f64
    }

    /// Block-quantized (block size above 1).
    pub fn is_quantized(self) -> bool {
        self.block_size() > 1
    }

    /// Bytes of a tensor with these ggml dims (`ne[0]` first); `None` when `ne[0]` is not a
    /// multiple of the block size or on overflow.
    pub fn tensor_bytes(self, dims: &[u64]) -> Option<u64> {
        let (first, rest) = dims.split_first().unwrap_or((&1, &[]));
        if first % self.block_size() != 0 {
            return None;
        }
        let row = (first / self.block_size()).checked_mul(self.type_size())?;
        rest.iter().try_fold(row, |acc, &d| acc.checked_mul(d))
    }
}

impl fmt::Debug for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for TensorType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// A quantization the tool offers: a llama.cpp file type (`llama_ftype`), i.e. a default tensor
/// type plus llama.cpp's per-tensor mixture rules for it.
#[allow(non_camel_case_types, clippy::upper_case_acronyms)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuantType {
    F32,
    F16,
    BF16,
    Q8_0,
    Q6_K,
    Q5_K_M,
    Q5_K_S,
    Q5_1,
    Q5_0,
    Q4_K_M,
    Q4_K_S,
    Q4_1,
    Q4_0,
    IQ4_NL,
    IQ4_XS,
    Q3_K_L,
    Q3_K_M,
    Q3_K_S,
    Q2_K,
}

struct QuantTypeEntry {
    ty: QuantType,
    name: &'static str,
    ftype: u32,
    base: u32,
    about: &'static str,
}

const fn entry(
    ty: QuantType,
    name: &'static str,
    ftype: u32,
    base: u32,
    about: &'static str,
) -> QuantTypeEntry {
    QuantTypeEntry {
        ty,
        name,
        ftype,
        base,
        about,
    }
}

/// `(type, name, llama_ftype, default ggml type, description)`, in [`QuantType`] order.
const TABLE: [QuantTypeEntry; 19] = {
    use QuantType::*;
    [
        entry(
            F32,
            "f32",
            sys::LLAMA_FTYPE_ALL_F32,
            sys::GGML_TYPE_F32,
            "32-bit float, no quantization",
        ),
        entry(
            F16,
            "f16",
            sys::LLAMA_FTYPE_MOSTLY_F16,
            sys::GGML_TYPE_F16,
            "16-bit float; 1-D tensors stay f32",
        ),
        entry(
            BF16,
            "bf16",
            sys::LLAMA_FTYPE_MOSTLY_BF16,
            sys::GGML_TYPE_BF16,
            "bfloat16; 1-D tensors stay f32",
        ),
        entry(
            Q8_0,
            "q8_0",
            sys::LLAMA_FTYPE_MOSTLY_Q8_0,
            sys::GGML_TYPE_Q8_0,
            "8.5 bits per weight, near-lossless",
        ),
        entry(
            Q6_K,
            "q6_k",
            sys::LLAMA_FTYPE_MOSTLY_Q6_K,
            sys::GGML_TYPE_Q6_K,
            "6.56 bpw k-quant",
        ),
        entry(
            Q5_K_M,
            "q5_k_m",
            sys::LLAMA_FTYPE_MOSTLY_Q5_K_M,
            sys::GGML_TYPE_Q5_K,
            "5.5 bpw k-quant, some tensors in q6_K",
        ),
        entry(
            Q5_K_S,
            "q5_k_s",
            sys::LLAMA_FTYPE_MOSTLY_Q5_K_S,
            sys::GGML_TYPE_Q5_K,
            "5.5 bpw k-quant",
        ),
        entry(
            Q5_1,
            "q5_1",
            sys::LLAMA_FTYPE_MOSTLY_Q5_1,
            sys::GGML_TYPE_Q5_1,
            "6 bpw legacy quant",
        ),
        entry(
            Q5_0,
            "q5_0",
            sys::LLAMA_FTYPE_MOSTLY_Q5_0,
            sys::GGML_TYPE_Q5_0,
            "5.5 bpw legacy quant",
        ),
        entry(
            Q4_K_M,
            "q4_k_m",
            sys::LLAMA_FTYPE_MOSTLY_Q4_K_M,
            sys::GGML_TYPE_Q4_K,
            "4.5 bpw k-quant, attn_v/ffn_down partly q6_K; the usual choice",
        ),
        entry(
            Q4_K_S,
            "q4_k_s",
            sys::LLAMA_FTYPE_MOSTLY_Q4_K_S,
            sys::GGML_TYPE_Q4_K,
            "4.5 bpw k-quant, fewer q5_K/q6_K tensors",
        ),
        entry(
            Q4_1,
            "q4_1",
            sys::LLAMA_FTYPE_MOSTLY_Q4_1,
            sys::GGML_TYPE_Q4_1,
            "5 bpw legacy quant",
        ),
        entry(
            Q4_0,
            "q4_0",
            sys::LLAMA_FTYPE_MOSTLY_Q4_0,
            sys::GGML_TYPE_Q4_0,
            "4.5 bpw legacy quant (repacked for ARM/AVX at load)",
        ),
        entry(
            IQ4_NL,
            "iq4_nl",
            sys::LLAMA_FTYPE_MOSTLY_IQ4_NL,
            sys::GGML_TYPE_IQ4_NL,
            "4.5 bpw non-linear quant, 32-element blocks",
        ),
        entry(
            IQ4_XS,
            "iq4_xs",
            sys::LLAMA_FTYPE_MOSTLY_IQ4_XS,
            sys::GGML_TYPE_IQ4_XS,
            "4.25 bpw non-linear quant, 256-element blocks",
        ),
        entry(
            Q3_K_L,
            "q3_k_l",
            sys::LLAMA_FTYPE_MOSTLY_Q3_K_L,
            sys::GGML_TYPE_Q3_K,
            "3.4 bpw k-quant, attn_v/ffn_down in q5_K",
        ),
        entry(
            Q3_K_M,
            "q3_k_m",
            sys::LLAMA_FTYPE_MOSTLY_Q3_K_M,
            sys::GGML_TYPE_Q3_K,
            "3.4 bpw k-quant, some tensors in q4_K/q5_K",
        ),
        entry(
            Q3_K_S,
            "q3_k_s",
            sys::LLAMA_FTYPE_MOSTLY_Q3_K_S,
            sys::GGML_TYPE_Q3_K,
            "3.4 bpw k-quant",
        ),
        entry(
            Q2_K,
            "q2_k",
            sys::LLAMA_FTYPE_MOSTLY_Q2_K,
            sys::GGML_TYPE_Q2_K,
            "2.6 bpw k-quant, large quality loss",
        ),
    ]
};

// `QuantType::entry` indexes the table by discriminant: keep them in the same order.
const _: () = {
    let mut i = 0;
    while i < TABLE.len() {
        assert!(TABLE[i].ty as usize == i, "quantize TABLE out of order");
        i += 1;
    }
};

/// Names llama.cpp accepts for file types that need an importance matrix (computed from
/// calibration text with llama-imatrix), which this tool does not produce: llama.cpp refuses
/// them without one (`tensor_requires_imatrix` in src/llama-quant.cpp).
pub const NEEDS_IMATRIX: &[&str] = &[
    "iq1_s", "iq1_m", "iq2_xxs", "iq2_xs", "iq2_s", "iq2_m", "iq3_xxs", "iq3_xs", "q2_k_s",
];

/// Other llama.cpp file types that the tool does not offer, with the reason.
const NOT_OFFERED: &[(&str, &str)] = &[
    ("iq3_s", "sub-4-bit i-quants are meant to be made with an importance matrix, which this tool does not compute"),
    ("iq3_m", "sub-4-bit i-quants are meant to be made with an importance matrix, which this tool does not compute"),
    ("tq1_0", "ternary types only suit models trained ternary (BitNet)"),
    ("tq2_0", "ternary types only suit models trained ternary (BitNet)"),
    ("mxfp4_moe", "it is for mixture-of-experts models"),
    ("mxfp4", "it is for mixture-of-experts models"),
    ("nvfp4", "it is for models trained in NVFP4"),
    ("q1_0", "it is for models trained for 1-bit weights"),
    ("q2_0", "it is for models trained for 2-bit weights"),
];

/// Why a type name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TypeError {
    #[error(
        "{name} needs an importance matrix (llama.cpp refuses to make it without one, and this \
         tool does not compute them); use iq4_nl, iq4_xs or a k-quant (q4_k_m, q3_k_m, q2_k) instead"
    )]
    NeedsImatrix { name: String },
    #[error("{name} is not offered: {reason}")]
    NotOffered { name: String, reason: &'static str },
    #[error("unknown quantization type {name:?}; one of: {}", QuantType::names().join(", "))]
    Unknown { name: String },
}

impl QuantType {
    /// Every offered type, from the largest to the smallest files.
    pub const ALL: [QuantType; 19] = {
        let mut all = [QuantType::F32; 19];
        let mut i = 0;
        while i < all.len() {
            all[i] = TABLE[i].ty;
            i += 1;
        }
        all
    };

    fn entry(self) -> &'static QuantTypeEntry {
        &TABLE[self as usize]
    }

    /// Lower-case name as accepted on the command line: `"q4_k_m"`.
    pub fn name(self) -> &'static str {
        self.entry().name
    }

    /// Upper-case name as used in file names: `"Q4_K_M"`, `"F16"`.
    pub fn file_tag(self) -> String {
        self.name().to_ascii_uppercase()
    }

    /// One-line description.
    pub fn about(self) -> &'static str {
        self.entry().about
    }

    /// The `llama_ftype` value.
    pub fn ftype(self) -> u32 {
        self.entry().ftype
    }

    /// The default tensor type of the file type (what an eligible tensor gets unless
    /// llama.cpp's mixture rules or a row-length fallback pick another).
    pub fn base_type(self) -> TensorType {
        // Every base id in TABLE is a live ggml type (checked by a unit test).
        TensorType::from_id(self.entry().base)
            .unwrap_or_else(|| TensorType::from_id(sys::GGML_TYPE_F16).expect("ggml knows f16"))
    }

    /// The names of all offered types.
    pub fn names() -> Vec<&'static str> {
        QuantType::ALL.iter().map(|t| t.name()).collect()
    }

    /// Parses a type name (ASCII case ignored; `q3_k`, `q4_k`, `q5_k` are llama.cpp's aliases of
    /// the `_m` variants), with a clear refusal for the types that need an importance matrix.
    pub fn parse(name: &str) -> Result<QuantType, TypeError> {
        let lower = name.trim().to_ascii_lowercase();
        let canonical = match lower.as_str() {
            "q4_k" => "q4_k_m",
            "q3_k" => "q3_k_m",
            "q5_k" => "q5_k_m",
            other => other,
        };
        if let Some(e) = TABLE.iter().find(|e| e.name == canonical) {
            return Ok(e.ty);
        }
        if NEEDS_IMATRIX.contains(&canonical) {
            return Err(TypeError::NeedsImatrix { name: lower });
        }
        if let Some((_, reason)) = NOT_OFFERED.iter().find(|(n, _)| *n == canonical) {
            return Err(TypeError::NotOffered {
                name: lower,
                reason,
            });
        }
        Err(TypeError::Unknown {
            name: name.to_string(),
        })
    }
}

impl fmt::Display for QuantType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for QuantType {
    type Err = TypeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        QuantType::parse(s)
    }
}

impl Serialize for QuantType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for t in QuantType::ALL {
            assert_eq!(QuantType::parse(t.name()), Ok(t));
            assert_eq!(QuantType::parse(&t.file_tag()), Ok(t));
            assert!(TensorType::from_id(t.entry().base).is_some(), "{t}");
        }
        assert_eq!(QuantType::parse("Q4_K"), Ok(QuantType::Q4_K_M));
    }

    #[test]
    fn imatrix_types_are_refused_by_name() {
        for n in NEEDS_IMATRIX {
            let e = QuantType::parse(&n.to_uppercase()).unwrap_err();
            assert!(matches!(e, TypeError::NeedsImatrix { .. }), "{n}: {e}");
            assert!(e.to_string().contains(n) && e.to_string().contains("importance matrix"));
        }
        assert!(matches!(
            QuantType::parse("iq3_s"),
            Err(TypeError::NotOffered { .. })
        ));
        let e = QuantType::parse("q7").unwrap_err();
        assert!(e.to_string().contains("q4_k_m"), "{e}");
    }

    #[test]
    fn base_types_and_ftypes() {
        assert_eq!(QuantType::Q4_K_M.base_type().name(), "q4_K");
        assert_eq!(QuantType::Q4_K_M.ftype(), 15);
        assert_eq!(QuantType::Q8_0.ftype(), 7);
        assert_eq!(QuantType::F16.base_type().bits_per_weight(), 16.0);
        assert_eq!(QuantType::Q8_0.base_type().bits_per_weight(), 8.5);
        assert_eq!(TensorType::from_name("Q6_K").map(|t| t.id()), Some(14));
        let q8 = QuantType::Q8_0.base_type();
        assert_eq!(q8.tensor_bytes(&[64, 3]), Some(2 * 34 * 3));
        assert_eq!(q8.tensor_bytes(&[4304, 2]), None);
    }
}
