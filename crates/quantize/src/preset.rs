//! Presets for a MiniCPM-V pair: one type for the language model, one for the projector, and
//! the output file names.

use std::path::Path;

use crate::types::QuantType;

/// A type for each file of a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preset {
    pub name: &'static str,
    /// For the language model.
    pub model: QuantType,
    /// For the projector (mmproj).
    pub mmproj: QuantType,
    pub about: &'static str,
}

/// The presets. Why the projector stays at q8_0 in all of them: it is small next to the
/// language model (SigLIP-400M + resampler: 1.0 GiB in f16 against 14.2 GiB for the 2.6 text
/// model), its errors reach every image token, and for SigLIP's shapes 4-bit types save little
/// anyway: the 1152-wide rows do not fit 256-element k-quant blocks (q5_0 fallback), the
/// 4304-wide `ffn_down` rows fit no block and stay f16 under every type, and the position/patch
/// embeddings are never quantized. Measured on the real-shape 2.6 projector (f16 996 MiB):
/// q8_0 687 MiB, q4_k_m 562 MiB, q4_0 522 MiB — q4_0 would save 3% of an int4 pair, not worth an
/// unmeasured quality loss, so there is no `int4-small` until the quality report can justify it.
pub const PRESETS: [Preset; 3] = [
    Preset {
        name: "int4",
        model: QuantType::Q4_K_M,
        mmproj: QuantType::Q8_0,
        about: "language model q4_k_m + projector q8_0: the usual size/quality balance \
                (about 30% of the f16 size for the 2.6 text model)",
    },
    Preset {
        name: "int8",
        model: QuantType::Q8_0,
        mmproj: QuantType::Q8_0,
        about: "language model q8_0 + projector q8_0: near-lossless, about 53% of f16",
    },
    Preset {
        name: "int5",
        model: QuantType::Q5_K_M,
        mmproj: QuantType::Q8_0,
        about: "language model q5_k_m + projector q8_0: between int4 and int8 \
                (about 35% of f16), for when int4 loses too much and int8 does not fit",
    },
];

impl Preset {
    /// The preset with this name (ASCII case ignored).
    pub fn by_name(name: &str) -> Option<Preset> {
        PRESETS
            .iter()
            .copied()
            .find(|p| p.name.eq_ignore_ascii_case(name.trim()))
    }

    pub fn names() -> Vec<&'static str> {
        PRESETS.iter().map(|p| p.name).collect()
    }
}

/// Type suffixes stripped from an input's file stem before the new type is appended.
const TYPE_SUFFIXES: [&str; 5] = ["f16", "f32", "bf16", "fp16", "fp32"];

/// The output file name for `input` quantized to `qtype`: the input's stem without a trailing
/// float-type tag, then `-TYPE.gguf`: `model.gguf` -> `model-Q4_K_M.gguf`,
/// `mmproj-model-f16.gguf` -> `mmproj-model-Q8_0.gguf`.
pub fn output_file_name(input: &Path, qtype: QuantType) -> String {
    let stem = input
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let mut base = stem.as_str();
    for suffix in TYPE_SUFFIXES {
        let lower = base.to_ascii_lowercase();
        for sep in ['-', '_', '.'] {
            let tag = format!("{sep}{suffix}");
            if lower.ends_with(&tag) && lower.len() > tag.len() {
                base = &base[..base.len() - tag.len()];
            }
        }
    }
    format!("{base}-{}.gguf", qtype.file_tag())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let n = |p: &str, t| output_file_name(Path::new(p), t);
        assert_eq!(n("/x/model.gguf", QuantType::Q4_K_M), "model-Q4_K_M.gguf");
        assert_eq!(n("mmproj.gguf", QuantType::Q8_0), "mmproj-Q8_0.gguf");
        assert_eq!(
            n("mmproj-model-f16.gguf", QuantType::Q8_0),
            "mmproj-model-Q8_0.gguf"
        );
        assert_eq!(
            n("ggml-model-F16.gguf", QuantType::Q5_K_M),
            "ggml-model-Q5_K_M.gguf"
        );
        assert_eq!(n("f16.gguf", QuantType::Q8_0), "f16-Q8_0.gguf");
    }

    #[test]
    fn presets() {
        let p = Preset::by_name("INT4").expect("int4");
        assert_eq!((p.model, p.mmproj), (QuantType::Q4_K_M, QuantType::Q8_0));
        let p = Preset::by_name("int8").expect("int8");
        assert_eq!((p.model, p.mmproj), (QuantType::Q8_0, QuantType::Q8_0));
        assert!(Preset::by_name("int3").is_none());
    }
}
