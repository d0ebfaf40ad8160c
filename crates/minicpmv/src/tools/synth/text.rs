//! The synthetic language model: metadata and tensors as llama.cpp's converter writes them.

use super::vocab::Vocab;
use super::{fan_in, residual, FilePlan, FileRole, Init, Scale, Tensors, WeightType, BIAS, ONES};
use crate::gguf::{GgmlType, MetaArray, MetaValue};
use crate::model::family::{HybridDims, ModelSpec, TextArch, TextDims};

pub(super) fn plan_model(
    spec: &ModelSpec,
    scale: Scale,
    dtype: WeightType,
    d: &TextDims,
    vocab: Vocab,
    seed_note: &str,
) -> FilePlan {
    let arch = spec.text_arch;
    let a = arch.as_str();
    let n_vocab = vocab.tokens.len() as u64;
    let n_embd = u64::from(d.n_embd);

    let mut m: Vec<(String, MetaValue)> = Vec::new();
    let mut kv = |k: &str, v: MetaValue| m.push((k.to_string(), v));
    kv("general.architecture", MetaValue::String(a.into()));
    kv(
        "general.name",
        MetaValue::String(format!("{} (synthetic {scale})", spec.name)),
    );
    kv(
        "general.description",
        MetaValue::String(format!(
            "synthetic {} language model with random weights ({scale}, {dtype}{seed_note})",
            spec.name
        )),
    );
    kv("general.file_type", MetaValue::U32(dtype.file_type()));
    kv("general.quantization_version", MetaValue::U32(2));
    kv(&format!("{a}.vocab_size"), MetaValue::U32(n_vocab as u32));
    kv(&format!("{a}.context_length"), MetaValue::U32(d.n_ctx));
    kv(&format!("{a}.embedding_length"), MetaValue::U32(d.n_embd));
    kv(&format!("{a}.block_count"), MetaValue::U32(d.n_layer));
    kv(&format!("{a}.feed_forward_length"), MetaValue::U32(d.n_ff));
    kv(
        &format!("{a}.attention.head_count"),
        MetaValue::U32(d.n_head),
    );
    kv(
        &format!("{a}.attention.head_count_kv"),
        MetaValue::U32(d.n_head_kv),
    );
    kv(&format!("{a}.rope.freq_base"), MetaValue::F32(d.rope_theta));
    kv(
        &format!("{a}.attention.layer_norm_rms_epsilon"),
        MetaValue::F32(d.rms_eps),
    );
    match arch {
        TextArch::Llama => kv(
            &format!("{a}.rope.dimension_count"),
            MetaValue::U32(d.head_dim()),
        ),
        TextArch::Qwen3 | TextArch::Qwen35 => {
            kv(
                &format!("{a}.attention.key_length"),
                MetaValue::U32(d.head_dim()),
            );
            kv(
                &format!("{a}.attention.value_length"),
                MetaValue::U32(d.head_dim()),
            );
            if let Some(h) = &d.hybrid {
                hybrid_metadata(a, h, &mut kv);
            }
        }
        TextArch::Qwen2 => {}
    }

    // tokenizer
    let t = &spec.tokens;
    let pre = t.pre.clone().unwrap_or_else(|| "default".to_string());
    let id = |text: &str| vocab.id(text);
    let ids: Vec<(&str, Option<u32>)> = vec![
        ("tokenizer.ggml.bos_token_id", id(&t.bos)),
        ("tokenizer.ggml.eos_token_id", id(&t.eos)),
        ("tokenizer.ggml.eot_token_id", id(&t.eot)),
        (
            "tokenizer.ggml.unknown_token_id",
            t.unk.as_deref().and_then(id),
        ),
        (
            "tokenizer.ggml.padding_token_id",
            t.pad.as_deref().and_then(id),
        ),
    ];
    kv("tokenizer.ggml.model", MetaValue::String("gpt2".into()));
    kv("tokenizer.ggml.pre", MetaValue::String(pre));
    let Vocab {
        tokens,
        types,
        merges,
    } = vocab;
    kv(
        "tokenizer.ggml.tokens",
        MetaValue::Array(MetaArray::String(tokens)),
    );
    kv(
        "tokenizer.ggml.token_type",
        MetaValue::Array(MetaArray::I32(types)),
    );
    kv(
        "tokenizer.ggml.merges",
        MetaValue::Array(MetaArray::String(merges)),
    );
    for (key, id) in ids {
        if let Some(id) = id {
            kv(key, MetaValue::U32(id));
        }
    }
    kv("tokenizer.ggml.add_bos_token", MetaValue::Bool(t.add_bos));
    kv("tokenizer.ggml.add_eos_token", MetaValue::Bool(false));
    kv(
        "tokenizer.chat_template",
        MetaValue::String(spec.chat.jinja.clone()),
    );

    // tensors
    let mut ts = Tensors::new(dtype);
    ts.matrix(
        "token_embd.weight".into(),
        [n_embd, n_vocab],
        fan_in(n_embd),
    );
    ts.vector("output_norm.weight".into(), n_embd, ONES);
    if !d.tied_embeddings {
        ts.matrix("output.weight".into(), [n_embd, n_vocab], fan_in(n_embd));
    }
    for i in 0..d.n_layer {
        match &d.hybrid {
            Some(h) => qwen35_block(&mut ts, d, h, i),
            None => attention_block(&mut ts, arch, d, i),
        }
    }
    FilePlan {
        role: FileRole::Model,
        metadata: m,
        tensors: ts.list,
    }
}

/// One block of the llama/qwen2/qwen3 graphs: attention (biases for qwen2, q/k norms for
/// qwen3), then the SwiGLU FFN.
fn attention_block(ts: &mut Tensors, arch: TextArch, d: &TextDims, i: u32) {
    let n_embd = u64::from(d.n_embd);
    let head_dim = u64::from(d.head_dim());
    let n_embd_kv = head_dim * u64::from(d.n_head_kv);
    let n_q = head_dim * u64::from(d.n_head);
    let b = |s: &str| format!("blk.{i}.{s}");
    ts.vector(b("attn_norm.weight"), n_embd, ONES);
    ts.matrix(b("attn_q.weight"), [n_embd, n_q], fan_in(n_embd));
    ts.matrix(b("attn_k.weight"), [n_embd, n_embd_kv], fan_in(n_embd));
    ts.matrix(b("attn_v.weight"), [n_embd, n_embd_kv], fan_in(n_embd));
    if arch == TextArch::Qwen2 {
        ts.vector(b("attn_q.bias"), n_q, BIAS);
        ts.vector(b("attn_k.bias"), n_embd_kv, BIAS);
        ts.vector(b("attn_v.bias"), n_embd_kv, BIAS);
    }
    ts.matrix(
        b("attn_output.weight"),
        [n_q, n_embd],
        residual(n_q, d.n_layer),
    );
    if arch == TextArch::Qwen3 {
        ts.vector(b("attn_q_norm.weight"), head_dim, ONES);
        ts.vector(b("attn_k_norm.weight"), head_dim, ONES);
    }
    ts.vector(b("ffn_norm.weight"), n_embd, ONES);
    ffn(ts, d, i);
}

fn ffn(ts: &mut Tensors, d: &TextDims, i: u32) {
    let (n_embd, n_ff) = (u64::from(d.n_embd), u64::from(d.n_ff));
    let b = |s: &str| format!("blk.{i}.{s}");
    ts.matrix(b("ffn_gate.weight"), [n_embd, n_ff], fan_in(n_embd));
    ts.matrix(b("ffn_up.weight"), [n_embd, n_ff], fan_in(n_embd));
    ts.matrix(
        b("ffn_down.weight"),
        [n_ff, n_embd],
        residual(n_ff, d.n_layer),
    );
}

/// The `qwen35.*` keys of the hybrid layout (llama.cpp `src/models/qwen35.cpp` load_hparams;
/// the converter's `Qwen3NextModel.set_gguf_parameters`).
fn hybrid_metadata(a: &str, h: &HybridDims, kv: &mut impl FnMut(&str, MetaValue)) {
    kv(
        &format!("{a}.rope.dimension_count"),
        MetaValue::U32(h.rope_dims),
    );
    kv(
        &format!("{a}.rope.dimension_sections"),
        MetaValue::Array(MetaArray::I32(
            h.rope_sections.iter().map(|&x| x as i32).collect(),
        )),
    );
    kv(
        &format!("{a}.full_attention_interval"),
        MetaValue::U32(h.full_attention_interval),
    );
    kv(
        &format!("{a}.ssm.conv_kernel"),
        MetaValue::U32(h.conv_kernel),
    );
    kv(&format!("{a}.ssm.state_size"), MetaValue::U32(h.state_size));
    kv(&format!("{a}.ssm.group_count"), MetaValue::U32(h.groups));
    kv(
        &format!("{a}.ssm.time_step_rank"),
        MetaValue::U32(h.value_heads),
    );
    kv(
        &format!("{a}.ssm.inner_size"),
        MetaValue::U32(h.inner_size()),
    );
}

/// One block of Qwen3.5 (llama.cpp `src/models/qwen35.cpp`, `create_tensor` calls): norms
/// before and after the mixer, then either gated full attention (the query projection holds
/// the query and its output gate, twice the heads' width; q/k norms) or a gated-delta-net
/// linear-attention mixer (fused q/k/v projection, z gate, short convolution kept in F32 as
/// `ggml_ssm_conv` requires, per-head decay `ssm_a` and step bias, beta/alpha projections,
/// gated RMSNorm, output), then the SwiGLU FFN.
fn qwen35_block(ts: &mut Tensors, d: &TextDims, h: &HybridDims, i: u32) {
    let n_embd = u64::from(d.n_embd);
    let b = |s: &str| format!("blk.{i}.{s}");
    ts.vector(b("attn_norm.weight"), n_embd, ONES);
    if h.is_recurrent(i) {
        let (ds, rank) = (u64::from(h.state_size), u64::from(h.value_heads));
        let inner = u64::from(h.inner_size());
        let conv = u64::from(h.conv_channels());
        ts.matrix(b("attn_qkv.weight"), [n_embd, conv], fan_in(n_embd));
        ts.matrix(b("attn_gate.weight"), [n_embd, inner], fan_in(n_embd));
        ts.fixed(
            b("ssm_conv1d.weight"),
            &[u64::from(h.conv_kernel), conv],
            GgmlType::F32,
            fan_in(u64::from(h.conv_kernel)),
        );
        ts.vector(b("ssm_dt.bias"), rank, BIAS);
        // -exp(A_log) in the converter: negative decay rates of order 1
        ts.vector(b("ssm_a"), rank, Init::Const(-1.0));
        ts.matrix(b("ssm_beta.weight"), [n_embd, rank], fan_in(n_embd));
        ts.matrix(b("ssm_alpha.weight"), [n_embd, rank], fan_in(n_embd));
        ts.vector(b("ssm_norm.weight"), ds, ONES);
        ts.matrix(
            b("ssm_out.weight"),
            [inner, n_embd],
            residual(inner, d.n_layer),
        );
    } else {
        let head_dim = u64::from(d.head_dim());
        let n_q = head_dim * u64::from(d.n_head);
        let n_kv = head_dim * u64::from(d.n_head_kv);
        ts.matrix(b("attn_q.weight"), [n_embd, 2 * n_q], fan_in(n_embd));
        ts.matrix(b("attn_k.weight"), [n_embd, n_kv], fan_in(n_embd));
        ts.matrix(b("attn_v.weight"), [n_embd, n_kv], fan_in(n_embd));
        ts.matrix(
            b("attn_output.weight"),
            [n_q, n_embd],
            residual(n_q, d.n_layer),
        );
        ts.vector(b("attn_q_norm.weight"), head_dim, ONES);
        ts.vector(b("attn_k_norm.weight"), head_dim, ONES);
    }
    ts.vector(b("post_attention_norm.weight"), n_embd, ONES);
    ffn(ts, d, i);
}
