//! `minicpmv quantize`: every offered type round-trips on the tiny 2.6 pair (both files), and the
//! results run and inspect; k-quants are checked on a "wide" tiny pair whose rows fit 256-element
//! blocks; the projector never gets the language-model rules and vice versa; presets; refusals
//! (same file, existing output, bad inputs, imatrix types, full disk); no output after SIGKILL or
//! SIGTERM and no temporary file after SIGTERM.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use minicpmv::gguf::{GgmlType, GgufFile, GgufWriter, MetaValue, TensorInfo};
use minicpmv::model::family::Version;
use minicpmv::tools::synth::{self, FilePlan, Init, Scale, WeightType};

use crate::harness::{
    command, command_in_shell, file_with, image, minicpmv, minicpmv_env, tiny_pair, work_dir, Run,
};

/// Every type `quantize --type` offers.
const TYPES: &[&str] = &[
    "f32", "f16", "bf16", "q8_0", "q6_k", "q5_k_m", "q5_k_s", "q5_1", "q5_0", "q4_k_m", "q4_k_s",
    "q4_1", "q4_0", "iq4_nl", "iq4_xs", "q3_k_l", "q3_k_m", "q3_k_s", "q2_k",
];

/// The default tensor type of each file type (what an eligible tensor gets when its rows fit).
fn base_type(ty: &str) -> &'static str {
    match ty {
        "f32" => "f32",
        "f16" => "f16",
        "bf16" => "bf16",
        "q8_0" => "q8_0",
        "q6_k" => "q6_K",
        "q5_k_m" | "q5_k_s" => "q5_K",
        "q5_1" => "q5_1",
        "q5_0" => "q5_0",
        "q4_k_m" | "q4_k_s" => "q4_K",
        "q4_1" => "q4_1",
        "q4_0" => "q4_0",
        "iq4_nl" => "iq4_nl",
        "iq4_xs" => "iq4_xs",
        "q3_k_l" | "q3_k_m" | "q3_k_s" => "q3_K",
        "q2_k" => "q2_K",
        other => panic!("no base type for {other}"),
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A fresh folder under the work dir.
fn fresh_dir(name: &str) -> PathBuf {
    let d = work_dir().join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create dir");
    d
}

/// `quantize INPUT OUTPUT --type TYPE --json` (plus `extra`), asserting success; the summary.
fn quantize_json(input: &Path, output: &Path, ty: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "quantize",
        s(input),
        s(output),
        "--type",
        ty,
        "--json",
        "-t",
        "2",
    ];
    args.extend_from_slice(extra);
    let sum = minicpmv(args).ok().json();
    check_summary(&sum, output);
    sum
}

/// What every summary must satisfy: the written file is the one described, its types are the
/// ones llama.cpp planned, and the progress parser saw every tensor.
#[track_caller]
fn check_summary(sum: &serde_json::Value, output: &Path) {
    assert!(output.is_file(), "{} not written", output.display());
    assert_eq!(
        sum["output_bytes"].as_u64(),
        Some(std::fs::metadata(output).expect("stat").len())
    );
    assert_eq!(sum["plan_mismatches"], serde_json::json!([]), "{sum}");
    assert_eq!(
        sum["progress"]["tensors_seen"], sum["progress"]["tensors_total"],
        "progress: {}",
        sum["progress"]
    );
    let expected = sum["expected_output_bytes"]
        .as_u64()
        .expect("expected size");
    let actual = sum["output_bytes"].as_u64().expect("size");
    assert!(
        expected >= actual && expected - actual <= 8192,
        "size estimate {expected} vs {actual}"
    );
    // No temporary file left next to the output.
    let dir = output.parent().expect("parent");
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .expect("read dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".quantize-tmp."))
        .map(|e| e.path())
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

/// Tensor name -> ggml type name, read back with our reader.
fn types_of(path: &Path) -> std::collections::BTreeMap<String, String> {
    let f = GgufFile::open(path).expect("read output");
    f.tensors
        .iter()
        .map(|t| (t.name.clone(), t.ggml_type.name().to_string()))
        .collect()
}

/// `inspect --json` succeeds and reports the same type histogram as the quantize summary.
fn inspect_agrees(path: &Path, sum: &serde_json::Value) {
    let r = minicpmv(["inspect", s(path), "--json"]).ok().json();
    let inspected: BTreeSet<&str> = r["tensor_types"]
        .as_object()
        .expect("tensor_types")
        .keys()
        .map(String::as_str)
        .collect();
    let summarised: BTreeSet<&str> = sum["tensor_types"]
        .as_object()
        .expect("tensor_types")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(inspected, summarised, "{}", path.display());
    for (ty, st) in r["tensor_types"].as_object().expect("object") {
        assert_eq!(st["tensors"], sum["tensor_types"][ty]["tensors"], "{ty}");
    }
}

/// `run` on a pair: a few greedy tokens come out.
fn runs(model: &Path, mmproj: &Path) -> Run {
    let img = image(300, 200);
    let r = minicpmv([
        "run",
        "-m",
        s(model),
        "--mmproj",
        s(mmproj),
        "--image",
        s(&img),
        "-p",
        "What is this?",
        "-n",
        "4",
        "--temp",
        "0",
        "-t",
        "2",
        "--json",
    ])
    .ok();
    let j = r.json();
    assert!(
        !j["token_ids"].as_array().expect("token_ids").is_empty(),
        "no tokens: {j}"
    );
    r
}

// ---------------------------------------------------------------------------------------------
// Every type on the tiny 2.6 pair

fn round_trip_tiny(ty: &str) {
    let (model, mmproj) = tiny_pair("2.6");
    let dir = fresh_dir(&format!("q-tiny-{ty}"));
    let qm = dir.join("model.gguf");
    let qp = dir.join("mmproj.gguf");
    let sm = quantize_json(&model, &qm, ty, &[]);
    let sp = quantize_json(&mmproj, &qp, ty, &[]);
    assert_eq!(sm["kind"], "language_model");
    assert_eq!(sp["kind"], "projector");
    assert_eq!(sm["type"], ty);
    inspect_agrees(&qm, &sm);
    inspect_agrees(&qp, &sp);
    // The tiny rows (32, 64, 128, 256 wide) fit every 32-element block: those types must show up.
    let base = base_type(ty);
    let block32 = !ty.contains("_k") && ty != "iq4_xs";
    if block32 {
        for (sum, what) in [(&sm, "model"), (&sp, "mmproj")] {
            assert!(
                sum["tensor_types"].get(base).is_some(),
                "{ty} {what}: no {base} tensor: {}",
                sum["tensor_types"]
            );
        }
    }
    runs(&qm, &qp);
}

macro_rules! tiny_round_trips {
    ($($name:ident => $ty:literal),* $(,)?) => {$(
        #[test]
        fn $name() {
            round_trip_tiny($ty);
        }
    )*};
}

tiny_round_trips!(
    tiny_f32 => "f32", tiny_f16 => "f16", tiny_bf16 => "bf16", tiny_q8_0 => "q8_0",
    tiny_q6_k => "q6_k", tiny_q5_k_m => "q5_k_m", tiny_q5_k_s => "q5_k_s", tiny_q5_1 => "q5_1",
    tiny_q5_0 => "q5_0", tiny_q4_k_m => "q4_k_m", tiny_q4_k_s => "q4_k_s", tiny_q4_1 => "q4_1",
    tiny_q4_0 => "q4_0", tiny_iq4_nl => "iq4_nl", tiny_iq4_xs => "iq4_xs", tiny_q3_k_l => "q3_k_l",
    tiny_q3_k_m => "q3_k_m", tiny_q3_k_s => "q3_k_s", tiny_q2_k => "q2_k",
);

#[test]
fn the_test_list_is_the_offered_list() {
    let help = minicpmv(["quantize", "--help"]).ok().stdout;
    for ty in TYPES {
        assert!(help.contains(ty), "--help lacks {ty}");
    }
    assert_eq!(TYPES.len(), 19);
}

// ---------------------------------------------------------------------------------------------
// A wide tiny pair: rows of 256/512 elements, 8 layers, so k-quants apply and llama.cpp's layer
// rules show

const WIDE_LAYERS: u32 = 8;

/// The tiny 2.6 pair's plans with every width scaled up (text 128 -> 256, vision 32 -> 256,
/// projector 128 -> 256, FFN -> 512, head dims 64/16 -> 128) and 8 layers in both files.
fn wide_pair() -> (PathBuf, PathBuf) {
    static PAIR: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    PAIR.get_or_init(|| {
        let plan = synth::plan(Version::V2_6, Scale::Tiny, WeightType::F16).expect("tiny plan");
        let dir = work_dir().join("wide-2.6");
        std::fs::create_dir_all(&dir).expect("mkdir");
        let model = widen(
            &plan.model,
            &[(64, 128), (128, 256), (256, 512)],
            &[
                ("qwen2.embedding_length", 256),
                ("qwen2.feed_forward_length", 512),
            ],
            "qwen2.block_count",
            "blk.",
        );
        let mmproj = widen(
            &plan.mmproj,
            &[(32, 256), (64, 512), (128, 256)],
            &[
                ("clip.vision.embedding_length", 256),
                ("clip.vision.feed_forward_length", 512),
            ],
            "clip.vision.block_count",
            "v.blk.",
        );
        let (mp, pp) = (dir.join("model.gguf"), dir.join("mmproj.gguf"));
        synth::write_file(&model, &mp, 7).expect("write wide model");
        synth::write_file(&mmproj, &pp, 7).expect("write wide mmproj");
        (mp, pp)
    })
    .clone()
}

fn widen(
    plan: &FilePlan,
    dim_map: &[(u64, u64)],
    keys: &[(&str, u32)],
    block_key: &str,
    layer_prefix: &str,
) -> FilePlan {
    let map = |d: u64| {
        dim_map
            .iter()
            .find(|(from, _)| *from == d)
            .map_or(d, |(_, to)| *to)
    };
    let mut out = plan.clone();
    for (k, v) in &mut out.metadata {
        if let Some((_, n)) = keys.iter().find(|(key, _)| key == k) {
            assert!(matches!(v, MetaValue::U32(_)), "{k}: {v:?}");
            *v = MetaValue::U32(*n);
        } else if k == block_key {
            *v = MetaValue::U32(WIDE_LAYERS);
        }
    }
    let first = format!("{layer_prefix}0.");
    let mut tensors = Vec::new();
    for t in &plan.tensors {
        let is_layer = t.name.starts_with(layer_prefix);
        if is_layer && !t.name.starts_with(&first) {
            continue; // layers are re-made from layer 0
        }
        let mut w = t.clone();
        w.dims = match t.name.as_str() {
            // [D, Q]: only D is a width
            "resampler.query" => vec![map(t.dims[0]), t.dims[1]],
            _ => t.dims.iter().map(|&d| map(d)).collect(),
        };
        if let Init::SinCos2d { dim, side } = w.init {
            w.init = Init::SinCos2d {
                dim: map(dim),
                side,
            };
        }
        if is_layer {
            for i in 0..WIDE_LAYERS {
                let mut l = w.clone();
                l.name = t.name.replacen(&first, &format!("{layer_prefix}{i}."), 1);
                tensors.push(l);
            }
        } else {
            tensors.push(w);
        }
    }
    // Keep the file order llama.cpp expects: the per-layer tensors grouped by layer.
    tensors.sort_by_key(|t| {
        t.name
            .strip_prefix(layer_prefix)
            .and_then(|r| r.split('.').next())
            .and_then(|n| n.parse::<u32>().ok())
            .map_or(0, |n| n + 1)
    });
    out.tensors = tensors;
    out
}

/// llama.cpp's `use_more_bits(i, n)` (src/llama-quant.cpp).
fn use_more_bits(i: u32, n: u32) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i as i64 - (n / 8) as i64) % 3 == 2
}

#[test]
fn k_quants_apply_where_rows_fit() {
    let (model, mmproj) = wide_pair();
    for ty in [
        "q4_k_m", "q4_k_s", "q5_k_m", "q5_k_s", "q6_k", "q3_k_m", "q3_k_s", "q3_k_l", "q2_k",
        "iq4_xs",
    ] {
        let dir = fresh_dir(&format!("q-wide-{ty}"));
        let qm = dir.join("model.gguf");
        let qp = dir.join("mmproj.gguf");
        let sm = quantize_json(&model, &qm, ty, &[]);
        let sp = quantize_json(&mmproj, &qp, ty, &[]);
        let base = base_type(ty);
        for (sum, what, path) in [(&sm, "model", &qm), (&sp, "mmproj", &qp)] {
            assert_eq!(
                sum["fallbacks"],
                serde_json::json!([]),
                "{ty} {what}: {sum}"
            );
            let types = types_of(path);
            let n_base = types.values().filter(|t| *t == base).count();
            assert!(n_base > 0, "{ty} {what}: no {base} tensor: {types:?}");
            inspect_agrees(path, sum);
        }
        runs(&qm, &qp);
    }
}

/// The projector is quantized with llama.cpp's clip rules (no layer count: under Q4_K_M every
/// ffn_down gets q6_K) and the language model with its own (q6_K ffn_down only where
/// `use_more_bits(layer, 8)`, output.weight q6_K); position/patch embeddings and non-weights of
/// the projector are never quantized.
#[test]
fn projector_and_language_model_get_their_own_rules() {
    let (model, mmproj) = wide_pair();
    let dir = fresh_dir("q-policy");
    let qm = dir.join("model-Q4_K_M.gguf");
    let qp = dir.join("mmproj-Q4_K_M.gguf");
    let sm = quantize_json(&model, &qm, "q4_k_m", &[]);
    let sp = quantize_json(&mmproj, &qp, "q4_k_m", &[]);
    assert!(
        sm["policy"].as_str().unwrap().starts_with("language model"),
        "{}",
        sm["policy"]
    );
    assert!(
        sp["policy"].as_str().unwrap().starts_with("clip"),
        "{}",
        sp["policy"]
    );
    let lm = types_of(&qm);
    let pj = types_of(&qp);

    // Language model: llama.cpp's layer-dependent mixture.
    let mut pattern = Vec::new();
    for i in 0..WIDE_LAYERS {
        let want = if use_more_bits(i, WIDE_LAYERS) {
            "q6_K"
        } else {
            "q4_K"
        };
        pattern.push(want == "q4_K");
        assert_eq!(
            lm[&format!("blk.{i}.ffn_down.weight")],
            want,
            "LM ffn_down layer {i}"
        );
        assert_eq!(
            lm[&format!("blk.{i}.attn_v.weight")],
            want,
            "LM attn_v layer {i}"
        );
        assert_eq!(lm[&format!("blk.{i}.attn_q.weight")], "q4_K");
        assert_eq!(lm[&format!("blk.{i}.attn_norm.weight")], "f32");
    }
    assert!(
        pattern.iter().any(|&x| x),
        "the LM pattern must have q4_K layers"
    );
    assert_eq!(lm["output.weight"], "q6_K");
    assert_eq!(lm["token_embd.weight"], "q4_K");

    // Projector: clip rules (layer count 0 -> every ffn_down "uses more bits").
    for i in 0..WIDE_LAYERS {
        assert_eq!(
            pj[&format!("v.blk.{i}.ffn_down.weight")],
            "q6_K",
            "mmproj ffn_down {i}"
        );
        assert_eq!(pj[&format!("v.blk.{i}.attn_q.weight")], "q4_K");
        assert_eq!(pj[&format!("v.blk.{i}.ffn_up.weight")], "q4_K");
        assert_eq!(pj[&format!("v.blk.{i}.ln1.weight")], "f32");
    }
    assert_eq!(pj["v.position_embd.weight"], "f16");
    assert_eq!(pj["v.patch_embd.weight"], "f16");
    assert_eq!(pj["resampler.query"], "f32");
    assert_eq!(pj["resampler.pos_embed_k"], "f32");
    assert_eq!(pj["resampler.kv.weight"], "q4_K");

    // The summary explains the higher-precision tensors.
    let reasons = |sum: &serde_json::Value, name: &str| {
        sum["kept_higher"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["name"] == name)
            .map(|k| k["reason"].as_str().unwrap().to_string())
    };
    assert_eq!(
        reasons(&sp, "v.blk.0.ffn_down.weight").as_deref(),
        Some("llama_policy")
    );
    assert_eq!(
        reasons(&sp, "v.position_embd.weight").as_deref(),
        Some("position_or_patch_embedding")
    );
    assert_eq!(
        reasons(&sp, "resampler.query").as_deref(),
        Some("not_a_weight")
    );
    assert_eq!(
        reasons(&sm, "output.weight").as_deref(),
        Some("llama_policy")
    );
    assert_eq!(
        reasons(&sm, "blk.0.attn_norm.weight").as_deref(),
        Some("one_dimensional")
    );
    runs(&qm, &qp);
}

#[test]
fn tiny_rows_fall_back_and_the_summary_says_why() {
    let (model, _) = tiny_pair("2.6");
    let dir = fresh_dir("q-fallback");
    let out = dir.join("m.gguf");
    let sum = quantize_json(&model, &out, "q4_k_m", &[]);
    // 128-wide rows do not fit q4_K's 256-element blocks: llama.cpp uses q5_0.
    let t = types_of(&out);
    assert_eq!(t["blk.0.attn_q.weight"], "q5_0");
    let fb = sum["fallbacks"].as_array().unwrap();
    let q = fb
        .iter()
        .find(|f| f["tensor"] == "blk.0.attn_q.weight")
        .expect("fallback listed");
    assert_eq!(
        (q["row_length"].as_u64(), q["block_size"].as_u64()),
        (Some(128), Some(256))
    );
    assert_eq!(
        (q["wanted"].as_str(), q["used"].as_str()),
        (Some("q4_K"), Some("q5_0"))
    );
    let kept = sum["kept_higher"].as_array().unwrap();
    let k = kept
        .iter()
        .find(|k| k["name"] == "blk.0.attn_q.weight")
        .expect("kept listed");
    assert_eq!(k["reason"], "row_length");
    assert!(k["detail"].as_str().unwrap().contains("128"), "{k}");
    // Text summary
    let out2 = dir.join("m2.gguf");
    let r = minicpmv(["quantize", s(&model), s(&out2), "--type", "q4_k_m"]).ok();
    for needle in [
        "->",
        "q4_k_m",
        "tensor types",
        "kept in higher precision",
        "row length",
    ] {
        assert!(
            r.stdout.contains(needle),
            "{needle:?} missing:\n{}",
            r.stdout
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Presets

#[test]
fn presets_write_both_files_and_the_printed_command_runs() {
    let (model, mmproj) = tiny_pair("2.6");
    for (preset, m_name, p_name) in [
        ("int4", "model-Q4_K_M.gguf", "mmproj-Q8_0.gguf"),
        ("int8", "model-Q8_0.gguf", "mmproj-Q8_0.gguf"),
        ("int5", "model-Q5_K_M.gguf", "mmproj-Q8_0.gguf"),
    ] {
        let dir = work_dir().join(format!("preset-{preset}"));
        let _ = std::fs::remove_dir_all(&dir);
        let j = minicpmv([
            "quantize",
            "--model",
            s(&model),
            "--mmproj",
            s(&mmproj),
            "--preset",
            preset,
            "--out-dir",
            s(&dir),
            "--json",
            "-t",
            "2",
        ])
        .ok()
        .json();
        assert_eq!(j["preset"], preset);
        check_summary(&j["model"], &dir.join(m_name));
        check_summary(&j["mmproj"], &dir.join(p_name));
        assert_eq!(j["model"]["kind"], "language_model");
        assert_eq!(j["mmproj"]["kind"], "projector");
        let cmd = j["run_command"].as_str().unwrap();
        assert!(cmd.starts_with("minicpmv run -m "), "{cmd}");
        assert!(cmd.contains(m_name) && cmd.contains(p_name), "{cmd}");
        // The printed command, with the placeholder image replaced, works.
        let img = image(300, 200);
        let mut args: Vec<String> = j["run_args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .map(|a| if a == "IMAGE" { s(&img).to_string() } else { a })
            .collect();
        args.extend(["-n", "4", "--temp", "0", "-t", "2"].map(String::from));
        let r = minicpmv(&args).ok();
        assert!(r.stderr.contains("tok/s"), "{}", r.stderr);
    }
    // Text mode prints the command.
    let dir = work_dir().join("preset-text");
    let _ = std::fs::remove_dir_all(&dir);
    let r = minicpmv([
        "quantize",
        "-m",
        s(&model),
        "--mmproj",
        s(&mmproj),
        "--preset",
        "int4",
        "--out-dir",
        s(&dir),
    ])
    .ok();
    assert!(
        r.stdout.contains("run the quantized pair with:"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("minicpmv run -m "), "{}", r.stdout);
}

#[test]
fn presets_refuse_swapped_files() {
    let (model, mmproj) = tiny_pair("2.6");
    let dir = work_dir().join("preset-swapped");
    let r = minicpmv([
        "quantize",
        "--model",
        s(&mmproj),
        "--mmproj",
        s(&model),
        "--preset",
        "int4",
        "--out-dir",
        s(&dir),
    ]);
    r.fails_with(&[s(&mmproj), "projector"]);
    assert!(!dir.join("mmproj-Q4_K_M.gguf").exists());
    minicpmv([
        "quantize",
        "--preset",
        "int3",
        "--model",
        "a",
        "--mmproj",
        "b",
        "--out-dir",
        "c",
    ])
    .fails_with(&["int3", "int4"]);
}

// ---------------------------------------------------------------------------------------------
// Refusals

#[test]
fn output_must_not_be_the_input() {
    let (model, _) = tiny_pair("2.6");
    let dir = fresh_dir("q-same");
    let input = dir.join("in.gguf");
    std::fs::copy(&model, &input).expect("copy");
    let before = std::fs::read(&input).expect("read");
    let sub = dir.join("sub");
    std::fs::create_dir(&sub).expect("mkdir");
    let hard = dir.join("hard.gguf");
    std::fs::hard_link(&input, &hard).expect("hard link");
    let sym = dir.join("sym.gguf");
    std::os::unix::fs::symlink(&input, &sym).expect("symlink");
    let via_dotdot = sub.join("../in.gguf");
    for out in [&input, &via_dotdot, &hard, &sym] {
        minicpmv(["quantize", s(&input), s(out), "--type", "q8_0", "--force"])
            .fails_with(&["is the input file"]);
    }
    assert_eq!(
        std::fs::read(&input).expect("read"),
        before,
        "input modified"
    );
}

#[test]
fn existing_output_needs_force() {
    let (model, _) = tiny_pair("2.6");
    let dir = fresh_dir("q-exists");
    let out = dir.join("out.gguf");
    std::fs::write(&out, b"keep me").expect("write");
    minicpmv(["quantize", s(&model), s(&out), "--type", "q8_0"]).fails_with(&[
        s(&out),
        "already exists",
        "--force",
    ]);
    assert_eq!(std::fs::read(&out).expect("read"), b"keep me");
    quantize_json(&model, &out, "q8_0", &["--force"]);
    assert!(GgufFile::open(&out).is_ok());
    minicpmv(["quantize", s(&model), s(&dir), "--type", "q8_0", "--force"])
        .fails_with(&["is a directory"]);
    let nowhere = dir.join("no/such/dir/out.gguf");
    minicpmv(["quantize", s(&model), s(&nowhere), "--type", "q8_0"])
        .fails_with(&["does not exist"]);
}

#[test]
fn bad_inputs_exit_2_naming_the_file() {
    let (model, _) = tiny_pair("2.6");
    let dir = fresh_dir("q-bad");
    let out = dir.join("out.gguf");
    let missing = dir.join("missing.gguf");
    minicpmv(["quantize", s(&missing), s(&out), "--type", "q8_0"])
        .fails_with(&[s(&missing), "no such file"]);
    let text = file_with("q-not-gguf.gguf", b"this is not a model file at all\n");
    minicpmv(["quantize", s(&text), s(&out), "--type", "q8_0"])
        .fails_with(&[s(&text), "not a GGUF file"]);
    let bytes = std::fs::read(&model).expect("read");
    let cut = file_with("q-truncated.gguf", &bytes[..bytes.len() * 2 / 3]);
    minicpmv(["quantize", s(&cut), s(&out), "--type", "q8_0"]).fails_with(&[s(&cut), "truncated"]);
    // A language model llama.cpp would abort on (block_count 0): refused before llama.cpp.
    let zero = dir.join("zero-layers.gguf");
    let mut w = GgufWriter::new();
    w.add_kv("general.architecture", "qwen2".into());
    w.add_kv("qwen2.block_count", MetaValue::U32(0));
    w.add_tensor("token_embd.weight", &[32, 8], GgmlType::F16)
        .expect("tensor");
    w.write(
        &zero,
        |_: usize, info: &TensorInfo, o: &mut dyn std::io::Write| {
            o.write_all(&vec![0u8; info.n_bytes as usize])
        },
    )
    .expect("write");
    minicpmv(["quantize", s(&zero), s(&out), "--type", "q8_0"])
        .fails_with(&[s(&zero), "block_count"]);
    // No general.architecture
    let noarch = dir.join("no-arch.gguf");
    let mut w = GgufWriter::new();
    w.add_kv("general.name", "x".into());
    w.write(
        &noarch,
        |_: usize, _: &TensorInfo, _: &mut dyn std::io::Write| Ok(()),
    )
    .expect("write");
    minicpmv(["quantize", s(&noarch), s(&out), "--type", "q8_0"])
        .fails_with(&[s(&noarch), "general.architecture"]);
    assert!(!out.exists());
}

#[test]
fn imatrix_and_unknown_types_are_refused_by_name() {
    let (model, _) = tiny_pair("2.6");
    let out = work_dir().join("q-imatrix.gguf");
    for ty in ["iq2_xxs", "IQ2_XS", "iq1_s", "iq3_xxs", "q2_k_s"] {
        minicpmv(["quantize", s(&model), s(&out), "--type", ty])
            .fails_with(&[&ty.to_lowercase(), "importance matrix"]);
    }
    minicpmv(["quantize", s(&model), s(&out), "--type", "q7_z"]).fails_with(&["q7_z", "q4_k_m"]);
    assert!(!out.exists());
}

#[test]
fn requantizing_needs_the_flag() {
    let (model, _) = tiny_pair("2.6");
    let dir = fresh_dir("q-requant");
    let q4 = dir.join("q4.gguf");
    quantize_json(&model, &q4, "q4_0", &[]);
    let q8 = dir.join("q8.gguf");
    minicpmv(["quantize", s(&q4), s(&q8), "--type", "q8_0"]).fails_with(&[
        s(&q4),
        "already quantized",
        "--allow-requantize",
    ]);
    quantize_json(&q4, &q8, "q8_0", &["--allow-requantize"]);
}

// ---------------------------------------------------------------------------------------------
// Disk full

#[test]
fn too_little_free_space_is_refused_before_writing() {
    let (model, _) = tiny_pair("2.6");
    let dir = fresh_dir("q-nospace");
    let out = dir.join("out.gguf");
    let r = minicpmv_env(
        ["quantize", s(&model), s(&out), "--type", "q8_0"],
        &[("MINICPMV_FAKE_FREE_BYTES", std::ffi::OsStr::new("1000"))],
    );
    r.fails_with(&["not enough free space", s(&dir)]);
    assert_eq!(
        std::fs::read_dir(&dir).expect("dir").count(),
        0,
        "files left"
    );
}

/// llama.cpp's own write fails midway (file size limit: `ulimit -f`; the binary ignores
/// SIGXFSZ itself, so the write returns EFBIG instead of the signal killing it): a clear error,
/// no output, no temporary file.
#[test]
fn a_failing_write_leaves_nothing() {
    let (_, mmproj) = tiny_pair("2.6");
    let dir = fresh_dir("q-write-fail");
    let out = dir.join("out.gguf");
    // 1 MiB limit; the f32 output of the tiny mmproj is about 3.5 MiB. (`ulimit -f` counts
    // 512- or 1024-byte blocks depending on the shell; both are far below 3.5 MiB.)
    let o = command_in_shell(
        "ulimit -f 1024 && exec \"$0\" \"$@\"",
        ["quantize", s(&mmproj), s(&out), "--type", "f32"],
    )
    .output()
    .expect("run sh");
    let r = Run::from_output(o);
    r.fails_with(&[
        "writing",
        s(&out),
        "failed",
        "file-size limit",
        "nothing was written",
    ]);
    assert_eq!(
        std::fs::read_dir(&dir).expect("dir").count(),
        0,
        "files left"
    );
}

/// A real full file system (a 1 MiB tmpfs; needs root, fails where mounting is not allowed):
/// the free-space check refuses, and when it is bypassed llama.cpp's write fails cleanly.
#[test]
fn a_full_tmpfs_gives_a_clear_error() {
    let dir = fresh_dir("q-tmpfs");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1M", "tmpfs", s(&dir)])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|st| st.success());
    // No silent pass: where mounting is not allowed this test fails, and says how to leave it
    // out on purpose.
    assert!(
        mounted,
        "cannot mount a 1 MiB tmpfs on {} (needs root or CAP_SYS_ADMIN); run the tests as \
         root, or leave this one out with `-- --skip a_full_tmpfs_gives_a_clear_error`",
        dir.display()
    );
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(dir.clone());
    let (model, _) = tiny_pair("2.6");
    let out = dir.join("out.gguf");
    // f32: about 1.5 MiB, more than the 1 MiB file system holds.
    minicpmv(["quantize", s(&model), s(&out), "--type", "f32"])
        .fails_with(&["not enough free space", s(&dir)]);
    let r = minicpmv_env(
        ["quantize", s(&model), s(&out), "--type", "f32"],
        &[(
            "MINICPMV_FAKE_FREE_BYTES",
            std::ffi::OsStr::new("1000000000000"),
        )],
    );
    r.fails_with(&[
        "writing",
        s(&out),
        "the file system is full",
        "nothing was written",
    ]);
    assert_eq!(
        std::fs::read_dir(&dir).expect("dir").count(),
        0,
        "files left"
    );
}

// ---------------------------------------------------------------------------------------------
// Interruption

/// A projector-kind GGUF (`clip`: llama.cpp loads no hyper-parameters for it) with 256 MiB of f32
/// weights in 4 tensors, so that quantizing it takes a moment. Written once.
fn big_input() -> PathBuf {
    static BIG: OnceLock<PathBuf> = OnceLock::new();
    BIG.get_or_init(|| {
        let path = work_dir().join("big-clip.gguf");
        let mut w = GgufWriter::new();
        w.add_kv("general.architecture", "clip".into());
        w.add_kv(
            "general.name",
            "big synthetic clip file for interruption tests".into(),
        );
        for i in 0..4 {
            w.add_tensor(
                &format!("v.blk.{i}.ffn_up.weight"),
                &[4096, 4096],
                GgmlType::F32,
            )
            .expect("tensor");
        }
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut buf = vec![0u8; 1 << 20];
        w.write(
            &path,
            |_: usize, info: &TensorInfo, o: &mut dyn std::io::Write| {
                let mut left = info.n_bytes as usize;
                while left > 0 {
                    let n = left.min(buf.len());
                    for c in buf[..n].chunks_exact_mut(4) {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        let x = ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5;
                        c.copy_from_slice(&x.to_le_bytes());
                    }
                    o.write_all(&buf[..n])?;
                    left -= n;
                }
                Ok(())
            },
        )
        .expect("write big input");
        path
    })
    .clone()
}

/// Starts `quantize big -> dir/out.gguf` and waits until its temporary file exists and
/// llama.cpp has started writing; returns the child and the temporary file's path.
fn start_big_quantize(dir: &Path) -> (std::process::Child, PathBuf) {
    let out = dir.join("out.gguf");
    let child = command(
        [
            "quantize",
            s(&big_input()),
            s(&out),
            "--type",
            "q6_k",
            "-t",
            "1",
        ],
        &[],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn");
    let temp = dir.join(format!(".out.gguf.quantize-tmp.{}", child.id()));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !temp.exists() {
        assert!(Instant::now() < deadline, "no temporary file after 60 s");
        std::thread::sleep(Duration::from_millis(2));
    }
    (child, temp)
}

#[test]
fn sigkill_midway_leaves_no_output_and_the_next_run_cleans_up() {
    let dir = fresh_dir("q-sigkill");
    let (mut child, temp) = start_big_quantize(&dir);
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("wait");
    assert!(!status.success());
    assert!(
        !dir.join("out.gguf").exists(),
        "output exists after SIGKILL"
    );
    assert!(
        temp.exists(),
        "the temporary file cannot be removed after SIGKILL"
    );
    // The next run in the folder removes the stale temporary file and says so.
    let (model, _) = tiny_pair("2.6");
    let other = dir.join("other.gguf");
    let r = minicpmv(["quantize", s(&model), s(&other), "--type", "q8_0"]).ok();
    assert!(!temp.exists(), "stale temporary file not removed");
    assert!(r.stderr.contains(s(&temp)), "{}", r.stderr);
    assert!(!dir.join("out.gguf").exists());
}

#[test]
fn sigterm_and_sigint_midway_leave_neither_output_nor_temporary_file() {
    for sig in ["TERM", "INT"] {
        let dir = fresh_dir(&format!("q-sig{sig}"));
        let (mut child, temp) = start_big_quantize(&dir);
        let pid = child.id().to_string();
        let killed = Command::new("kill")
            .args([&format!("-{sig}"), &pid])
            .status();
        assert!(killed.is_ok_and(|s| s.success()), "kill -{sig}");
        let status = child.wait().expect("wait");
        assert!(
            !status.success(),
            "{sig}: quantize finished before the signal"
        );
        let mut err = String::new();
        use std::io::Read as _;
        child
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut err)
            .ok();
        assert!(!dir.join("out.gguf").exists(), "{sig}: output exists");
        assert!(!temp.exists(), "{sig}: temporary file left");
        assert_eq!(
            std::fs::read_dir(&dir).expect("dir").count(),
            0,
            "{sig}: files left"
        );
        assert!(err.contains("interrupted"), "{sig}: {err}");
    }
}

#[test]
fn progress_lines_with_the_flag() {
    let (model, _) = tiny_pair("2.6");
    let dir = fresh_dir("q-progress");
    let r = minicpmv([
        "quantize",
        s(&model),
        s(&dir.join("o.gguf")),
        "--type",
        "q8_0",
        "--progress",
    ])
    .ok();
    assert!(
        r.stderr.contains("quantizing: 100% (27/27 tensors"),
        "{}",
        r.stderr
    );
    let r = minicpmv([
        "quantize",
        s(&model),
        s(&dir.join("p.gguf")),
        "--type",
        "q8_0",
    ])
    .ok();
    assert!(
        !r.stderr.contains("quantizing"),
        "progress without a TTY: {}",
        r.stderr
    );
}

#[test]
fn dry_run_predicts_the_written_file_and_writes_nothing() {
    let (model, _) = wide_pair();
    let (_, mmproj) = tiny_pair("2.6");
    let dir = fresh_dir("q-dry-run");
    for (input, ty) in [(&model, "q4_k_m"), (&mmproj, "q8_0"), (&mmproj, "iq4_nl")] {
        let out = dir.join(format!("{ty}.gguf"));
        let planned = minicpmv([
            "quantize",
            s(input),
            s(&out),
            "--type",
            ty,
            "--dry-run",
            "--json",
        ])
        .ok()
        .json();
        assert_eq!(planned["dry_run"], true);
        assert!(!out.exists(), "a dry run wrote {}", out.display());
        assert_eq!(std::fs::read_dir(&dir).expect("dir").count(), 0);
        let written = quantize_json(input, &out, ty, &[]);
        assert_eq!(planned["tensor_types"], written["tensor_types"], "{ty}");
        assert_eq!(planned["kept_higher"], written["kept_higher"], "{ty}");
        std::fs::remove_file(&out).expect("rm");
    }
    // Without OUTPUT, and for a pair.
    let r = minicpmv(["quantize", s(&model), "--type", "q8_0", "--dry-run"]).ok();
    assert!(r.stdout.contains("dry run"), "{}", r.stdout);
}
