//! The summary of a finished quantization: sizes, time, the output's tensor types, and every
//! tensor kept in higher precision than the requested type, with the reason.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::facts::{GgufFacts, TensorFacts};
use crate::job::Outcome;
use crate::plan::Fallback;
use crate::types::{QuantType, TensorType};
use minicpmv_gguf::FileKind;

/// Count, parameters and bytes of the tensors of one type.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TypeStats {
    pub tensors: usize,
    pub params: u64,
    pub bytes: u64,
}

/// Why llama.cpp stored a tensor in a higher-precision type than the one requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeepReason {
    /// Fewer than 2 dimensions (norm weights, biases, scales): llama.cpp quantizes only 2-D and
    /// 3-D tensors.
    OneDimensional,
    /// A `*_norm.weight` tensor.
    Norm,
    /// Position or patch embeddings (`.position_embd`, `.patch_embd`, ...), never quantized.
    PositionOrPatchEmbedding,
    /// The name does not end in `weight` (e.g. `resampler.query`, `resampler.pos_embed_k`).
    NotAWeight,
    /// Another of llama.cpp's name rules (`tensor_allows_quantization`).
    ExcludedByName,
    /// The row length is not a multiple of the wanted type's block size: llama.cpp fell back
    /// to a type that fits (f16 when none does).
    RowLength,
    /// llama.cpp's per-tensor mixture for the requested file type (e.g. `output.weight` in q6_K
    /// for k-quants, some `attn_v`/`ffn_down` in q6_K for Q4_K_M).
    LlamaPolicy,
}

impl KeepReason {
    /// Short human description.
    pub fn describe(self) -> &'static str {
        match self {
            KeepReason::OneDimensional => {
                "1-D (norms, biases): llama.cpp quantizes only 2-D/3-D weights"
            }
            KeepReason::Norm => "norm weights",
            KeepReason::PositionOrPatchEmbedding => "position/patch embeddings: never quantized",
            KeepReason::NotAWeight => "not a *.weight tensor: copied as is",
            KeepReason::ExcludedByName => "excluded by llama.cpp's name rules",
            KeepReason::RowLength => "row length not a multiple of the block size: fallback type",
            KeepReason::LlamaPolicy => "llama.cpp's per-tensor mixture for this type",
        }
    }
}

/// A tensor stored with more bits per weight than the requested type's default.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeptTensor {
    pub name: String,
    pub dims: Vec<u64>,
    pub input_type: String,
    pub output_type: String,
    pub reason: KeepReason,
    pub detail: String,
}

/// Where the progress numbers came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProgressSource {
    pub source: &'static str,
    /// Tensors llama.cpp reported done.
    pub tensors_seen: usize,
    pub tensors_total: usize,
}

/// The summary of one quantized file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Only planned (llama.cpp's dry run): nothing was written; sizes and types are the plan's.
    pub dry_run: bool,
    pub input: PathBuf,
    pub output: PathBuf,
    /// `"language_model"` or `"projector"`.
    pub kind: &'static str,
    pub architecture: String,
    /// Which of llama.cpp's rule sets applied (by `general.architecture`).
    pub policy: String,
    #[serde(rename = "type")]
    pub qtype: QuantType,
    /// The requested type's default tensor type.
    pub base_type: TensorType,
    pub input_bytes: u64,
    pub output_bytes: u64,
    /// The plan's size estimate (header estimate + planned tensor sizes).
    pub expected_output_bytes: u64,
    /// `output_bytes / input_bytes`.
    pub ratio: f64,
    pub seconds: f64,
    pub threads: usize,
    pub n_tensors: usize,
    pub n_params: u64,
    /// Output tensor types (read back from the written file).
    pub tensor_types: BTreeMap<String, TypeStats>,
    pub input_tensor_types: BTreeMap<String, TypeStats>,
    pub kept_higher: Vec<KeptTensor>,
    pub kept_higher_counts: BTreeMap<KeepReason, usize>,
    pub fallbacks: Vec<Fallback>,
    /// Tensors whose type in the written file differs from llama.cpp's dry-run plan (always
    /// empty unless llama.cpp changed behaviour between the dry run and the run).
    pub plan_mismatches: Vec<String>,
    pub progress: ProgressSource,
    /// Manual per-tensor types this tool passed to llama.cpp (see
    /// [`crate::tensor_type_overrides`]): `(name regex, type)`.
    pub tensor_type_overrides: Vec<(String, String)>,
    /// Stale temporary files of killed runs removed from the output folder before writing.
    pub stale_temp_files_removed: Vec<PathBuf>,
}

fn histogram(f: &GgufFacts) -> BTreeMap<String, TypeStats> {
    let mut h: BTreeMap<String, TypeStats> = BTreeMap::new();
    for t in &f.tensors {
        let name = TensorType::from_id(t.ggml_type).map_or_else(
            || format!("type{}", t.ggml_type),
            |ty| ty.name().to_string(),
        );
        let e = h.entry(name).or_default();
        e.tensors += 1;
        e.params += t.n_elements();
        e.bytes += t.n_bytes;
    }
    h
}

/// llama.cpp's name/shape rules (`tensor_allows_quantization`, src/llama-quant.cpp) that keep a
/// tensor in its input type, as far as MiniCPM-V files can meet them.
pub fn exclusion(t: &TensorFacts) -> Option<KeepReason> {
    let n = t.name.as_str();
    if t.n_dims() < 2 {
        return Some(KeepReason::OneDimensional);
    }
    if !n.ends_with("weight") {
        return Some(KeepReason::NotAWeight);
    }
    if n.contains("_norm.weight") {
        return Some(KeepReason::Norm);
    }
    const POS: [&str; 6] = [
        ".position_embd",
        ".patch_embd",
        "sam.pos_embd",
        ".rel_pos",
        ".patch_merger",
        "attn_rel_b.weight",
    ];
    if n == "position_embd.weight" || POS.iter().any(|p| n.contains(p)) {
        return Some(KeepReason::PositionOrPatchEmbedding);
    }
    const OTHER: [&str; 14] = [
        "ffn_gate_inp.weight",
        "ffn_gate_tid2eid.weight",
        "altup",
        "laurel",
        "per_layer_model_proj",
        "token_types.weight",
        "ssm_conv1d",
        "shortconv.conv.weight",
        "indexer.k_proj.weight",
        "indexer.q_proj.weight",
        "time_mix_",
        "sam.neck.",
        "sam.net_",
        "codebook",
    ];
    if OTHER.iter().any(|p| n.contains(p)) || n.contains("code_embd") {
        return Some(KeepReason::ExcludedByName);
    }
    None
}

fn policy_detail(name: &str, kind: &FileKind, qtype: QuantType, out: &str, tied: bool) -> String {
    let q = qtype.name();
    if name == "output.weight" || (tied && name == "token_embd.weight") {
        return format!(
            "output projection{}: llama.cpp stores it in {out} for {q} (q6_K for k- and \
             i-quants)",
            if tied { " (tied token embeddings)" } else { "" }
        );
    }
    let is_clip = matches!(kind, FileKind::Projector);
    if name.contains("ffn_down") {
        return if is_clip {
            format!(
                "ffn_down of a clip file: llama.cpp loads no layer count for clip files, so \
                 {q}'s mixture gives every ffn_down {out}"
            )
        } else {
            format!(
                "ffn_down: {q}'s mixture gives the first and last eighth of the layers and every \
                 third layer in between {out}"
            )
        };
    }
    if name.contains("attn_v.weight") || name.contains("attn_qkv") || name.contains("attn_kv_b") {
        return format!("attention V: {q}'s mixture gives some layers {out}");
    }
    format!("llama.cpp's {q} mixture chose {out} for this tensor")
}

impl Outcome {
    /// The summary, comparing the input with the written output (`output` read back by the
    /// caller's GGUF reader).
    pub fn summary(&self, output: &GgufFacts) -> Summary {
        let input = &self.input;
        let base = self.qtype.base_type();
        let base_bpw = base.bits_per_weight();
        let tied = input.tensor("output.weight").is_none();
        let mut kept_higher = Vec::new();
        let mut plan_mismatches = Vec::new();
        let written: std::collections::HashMap<&str, &TensorFacts> = output
            .tensors
            .iter()
            .map(|t| (t.name.as_str(), t))
            .collect();
        for t in &output.tensors {
            if input.tensor(&t.name).is_none() {
                plan_mismatches.push(format!("{}: not in the input", t.name));
            }
        }
        // In the input's order (llama.cpp writes the tensors in its own order).
        for i in &input.tensors {
            let Some(o) = written.get(i.name.as_str()) else {
                plan_mismatches.push(format!("{}: missing from the output", i.name));
                continue;
            };
            let Some(out_ty) = TensorType::from_id(o.ggml_type) else {
                plan_mismatches.push(format!("{}: unknown type id {}", o.name, o.ggml_type));
                continue;
            };
            if let Some(p) = self.plan.tensor(&o.name) {
                if p.to != out_ty {
                    plan_mismatches
                        .push(format!("{}: planned {}, written {}", o.name, p.to, out_ty));
                }
            } else {
                plan_mismatches.push(format!("{}: not in the plan", o.name));
            }
            if out_ty.bits_per_weight() <= base_bpw {
                continue;
            }
            let in_ty = TensorType::from_id(i.ggml_type)
                .map_or_else(|| i.ggml_type.to_string(), |t| t.name().to_string());
            let (reason, detail) = if let Some(r) = exclusion(i) {
                (r, r.describe().to_string())
            } else if let Some(f) = self.plan.fallback(&o.name) {
                (
                    KeepReason::RowLength,
                    format!(
                        "rows of {} elements are not a multiple of {}'s {}-element blocks: \
                         llama.cpp used {}",
                        f.row_length, f.wanted, f.block_size, f.used
                    ),
                )
            } else {
                (
                    KeepReason::LlamaPolicy,
                    policy_detail(&o.name, &input.kind, self.qtype, out_ty.name(), tied),
                )
            };
            kept_higher.push(KeptTensor {
                name: o.name.clone(),
                dims: o.dims.clone(),
                input_type: in_ty,
                output_type: out_ty.name().to_string(),
                reason,
                detail,
            });
        }
        let mut kept_higher_counts = BTreeMap::new();
        for k in &kept_higher {
            *kept_higher_counts.entry(k.reason).or_insert(0) += 1;
        }
        let policy = match &input.kind {
            FileKind::Projector => {
                "clip (projector): llama.cpp's rules with no language-model hyper-parameters".into()
            }
            FileKind::LanguageModel(arch) => format!("language model ({arch})"),
            FileKind::Unknown => "file of unknown kind".to_string(),
        };
        Summary {
            dry_run: false,
            input: input.path.clone(),
            output: self.output.clone(),
            kind: input.kind.tag(),
            architecture: input.kind.architecture().to_string(),
            policy,
            qtype: self.qtype,
            base_type: base,
            input_bytes: input.file_size,
            output_bytes: self.output_bytes,
            expected_output_bytes: self.plan.expected_output_bytes,
            ratio: if input.file_size == 0 {
                0.0
            } else {
                self.output_bytes as f64 / input.file_size as f64
            },
            seconds: self.seconds,
            threads: self.threads,
            n_tensors: output.tensors.len(),
            n_params: output.tensors.iter().map(TensorFacts::n_elements).sum(),
            tensor_types: histogram(output),
            input_tensor_types: histogram(input),
            kept_higher,
            kept_higher_counts,
            fallbacks: self.plan.fallbacks.clone(),
            plan_mismatches,
            progress: ProgressSource {
                source: "llama.cpp log lines ([i/n] per tensor)",
                tensors_seen: self.tensors_seen,
                tensors_total: input.tensors.len(),
            },
            tensor_type_overrides: crate::plan::tensor_type_overrides(&input.kind, self.qtype)
                .into_iter()
                .map(|(re, id)| {
                    let ty =
                        TensorType::from_id(id).map_or_else(|| id.to_string(), |t| t.to_string());
                    (re, ty)
                })
                .collect(),
            stale_temp_files_removed: self.stale_removed.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, dims: &[u64]) -> TensorFacts {
        TensorFacts {
            name: name.into(),
            dims: dims.to_vec(),
            ggml_type: 1,
            n_bytes: 0,
        }
    }

    #[test]
    fn exclusions_follow_llama_cpp_name_rules() {
        use KeepReason::*;
        assert_eq!(
            exclusion(&t("blk.0.attn_norm.weight", &[128])),
            Some(OneDimensional)
        );
        assert_eq!(
            exclusion(&t("v.blk.0.attn_q.bias", &[32])),
            Some(OneDimensional)
        );
        assert_eq!(
            exclusion(&t("resampler.query", &[128, 64])),
            Some(NotAWeight)
        );
        assert_eq!(
            exclusion(&t("resampler.pos_embed_k", &[128, 4900])),
            Some(NotAWeight)
        );
        assert_eq!(
            exclusion(&t("v.position_embd.weight", &[32, 4900])),
            Some(PositionOrPatchEmbedding)
        );
        assert_eq!(
            exclusion(&t("v.patch_embd.weight", &[14, 14, 3, 32])),
            Some(PositionOrPatchEmbedding)
        );
        assert_eq!(
            exclusion(&t("blk.0.ffn_gate_inp.weight", &[8, 64])),
            Some(ExcludedByName)
        );
        assert_eq!(exclusion(&t("blk.0.attn_q.weight", &[128, 128])), None);
        assert_eq!(exclusion(&t("output.weight", &[128, 390])), None);
        assert_eq!(exclusion(&t("resampler.kv.weight", &[32, 128])), None);
    }
}
