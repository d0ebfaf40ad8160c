//! Which CPU matrix kernels the language model's weights run on.
//!
//! llama.cpp can copy weights into "repacked" layouts at load time (interleaved blocks for its
//! `ggml_gemm_*_8x8` kernels; its default, `use_extra_bufts`). On x86 the same ggml also has a
//! tiled K-quant matmul (`ggml-cpu/tiled/`, llama.cpp PR #27851) that unpacks 256x256 windows
//! of int8 and sweeps an AVX512-VNNI 16x16 microkernel over them. It only runs on weights that
//! were *not* repacked ("repack-buffer weights hold a repacked layout, let that kernel handle",
//! `ggml_tiled_supported`), so llama.cpp's default hides it behind the repack for Q4_K and Q2_K.
//!
//! Measured on an AVX512-VNNI Xeon, real-shape MiniCPM-V 2.6 Q4_K_M (docs/BENCHMARKS.md, "The
//! language model's kernels"): a 663-position prefill takes 0.71 of the repacked Q4_K
//! kernel's time, the decode speed is the same (the tiled kernel takes batches of 8 rows and
//! more; smaller ones use the plain dot products, as fast as the repacked ones when memory
//! bound), the 4-8 s repack at load disappears and the mapped file is the only copy.
//!
//! [`Repack::Auto`] therefore skips the repack when the CPU backend has the AVX512-VNNI
//! microkernel and no tensor of the model has a type that stays with the repacked x86 kernel
//! (Q4_0, IQ4_NL, MXFP4: the tiled kernel does not take them; Q2_K: not measured). Everywhere
//! else it repacks, as llama.cpp does: on ARM (no tiled kernel; the repack is what makes
//! Q4_0/Q4_K fast with dotprod and i8mm) and on x86 without AVX512-VNNI (the tiled AVX2
//! microkernel is not measured against the repack).

use std::path::Path;

use minicpmv_gguf::{GgmlType, GgufError, GgufFile};

/// Whether llama.cpp may repack the language model's weights for its CPU kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Repack {
    /// Decide from the CPU and the model's tensor types ([`decide`]).
    #[default]
    Auto,
    /// Always repack (llama.cpp's default).
    On,
    /// Never: every weight is used from the file as stored.
    Off,
}

impl std::str::FromStr for Repack {
    type Err = String;

    /// `auto`, `on` or `off`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Repack::Auto),
            "on" => Ok(Repack::On),
            "off" => Ok(Repack::Off),
            other => Err(format!(
                "{other:?} is not a repack setting: use auto, on or off"
            )),
        }
    }
}

/// The outcome of [`decide`]: repack or not, and why (for `plan` and the `-v` log).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RepackDecision {
    pub repack: bool,
    pub reason: &'static str,
}

/// The ggml CPU feature (as `ggml_backend_get_features` names it) that the tiled matmul's
/// fast microkernel is compiled for.
const TILED_VNNI_FEATURE: &str = "AVX512_VNNI";

/// Types with an x86 repacked kernel (ggml's `ggml_repack_get_optimal_repack_type`) that the
/// tiled matmul does not take (Q4_0, IQ4_NL, MXFP4), or takes without a measurement here that
/// it beats the repacked kernel (Q2_K, repacked with AVX-512). Q4_K is the one type measured.
/// The other K-quants (Q3_K, Q5_K, Q6_K) have no x86 repack and run the tiled kernel anyway.
const KEEP_REPACKED_ON_X86: [GgmlType; 4] = [
    GgmlType::Q4_0,
    GgmlType::IQ4_NL,
    GgmlType::MXFP4,
    GgmlType::Q2_K,
];

/// Decides `choice` for a model whose weights have `types`, on a CPU backend that reports
/// `cpu_features` (compile-time features of the ggml CPU code in use).
pub fn decide(
    choice: Repack,
    types: impl IntoIterator<Item = GgmlType>,
    cpu_features: &[String],
) -> RepackDecision {
    match choice {
        Repack::On => RepackDecision {
            repack: true,
            reason: "asked for explicitly",
        },
        Repack::Off => RepackDecision {
            repack: false,
            reason: "asked for explicitly",
        },
        Repack::Auto => {
            if !cpu_features.iter().any(|f| f == TILED_VNNI_FEATURE) {
                return RepackDecision {
                    repack: true,
                    reason: "no AVX512-VNNI tiled K-quant kernel on this CPU: the repacked kernels are the fast ones",
                };
            }
            if types.into_iter().any(|t| KEEP_REPACKED_ON_X86.contains(&t)) {
                return RepackDecision {
                    repack: true,
                    reason: "the model has Q4_0, IQ4_NL, MXFP4 or Q2_K weights, whose x86 kernel of choice is the repacked one",
                };
            }
            RepackDecision {
                repack: false,
                reason: "AVX512-VNNI: ggml's tiled K-quant kernel, which needs the weights as stored, prefills faster than the repacked one",
            }
        }
    }
}

/// [`decide`] for the language model `file` (its tensor table) on the CPU backend in use.
pub fn decide_for_gguf(choice: Repack, file: &GgufFile) -> RepackDecision {
    if choice != Repack::Auto {
        return decide(choice, [], &[]);
    }
    let features = crate::cpu_backend().features;
    decide(choice, file.tensors.iter().map(|t| t.ggml_type), &features)
}

/// [`decide_for_gguf`] for the file at `path`, whose header is read only for `auto`.
pub fn decide_for_file(choice: Repack, path: &Path) -> Result<RepackDecision, GgufError> {
    if choice != Repack::Auto {
        return Ok(decide(choice, [], &[]));
    }
    Ok(decide_for_gguf(choice, &GgufFile::open(path)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(f: &[&str]) -> Vec<String> {
        f.iter().map(|s| s.to_string()).collect()
    }

    const Q4_K_M: [GgmlType; 3] = [GgmlType::F32, GgmlType::Q4_K, GgmlType::Q6_K];

    #[test]
    fn auto_skips_the_repack_of_k_quants_with_avx512_vnni() {
        let d = decide(
            Repack::Auto,
            Q4_K_M,
            &features(&["AVX2", "AVX512", "AVX512_VNNI"]),
        );
        assert!(!d.repack, "{}", d.reason);
    }

    #[test]
    fn auto_repacks_without_the_vnni_kernel() {
        // An AVX2-only x86 CPU, and a Raspberry Pi 5 (ggml's ARM feature names).
        for f in [
            &["AVX", "AVX2", "FMA"][..],
            &["NEON", "ARM_FMA", "DOTPROD"][..],
        ] {
            assert!(decide(Repack::Auto, Q4_K_M, &features(f)).repack, "{f:?}");
        }
    }

    #[test]
    fn auto_repacks_types_the_tiled_kernel_does_not_take() {
        let vnni = features(&["AVX512", "AVX512_VNNI"]);
        for t in KEEP_REPACKED_ON_X86 {
            let types = [GgmlType::Q4_K, t, GgmlType::Q6_K];
            assert!(decide(Repack::Auto, types, &vnni).repack, "{t:?}");
        }
        // Q8_0 has no x86 repack at all, so it does not hold the tiled kernel back.
        assert!(!decide(Repack::Auto, [GgmlType::Q8_0, GgmlType::F32], &vnni).repack);
    }

    #[test]
    fn on_and_off_are_obeyed_everywhere() {
        let vnni = features(&["AVX512_VNNI"]);
        assert!(decide(Repack::On, Q4_K_M, &vnni).repack);
        assert!(!decide(Repack::Off, [GgmlType::Q4_0], &features(&["NEON"])).repack);
    }

    #[test]
    fn parses_the_three_settings_and_names_a_bad_one() {
        assert_eq!("auto".parse::<Repack>(), Ok(Repack::Auto));
        assert_eq!("on".parse::<Repack>(), Ok(Repack::On));
        assert_eq!("off".parse::<Repack>(), Ok(Repack::Off));
        let e = "yes".parse::<Repack>().unwrap_err();
        assert!(
            e.contains("\"yes\"") && e.contains("auto, on or off"),
            "{e}"
        );
    }
}
