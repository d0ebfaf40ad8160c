//! Qwen3.5 (`qwen35`, MiniCPM-V 4.6's language model): gated-delta-net linear attention in
//! most layers, gated full attention every `full_attention_interval`-th layer, and an optional
//! multi-token-prediction block at the end. What llama.cpp's qwen35 code (src/models/qwen35.cpp
//! and delta-net-base.cpp of llama-cpp-sys-2 0.1.161) relies on without checking is checked
//! here: a zero interval divides by zero, mismatched state widths abort a reshape, a missing
//! fused projection is a NULL tensor in the graph, an F16 convolution kernel aborts
//! `ggml_ssm_conv`.

use super::{
    attention_tensors, ffn_tensors, ints, need, output_tensors, shape_is, GgufFile, Heads,
    RecurrentShape, TextShape,
};
use crate::gguf::GgmlType;

/// The keys of the hybrid layout, as `qwen35.{name}`.
struct Keys<'f> {
    f: &'f GgufFile,
}

impl Keys<'_> {
    fn positive(&self, name: &str) -> Result<u64, String> {
        let key = format!("qwen35.{name}");
        match self.f.get(&key).map(|v| v.as_u64()) {
            None => Err(format!("missing {key} (Qwen3.5's linear-attention layout)")),
            Some(Some(n)) if n > 0 => Ok(n),
            Some(Some(n)) => Err(format!("{key} is {n}; it must be at least 1")),
            Some(None) => Err(format!("{key} is not an unsigned integer")),
        }
    }

    fn optional(&self, name: &str, default: u64) -> Result<u64, String> {
        if self.f.get(&format!("qwen35.{name}")).is_none() {
            return Ok(default);
        }
        self.positive(name)
    }
}

/// The structure of a qwen35 language model (the generic keys were checked by the caller).
pub(super) fn check(
    f: &GgufFile,
    n_embd: u64,
    n_vocab: u64,
    n_layer_all: u64,
    heads: Heads,
) -> Result<TextShape, String> {
    let k = Keys { f };
    // llama-model.cpp:1331-1332 asserts nextn <= block_count; the trunk needs one layer.
    let nextn = match f.get("qwen35.nextn_predict_layers") {
        None => 0,
        Some(v) => v
            .as_u64()
            .ok_or("qwen35.nextn_predict_layers is not an unsigned integer")?,
    };
    if nextn >= n_layer_all {
        return Err(format!(
            "qwen35.nextn_predict_layers is {nextn} of {n_layer_all} blocks; the model needs at least one ordinary block"
        ));
    }
    let n_layer = n_layer_all - nextn;

    // The graph asserts equal key and value head sizes (qwen35.cpp:141, 275).
    let value_length = k.optional("attention.value_length", heads.head_dim)?;
    if value_length != heads.head_dim {
        return Err(format!(
            "qwen35.attention.value_length is {value_length} but key_length is {}; llama.cpp needs them equal",
            heads.head_dim
        ));
    }
    let n_rot = k.optional("rope.dimension_count", heads.head_dim)?;
    if n_rot % 2 != 0 || n_rot > heads.head_dim {
        return Err(format!(
            "qwen35.rope.dimension_count is {n_rot}; it must be even and at most the head size {}",
            heads.head_dim
        ));
    }
    rope_sections(f)?;

    let conv_kernel = k.positive("ssm.conv_kernel")?;
    let inner = k.positive("ssm.inner_size")?;
    let state = k.positive("ssm.state_size")?;
    let value_heads = k.positive("ssm.time_step_rank")?;
    let groups = k.positive("ssm.group_count")?;
    if conv_kernel < 2 {
        return Err(format!(
            "qwen35.ssm.conv_kernel is {conv_kernel}; the short convolution needs at least 2"
        ));
    }
    // The tensors use head width = state size, the graph d_inner / value heads
    // (qwen35.cpp:59-65 and 355-402): they must agree, or a reshape aborts.
    if inner != state * value_heads {
        return Err(format!(
            "qwen35.ssm.inner_size is {inner}, but state_size {state} x time_step_rank {value_heads} = {}",
            state * value_heads
        ));
    }
    // delta-net-base.cpp:33-43: value heads are a multiple of key heads.
    if value_heads % groups != 0 {
        return Err(format!(
            "qwen35.ssm.time_step_rank {value_heads} is not a multiple of ssm.group_count {groups}"
        ));
    }
    let recurrent = recurrent_layers(f, n_layer, n_layer_all)?;

    output_tensors(f, n_embd, n_vocab, heads.head_dim)?;
    let conv_channels = 2 * state * groups + inner;
    for i in 0..n_layer_all {
        let b = |s: &str| format!("blk.{i}.{s}");
        shape_is(need(f, &b("attn_norm.weight"))?, &[n_embd])?;
        shape_is(need(f, &b("post_attention_norm.weight"))?, &[n_embd])?;
        if recurrent[i as usize] {
            let ssm = SsmDims {
                n_embd,
                conv_kernel,
                conv_channels,
                inner,
                state,
                value_heads,
            };
            linear_attention_tensors(f, i, ssm)?;
        } else {
            attention_tensors(f, i, n_embd, heads, 2)?;
        }
        ffn_tensors(f, i, n_embd)?;
    }
    let n_recurrent = recurrent.iter().filter(|&&r| r).count() as u64;
    Ok(TextShape {
        n_layer: n_layer_all,
        n_head: heads.n_head,
        n_head_kv: heads.n_head_kv,
        head_dim: heads.head_dim,
        n_attention_layers: n_layer - n_recurrent,
        recurrent: Some(RecurrentShape {
            layers: n_recurrent,
            conv_floats: (conv_kernel - 1) * conv_channels,
            state_floats: state * inner,
        }),
    })
}

/// `qwen35.rope.dimension_sections`: one value or exactly 4 (llama-model-loader's
/// `get_key_or_arr(..., 4, true)` throws otherwise), each at least 0.
fn rope_sections(f: &GgufFile) -> Result<(), String> {
    let key = "qwen35.rope.dimension_sections";
    let v = f
        .get(key)
        .ok_or_else(|| format!("missing {key} (the multi-section RoPE layout)"))?;
    let values = ints(v).ok_or_else(|| format!("{key} is not an integer array"))?;
    if v.as_array().is_some() && values.len() != 4 {
        return Err(format!(
            "{key} has {} values; llama.cpp needs 4",
            values.len()
        ));
    }
    if values
        .iter()
        .any(|&x| !(0..=i128::from(i32::MAX)).contains(&x))
    {
        return Err(format!(
            "{key} is {values:?}; the sections cannot be negative"
        ));
    }
    Ok(())
}

/// Which of the trunk's layers are recurrent: `qwen35.attention.recurrent_layers` (one flag
/// per block, multi-token-prediction blocks included) or every layer but each
/// `full_attention_interval`-th (qwen35.cpp:17-23; a zero interval divides by zero).
fn recurrent_layers(f: &GgufFile, n_layer: u64, n_layer_all: u64) -> Result<Vec<bool>, String> {
    let key = "qwen35.attention.recurrent_layers";
    if let Some(v) = f.get(key) {
        let flags = ints(v).ok_or_else(|| format!("{key} is not an array of flags"))?;
        if flags.len() as u64 != n_layer_all {
            return Err(format!(
                "{key} has {} flags for {n_layer_all} blocks",
                flags.len()
            ));
        }
        return Ok(flags
            .iter()
            .enumerate()
            .map(|(i, &x)| x != 0 && (i as u64) < n_layer)
            .collect());
    }
    let interval = Keys { f }.optional("full_attention_interval", 4)?;
    Ok((0..n_layer_all)
        .map(|i| i < n_layer && (i + 1) % interval != 0)
        .collect())
}

/// The widths of a linear-attention layer.
#[derive(Debug, Clone, Copy)]
struct SsmDims {
    n_embd: u64,
    conv_kernel: u64,
    conv_channels: u64,
    inner: u64,
    state: u64,
    value_heads: u64,
}

/// The tensors of one gated-delta-net layer (qwen35.cpp:77-89). The fused q/k/v and gate
/// projections are loaded as optional but used unconditionally (qwen35.cpp:247-251), so they
/// are required here.
fn linear_attention_tensors(f: &GgufFile, i: u64, d: SsmDims) -> Result<(), String> {
    let b = |s: &str| format!("blk.{i}.{s}");
    shape_is(
        need(f, &b("attn_qkv.weight"))?,
        &[d.n_embd, d.conv_channels],
    )?;
    shape_is(need(f, &b("attn_gate.weight"))?, &[d.n_embd, d.inner])?;
    let conv = need(f, &b("ssm_conv1d.weight"))?;
    shape_is(conv, &[d.conv_kernel, d.conv_channels])?;
    if conv.ggml_type != GgmlType::F32 {
        // ggml-cpu ops.cpp ggml_compute_forward_ssm_conv_f32 asserts f32 weights.
        return Err(format!(
            "tensor {} has type {}; llama.cpp's short convolution needs f32",
            conv.name,
            conv.ggml_type.name()
        ));
    }
    shape_is(need(f, &b("ssm_dt.bias"))?, &[d.value_heads])?;
    shape_is(need(f, &b("ssm_a"))?, &[d.value_heads])?;
    shape_is(need(f, &b("ssm_beta.weight"))?, &[d.n_embd, d.value_heads])?;
    shape_is(need(f, &b("ssm_alpha.weight"))?, &[d.n_embd, d.value_heads])?;
    shape_is(need(f, &b("ssm_norm.weight"))?, &[d.state])?;
    shape_is(need(f, &b("ssm_out.weight"))?, &[d.inner, d.n_embd])?;
    Ok(())
}
