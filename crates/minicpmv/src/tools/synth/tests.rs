//! Tests of the synthetic pairs: plans, files, weights.
use super::vocab::TOKEN_CONTROL;
use super::*;
use crate::gguf::{GgufFile, MetaArray};
use crate::model::family::TextArch;

/// Keys and the value types llama.cpp reads them with (clip.cpp get_u32/get_i32/get_f32/
/// get_bool/get_arr_f32; llama-model-loader get_key).
const MMPROJ_KEYS: [(&str, &str); 16] = [
    ("general.architecture", "string"),
    ("general.file_type", "u32"),
    ("clip.projector_type", "string"),
    ("clip.has_vision_encoder", "bool"),
    ("clip.use_gelu", "bool"),
    ("clip.vision.image_size", "u32"),
    ("clip.vision.patch_size", "u32"),
    ("clip.vision.embedding_length", "u32"),
    ("clip.vision.feed_forward_length", "u32"),
    ("clip.vision.block_count", "u32"),
    ("clip.vision.projection_dim", "u32"),
    ("clip.vision.attention.head_count", "u32"),
    ("clip.vision.attention.layer_norm_epsilon", "f32"),
    ("clip.vision.image_mean", "array[f32]"),
    ("clip.vision.image_std", "array[f32]"),
    ("general.name", "string"),
];

fn text_keys(arch: &str) -> Vec<(String, &'static str)> {
    let mut v: Vec<(String, &'static str)> = [
        ("context_length", "u32"),
        ("embedding_length", "u32"),
        ("block_count", "u32"),
        ("feed_forward_length", "u32"),
        ("attention.head_count", "u32"),
        ("attention.head_count_kv", "u32"),
        ("rope.freq_base", "f32"),
        ("attention.layer_norm_rms_epsilon", "f32"),
    ]
    .iter()
    .map(|(k, t)| (format!("{arch}.{k}"), *t))
    .collect();
    for (k, t) in [
        ("general.architecture", "string"),
        ("general.file_type", "u32"),
        ("tokenizer.ggml.model", "string"),
        ("tokenizer.ggml.pre", "string"),
        ("tokenizer.ggml.tokens", "array[string]"),
        ("tokenizer.ggml.token_type", "array[i32]"),
        ("tokenizer.ggml.merges", "array[string]"),
        ("tokenizer.ggml.bos_token_id", "u32"),
        ("tokenizer.ggml.eos_token_id", "u32"),
        ("tokenizer.ggml.eot_token_id", "u32"),
        ("tokenizer.ggml.padding_token_id", "u32"),
        ("tokenizer.ggml.add_bos_token", "bool"),
        ("tokenizer.chat_template", "string"),
    ] {
        v.push((k.to_string(), t));
    }
    v
}

fn check_types(file: &GgufFile, keys: &[(String, &'static str)]) {
    for (k, ty) in keys {
        let v = file
            .get(k)
            .unwrap_or_else(|| panic!("{}: missing {k}", file.path.display()));
        assert_eq!(v.type_name(), *ty, "{}: {k}", file.path.display());
    }
}

fn tiny(version: Version, dir: &Path, seed: u64) -> SynthOutput {
    synth(&SynthOptions {
        version,
        scale: Scale::Tiny,
        out_dir: dir.to_path_buf(),
        dtype: WeightType::F16,
        seed,
        scale_factor: None,
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn tiny_pairs_for_all_versions() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for v in Version::ALL {
        let spec = family::spec(v);
        let dir = tmp.path().join(v.id());
        let out = tiny(v, &dir, 7);
        let p = plan(v, Scale::Tiny, WeightType::F16).expect("plan");
        for (path, bytes) in [
            (&out.model, out.model_bytes),
            (&out.mmproj, out.mmproj_bytes),
        ] {
            assert_eq!(std::fs::metadata(path).expect("exists").len(), bytes);
            assert!((100_000..20_000_000).contains(&bytes), "{v}: {bytes} bytes");
        }

        let m = GgufFile::open(&out.model).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.architecture(), Some(spec.text_arch.as_str()));
        check_types(&m, &text_keys(spec.text_arch.as_str()));
        assert_eq!(m.tensors.len(), p.model.tensors.len());
        assert_eq!(m.n_params(), out.text_params);
        let d = &spec.text.tiny;
        // per block: llama 9, qwen2 +3 biases, qwen3 +2 q/k norms; qwen35 14 for a
        // linear-attention block, 11 for a full-attention one (qwen35.cpp create_tensor)
        let n_block_tensors: usize = (0..d.n_layer)
            .map(|il| match (spec.text_arch, &d.hybrid) {
                (TextArch::Llama, _) => 9,
                (TextArch::Qwen2, _) => 12,
                (TextArch::Qwen3, _) => 11,
                (TextArch::Qwen35, Some(h)) if h.is_recurrent(il) => 14,
                (TextArch::Qwen35, _) => 11,
            })
            .sum();
        let n_global = if d.tied_embeddings { 2 } else { 3 };
        assert_eq!(m.tensors.len(), n_global + n_block_tensors, "{v}");
        let tokens = m.get_str_array("tokenizer.ggml.tokens").expect("tokens");
        let emb = m.tensor("token_embd.weight").expect("token_embd");
        assert_eq!(emb.dims, vec![u64::from(d.n_embd), tokens.len() as u64]);
        for (name, text) in spec.tokens.roles() {
            let key = match name {
                "bos" => "tokenizer.ggml.bos_token_id",
                "eos" => "tokenizer.ggml.eos_token_id",
                "eot" => "tokenizer.ggml.eot_token_id",
                "pad" => "tokenizer.ggml.padding_token_id",
                "unk" => "tokenizer.ggml.unknown_token_id",
                _ => continue,
            };
            let id = m.get_u64(key).expect("id") as usize;
            assert_eq!(tokens[id], text, "{v} {name}");
        }
        let types = match m.get("tokenizer.ggml.token_type") {
            Some(MetaValue::Array(MetaArray::I32(t))) => t.clone(),
            _ => panic!("token types"),
        };
        for special in &spec.tokens.control {
            let id = tokens
                .iter()
                .position(|t| t == special)
                .expect("special present");
            assert_eq!(types[id], TOKEN_CONTROL, "{v} {special}");
        }
        let uniq: std::collections::HashSet<&String> = tokens.iter().collect();
        assert_eq!(uniq.len(), tokens.len(), "{v}: token strings are unique");
        assert!(tokens.iter().any(|t| t == "\u{10A}"), "newline byte token");

        let mp = GgufFile::open(&out.mmproj).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(mp.architecture(), Some("clip"));
        let keys: Vec<(String, &str)> = MMPROJ_KEYS
            .iter()
            .map(|(k, t)| (k.to_string(), *t))
            .collect();
        check_types(&mp, &keys);
        assert_eq!(
            mp.get_str("clip.projector_type"),
            Some(spec.projector.type_name())
        );
        let vd = &spec.vision.tiny;
        assert_eq!(mp.tensors.len(), p.mmproj.tensors.len());
        assert_eq!(mp.n_params(), out.vision_params);
        match spec.projector {
            ProjectorKind::Resampler {
                minicpmv_version,
                query_tokens,
            } => {
                assert_eq!(
                    mp.get_i64("clip.minicpmv_version"),
                    Some(i64::from(minicpmv_version))
                );
                assert_eq!(
                    mp.get_u64("clip.minicpmv_query_num"),
                    Some(u64::from(query_tokens))
                );
                assert_eq!(mp.tensors.len(), 5 + 16 * vd.n_layer as usize + 18, "{v}");
                let proj = mp.tensor("resampler.proj.weight").expect("proj");
                assert_eq!(proj.dims[0], u64::from(d.n_embd), "mmproj width == n_embd");
                let query = mp.tensor("resampler.query").expect("query");
                assert_eq!(query.dims, vec![128, u64::from(query_tokens)]);
            }
            ProjectorKind::Merger { scale_factor } => {
                assert_eq!(
                    mp.get_u64("clip.vision.projector.scale_factor"),
                    Some(u64::from(scale_factor))
                );
                assert_eq!(mp.get("clip.minicpmv_version"), None, "{v}");
                // tower, then 16 window-attention merger and 6 final merger tensors
                assert_eq!(mp.tensors.len(), 5 + 16 * vd.n_layer as usize + 22, "{v}");
                let down = mp.tensor("mm.down.weight").expect("down");
                assert_eq!(down.dims[1], u64::from(d.n_embd), "mmproj width == n_embd");
                assert_eq!(
                    mp.get_u64("clip.vision.projection_dim"),
                    Some(u64::from(d.n_embd))
                );
            }
        }
        assert_eq!(
            mp.tensor("v.patch_embd.weight").expect("patch").dims,
            vec![14, 14, 3, 32]
        );
        assert_eq!(
            mp.tensor("v.position_embd.weight").expect("pos").dims,
            vec![32, 4900]
        );
    }
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let a = tiny(Version::V2_6, &tmp.path().join("a"), 42);
    let b = tiny(Version::V2_6, &tmp.path().join("b"), 42);
    let c = tiny(Version::V2_6, &tmp.path().join("c"), 43);
    let read = |p: &Path| std::fs::read(p).expect("read");
    assert_eq!(read(&a.model), read(&b.model));
    assert_eq!(read(&a.mmproj), read(&b.mmproj));
    assert_ne!(read(&a.model), read(&c.model));
    assert_ne!(read(&a.mmproj), read(&c.mmproj));
}

#[test]
fn weights_are_finite_varied_and_as_planned() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tiny(Version::V4_5, tmp.path(), 1);
    let f = GgufFile::open(&out.mmproj).expect("open");
    let p = plan(Version::V4_5, Scale::Tiny, WeightType::F16).expect("plan");
    for t in &f.tensors {
        let bytes = f.read_tensor_bytes(t).expect("read");
        let vals: Vec<f32> = match t.ggml_type {
            GgmlType::F16 => bytes
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            _ => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        };
        assert!(vals.iter().all(|x| x.is_finite()), "{}", t.name);
        match p.mmproj.tensor(&t.name).expect("planned").init {
            Init::Random { std } => {
                let n = vals.len() as f64;
                let mean = vals.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
                let var = vals
                    .iter()
                    .map(|&x| (f64::from(x) - mean).powi(2))
                    .sum::<f64>()
                    / n;
                assert!(
                    mean.abs() < 0.2 * f64::from(std) + 0.01,
                    "{} mean {mean}",
                    t.name
                );
                if vals.len() >= 1000 {
                    let ratio = var.sqrt() / f64::from(std);
                    assert!((0.9..1.1).contains(&ratio), "{} std ratio {ratio}", t.name);
                }
            }
            Init::Const(c) => assert!(vals.iter().all(|&x| x == c), "{}", t.name),
            Init::SinCos2d { .. } => {
                assert!(vals.iter().all(|x| x.abs() <= 1.0));
                // position 0: sin(0) = 0 then cos(0) = 1 in each half
                assert_eq!(vals[0], 0.0);
                assert_eq!(vals[32], 1.0);
                assert_eq!(vals[64], 0.0);
            }
        }
    }
}

#[test]
fn chunking_does_not_change_the_stream() {
    let t = TensorSpec {
        name: "x".into(),
        dims: vec![1001],
        ty: GgmlType::F16,
        init: Init::Random { std: 0.1 },
    };
    let mut tables = TableCache::default();
    let mut whole = vec![0u8; 2002];
    Generator::new(&t, FileRole::Model, 5, &mut tables).fill(&mut whole);
    let mut tables = TableCache::default();
    let mut g = Generator::new(&t, FileRole::Model, 5, &mut tables);
    let mut parts = vec![0u8; 2002];
    let mut at = 0;
    for step in [2usize, 6, 10, 14, 1000, 970] {
        g.fill(&mut parts[at..at + step]);
        at += step;
    }
    assert_eq!(at, 2002);
    assert_eq!(whole, parts);
}

#[test]
fn real_2_6_parameter_counts() {
    let p = plan(Version::V2_6, Scale::Real, WeightType::F16).expect("plan");
    let text = p.model.n_params() as f64;
    let vision = p.mmproj.n_params() as f64;
    assert!((text - 7.6e9).abs() < 0.1e9, "text params {text}");
    assert!((0.4e9..0.55e9).contains(&vision), "vision params {vision}");
    match p.model.get("tokenizer.ggml.tokens") {
        Some(MetaValue::Array(MetaArray::String(t))) => assert_eq!(t.len(), 151_666),
        _ => panic!("tokens"),
    }
    // F16 text model is ~15 GB
    let bytes = p.model.data_bytes() as f64;
    assert!((14.5e9..15.8e9).contains(&bytes), "{bytes}");
    assert_eq!(
        p.model.tensor("output.weight").expect("output").dims,
        vec![3584, 151_666]
    );
    assert_eq!(
        p.mmproj.tensor("resampler.pos_embed_k").expect("k").dims,
        vec![3584, 4900]
    );
}

#[test]
fn real_plans_for_all_versions() {
    for v in Version::ALL {
        let s = family::spec(v);
        let p = plan(v, Scale::Real, WeightType::F16).expect("plan");
        let n_tok = match p.model.get("tokenizer.ggml.tokens") {
            Some(MetaValue::Array(MetaArray::String(t))) => t.len() as u32,
            _ => panic!("tokens"),
        };
        assert_eq!(Some(n_tok), s.text.real.n_vocab, "{v}");
        for t in p.model.tensors.iter().chain(&p.mmproj.tensors) {
            // ggml_ssm_conv takes 4.6's short convolution kernel in F32 only
            let want = if t.name == "v.patch_embd.weight"
                || t.dims.len() == 2
                    && t.name.ends_with(".weight")
                    && !t.name.ends_with("ssm_conv1d.weight")
            {
                GgmlType::F16
            } else {
                GgmlType::F32
            };
            assert_eq!(t.ty, want, "{v} {}", t.name);
        }
    }
    // F32 keeps only the conv kernel in F16
    let p = plan(Version::V2_5, Scale::Tiny, WeightType::F32).expect("plan");
    for t in p.model.tensors.iter().chain(&p.mmproj.tensors) {
        let want = if t.name == "v.patch_embd.weight" {
            GgmlType::F16
        } else {
            GgmlType::F32
        };
        assert_eq!(t.ty, want, "{}", t.name);
    }
}
