//! Structural checks of GGUF files that llama.cpp would otherwise abort on.
//!
//! llama.cpp checks a tensor's shape against the hyper-parameters when it loads it, and turns a
//! mismatch into an error. What it does not check kills the whole process (GGML_ASSERT, a
//! division by zero, a NULL tensor, an exception across the C API): a block count above its
//! layer limit, head counts that do not divide, head sizes that disagree with RoPE, negative or
//! NaN epsilons, duplicate vocabulary entries, types its CPU kernels lack, a projector width that
//! disagrees with its tensors. Each rule below is derived from the file's own tensor shapes and
//! names the llama.cpp line it guards (llama-cpp-sys-2 0.1.161's bundled sources), so the error
//! says which key or tensor is wrong before llama.cpp is called.
//!
//! Every function returns the reason as a sentence fragment; [`super::inputs`] wraps it with
//! the file's path.

use std::collections::{BTreeSet, HashSet};

use crate::gguf::{GgmlType, GgufFile, MetaArray, MetaValue, TensorInfo};
use crate::model::family::ProjectorKind;

mod hybrid;

/// llama.cpp's `LLAMA_MAX_LAYERS` (src/llama-hparams.h): `GGML_ASSERT(n_layer_all > 0 &&
/// n_layer_all <= LLAMA_MAX_LAYERS)` in `load_hparams` (src/llama-model.cpp:1330).
pub const LLAMA_MAX_LAYERS: u64 = 512;

/// Most ViT blocks we accept in a projector. clip's graph has 8192 node slots
/// (tools/mtmd/clip.cpp:163, asserted at ggml.c:7300); a ViT block takes about 30, and
/// MiniCPM-V's SigLIP has 27 blocks.
pub const MAX_VISION_LAYERS: u64 = 64;

/// Position buckets of MiniCPM-V's resampler: positions are `bucket_h * 70 + bucket_w`
/// (tools/mtmd/clip.cpp:4718-4727), so `v.position_embd.weight` needs 70 x 70 rows, and an
/// image side of more than 70 patches has no bucket of its own.
pub const POSITION_BUCKETS: u64 = 70;

/// The types ggml's CPU backend has matrix kernels for (ggml-cpu.c's `type_traits_cpu`):
/// Q8_1, Q8_K, I8, I16, I32, I64 and F64 have none, and a matmul on them calls a NULL function.
fn has_cpu_matmul(t: GgmlType) -> bool {
    !matches!(
        t,
        GgmlType::Q8_1
            | GgmlType::Q8_K
            | GgmlType::I8
            | GgmlType::I16
            | GgmlType::I32
            | GgmlType::I64
            | GgmlType::F64
    )
}

/// The shapes a language model's checks established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextShape {
    /// Transformer blocks (`{arch}.block_count`, multi-token-prediction blocks included).
    pub n_layer: u64,
    /// Attention heads.
    pub n_head: u64,
    /// Key/value heads.
    pub n_head_kv: u64,
    /// Width of one attention head.
    pub head_dim: u64,
    /// Blocks with a KV cache in an ordinary context: all of them, except the linear-attention
    /// and multi-token-prediction blocks of a hybrid model.
    pub n_attention_layers: u64,
    /// The recurrent (linear-attention) layers of a hybrid model.
    pub recurrent: Option<RecurrentShape>,
}

/// The linear-attention layers of a qwen35 model and the state llama.cpp keeps for each
/// (src/llama-hparams.cpp `n_embd_r`/`n_embd_s`, f32 in llama-memory-recurrent.cpp).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecurrentShape {
    /// Number of recurrent layers.
    pub layers: u64,
    /// Floats of convolution state per layer and sequence: `(conv_kernel - 1) * channels`.
    pub conv_floats: u64,
    /// Floats of delta-rule state per layer and sequence: `state_size * inner_size`.
    pub state_floats: u64,
}

impl RecurrentShape {
    /// Bytes of recurrent state for one sequence, all layers.
    pub fn bytes_per_sequence(&self) -> u64 {
        self.layers * (self.conv_floats + self.state_floats) * 4
    }
}

/// Integers of a scalar or an array value.
fn ints(v: &MetaValue) -> Option<Vec<i128>> {
    if let Some(a) = v.as_array() {
        return Some(match a {
            MetaArray::U8(x) => x.iter().map(|&n| n.into()).collect(),
            MetaArray::I8(x) => x.iter().map(|&n| n.into()).collect(),
            MetaArray::U16(x) => x.iter().map(|&n| n.into()).collect(),
            MetaArray::I16(x) => x.iter().map(|&n| n.into()).collect(),
            MetaArray::U32(x) => x.iter().map(|&n| n.into()).collect(),
            MetaArray::I32(x) => x.iter().map(|&n| n.into()).collect(),
            MetaArray::U64(x) => x.iter().map(|&n| n.into()).collect(),
            MetaArray::I64(x) => x.iter().map(|&n| n.into()).collect(),
            _ => return None,
        });
    }
    v.as_i64()
        .map(i128::from)
        .or_else(|| v.as_u64().map(i128::from))
        .map(|n| vec![n])
}

/// A key that may be one value or one value per layer (llama.cpp's `get_key_or_arr`): the
/// value, when it is a positive integer, the same for every layer. `None` when absent.
fn per_layer(f: &GgufFile, key: &str, n_layer: u64) -> Result<Option<u64>, String> {
    let Some(v) = f.get(key) else {
        return Ok(None);
    };
    let values = ints(v).ok_or_else(|| format!("{key} is not an integer"))?;
    let first = *values
        .first()
        .ok_or_else(|| format!("{key} is an empty array"))?;
    if values.len() > 1 {
        if values.len() as u64 != n_layer {
            return Err(format!(
                "{key} has {} values for {n_layer} layers",
                values.len()
            ));
        }
        if values.iter().any(|&x| x != first) {
            // The KV cache sizes each layer by its own value, the graph by layer 0's
            // (llama-kv-cache.cpp:1380 asserts on the difference).
            return Err(format!(
                "{key} differs between layers ({values:?}); MiniCPM-V models use one value"
            ));
        }
    }
    u64::try_from(first)
        .ok()
        .filter(|&n| n > 0)
        .map(Some)
        .ok_or_else(|| format!("{key} is {first}; it must be at least 1"))
}

/// A float key that must be finite and positive when present (`required`: also present).
fn positive_float(f: &GgufFile, key: &str, required: bool) -> Result<(), String> {
    match f.get(key) {
        None if required => Err(format!("missing {key}")),
        None => Ok(()),
        Some(v) => match v.as_f32() {
            Some(x) if x.is_finite() && x > 0.0 => Ok(()),
            Some(x) => Err(format!("{key} is {x}; it must be a finite number above 0")),
            None => Err(format!("{key} is not a number")),
        },
    }
}

/// The block indices `N` of tensors named `{prefix}N.*`.
fn block_indices(f: &GgufFile, prefix: &str) -> BTreeSet<u64> {
    f.tensors
        .iter()
        .filter_map(|t| t.name.strip_prefix(prefix)?.split('.').next()?.parse().ok())
        .collect()
}

/// `n_layer` must be the number of blocks the tensors hold, numbered from 0.
fn blocks_match(f: &GgufFile, prefix: &str, key: &str, n_layer: u64) -> Result<(), String> {
    let blocks = block_indices(f, prefix);
    let expected_max = n_layer.checked_sub(1);
    if blocks.len() as u64 != n_layer || blocks.last().copied() != expected_max {
        let found = match (blocks.first(), blocks.last()) {
            (Some(a), Some(b)) => format!("{} blocks ({prefix}{a} to {prefix}{b})", blocks.len()),
            _ => format!("no {prefix}N tensors"),
        };
        return Err(format!("{key} is {n_layer} but the file has {found}"));
    }
    Ok(())
}

/// A tensor that must exist.
fn need<'f>(f: &'f GgufFile, name: &str) -> Result<&'f TensorInfo, String> {
    f.tensor(name)
        .ok_or_else(|| format!("missing tensor {name}"))
}

/// `t` must have exactly `dims`.
fn shape_is(t: &TensorInfo, dims: &[u64]) -> Result<(), String> {
    if t.dims != dims {
        return Err(format!(
            "tensor {} has shape {:?}, {:?} was expected",
            t.name, t.dims, dims
        ));
    }
    Ok(())
}

/// Checks that hold for every tensor of both kinds of file: no zero dimension (GGUF allows
/// them, and a zero hyper-parameter would then "match" a zero-sized tensor), vectors in F32
/// (norms and biases feed ggml's CPU add/mul, which take F32 only: binary-ops.cpp:135), and
/// matrices in a type the CPU can multiply.
fn tensor_types(f: &GgufFile) -> Result<(), String> {
    for t in &f.tensors {
        if t.dims.contains(&0) {
            return Err(format!(
                "tensor {} has a zero dimension {:?}",
                t.name, t.dims
            ));
        }
        let is_vector = t.dims.iter().filter(|&&d| d > 1).count() <= 1 && t.dims.len() == 1;
        if is_vector && t.ggml_type != GgmlType::F32 {
            return Err(format!(
                "tensor {} is a vector of type {}; llama.cpp's CPU kernels need f32 for norms and biases",
                t.name,
                t.ggml_type.name()
            ));
        }
        if !has_cpu_matmul(t.ggml_type) {
            return Err(format!(
                "tensor {} has type {}, which llama.cpp's CPU backend cannot compute with",
                t.name,
                t.ggml_type.name()
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Language models (llama, qwen2, qwen3)

/// `{arch}.block_count` of a language model of any architecture: 1 to [`LLAMA_MAX_LAYERS`]
/// (src/llama-model.cpp:1330 asserts it for every architecture, in loads and in the
/// quantizer), and as many as the file's `blk.N` tensors.
pub fn check_block_count(f: &GgufFile, arch: &str) -> Result<u64, String> {
    let key = format!("{arch}.block_count");
    let n_layer = f
        .get_u64(&key)
        .ok_or_else(|| format!("missing or negative {key}"))?;
    if !(1..=LLAMA_MAX_LAYERS).contains(&n_layer) {
        return Err(format!(
            "{key} is {n_layer}; llama.cpp takes 1 to {LLAMA_MAX_LAYERS} layers"
        ));
    }
    blocks_match(f, "blk.", &key, n_layer)?;
    Ok(n_layer)
}

/// The structure of a language model of architecture `arch` (one of llama, qwen2, qwen3) with
/// embedding width `n_embd` and `n_vocab` tokens.
pub fn check_text(
    f: &GgufFile,
    arch: &str,
    n_embd: u64,
    n_vocab: u64,
) -> Result<TextShape, String> {
    tensor_types(f)?;
    let key = |k: &str| format!("{arch}.{k}");
    // The width and the vocabulary first: every other shape derives from them.
    shape_is(need(f, "token_embd.weight")?, &[n_embd, n_vocab])?;
    let n_layer = check_block_count(f, arch)?;

    // Unused by MiniCPM-V's dense models; llama.cpp asserts on their combinations
    // (llama-model.cpp:1332, 1363-1375). Qwen3.5 may carry a multi-token-prediction block
    // (checked with the rest of its layout).
    for k in [
        "expert_count",
        "expert_used_count",
        "expert_group_count",
        "expert_group_used_count",
        "nextn_predict_layers",
    ] {
        if arch == "qwen35" && k == "nextn_predict_layers" {
            continue;
        }
        if let Some(v) = f.get(&key(k)) {
            if ints(v).is_none_or(|xs| xs.iter().any(|&x| x != 0)) {
                return Err(format!(
                    "{} is set: mixture-of-experts and multi-token-prediction models are not MiniCPM-V language models",
                    key(k)
                ));
            }
        }
    }
    if let Some(v) = f.get(&key("rope.scaling.type")) {
        match v.as_str() {
            Some("none" | "linear" | "yarn" | "longrope") => {}
            other => {
                return Err(format!(
                    "{} is {other:?}; llama.cpp knows none, linear, yarn and longrope (llama-model.cpp:1422)",
                    key("rope.scaling.type")
                ))
            }
        }
    }
    if f.get_bool(&key("attention.causal")) == Some(false) {
        return Err(format!(
            "{} is false: a non-causal model cannot generate text",
            key("attention.causal")
        ));
    }

    // Heads: a zero divides by zero at ggml.c:3346, a head_count_kv that does not divide
    // head_count fails ggml_can_mul_mat at ggml.c:3354.
    let n_head = per_layer(f, &key("attention.head_count"), n_layer)?
        .ok_or_else(|| format!("missing {}", key("attention.head_count")))?;
    let n_head_kv = per_layer(f, &key("attention.head_count_kv"), n_layer)?.unwrap_or(n_head);
    if n_head_kv > n_head || n_head % n_head_kv != 0 {
        return Err(format!(
            "{} is {n_head_kv}, which does not divide {} ({n_head})",
            key("attention.head_count_kv"),
            key("attention.head_count")
        ));
    }
    per_layer(f, &key("feed_forward_length"), n_layer)?
        .ok_or_else(|| format!("missing {}", key("feed_forward_length")))?;

    // Head size: the graphs assert key, value and RoPE sizes are equal (models/llama.cpp:102,
    // qwen2.cpp:56, qwen3.cpp:56) and CPU RoPE that it is even (ggml-cpu/ops.cpp:6355).
    let head_dim = match f.get(&key("attention.key_length")) {
        Some(v) => v
            .as_u64()
            .ok_or_else(|| format!("{} is not an unsigned integer", key("attention.key_length")))?,
        None if n_embd % n_head == 0 => n_embd / n_head,
        None => {
            return Err(format!(
                "{} ({n_head}) does not divide {} ({n_embd})",
                key("attention.head_count"),
                key("embedding_length")
            ))
        }
    };
    if head_dim == 0 || head_dim % 2 != 0 {
        return Err(format!(
            "the attention head size is {head_dim} ({} or {} / {}); it must be even and at least 2",
            key("attention.key_length"),
            key("embedding_length"),
            key("attention.head_count")
        ));
    }
    let must_equal: &[&str] = if arch == "qwen35" {
        // qwen35 rotates only part of a head (models/qwen35.cpp, n_rot <= head size)
        &["attention.value_length"]
    } else {
        &["attention.value_length", "rope.dimension_count"]
    };
    for k in must_equal.iter().copied() {
        if let Some(v) = f.get(&key(k)) {
            if v.as_u64() != Some(head_dim) {
                return Err(format!(
                    "{} is {v:?}, but the key head size is {head_dim}; llama.cpp needs them equal",
                    key(k)
                ));
            }
        }
    }
    if arch == "qwen2" && n_head * head_dim != n_embd {
        // qwen2's attn_q is [E, E] and Q is reshaped to [head_dim, n_head] (llama-graph.cpp:1783).
        return Err(format!(
            "{n_head} heads of {head_dim} make {}, not the width {n_embd}",
            n_head * head_dim
        ));
    }

    // ggml-cpu/ops.cpp:4132 asserts eps >= 0 at the first decode; NaN fails it too.
    positive_float(f, &key("attention.layer_norm_rms_epsilon"), true)?;
    positive_float(f, &key("rope.freq_base"), false)?;

    let heads = Heads {
        n_head,
        n_head_kv,
        head_dim,
    };
    if arch == "qwen35" {
        return hybrid::check(f, n_embd, n_vocab, n_layer, heads);
    }
    text_tensors(f, n_embd, n_vocab, n_layer, heads)?;
    Ok(TextShape {
        n_layer,
        n_head,
        n_head_kv,
        head_dim,
        n_attention_layers: n_layer,
        recurrent: None,
    })
}

/// The attention heads of a language model.
#[derive(Debug, Clone, Copy)]
struct Heads {
    n_head: u64,
    n_head_kv: u64,
    head_dim: u64,
}

/// Shapes of the language model's tensors (llama.cpp would refuse most mismatches itself, with
/// a less direct message) and the tensors the graph uses without checking.
fn text_tensors(
    f: &GgufFile,
    n_embd: u64,
    n_vocab: u64,
    n_layer: u64,
    heads: Heads,
) -> Result<(), String> {
    output_tensors(f, n_embd, n_vocab, heads.head_dim)?;
    for i in 0..n_layer {
        shape_is(need(f, &format!("blk.{i}.attn_norm.weight"))?, &[n_embd])?;
        shape_is(need(f, &format!("blk.{i}.ffn_norm.weight"))?, &[n_embd])?;
        attention_tensors(f, i, n_embd, heads, 1)?;
        ffn_tensors(f, i, n_embd)?;
    }
    Ok(())
}

/// The output head and the optional RoPE frequency table.
fn output_tensors(f: &GgufFile, n_embd: u64, n_vocab: u64, head_dim: u64) -> Result<(), String> {
    if let Some(out) = f.tensor("output.weight") {
        shape_is(out, &[n_embd, n_vocab])?;
    } else {
        // llama-model.cpp:1800 asserts on scales of an output matrix that does not exist.
        for name in ["output.scale", "output.input_scale"] {
            if f.tensor(name).is_some() {
                return Err(format!("tensor {name} exists without output.weight"));
            }
        }
    }
    shape_is(need(f, "output_norm.weight")?, &[n_embd])?;
    if let Some(t) = f.tensor("rope_freqs.weight") {
        // Probed with ggml_rope_ext at load (llama-model-loader.cpp:996, ggml.c:4304).
        shape_is(t, &[head_dim / 2])?;
    }
    Ok(())
}

/// The attention tensors of block `i`; `q_factor` is 2 when the query projection also holds
/// an output gate (qwen35).
fn attention_tensors(
    f: &GgufFile,
    i: u64,
    n_embd: u64,
    h: Heads,
    q_factor: u64,
) -> Result<(), String> {
    let b = |s: &str| format!("blk.{i}.{s}");
    let q_width = h.n_head * h.head_dim;
    let kv_width = h.n_head_kv * h.head_dim;
    match f.tensor(&b("attn_qkv.weight")) {
        Some(qkv) => shape_is(qkv, &[n_embd, q_factor * q_width + 2 * kv_width])?,
        None => {
            shape_is(need(f, &b("attn_q.weight"))?, &[n_embd, q_factor * q_width])?;
            shape_is(need(f, &b("attn_k.weight"))?, &[n_embd, kv_width])?;
            shape_is(need(f, &b("attn_v.weight"))?, &[n_embd, kv_width])?;
        }
    }
    shape_is(need(f, &b("attn_output.weight"))?, &[q_width, n_embd])?;
    for (name, width) in [
        ("attn_q.bias", q_factor * q_width),
        ("attn_k.bias", kv_width),
        ("attn_v.bias", kv_width),
    ] {
        if let Some(t) = f.tensor(&b(name)) {
            shape_is(t, &[width])?;
        }
    }
    for name in ["attn_q_norm.weight", "attn_k_norm.weight"] {
        if let Some(t) = f.tensor(&b(name)) {
            shape_is(t, &[h.head_dim])?;
        }
    }
    Ok(())
}

/// The SwiGLU feed-forward tensors of block `i`.
fn ffn_tensors(f: &GgufFile, i: u64, n_embd: u64) -> Result<(), String> {
    let b = |s: &str| format!("blk.{i}.{s}");
    let up = need(f, &b("ffn_up.weight"))?;
    let n_ff = up.dims.get(1).copied().unwrap_or(0);
    shape_is(up, &[n_embd, n_ff])?;
    shape_is(need(f, &b("ffn_down.weight"))?, &[n_ff, n_embd])?;
    if let Some(gate) = f.tensor(&b("ffn_gate.weight")) {
        shape_is(gate, &[n_embd, n_ff])?;
    }
    Ok(())
}

/// The vocabulary llama.cpp builds from the file, for a language model with `tokens`.
pub fn check_vocab(f: &GgufFile, tokens: &[String]) -> Result<(), String> {
    let n_vocab = tokens.len() as u64;
    // llama-vocab.cpp:1978-1998: "none"/"no_vocab" leave the tokenizer unset, and tokenizing
    // then asserts (3456); unknown names are refused by llama.cpp itself.
    match f.get_str("tokenizer.ggml.model") {
        Some("gpt2" | "llama") => {}
        Some(other) => {
            return Err(format!(
                "tokenizer.ggml.model is {other:?}; MiniCPM-V language models use \"gpt2\" (BPE) or \"llama\" (SentencePiece)"
            ))
        }
        None => return Err("missing tokenizer.ggml.model".into()),
    }
    // llama-vocab.cpp:2578 asserts the token-to-id map is as long as the token list; empty
    // entries are renamed "[EMPTY_i]" first (2548).
    let mut seen = HashSet::with_capacity(tokens.len());
    for (i, t) in tokens.iter().enumerate() {
        let text = if t.is_empty() {
            std::borrow::Cow::Owned(format!("[EMPTY_{i}]"))
        } else {
            std::borrow::Cow::Borrowed(t.as_str())
        };
        if !seen.insert(text.clone()) {
            return Err(format!(
                "the vocabulary has the token {text:?} twice (the second time at id {i}); llama.cpp needs unique tokens"
            ));
        }
    }
    if f.get_str("tokenizer.ggml.model") == Some("llama") {
        // SentencePiece falls back to byte tokens and throws out of llama_tokenize without
        // them (llama-vocab.cpp:4064).
        for b in 0..=255u8 {
            let name = format!("<0x{b:02X}>");
            if !seen.contains(name.as_str()) {
                return Err(format!(
                    "the SentencePiece vocabulary lacks the byte token {name}"
                ));
            }
        }
    } else if !seen.contains("Ċ") {
        // mtmd looks up the token of "\n" (byte-level BPE spells it Ċ) to separate rows of
        // slices (mtmd.cpp:656-673).
        return Err("the vocabulary has no token for a newline (\"Ċ\")".into());
    }
    for (k, v) in &f.metadata {
        if k.starts_with("tokenizer.ggml.") && k.ends_with("_token_id") {
            // An id past the vocabulary leaves BOS/EOS unset, and tokenizing with them then
            // asserts (llama-vocab.cpp:3477, 595).
            match v.as_u64() {
                Some(id) if id < n_vocab => {}
                _ => {
                    return Err(format!(
                        "{k} is {v:?}; the vocabulary has ids 0 to {}",
                        n_vocab.saturating_sub(1)
                    ))
                }
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Projectors (clip, projector type "resampler" or "minicpmv4_6")

/// The structure of a MiniCPM-V projector of kind `projector` whose metadata gave
/// `image_size`, `patch_size` and the output width `n_embd_out` (the width of
/// `resampler.query`, or `mm.down.weight`'s second dimension).
pub fn check_vision(
    f: &GgufFile,
    image_size: u64,
    patch_size: u64,
    projector: &ProjectorKind,
    n_embd_out: u64,
) -> Result<(), String> {
    tensor_types(f)?;
    for key in ["clip.has_audio_encoder", "clip.has_gen_audio_encoder"] {
        if f.get_bool(key) == Some(true) {
            // clip_init would build an audio model from the same file (clip.cpp:4024-4040).
            return Err(format!(
                "{key} is true: not a vision-only MiniCPM-V projector"
            ));
        }
    }
    if f.get("clip.vision.image_grid_pinpoints").is_some() {
        // Switches mtmd's slicer to a path whose chunk count it then asserts (mtmd.cpp:1440).
        return Err(
            "clip.vision.image_grid_pinpoints is set; MiniCPM-V projectors have none".into(),
        );
    }
    if f.tensor("v.class_embd").is_some() {
        // models/minicpmv.cpp:4 asserts it away for the resampler; for 4.6 it adds a position
        // the merger's window indices do not cover (clip.cpp:4513, aborting at 4538).
        return Err(
            "tensor v.class_embd exists; MiniCPM-V's vision tower has no class token".into(),
        );
    }
    if image_size / patch_size > POSITION_BUCKETS {
        return Err(format!(
            "clip.vision.image_size / patch_size is {image_size} / {patch_size}: more than {POSITION_BUCKETS} patches per side"
        ));
    }
    positive_float(f, "clip.vision.attention.layer_norm_epsilon", false)?;
    for key in ["clip.vision.image_mean", "clip.vision.image_std"] {
        if let Some(a) = f.get_f32_array(key) {
            let std = key.ends_with("std");
            if let Some(x) = a.iter().find(|x| !x.is_finite() || (std && **x <= 0.0)) {
                return Err(format!(
                    "{key} holds {x}; the values must be finite{}",
                    if std { " and above 0" } else { "" }
                ));
            }
        }
    }

    // The vision tower: the patch kernel fixes the width E and the patch size.
    let n_embd = f
        .get_u64("clip.vision.embedding_length")
        .ok_or("missing clip.vision.embedding_length")?;
    let patch = need(f, "v.patch_embd.weight")?;
    shape_is(patch, &[patch_size, patch_size, 3, n_embd])?;
    if !matches!(
        patch.ggml_type,
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16
    ) {
        return Err(format!(
            "tensor v.patch_embd.weight has type {}; the patch convolution takes f32, f16 or bf16",
            patch.ggml_type.name()
        ));
    }
    if let Some(t) = f.tensor("v.patch_embd.bias") {
        shape_is(t, &[n_embd])?;
    }
    let pos = need(f, "v.position_embd.weight")?;
    let buckets = POSITION_BUCKETS * POSITION_BUCKETS;
    if pos.dims.len() != 2 || pos.dims[0] != n_embd || pos.dims[1] < buckets {
        return Err(format!(
            "tensor v.position_embd.weight has shape {:?}; [{n_embd}, {buckets}] was expected",
            pos.dims
        ));
    }
    let n_layer = vision_blocks(f, n_embd)?;
    match *projector {
        ProjectorKind::Resampler { .. } => resampler(f, n_embd, n_embd_out),
        ProjectorKind::Merger { scale_factor } => {
            let side = patch_size * u64::from(scale_factor);
            if image_size % side != 0 {
                // The merger's 2x2 gathers truncate on a grid they do not divide
                // (clip.cpp:4755-4844), and the warm-up and small images use image_size.
                return Err(format!(
                    "clip.vision.image_size {image_size} is not a multiple of {side} (patch size {patch_size} x scale factor {scale_factor})"
                ));
            }
            merger(f, n_embd, n_layer, n_embd_out, scale_factor)
        }
    }
}

/// The ViT blocks: count, heads and shapes; returns the block count.
fn vision_blocks(f: &GgufFile, n_embd: u64) -> Result<u64, String> {
    let n_layer = f
        .get_u64("clip.vision.block_count")
        .ok_or("missing clip.vision.block_count")?;
    if !(1..=MAX_VISION_LAYERS).contains(&n_layer) {
        return Err(format!(
            "clip.vision.block_count is {n_layer}; 1 to {MAX_VISION_LAYERS} are supported"
        ));
    }
    blocks_match(f, "v.blk.", "clip.vision.block_count", n_layer)?;
    // Q, K and V are reshaped to [head_dim, n_head] (clip.cpp:453-454, ggml.c:3778).
    let n_head = f
        .get_u64("clip.vision.attention.head_count")
        .filter(|&h| h > 0)
        .ok_or("missing or zero clip.vision.attention.head_count")?;
    let head_dim = match f.get_u64("clip.vision.attention.head_dim") {
        Some(d) if d > 0 => d,
        Some(d) => return Err(format!("clip.vision.attention.head_dim is {d}")),
        None if n_head <= n_embd && n_embd % n_head == 0 => n_embd / n_head,
        None => {
            return Err(format!(
                "clip.vision.attention.head_count ({n_head}) does not divide clip.vision.embedding_length ({n_embd})"
            ))
        }
    };
    let n_head_kv = match f.get_u64("clip.vision.attention.head_count_kv") {
        None => n_head,
        Some(h) if h > 0 && h <= n_head && n_head % h == 0 => h,
        Some(h) => {
            return Err(format!(
                "clip.vision.attention.head_count_kv is {h}, which does not divide head_count ({n_head})"
            ))
        }
    };
    let (q_width, kv_width) = (n_head * head_dim, n_head_kv * head_dim);
    let n_ff = f
        .get_u64("clip.vision.feed_forward_length")
        .ok_or("missing clip.vision.feed_forward_length")?;
    for i in 0..n_layer {
        let b = |s: &str| format!("v.blk.{i}.{s}");
        match f.tensor(&b("attn_qkv.weight")) {
            Some(qkv) => shape_is(qkv, &[n_embd, q_width + 2 * kv_width])?,
            None => {
                shape_is(need(f, &b("attn_q.weight"))?, &[n_embd, q_width])?;
                shape_is(need(f, &b("attn_k.weight"))?, &[n_embd, kv_width])?;
                shape_is(need(f, &b("attn_v.weight"))?, &[n_embd, kv_width])?;
            }
        }
        for (name, width) in [
            ("attn_q.bias", q_width),
            ("attn_k.bias", kv_width),
            ("attn_v.bias", kv_width),
        ] {
            if let Some(t) = f.tensor(&b(name)) {
                shape_is(t, &[width])?;
            }
        }
        shape_is(need(f, &b("attn_out.weight"))?, &[q_width, n_embd])?;
        for name in [
            "attn_out.bias",
            "ln1.weight",
            "ln1.bias",
            "ln2.weight",
            "ln2.bias",
        ] {
            if let Some(t) = f.tensor(&b(name)) {
                shape_is(t, &[n_embd])?;
            }
        }
        // clip.cpp:2335 accepts the pair in either orientation (legacy conversions swapped
        // up and down), as long as together they map E to F and back.
        let up = need(f, &b("ffn_up.weight"))?;
        let down = need(f, &b("ffn_down.weight"))?;
        let pair = (up.dims.as_slice(), down.dims.as_slice());
        if pair != ([n_embd, n_ff].as_slice(), [n_ff, n_embd].as_slice())
            && pair != ([n_ff, n_embd].as_slice(), [n_embd, n_ff].as_slice())
        {
            return Err(format!(
                "tensors {} {:?} and {} {:?} do not map the width {n_embd} to the feed-forward width {n_ff} and back",
                up.name, up.dims, down.name, down.dims
            ));
        }
    }
    for name in [
        "v.post_ln.weight",
        "v.post_ln.bias",
        "v.pre_ln.weight",
        "v.pre_ln.bias",
    ] {
        if let Some(t) = f.tensor(name) {
            shape_is(t, &[n_embd])?;
        }
    }
    Ok(n_layer)
}

/// The resampler: learned queries of width D attend to the vision tower's output.
fn resampler(f: &GgufFile, n_embd: u64, d: u64) -> Result<(), String> {
    let query = need(f, "resampler.query")?;
    if query.dims.len() != 2 || query.ggml_type != GgmlType::F32 {
        // It is layer-normed, which ggml's CPU does in f32 only (ops.cpp:4092).
        return Err(format!(
            "tensor resampler.query must be a 2-D f32 matrix; it is {:?} {}",
            query.dims,
            query.ggml_type.name()
        ));
    }
    if d % 128 != 0 {
        // The resampler's attention has a fixed head size of 128 (models/minicpmv.cpp:75-91).
        return Err(format!(
            "the resampler width {d} (resampler.query) is not a multiple of 128"
        ));
    }
    shape_is(need(f, "resampler.kv.weight")?, &[n_embd, d])?;
    for norm in ["ln_q", "ln_kv", "ln_post"] {
        shape_is(need(f, &format!("resampler.{norm}.weight"))?, &[d])?;
        shape_is(need(f, &format!("resampler.{norm}.bias"))?, &[d])?;
    }
    for p in ["q", "k", "v", "out"] {
        shape_is(need(f, &format!("resampler.attn.{p}.weight"))?, &[d, d])?;
        shape_is(need(f, &format!("resampler.attn.{p}.bias"))?, &[d])?;
    }
    // clip reports the width as proj's ne0 but produces ne1 (clip.cpp:5843 aborts on the
    // difference).
    shape_is(need(f, "resampler.proj.weight")?, &[d, d])?;
    Ok(())
}

/// MiniCPM-V 4.6's merger projector (tools/mtmd/models/minicpmv.cpp `clip_graph_minicpmv4_6`,
/// loaded at clip.cpp:2450-2482): the window-attention ViT merger (needed with scale factor 4)
/// and the final 2x2 merger. The graph uses the tower's q, k and v separately, with no fused
/// path, and `clip.vision.wa_layer_indexes` names the block the ViT merger follows.
fn merger(
    f: &GgufFile,
    n_embd: u64,
    n_layer: u64,
    d: u64,
    scale_factor: u32,
) -> Result<(), String> {
    if let Some(t) = f
        .tensors
        .iter()
        .find(|t| t.name.ends_with(".attn_qkv.weight"))
    {
        return Err(format!(
            "tensor {} is a fused q/k/v projection; MiniCPM-V 4.6's graph needs attn_q, attn_k and attn_v",
            t.name
        ));
    }
    let key = "clip.vision.wa_layer_indexes";
    match f.get(key) {
        None => {}
        Some(MetaValue::Array(MetaArray::I32(v))) => match v.first() {
            Some(&l) if l >= 0 && (l as u64) < n_layer => {}
            Some(&l) => {
                return Err(format!(
                    "{key} is {l}; the ViT merger must follow one of the {n_layer} blocks"
                ))
            }
            None => return Err(format!("{key} is empty")),
        },
        Some(_) => return Err(format!("{key} must be an array of i32")),
    }
    let e4 = 4 * n_embd;
    if scale_factor == 4 {
        for name in ["ln1.weight", "ln1.bias", "attn_out.bias"] {
            optional_shape(
                f,
                &format!("v.vit_merger.{name}"),
                &[n_embd],
                name.starts_with("ln1"),
            )?;
        }
        for p in ["q", "k", "v"] {
            shape_is(
                need(f, &format!("v.vit_merger.attn_{p}.weight"))?,
                &[n_embd, n_embd],
            )?;
            optional_shape(f, &format!("v.vit_merger.attn_{p}.bias"), &[n_embd], false)?;
        }
        shape_is(need(f, "v.vit_merger.attn_out.weight")?, &[n_embd, n_embd])?;
        for name in ["ds_ln.weight", "ds_ln.bias"] {
            shape_is(need(f, &format!("v.vit_merger.{name}"))?, &[e4])?;
        }
        let up = need(f, "v.vit_merger.ds_ffn_up.weight")?;
        let hidden = up.dims.get(1).copied().unwrap_or(0);
        shape_is(up, &[e4, hidden])?;
        optional_shape(f, "v.vit_merger.ds_ffn_up.bias", &[hidden], false)?;
        shape_is(
            need(f, "v.vit_merger.ds_ffn_down.weight")?,
            &[hidden, n_embd],
        )?;
        optional_shape(f, "v.vit_merger.ds_ffn_down.bias", &[n_embd], false)?;
    }
    shape_is(need(f, "mm.input_norm.weight")?, &[e4])?;
    optional_shape(f, "mm.input_norm.bias", &[e4], false)?;
    let up = need(f, "mm.up.weight")?;
    let hidden = up.dims.get(1).copied().unwrap_or(0);
    shape_is(up, &[e4, hidden])?;
    optional_shape(f, "mm.up.bias", &[hidden], false)?;
    shape_is(need(f, "mm.down.weight")?, &[hidden, d])?;
    optional_shape(f, "mm.down.bias", &[d], false)?;
    Ok(())
}

/// A tensor that must have `dims` when present (and be present when `required`).
fn optional_shape(f: &GgufFile, name: &str, dims: &[u64], required: bool) -> Result<(), String> {
    match f.tensor(name) {
        Some(t) => shape_is(t, dims),
        None if required => Err(format!("missing tensor {name}")),
        None => Ok(()),
    }
}
