//! The synthetic projector: the SigLIP tower and the version's projector (resampler or 4.6's
//! merger), with the keys and types of llama.cpp's converters.

use super::{
    fan_in, residual, FilePlan, FileRole, Init, Scale, Tensors, WeightType, BIAS, ONES, ZEROS,
};
use crate::gguf::{GgmlType, MetaArray, MetaValue};
use crate::model::family::{ModelSpec, ProjectorKind, VisionDims, POS_BUCKETS_PER_SIDE};

// ---------------------------------------------------------------------------------------------
// Projector

pub(super) fn plan_mmproj(
    spec: &ModelSpec,
    projector: ProjectorKind,
    scale: Scale,
    v: &VisionDims,
    dtype: WeightType,
    seed_note: &str,
) -> FilePlan {
    let e = u64::from(v.n_embd);
    let f = u64::from(v.n_ff);
    let dd = u64::from(v.projector_dim);
    let p = u64::from(spec.slicing.patch_size);
    let side = u64::from(POS_BUCKETS_PER_SIDE);
    let n_pos = side * side;

    let mut m: Vec<(String, MetaValue)> = Vec::new();
    let mut kv = |k: &str, val: MetaValue| m.push((k.to_string(), val));
    kv("general.architecture", MetaValue::String("clip".into()));
    kv(
        "general.name",
        MetaValue::String(format!("{} vision (synthetic {scale})", spec.name)),
    );
    kv(
        "general.description",
        MetaValue::String(format!(
            "image encoder for MiniCPM-V: synthetic {} projector with random weights \
             ({scale}, {dtype}{seed_note})",
            spec.name
        )),
    );
    kv("general.file_type", MetaValue::U32(dtype.file_type()));
    kv("clip.has_text_encoder", MetaValue::Bool(false));
    kv("clip.has_vision_encoder", MetaValue::Bool(true));
    kv(
        "clip.projector_type",
        MetaValue::String(projector.type_name().into()),
    );
    match projector {
        ProjectorKind::Resampler {
            minicpmv_version,
            query_tokens,
        } => {
            kv("clip.has_minicpmv_projector", MetaValue::Bool(true));
            kv("clip.minicpmv_version", MetaValue::I32(minicpmv_version));
            kv("clip.minicpmv_query_num", MetaValue::U32(query_tokens));
        }
        ProjectorKind::Merger { scale_factor } => {
            kv(
                "clip.vision.projector.scale_factor",
                MetaValue::U32(scale_factor),
            );
            kv(
                "clip.vision.wa_layer_indexes",
                MetaValue::Array(MetaArray::I32(vec![v.insert_layer.unwrap_or(0) as i32])),
            );
        }
    }
    kv(
        "clip.vision.image_size",
        MetaValue::U32(spec.slicing.image_size),
    );
    kv(
        "clip.vision.patch_size",
        MetaValue::U32(spec.slicing.patch_size),
    );
    kv("clip.vision.embedding_length", MetaValue::U32(v.n_embd));
    kv("clip.vision.feed_forward_length", MetaValue::U32(v.n_ff));
    // the legacy resampler converter writes 0; 4.6's writes the language model's width
    let projection_dim = match projector {
        ProjectorKind::Resampler { .. } => 0,
        ProjectorKind::Merger { .. } => v.projector_dim,
    };
    kv("clip.vision.projection_dim", MetaValue::U32(projection_dim));
    kv("clip.vision.attention.head_count", MetaValue::U32(v.n_head));
    kv(
        "clip.vision.attention.layer_norm_epsilon",
        MetaValue::F32(v.layer_norm_eps),
    );
    kv("clip.vision.block_count", MetaValue::U32(v.n_layer));
    kv(
        "clip.vision.image_mean",
        MetaValue::Array(MetaArray::F32(spec.normalize.mean.to_vec())),
    );
    kv(
        "clip.vision.image_std",
        MetaValue::Array(MetaArray::F32(spec.normalize.std.to_vec())),
    );
    kv("clip.use_gelu", MetaValue::Bool(true));

    let mut ts = Tensors::new(dtype);
    // SigLIP
    ts.fixed(
        "v.patch_embd.weight".into(),
        &[p, p, 3, e],
        GgmlType::F16,
        fan_in(p * p * 3),
    );
    ts.vector("v.patch_embd.bias".into(), e, BIAS);
    ts.matrix(
        "v.position_embd.weight".into(),
        [e, n_pos],
        Init::Random { std: 0.5 },
    );
    for i in 0..v.n_layer {
        let b = |s: &str| format!("v.blk.{i}.{s}");
        for name in ["attn_q", "attn_k", "attn_v", "attn_out"] {
            let init = if name == "attn_out" {
                residual(e, v.n_layer)
            } else {
                fan_in(e)
            };
            ts.matrix(b(&format!("{name}.weight")), [e, e], init);
            ts.vector(b(&format!("{name}.bias")), e, BIAS);
        }
        ts.vector(b("ln1.weight"), e, ONES);
        ts.vector(b("ln1.bias"), e, ZEROS);
        ts.matrix(b("ffn_up.weight"), [e, f], fan_in(e));
        ts.vector(b("ffn_up.bias"), f, BIAS);
        ts.matrix(b("ffn_down.weight"), [f, e], residual(f, v.n_layer));
        ts.vector(b("ffn_down.bias"), e, BIAS);
        ts.vector(b("ln2.weight"), e, ONES);
        ts.vector(b("ln2.bias"), e, ZEROS);
    }
    ts.vector("v.post_ln.weight".into(), e, ONES);
    ts.vector("v.post_ln.bias".into(), e, ZEROS);
    match projector {
        ProjectorKind::Resampler { query_tokens, .. } => {
            resampler(&mut ts, e, dd, u64::from(query_tokens), side)
        }
        ProjectorKind::Merger { .. } => merger(&mut ts, v),
    }
    FilePlan {
        role: FileRole::Mmproj,
        metadata: m,
        tensors: ts.list,
    }
}

/// The perceiver resampler of 2.5 .. 4.5 (llama.cpp `clip_graph_minicpmv`).
fn resampler(ts: &mut Tensors, e: u64, dd: u64, q: u64, side: u64) {
    ts.fixed(
        "resampler.query".into(),
        &[dd, q],
        GgmlType::F32,
        Init::Random { std: 1.0 },
    );
    ts.matrix("resampler.kv.weight".into(), [e, dd], fan_in(e));
    for name in ["q", "k", "v", "out"] {
        // q/k at twice the unit scale: attention logits with std ~4, so each query attends to
        // its own few patches instead of an even average over all of them
        let init = match name {
            "q" | "k" => Init::Random {
                std: 2.0 / (dd as f32).sqrt(),
            },
            _ => fan_in(dd),
        };
        ts.matrix(format!("resampler.attn.{name}.weight"), [dd, dd], init);
        ts.vector(format!("resampler.attn.{name}.bias"), dd, BIAS);
    }
    for name in ["q", "kv", "post"] {
        ts.vector(format!("resampler.ln_{name}.weight"), dd, ONES);
        ts.vector(format!("resampler.ln_{name}.bias"), dd, ZEROS);
    }
    ts.matrix("resampler.proj.weight".into(), [dd, dd], fan_in(dd));
    ts.fixed(
        "resampler.pos_embed_k".into(),
        &[dd, side * side],
        GgmlType::F32,
        Init::SinCos2d { dim: dd, side },
    );
}

/// MiniCPM-V 4.6's projector (llama.cpp `clip_graph_minicpmv4_6`, clip.cpp's
/// `PROJECTOR_TYPE_MINICPMV4_6` loader; shapes from the HF modules
/// `MiniCPMV4_6ViTWindowAttentionMerger` and `MiniCPMV4_6DownsampleMLP`): the window-attention
/// ViT merger run after layer `insert_layer` (LayerNorm, attention within each 2x2 window,
/// then a 2x2 concatenation through LayerNorm and an MLP of 4x the tower's widths), and the
/// final 2x2 merger (LayerNorm over the concatenation, up, GELU, down to the language model's
/// width). The converter writes both; a 4x-mode file needs only the final merger.
fn merger(ts: &mut Tensors, v: &VisionDims) {
    let (e, f, dd) = (
        u64::from(v.n_embd),
        u64::from(v.n_ff),
        u64::from(v.projector_dim),
    );
    let (e4, f4) = (4 * e, 4 * f);
    ts.vector("v.vit_merger.ln1.weight".into(), e, ONES);
    ts.vector("v.vit_merger.ln1.bias".into(), e, ZEROS);
    for name in ["attn_q", "attn_k", "attn_v", "attn_out"] {
        let init = if name == "attn_out" {
            residual(e, v.n_layer)
        } else {
            fan_in(e)
        };
        ts.matrix(format!("v.vit_merger.{name}.weight"), [e, e], init);
        ts.vector(format!("v.vit_merger.{name}.bias"), e, BIAS);
    }
    ts.vector("v.vit_merger.ds_ln.weight".into(), e4, ONES);
    ts.vector("v.vit_merger.ds_ln.bias".into(), e4, ZEROS);
    ts.matrix("v.vit_merger.ds_ffn_up.weight".into(), [e4, f4], fan_in(e4));
    ts.vector("v.vit_merger.ds_ffn_up.bias".into(), f4, BIAS);
    ts.matrix(
        "v.vit_merger.ds_ffn_down.weight".into(),
        [f4, e],
        residual(f4, v.n_layer),
    );
    ts.vector("v.vit_merger.ds_ffn_down.bias".into(), e, BIAS);
    ts.vector("mm.input_norm.weight".into(), e4, ONES);
    ts.vector("mm.input_norm.bias".into(), e4, ZEROS);
    ts.matrix("mm.up.weight".into(), [e4, e4], fan_in(e4));
    ts.vector("mm.up.bias".into(), e4, BIAS);
    ts.matrix("mm.down.weight".into(), [e4, dd], fan_in(e4));
    ts.vector("mm.down.bias".into(), dd, BIAS);
}
