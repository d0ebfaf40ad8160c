//! `run` and `inspect` on a tiny MiniCPM-V 2.6 pair written by a second, independent route: a
//! GGUF v3 encoder from raw little-endian bytes in this file (no `minicpmv::gguf`, no
//! `minicpmv::tools::synth`), with the keys, types and tensors derived from llama.cpp's sources as
//! bundled in `llama-cpp-sys-2` 0.1.161:
//!
//! - language model: `src/models/qwen2.cpp` (`load_arch_hparams`, `load_arch_tensors`),
//!   `src/llama-model.cpp` (`load_hparams`: `context_length`, `embedding_length`, `block_count`
//!   required; `feed_forward_length`, `head_count`, `head_count_kv`, `rope.freq_base` optional),
//!   `src/llama-vocab.cpp` (gpt2: `tokenizer.ggml.merges` must exist but may be empty; pre
//!   "qwen2"; bos/eos default to id 11 unless given);
//! - projector: `tools/mtmd/clip.cpp` (`load_hparams`: `clip.vision.*` sizes and
//!   `projection_dim` required as UINT32, `clip.minicpmv_version` INT32, `minicpmv_query_num`
//!   optional — 64 for version 3 —, `use_gelu` optional, `image_mean`/`image_std` at least 3
//!   floats; `load_tensors`: ffn up/down are swapped when `ffn_down.ne0 == n_embd`, so F != E;
//!   `resampler.pos_embed_k` required although unused), `tools/mtmd/models/minicpmv.cpp` (the
//!   resampler's head dim is 128, so D is a multiple of 128; `clip_n_mmproj_embd` is
//!   `resampler.proj.weight` ne0), `ggml/src/gguf.cpp` (`general.alignment` a UINT32 power of
//!   two; each tensor's offset is the previous one's end padded to the alignment).
//!
//! The pair deliberately differs from `minicpmv synth`: metadata in another order (tokenizer
//! first, `general.architecture` in the middle, `general.alignment` last), optional keys absent
//! (`general.name`, `general.description`, `general.file_type`, `tokenizer.chat_template`,
//! `{arch}.vocab_size`, `rope.freq_base`, `clip.minicpmv_query_num`, `clip.use_gelu`, ...),
//! special tokens before the byte tokens, bytes in byte-value order, no merges, tied
//! embeddings (no `output.weight`), F16 and F32 weight matrices mixed in one file (the patch
//! kernel F32), alignments 64 and 128, other tensor orders and other tiny dimensions.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::harness::{image, minicpmv, work_dir};

// ---------------------------------------------------------------------------------------------
// A GGUF v3 encoder from raw bytes.

/// GGUF metadata value types (gguf.h `enum gguf_type`).
const T_UINT32: u32 = 4;
const T_INT32: u32 = 5;
const T_FLOAT32: u32 = 6;
const T_BOOL: u32 = 7;
const T_STRING: u32 = 8;
const T_ARRAY: u32 = 9;

/// Tensor element types (ggml.h `enum ggml_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dtype {
    F32 = 0,
    F16 = 1,
}

struct TensorEntry {
    name: String,
    dims: Vec<u64>,
    ty: Dtype,
    data: Vec<u8>,
}

/// One GGUF file being assembled in memory (the files are a few MB).
struct Gguf {
    alignment: u64,
    n_kv: u64,
    kv: Vec<u8>,
    tensors: Vec<TensorEntry>,
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u64(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// IEEE 754 binary16 bits of `x`, rounding to nearest even (normals, subnormals, ±0, inf).
fn f16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32;
    let man = b & 0x7f_ffff;
    if exp == 0xff {
        return sign | 0x7c00 | if man != 0 { 0x200 } else { 0 };
    }
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    let round = |kept: u32, rem: u32, half: u32| -> u32 {
        if rem > half || (rem == half && kept & 1 == 1) {
            kept + 1
        } else {
            kept
        }
    };
    if e <= 0 {
        if e < -10 {
            return sign;
        }
        let m = man | 0x80_0000;
        let shift = (14 - e) as u32;
        let kept = round(m >> shift, m & ((1 << shift) - 1), 1 << (shift - 1));
        return sign | kept as u16;
    }
    let kept = round(((e as u32) << 10) | (man >> 13), man & 0x1fff, 0x1000);
    sign | kept as u16
}

impl Gguf {
    fn new(alignment: u64) -> Self {
        assert!(alignment.is_power_of_two());
        Gguf {
            alignment,
            n_kv: 0,
            kv: Vec::new(),
            tensors: Vec::new(),
        }
    }

    fn key(&mut self, key: &str, ty: u32) {
        self.n_kv += 1;
        put_str(&mut self.kv, key);
        put_u32(&mut self.kv, ty);
    }

    fn u32(&mut self, key: &str, v: u32) {
        self.key(key, T_UINT32);
        put_u32(&mut self.kv, v);
    }

    fn i32(&mut self, key: &str, v: i32) {
        self.key(key, T_INT32);
        self.kv.extend_from_slice(&v.to_le_bytes());
    }

    fn f32(&mut self, key: &str, v: f32) {
        self.key(key, T_FLOAT32);
        self.kv.extend_from_slice(&v.to_le_bytes());
    }

    fn bool(&mut self, key: &str, v: bool) {
        self.key(key, T_BOOL);
        self.kv.push(u8::from(v));
    }

    fn str(&mut self, key: &str, v: &str) {
        self.key(key, T_STRING);
        put_str(&mut self.kv, v);
    }

    fn array_header(&mut self, key: &str, elem: u32, n: usize) {
        self.key(key, T_ARRAY);
        put_u32(&mut self.kv, elem);
        put_u64(&mut self.kv, n as u64);
    }

    fn str_array(&mut self, key: &str, v: &[String]) {
        self.array_header(key, T_STRING, v.len());
        for s in v {
            put_str(&mut self.kv, s);
        }
    }

    fn i32_array(&mut self, key: &str, v: &[i32]) {
        self.array_header(key, T_INT32, v.len());
        for x in v {
            self.kv.extend_from_slice(&x.to_le_bytes());
        }
    }

    fn f32_array(&mut self, key: &str, v: &[f32]) {
        self.array_header(key, T_FLOAT32, v.len());
        for x in v {
            self.kv.extend_from_slice(&x.to_le_bytes());
        }
    }

    /// Adds a tensor (`dims` in ggml order, ne0 first) and returns its number of elements.
    fn tensor(&mut self, name: &str, dims: &[u64], ty: Dtype, values: &[f32]) -> u64 {
        let n: u64 = dims.iter().product();
        assert_eq!(n, values.len() as u64, "{name}: {dims:?}");
        let mut data = Vec::with_capacity(values.len() * 4);
        for &x in values {
            match ty {
                Dtype::F32 => data.extend_from_slice(&x.to_le_bytes()),
                Dtype::F16 => data.extend_from_slice(&f16_bits(x).to_le_bytes()),
            }
        }
        self.tensors.push(TensorEntry {
            name: name.to_string(),
            dims: dims.to_vec(),
            ty,
            data,
        });
        n
    }

    fn pad(out: &mut Vec<u8>, alignment: u64) {
        while out.len() as u64 % alignment != 0 {
            out.push(0);
        }
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(b"GGUF");
        put_u32(&mut out, 3);
        put_u64(&mut out, self.tensors.len() as u64);
        put_u64(&mut out, self.n_kv);
        out.extend_from_slice(&self.kv);
        let mut offset = 0u64;
        for t in &self.tensors {
            put_str(&mut out, &t.name);
            put_u32(&mut out, t.dims.len() as u32);
            for &d in &t.dims {
                put_u64(&mut out, d);
            }
            put_u32(&mut out, t.ty as u32);
            put_u64(&mut out, offset);
            offset = (offset + t.data.len() as u64).next_multiple_of(self.alignment);
        }
        Gguf::pad(&mut out, self.alignment);
        for t in &self.tensors {
            out.extend_from_slice(&t.data);
            Gguf::pad(&mut out, self.alignment);
        }
        out
    }

    /// Writes to a temporary name next to `path`, then renames.
    fn write(&self, path: &Path) {
        let tmp = path.with_extension("gguf.tmp");
        std::fs::write(&tmp, self.to_bytes()).expect("write gguf");
        std::fs::rename(&tmp, path).expect("rename gguf");
    }
}

// ---------------------------------------------------------------------------------------------
// Deterministic weights.

/// Knuth's MMIX linear congruential generator; the top 24 bits make a float in [0, 1).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }

    /// `n` values uniform in [-amp, amp).
    fn uniform(&mut self, n: u64, amp: f32) -> Vec<f32> {
        (0..n).map(|_| (self.next() * 2.0 - 1.0) * amp).collect()
    }
}

/// Builds one file's tensors and counts their parameters.
struct Filler<'a> {
    g: &'a mut Gguf,
    rng: Lcg,
    n_params: u64,
}

impl Filler<'_> {
    /// A matrix whose input has `dims[0]` features: amplitude 1/sqrt(fan_in).
    fn matrix(&mut self, name: &str, dims: &[u64], ty: Dtype) {
        let fan_in: u64 = dims[..dims.len() - 1].iter().product();
        self.random(name, dims, ty, 1.0 / (fan_in as f32).sqrt());
    }

    fn random(&mut self, name: &str, dims: &[u64], ty: Dtype, amp: f32) {
        let v = self.rng.uniform(dims.iter().product(), amp);
        self.n_params += self.g.tensor(name, dims, ty, &v);
    }

    fn constant(&mut self, name: &str, n: u64, value: f32) {
        let v = vec![value; n as usize];
        self.n_params += self.g.tensor(name, &[n], Dtype::F32, &v);
    }

    /// A layer norm: weight 1, bias 0 (F32 as every converter writes 1-D tensors).
    fn layer_norm(&mut self, prefix: &str, n: u64) {
        self.constant(&format!("{prefix}.weight"), n, 1.0);
        self.constant(&format!("{prefix}.bias"), n, 0.0);
    }

    fn bias(&mut self, name: &str, n: u64) {
        self.random(name, &[n], Dtype::F32, 0.01);
    }
}

// ---------------------------------------------------------------------------------------------
// The tiny MiniCPM-V 2.6 pair.

/// Text model: qwen2, n_embd 256, 4 heads (head dim 64), 2 KV heads, 1 layer.
const N_EMBD: u64 = 256;
const N_HEAD: u64 = 4;
const N_HEAD_KV: u64 = 2;
const N_FF: u64 = 640;
const N_LAYER: u64 = 1;
const N_CTX_TRAIN: u32 = 8192;

/// Vision tower: E 48, F 96, 3 heads (head dim 16), 1 layer; 448 / 14 = 32x32 patches,
/// position table 70x70 buckets.
const V_EMBD: u64 = 48;
const V_FF: u64 = 96;
const V_HEAD: u32 = 3;
const V_LAYER: u64 = 1;
const IMAGE_SIZE: u32 = 448;
const PATCH: u64 = 14;
const POS_BUCKETS: u64 = 70 * 70;
/// Resampler queries (llama.cpp's default for version 3; the key is left out).
const QUERIES: u64 = 64;

/// The special tokens, first in the vocabulary (ids 0..7).
const SPECIALS: [&str; 7] = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<image>",
    "</image>",
    "<slice>",
    "</slice>",
];

/// GPT-2's `bytes_to_unicode`: printable bytes map to themselves, the others to U+0100.. in
/// byte order. Returns the character of each byte, indexed by byte value.
fn byte_to_unicode() -> Vec<char> {
    let printable =
        |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut next = 256u32;
    (0..256u32)
        .map(|b| {
            let c = if printable(b) {
                b
            } else {
                next += 1;
                next - 1
            };
            char::from_u32(c).expect("valid char")
        })
        .collect()
}

/// What was written: the path, and the facts the tests compare with `inspect`.
#[derive(Debug, Clone)]
struct Written {
    path: PathBuf,
    n_params: u64,
    n_tensors: usize,
}

fn write_language_model(path: &Path) -> Written {
    let mut g = Gguf::new(64);

    // Vocabulary: specials (CONTROL = 3), then the 256 byte tokens (NORMAL = 1) by byte value.
    let mut tokens: Vec<String> = SPECIALS.iter().map(|s| s.to_string()).collect();
    tokens.extend(byte_to_unicode().into_iter().map(String::from));
    let mut types = vec![3i32; SPECIALS.len()];
    types.resize(tokens.len(), 1);
    let n_vocab = tokens.len() as u64;
    let id = |t: &str| SPECIALS.iter().position(|s| *s == t).unwrap() as u32;

    // Metadata: tokenizer first, architecture in the middle, alignment last.
    g.str_array("tokenizer.ggml.tokens", &tokens);
    g.u32("tokenizer.ggml.eos_token_id", id("<|im_end|>"));
    g.i32_array("tokenizer.ggml.token_type", &types);
    g.str_array("tokenizer.ggml.merges", &[]);
    g.str("tokenizer.ggml.pre", "qwen2");
    g.u32("tokenizer.ggml.bos_token_id", id("<|endoftext|>"));
    g.str("tokenizer.ggml.model", "gpt2");
    g.u32("qwen2.attention.head_count_kv", N_HEAD_KV as u32);
    g.f32("qwen2.attention.layer_norm_rms_epsilon", 1e-5);
    g.str("general.architecture", "qwen2");
    g.u32("qwen2.block_count", N_LAYER as u32);
    g.u32("qwen2.feed_forward_length", N_FF as u32);
    g.u32("qwen2.embedding_length", N_EMBD as u32);
    g.u32("qwen2.attention.head_count", N_HEAD as u32);
    g.u32("qwen2.context_length", N_CTX_TRAIN);
    g.bool("tokenizer.ggml.add_bos_token", false);
    g.u32("general.alignment", 64);

    // Tensors: blocks first, embeddings last; F16 and F32 mixed; tied output.
    let n_kv = N_EMBD / N_HEAD * N_HEAD_KV;
    let mut f = Filler {
        g: &mut g,
        rng: Lcg(0x0260_5eed),
        n_params: 0,
    };
    for i in 0..N_LAYER {
        let b = |s: &str| format!("blk.{i}.{s}");
        f.matrix(&b("ffn_down.weight"), &[N_FF, N_EMBD], Dtype::F32);
        f.matrix(&b("ffn_up.weight"), &[N_EMBD, N_FF], Dtype::F16);
        f.matrix(&b("ffn_gate.weight"), &[N_EMBD, N_FF], Dtype::F32);
        f.constant(&b("ffn_norm.weight"), N_EMBD, 1.0);
        f.matrix(&b("attn_output.weight"), &[N_EMBD, N_EMBD], Dtype::F16);
        f.bias(&b("attn_v.bias"), n_kv);
        f.matrix(&b("attn_v.weight"), &[N_EMBD, n_kv], Dtype::F32);
        f.bias(&b("attn_k.bias"), n_kv);
        f.matrix(&b("attn_k.weight"), &[N_EMBD, n_kv], Dtype::F16);
        f.bias(&b("attn_q.bias"), N_EMBD);
        f.matrix(&b("attn_q.weight"), &[N_EMBD, N_EMBD], Dtype::F32);
        f.constant(&b("attn_norm.weight"), N_EMBD, 1.0);
    }
    f.constant("output_norm.weight", N_EMBD, 1.0);
    f.matrix("token_embd.weight", &[N_EMBD, n_vocab], Dtype::F16);
    let n_params = f.n_params;
    g.write(path);
    Written {
        path: path.to_path_buf(),
        n_params,
        n_tensors: g.tensors.len(),
    }
}

/// A MiniCPM-V 2.6 (version 3) resampler projector whose output width is `d`.
fn write_mmproj(path: &Path, d: u64) -> Written {
    assert!(d % 128 == 0, "the resampler's head dim is 128");
    assert_ne!(V_FF, V_EMBD, "llama.cpp swaps ffn up/down when F == E");
    let mut g = Gguf::new(128);

    g.f32_array("clip.vision.image_std", &[0.5, 0.5, 0.5]);
    g.u32("clip.vision.block_count", V_LAYER as u32);
    g.u32("clip.vision.feed_forward_length", V_FF as u32);
    g.f32("clip.vision.attention.layer_norm_epsilon", 1e-6);
    g.u32("clip.vision.patch_size", PATCH as u32);
    g.u32("clip.vision.embedding_length", V_EMBD as u32);
    g.i32("clip.minicpmv_version", 3);
    g.str("general.architecture", "clip");
    g.u32("clip.vision.attention.head_count", V_HEAD);
    g.u32("clip.vision.projection_dim", d as u32);
    g.u32("clip.vision.image_size", IMAGE_SIZE);
    g.f32_array("clip.vision.image_mean", &[0.5, 0.5, 0.5]);
    g.str("clip.projector_type", "resampler");
    g.u32("general.alignment", 128);
    g.bool("clip.has_vision_encoder", true);

    // Tensors: resampler first, then the vision tower from the top down.
    let mut f = Filler {
        g: &mut g,
        rng: Lcg(0x3_c11f + d),
        n_params: 0,
    };
    f.random("resampler.pos_embed_k", &[d, POS_BUCKETS], Dtype::F16, 0.1);
    f.matrix("resampler.proj.weight", &[d, d], Dtype::F32);
    f.layer_norm("resampler.ln_post", d);
    for (w, ty) in [
        ("out", Dtype::F16),
        ("v", Dtype::F32),
        ("k", Dtype::F16),
        ("q", Dtype::F32),
    ] {
        f.bias(&format!("resampler.attn.{w}.bias"), d);
        f.matrix(&format!("resampler.attn.{w}.weight"), &[d, d], ty);
    }
    f.layer_norm("resampler.ln_kv", d);
    f.layer_norm("resampler.ln_q", d);
    f.matrix("resampler.kv.weight", &[V_EMBD, d], Dtype::F16);
    f.random("resampler.query", &[d, QUERIES], Dtype::F32, 0.5);
    f.layer_norm("v.post_ln", V_EMBD);
    for i in (0..V_LAYER).rev() {
        let b = |s: &str| format!("v.blk.{i}.{s}");
        f.bias(&b("ffn_down.bias"), V_EMBD);
        f.matrix(&b("ffn_down.weight"), &[V_FF, V_EMBD], Dtype::F32);
        f.bias(&b("ffn_up.bias"), V_FF);
        f.matrix(&b("ffn_up.weight"), &[V_EMBD, V_FF], Dtype::F16);
        f.layer_norm(&b("ln2"), V_EMBD);
        for (w, ty) in [
            ("attn_out", Dtype::F32),
            ("attn_v", Dtype::F32),
            ("attn_k", Dtype::F16),
            ("attn_q", Dtype::F16),
        ] {
            f.bias(&b(&format!("{w}.bias")), V_EMBD);
            f.matrix(&b(&format!("{w}.weight")), &[V_EMBD, V_EMBD], ty);
        }
        f.layer_norm(&b("ln1"), V_EMBD);
    }
    f.random(
        "v.position_embd.weight",
        &[V_EMBD, POS_BUCKETS],
        Dtype::F16,
        0.02,
    );
    f.bias("v.patch_embd.bias", V_EMBD);
    f.matrix(
        "v.patch_embd.weight",
        &[PATCH, PATCH, 3, V_EMBD],
        Dtype::F32,
    );
    let n_params = f.n_params;
    g.write(path);
    Written {
        path: path.to_path_buf(),
        n_params,
        n_tensors: g.tensors.len(),
    }
}

/// The pair `(model, mmproj with D = n_embd, mmproj with D = 128)`, written once per process.
fn pair() -> &'static (Written, Written, Written) {
    static PAIR: OnceLock<(Written, Written, Written)> = OnceLock::new();
    PAIR.get_or_init(|| {
        let dir = work_dir().join("independent");
        std::fs::create_dir_all(&dir).expect("create dir");
        (
            write_language_model(&dir.join("qwen2-tiny.gguf")),
            write_mmproj(&dir.join("mmproj-tiny.gguf"), N_EMBD),
            write_mmproj(&dir.join("mmproj-tiny-d128.gguf"), 128),
        )
    })
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[test]
fn independent_f16_encoder_matches_the_half_crate() {
    let mut rng = Lcg(7);
    let mut xs = vec![
        0.0f32,
        -0.0,
        1.0,
        -2.5,
        65504.0,
        1e-8,
        6.0e-8,
        3.0e-5,
        1e6,
        0.1,
        1.0 / 3.0,
    ];
    xs.extend(rng.uniform(2000, 1.0));
    xs.extend(rng.uniform(2000, 1e-4));
    for x in xs {
        assert_eq!(f16_bits(x), half::f16::from_f32(x).to_bits(), "{x:e}");
    }
}

#[test]
fn independent_pair_runs() {
    let (model, mmproj, _) = pair();
    let img = image(1920, 1080);
    let args = [
        "run",
        "-m",
        s(&model.path),
        "--mmproj",
        s(&mmproj.path),
        "--image",
        s(&img),
        "-p",
        "What is in this picture?",
        "-n",
        "8",
        "--temp",
        "0",
        "-t",
        "2",
        "--json",
    ];
    let a = minicpmv(args).ok().json();
    // 1920x1080 -> overview + 4x2 slices (DESIGN.md §3), 64 queries each (version 3 default).
    assert_eq!(a["n_image_chunks"], 9, "{a}");
    assert_eq!(a["n_image_tokens"], 9 * QUERIES, "{a}");
    let ids = a["token_ids"].as_array().expect("token_ids");
    assert!(!ids.is_empty(), "no tokens generated: {a}");
    assert!(
        ids.iter().all(|t| t.as_u64().is_some_and(|t| t < 263)),
        "{a}"
    );
    let b = minicpmv(args).ok().json();
    assert_eq!(a["token_ids"], b["token_ids"], "greedy runs differ");
}

#[test]
fn independent_pair_inspects() {
    let (model, mmproj, _) = pair();
    let m = minicpmv(["inspect", "--json", s(&model.path)]).ok().json();
    assert_eq!(m["kind"], "language_model", "{m}");
    assert_eq!(m["architecture"], "qwen2", "{m}");
    assert_eq!(m["n_params"], model.n_params, "{m}");
    assert_eq!(m["n_tensors"], model.n_tensors, "{m}");
    assert_eq!(m["gguf_version"], 3, "{m}");
    assert_eq!(m["n_vocab"], SPECIALS.len() + 256, "{m}");
    assert_eq!(m["has_image_tokens"], true, "{m}");
    assert!(m["name"].is_null(), "{m}");
    assert_eq!(m["hparams"]["qwen2.embedding_length"], N_EMBD, "{m}");
    assert_eq!(m["tensor_types"]["f16"]["tensors"], 4, "{m}");

    let p = minicpmv(["inspect", "--json", s(&mmproj.path)]).ok().json();
    assert_eq!(p["kind"], "projector", "{p}");
    assert_eq!(p["architecture"], "clip", "{p}");
    assert_eq!(p["minicpmv_version"], 3, "{p}");
    assert_eq!(p["n_params"], mmproj.n_params, "{p}");
    assert_eq!(p["n_tensors"], mmproj.n_tensors, "{p}");
    assert_eq!(p["hparams"]["clip.vision.embedding_length"], V_EMBD, "{p}");

    // The text form reads the same files without error.
    for w in [model, mmproj] {
        let t = minicpmv(["inspect", s(&w.path)]).ok();
        assert!(t.stdout.contains(&w.n_params.to_string()), "{}", t.stdout);
    }
}

#[test]
fn independent_pair_with_a_narrower_mmproj_is_refused() {
    let (model, _, narrow) = pair();
    let img = image(1920, 1080);
    minicpmv([
        "run",
        "-m",
        s(&model.path),
        "--mmproj",
        s(&narrow.path),
        "--image",
        s(&img),
        "-n",
        "4",
        "--temp",
        "0",
    ])
    .fails_with(&["width 128", "width 256"]);
}
