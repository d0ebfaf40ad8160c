//! The hostile-input corpus: well over a hundred bad inputs through the real binary, across
//! `run`, `chat`, `plan`, `inspect`, `quantize`, `slice-plan`, `quality`, `parity` and `pull`
//! (against a stub hub on 127.0.0.1). Every case must end, within [`TIME_LIMIT`], with exit
//! code 2 and one `error:` line that names the file, field or value (or, for the few inputs
//! that are unusual but valid, with success), never with a signal, a panic, an abort or a hang,
//! and leave no partial file where output goes.
//!
//! The model mutations are derived from what llama.cpp asserts on (see
//! `crates/minicpmv/src/model/shape.rs`) and are applied to the tiny pair of every version.
//! Each test runs a family of cases and reports every failing case at once.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use minicpmv::gguf::{GgmlType, GgufFile, GgufWriter, MetaArray, MetaValue};

use crate::harness::{command, image, tiny_pair, work_dir};
use crate::rawgguf::RawGguf;

/// A case still running after this long fails (the corpus runs on tiny pairs).
const TIME_LIMIT: Duration = Duration::from_secs(30);

/// What stderr must not show.
const CRASH_SIGNS: &[&str] = &[
    "panicked",
    "RUST_BACKTRACE",
    "GGML_ASSERT",
    "GGML_ABORT",
    "terminate called",
    "Aborted",
    "core dumped",
    "Segmentation fault",
];

const VERSIONS: [&str; 6] = ["2.6", "2.5", "o2.6", "4.0", "4.5", "o4.5"];

// ---------------------------------------------------------------------------------------------
// Cases and their runner

/// The outcome a case must have.
#[derive(Debug, Clone)]
enum Expect {
    /// Exit code 2 and an `error:` line holding every needle.
    Error(Vec<String>),
    /// Exit code 0: an unusual but valid input.
    Success,
}

/// One invocation of the binary.
#[derive(Debug, Clone)]
struct Case {
    label: String,
    args: Vec<OsString>,
    stdin: Vec<u8>,
    env: Vec<(String, OsString)>,
    expect: Expect,
    /// A folder that must hold exactly the same file names after the run as before (no
    /// output, no temporary file left behind).
    unchanged: Option<PathBuf>,
}

impl Case {
    fn error<S: Into<OsString>>(
        label: impl Into<String>,
        args: impl IntoIterator<Item = S>,
        needles: &[&str],
    ) -> Case {
        Case {
            label: label.into(),
            args: args.into_iter().map(Into::into).collect(),
            stdin: Vec::new(),
            env: Vec::new(),
            expect: Expect::Error(needles.iter().map(|n| n.to_string()).collect()),
            unchanged: None,
        }
    }

    fn success<S: Into<OsString>>(
        label: impl Into<String>,
        args: impl IntoIterator<Item = S>,
    ) -> Case {
        Case {
            expect: Expect::Success,
            ..Case::error(label, args, &[])
        }
    }

    fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Case {
        self.stdin = bytes.into();
        self
    }

    fn env(mut self, key: &str, value: impl Into<OsString>) -> Case {
        self.env.push((key.to_string(), value.into()));
        self
    }

    fn unchanged(mut self, dir: &Path) -> Case {
        self.unchanged = Some(dir.to_path_buf());
        self
    }
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Runs one case; `Err` describes how it failed.
fn run_case(c: &Case) -> Result<(), String> {
    let before = c.unchanged.as_deref().map(names_in);
    let env: Vec<(&str, &std::ffi::OsStr)> = c
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_os_str()))
        .collect();
    let mut child = command(&c.args, &env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the binary: {e}"))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = c.stdin.clone();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let err = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
            break Some(s);
        }
        if t0.elapsed() > TIME_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let _ = feeder.join();
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    let Some(status) = status else {
        return Err(format!(
            "HANG: still running after {TIME_LIMIT:?}\n{stderr}"
        ));
    };
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return Err(format!("CRASH: killed by signal {sig}\n{stderr}"));
        }
    }
    if let Some(sign) = CRASH_SIGNS.iter().find(|s| stderr.contains(*s)) {
        return Err(format!("crash sign {sign:?} on stderr:\n{stderr}"));
    }
    let code = status.code();
    match &c.expect {
        Expect::Success => {
            if code != Some(0) {
                return Err(format!("expected success, got {code:?}:\n{stderr}"));
            }
        }
        Expect::Error(needles) => {
            if code != Some(2) {
                return Err(format!(
                    "expected exit code 2, got {code:?}:\nstdout: {}\nstderr: {stderr}",
                    stdout.chars().take(400).collect::<String>()
                ));
            }
            let line = stderr
                .lines()
                .find(|l| l.starts_with("error:"))
                .ok_or_else(|| format!("no `error:` line on stderr:\n{stderr}"))?;
            for n in needles {
                if !line.contains(n.as_str()) {
                    return Err(format!("the error line lacks {n:?}:\n{line}"));
                }
            }
        }
    }
    if let (Some(dir), Some(before)) = (&c.unchanged, before) {
        let after = names_in(dir);
        if after != before {
            return Err(format!(
                "{} changed: {before:?} -> {after:?}",
                dir.display()
            ));
        }
    }
    Ok(())
}

/// Runs every case; fails listing all that failed. Returns how many ran.
fn run_all(cases: &[Case]) -> usize {
    eprintln!("hostile: {} cases", cases.len());
    let mut failures = Vec::new();
    for c in cases {
        if let Err(e) = run_case(c) {
            failures.push(format!(
                "[{}] minicpmv {}\n    {}",
                c.label,
                c.args
                    .iter()
                    .map(|a| a.to_string_lossy().chars().take(120).collect::<String>())
                    .collect::<Vec<_>>()
                    .join(" "),
                e.replace('\n', "\n    ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} hostile inputs failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    cases.len()
}

fn s(p: &Path) -> String {
    p.to_str().expect("utf-8 temp path").to_string()
}

/// A folder for this module's fixtures.
fn dir() -> PathBuf {
    let d = work_dir().join("hostile");
    std::fs::create_dir_all(&d).expect("create fixture dir");
    d
}

fn write(name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir().join(name);
    std::fs::write(&p, bytes).expect("write fixture");
    p
}

/// An empty folder of its own for a case's output.
fn out_dir(name: &str) -> PathBuf {
    let d = dir().join(format!("out-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create output dir");
    d
}

// ---------------------------------------------------------------------------------------------
// GGUF edits with the library's writer

/// One change to a GGUF file. Keys starting with `{arch}.` get the file's architecture.
#[derive(Debug, Clone)]
enum Edit {
    Set(&'static str, MetaValue),
    Drop(&'static str),
    TensorType(&'static str, GgmlType),
    TensorDims(&'static str, Vec<u64>),
    AddTensor(&'static str, Vec<u64>),
    /// The second vocabulary entry becomes a copy of the first.
    DuplicateToken,
}

/// A copy of `src` with `edits`, written as `name` in the fixture folder; tensor data is the
/// original data repeated or cut to the new size (zeros for added tensors).
fn remix(src: &Path, name: &str, edits: &[Edit]) -> PathBuf {
    let f = GgufFile::open(src).expect("source GGUF opens");
    let arch = f.architecture().unwrap_or("").to_string();
    let key = |k: &str| k.replace("{arch}", &arch);
    let mut meta: Vec<(String, MetaValue)> = f.metadata.clone();
    let mut tensors: Vec<(String, Vec<u64>, GgmlType, Option<usize>)> = f
        .tensors
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.clone(), t.dims.clone(), t.ggml_type, Some(i)))
        .collect();
    for e in edits {
        match e {
            Edit::Set(k, v) => {
                let k = key(k);
                match meta.iter_mut().find(|(mk, _)| *mk == k) {
                    Some(slot) => slot.1 = v.clone(),
                    None => meta.push((k, v.clone())),
                }
            }
            Edit::Drop(k) => {
                let k = key(k);
                meta.retain(|(mk, _)| *mk != k);
                tensors.retain(|t| t.0 != k);
            }
            Edit::TensorType(n, ty) => {
                tensors
                    .iter_mut()
                    .find(|t| t.0 == *n)
                    .unwrap_or_else(|| panic!("no tensor {n}"))
                    .2 = *ty
            }
            Edit::TensorDims(n, dims) => {
                tensors
                    .iter_mut()
                    .find(|t| t.0 == *n)
                    .unwrap_or_else(|| panic!("no tensor {n}"))
                    .1 = dims.clone()
            }
            Edit::AddTensor(n, dims) => {
                tensors.push((n.to_string(), dims.clone(), GgmlType::F32, None))
            }
            Edit::DuplicateToken => {
                let slot = meta
                    .iter_mut()
                    .find(|(k, _)| k == "tokenizer.ggml.tokens")
                    .expect("tokens");
                if let MetaValue::Array(MetaArray::String(toks)) = &mut slot.1 {
                    toks[1] = toks[0].clone();
                }
            }
        }
    }
    let mut w = GgufWriter::new();
    for (k, v) in &meta {
        w.add_kv(k, v.clone());
    }
    for (n, dims, ty, _) in &tensors {
        w.add_tensor(n, dims, *ty).expect("add tensor");
    }
    let path = dir().join(name);
    w.write(&path, |i, info, out: &mut dyn Write| {
        let len = usize::try_from(info.n_bytes).expect("small tensor");
        let data = match tensors[i].3 {
            Some(j) => f
                .read_tensor_bytes(&f.tensors[j])
                .map_err(std::io::Error::other)?,
            None => vec![0],
        };
        let bytes: Vec<u8> = data.iter().copied().cycle().take(len).collect();
        out.write_all(&bytes)
    })
    .unwrap_or_else(|e| panic!("write {name}: {e}"));
    path
}

/// Language-model mutations: `(label, edits, needle)`; each is a value llama.cpp asserts on
/// (or a file it would misread) and must be refused before it is loaded.
fn model_mutations() -> Vec<(&'static str, Vec<Edit>, &'static str)> {
    use Edit::*;
    use MetaValue as V;
    vec![
        (
            "block_count-0",
            vec![Set("{arch}.block_count", V::U32(0))],
            "block_count",
        ),
        (
            "block_count-513",
            vec![Set("{arch}.block_count", V::U32(513))],
            "block_count",
        ),
        (
            "block_count-100000",
            vec![Set("{arch}.block_count", V::U32(100_000))],
            "block_count",
        ),
        (
            "block_count-1",
            vec![Set("{arch}.block_count", V::U32(1))],
            "block_count",
        ),
        (
            "rms-eps-negative",
            vec![Set("{arch}.attention.layer_norm_rms_epsilon", V::F32(-1.0))],
            "layer_norm_rms_epsilon",
        ),
        (
            "rms-eps-nan",
            vec![Set(
                "{arch}.attention.layer_norm_rms_epsilon",
                V::F32(f32::NAN),
            )],
            "layer_norm_rms_epsilon",
        ),
        (
            "rms-eps-zero",
            vec![Set("{arch}.attention.layer_norm_rms_epsilon", V::F32(0.0))],
            "layer_norm_rms_epsilon",
        ),
        (
            "rms-eps-missing",
            vec![Drop("{arch}.attention.layer_norm_rms_epsilon")],
            "layer_norm_rms_epsilon",
        ),
        (
            "key_length-0",
            vec![Set("{arch}.attention.key_length", V::U32(0))],
            "head size",
        ),
        (
            "key_length-odd",
            vec![Set("{arch}.attention.key_length", V::U32(3))],
            "head size",
        ),
        (
            "head_count-0",
            vec![Set("{arch}.attention.head_count", V::U32(0))],
            "head_count",
        ),
        (
            "head_count-not-dividing",
            vec![Set("{arch}.attention.head_count", V::U32(3))],
            "head_count",
        ),
        (
            "head_count-missing",
            vec![Drop("{arch}.attention.head_count")],
            "head_count",
        ),
        (
            "head_count_kv-0",
            vec![Set("{arch}.attention.head_count_kv", V::U32(0))],
            "head_count_kv",
        ),
        (
            "head_count_kv-not-dividing",
            vec![Set("{arch}.attention.head_count_kv", V::U32(3))],
            "head_count_kv",
        ),
        (
            "head_count-per-layer-differs",
            vec![Set(
                "{arch}.attention.head_count",
                V::Array(MetaArray::U32(vec![2, 4])),
            )],
            "differs between layers",
        ),
        (
            "value_length-differs",
            vec![Set("{arch}.attention.value_length", V::U32(6))],
            "value_length",
        ),
        (
            "rope-dims-differ",
            vec![Set("{arch}.rope.dimension_count", V::U32(6))],
            "rope.dimension_count",
        ),
        (
            "expert_count",
            vec![Set("{arch}.expert_count", V::U32(8))],
            "expert_count",
        ),
        (
            "nextn",
            vec![Set("{arch}.nextn_predict_layers", V::U32(1))],
            "nextn_predict_layers",
        ),
        (
            "rope-scaling-unknown",
            vec![Set("{arch}.rope.scaling.type", V::String("bogus".into()))],
            "rope.scaling.type",
        ),
        (
            "not-causal",
            vec![Set("{arch}.attention.causal", V::Bool(false))],
            "causal",
        ),
        (
            "feed_forward-0",
            vec![Set("{arch}.feed_forward_length", V::U32(0))],
            "feed_forward_length",
        ),
        (
            "context_length-0",
            vec![Set("{arch}.context_length", V::U32(0))],
            "context_length",
        ),
        (
            "width-disagrees",
            vec![Set("{arch}.embedding_length", V::U32(256))],
            "token_embd.weight",
        ),
        ("duplicate-token", vec![DuplicateToken], "twice"),
        (
            "tokenizer-none",
            vec![Set("tokenizer.ggml.model", V::String("none".into()))],
            "tokenizer.ggml.model",
        ),
        (
            "eos-beyond-vocab",
            vec![Set("tokenizer.ggml.eos_token_id", V::U32(1_000_000))],
            "eos_token_id",
        ),
        (
            "norm-f16",
            vec![TensorType("output_norm.weight", GgmlType::F16)],
            "output_norm.weight",
        ),
        (
            "matrix-i32",
            vec![TensorType("blk.0.ffn_up.weight", GgmlType::I32)],
            "blk.0.ffn_up.weight",
        ),
        (
            "attn_k-shape",
            vec![TensorDims("blk.1.attn_k.weight", vec![4, 4])],
            "blk.1.attn_k.weight",
        ),
        (
            "no-output_norm",
            vec![Drop("output_norm.weight")],
            "output_norm.weight",
        ),
        (
            "arch-gpt2",
            vec![Set("general.architecture", V::String("gpt2".into()))],
            "gpt2",
        ),
    ]
}

/// Projector mutations, as [`model_mutations`].
fn mmproj_mutations() -> Vec<(&'static str, Vec<Edit>, &'static str)> {
    use Edit::*;
    use MetaValue as V;
    vec![
        (
            "head_count-not-dividing",
            vec![Set("clip.vision.attention.head_count", V::U32(3))],
            "head_count",
        ),
        (
            "head_count-above-width",
            vec![Set("clip.vision.attention.head_count", V::U32(64))],
            "head_count",
        ),
        (
            "head_count_kv-not-dividing",
            vec![Set("clip.vision.attention.head_count_kv", V::U32(3))],
            "head_count_kv",
        ),
        (
            "width-disagrees",
            vec![Set("clip.vision.embedding_length", V::U32(48))],
            "v.patch_embd.weight",
        ),
        (
            "patch-disagrees",
            vec![Set("clip.vision.patch_size", V::U32(7))],
            "v.patch_embd.weight",
        ),
        (
            "eps-negative",
            vec![Set(
                "clip.vision.attention.layer_norm_epsilon",
                V::F32(-1.0),
            )],
            "layer_norm_epsilon",
        ),
        (
            "eps-nan",
            vec![Set(
                "clip.vision.attention.layer_norm_epsilon",
                V::F32(f32::NAN),
            )],
            "layer_norm_epsilon",
        ),
        (
            "blocks-0",
            vec![Set("clip.vision.block_count", V::U32(0))],
            "block_count",
        ),
        (
            "blocks-3",
            vec![Set("clip.vision.block_count", V::U32(3))],
            "block_count",
        ),
        (
            "blocks-1000",
            vec![Set("clip.vision.block_count", V::U32(1000))],
            "block_count",
        ),
        (
            "audio-encoder",
            vec![Set("clip.has_audio_encoder", V::Bool(true))],
            "has_audio_encoder",
        ),
        (
            "pinpoints",
            vec![Set(
                "clip.vision.image_grid_pinpoints",
                V::Array(MetaArray::I32(vec![448, 448])),
            )],
            "image_grid_pinpoints",
        ),
        (
            "class-token",
            vec![AddTensor("v.class_embd", vec![4])],
            "v.class_embd",
        ),
        (
            "merge-type-u32",
            vec![Set("clip.vision.mm_patch_merge_type", V::U32(1))],
            "mm_patch_merge_type",
        ),
        (
            "std-zero",
            vec![Set(
                "clip.vision.image_std",
                V::Array(MetaArray::F32(vec![0.0; 3])),
            )],
            "image_std",
        ),
        (
            "mean-nan",
            vec![Set(
                "clip.vision.image_mean",
                V::Array(MetaArray::F32(vec![f32::NAN; 3])),
            )],
            "image_mean",
        ),
        (
            "too-many-patches",
            vec![Set("clip.vision.image_size", V::U32(4480))],
            "patches per side",
        ),
        (
            "proj-not-square",
            vec![TensorDims("resampler.proj.weight", vec![128, 256])],
            "resampler.proj.weight",
        ),
        (
            "query-f16",
            vec![TensorType("resampler.query", GgmlType::F16)],
            "resampler.query",
        ),
        (
            "no-position-embd",
            vec![Drop("v.position_embd.weight")],
            "v.position_embd.weight",
        ),
        (
            "ffn-shape",
            vec![TensorDims("v.blk.0.ffn_up.weight", vec![8, 8])],
            "ffn_up",
        ),
        (
            "attn_q-shape",
            vec![TensorDims("v.blk.1.attn_q.weight", vec![8, 8])],
            "v.blk.1.attn_q.weight",
        ),
        (
            "kv-shape",
            vec![TensorDims("resampler.kv.weight", vec![8, 128])],
            "resampler.kv.weight",
        ),
        (
            "patch-kernel-i32",
            vec![TensorType("v.patch_embd.weight", GgmlType::I32)],
            "v.patch_embd.weight",
        ),
        (
            "version-7",
            vec![Set("clip.minicpmv_version", V::I32(7))],
            "clip.minicpmv_version",
        ),
        (
            "projector-mlp",
            vec![Set("clip.projector_type", V::String("mlp".into()))],
            "resampler",
        ),
    ]
}

/// `run` on `model` + `mmproj` with a tiny prompt.
fn run_args(model: &Path, mmproj: &Path) -> Vec<String> {
    [
        "run",
        "-m",
        &s(model),
        "--mmproj",
        &s(mmproj),
        "-p",
        "Hi",
        "-n",
        "2",
        "-t",
        "2",
    ]
    .map(String::from)
    .to_vec()
}

fn plan_args(model: &Path, mmproj: &Path) -> Vec<String> {
    ["plan", "-m", &s(model), "--mmproj", &s(mmproj)]
        .map(String::from)
        .to_vec()
}

/// `quantize FILE OUT --type q8_0` into a fresh folder that must stay empty.
fn quantize_case(label: &str, input: &Path, needles: &[&str]) -> Case {
    let out = out_dir(label);
    Case::error(
        format!("quantize {label}"),
        [
            "quantize",
            &s(input),
            &s(&out.join("out.gguf")),
            "--type",
            "q8_0",
        ],
        needles,
    )
    .unchanged(&out)
}

#[test]
fn model_values_llama_cpp_asserts_on_are_refused_for_every_version() {
    let mut cases = Vec::new();
    for version in VERSIONS {
        let (model, mmproj) = tiny_pair(version);
        for (label, edits, needle) in model_mutations() {
            let bad = remix(&model, &format!("m{version}-{label}.gguf"), &edits);
            let p = s(&bad);
            cases.push(Case::error(
                format!("{version} model {label}: run"),
                run_args(&bad, &mmproj),
                &[&p, needle],
            ));
            if version == "2.6" {
                cases.push(Case::error(
                    format!("{version} model {label}: plan"),
                    plan_args(&bad, &mmproj),
                    &[&p, needle],
                ));
                cases.push(quantize_case(&format!("m{label}"), &bad, &[&p, needle]));
                let img = s(&image(300, 200));
                cases.push(Case::error(
                    format!("{version} model {label}: parity"),
                    [
                        "parity",
                        "-m",
                        &p,
                        "--mmproj",
                        &s(&mmproj),
                        "--image",
                        &img,
                        "-n",
                        "2",
                    ],
                    &[&p, needle],
                ));
                cases.push(Case::error(
                    format!("{version} model {label}: quality"),
                    [
                        "quality",
                        "--reference-model",
                        &s(&model),
                        "--reference-mmproj",
                        &s(&mmproj),
                        "-m",
                        &p,
                        "--mmproj",
                        &s(&mmproj),
                        "--image",
                        &img,
                    ],
                    &[&p, needle],
                ));
            }
        }
    }
    run_all(&cases);
}

#[test]
fn projector_values_llama_cpp_asserts_on_are_refused_for_every_version() {
    let mut cases = Vec::new();
    for version in VERSIONS {
        let (model, mmproj) = tiny_pair(version);
        for (label, edits, needle) in mmproj_mutations() {
            let bad = remix(&mmproj, &format!("p{version}-{label}.gguf"), &edits);
            let p = s(&bad);
            cases.push(Case::error(
                format!("{version} mmproj {label}: run"),
                run_args(&model, &bad),
                &[&p, needle],
            ));
            if version == "2.6" {
                // (quantize reads no projector hyper-parameter: it takes these files as they
                // are, and the result is refused where it is used.)
                cases.push(Case::error(
                    format!("{version} mmproj {label}: plan"),
                    plan_args(&model, &bad),
                    &[&p, needle],
                ));
            }
        }
    }
    run_all(&cases);
}

// ---------------------------------------------------------------------------------------------
// GGUF structure, patched in the raw bytes

/// Byte-level corruptions of a valid file: `(label, bytes)`.
fn structural_corruptions(src: &Path) -> Vec<(&'static str, Vec<u8>)> {
    let g = RawGguf::parse(std::fs::read(src).expect("read"));
    let size = g.bytes.len() as u64;
    let t0 = g.tensors[0].clone();
    let t1 = g.tensors[1].clone();
    let first_key = g.kvs[0].clone();
    let tokens = g
        .kvs
        .iter()
        .find(|k| k.key == "tokenizer.ggml.tokens")
        .cloned();
    let mut v = vec![
        ("offset-past-eof", g.with_u64(t0.offset_at, size * 2)),
        ("overlapping-tensors", g.with_u64(t1.offset_at, t0.offset)),
        ("n_dims-0", g.with_u32(t0.n_dims_at, 0)),
        ("n_dims-5", g.with_u32(t0.n_dims_at, 5)),
        ("type-99", g.with_u32(t0.type_at, 99)),
        ("type-removed-4", g.with_u32(t0.type_at, 4)),
        ("dim-0", g.with_u64(t0.dims_at, 0)),
        ("dims-overflow", {
            let mut b = g.with_u64(t0.dims_at, 1 << 40);
            if t0.n_dims > 1 {
                b[t0.dims_at + 8..t0.dims_at + 16].copy_from_slice(&(1u64 << 40).to_le_bytes());
            }
            b
        }),
        ("n_kv-huge", g.with_u64(g.n_kv_at(), 1 << 40)),
        ("n_tensors-huge", g.with_u64(g.n_tensors_at(), 1 << 40)),
        ("key-length-huge", g.with_u64(first_key.key_at, 1 << 62)),
        ("value-type-99", g.with_u32(first_key.type_at, 99)),
        ("bad-magic", {
            let mut b = g.bytes.clone();
            b[..4].copy_from_slice(b"GGUG");
            b
        }),
        ("version-1", g.with_u32(4, 1)),
        ("version-99", g.with_u32(4, 99)),
        ("tensor-name-duplicate", {
            // Two tensor names of the same length: the second takes the first's name.
            let twin = g
                .tensors
                .iter()
                .skip(1)
                .find(|t| t.name.len() == t0.name.len())
                .expect("two tensor names of one length");
            g.with_same_length_string(twin.name_at, &t0.name)
        }),
        ("key-duplicate", {
            let (a, b) = g
                .kvs
                .iter()
                .enumerate()
                .find_map(|(i, a)| {
                    g.kvs[i + 1..]
                        .iter()
                        .find(|b| b.key.len() == a.key.len())
                        .map(|b| (a.clone(), b.clone()))
                })
                .expect("two keys of one length");
            g.with_same_length_string(b.key_at, &a.key)
        }),
    ];
    if let Some(tokens) = tokens {
        v.push(("array-count-huge", g.with_u64(tokens.value_at + 4, 1 << 40)));
    }
    // general.alignment 0, 3 and 2^31: a u32 key of the same name length renamed.
    if let Some(k) = g
        .kvs
        .iter()
        .find(|k| k.value_type == 4 && k.key.len() == "general.alignment".len())
    {
        let renamed = RawGguf::parse(g.with_same_length_string(k.key_at, "general.alignment"));
        let at = renamed.kv("general.alignment").value_at;
        v.push(("alignment-0", renamed.with_u32(at, 0)));
        v.push(("alignment-3", renamed.with_u32(at, 3)));
        v.push(("alignment-2^31", renamed.with_u32(at, 1 << 31)));
    }
    v
}

#[test]
fn corrupt_gguf_structures_are_refused_by_inspect_run_and_quantize() {
    let (model, mmproj) = tiny_pair("2.6");
    let mut cases = Vec::new();
    for (role, src) in [("model", &model), ("mmproj", &mmproj)] {
        for (label, bytes) in structural_corruptions(src) {
            let bad = write(&format!("raw-{role}-{label}.gguf"), &bytes);
            let p = s(&bad);
            cases.push(Case::error(
                format!("{role} {label}: inspect"),
                ["inspect", p.as_str()],
                &[&p],
            ));
            let args = if role == "model" {
                run_args(&bad, &mmproj)
            } else {
                run_args(&model, &bad)
            };
            cases.push(Case::error(format!("{role} {label}: run"), args, &[&p]));
            if role == "model" {
                cases.push(quantize_case(&format!("raw-{label}"), &bad, &[&p]));
            }
        }
    }
    assert!(cases.len() >= 90, "{} structural cases", cases.len());
    run_all(&cases);
}

#[test]
fn non_finite_weights_are_refused_at_run_time() {
    let (model, mmproj) = tiny_pair("2.6");
    let mut cases = Vec::new();
    for (role, src, tensor) in [
        ("model", &model, "output_norm.weight"),
        ("mmproj", &mmproj, "resampler.ln_post.weight"),
    ] {
        for (label, value) in [("nan", f32::NAN), ("inf", f32::INFINITY)] {
            let g = RawGguf::parse(std::fs::read(src).expect("read"));
            let f = GgufFile::open(src).expect("open");
            let t = f.tensor(tensor).expect("tensor");
            assert_eq!(t.ggml_type, GgmlType::F32, "{tensor}");
            let mut bytes = g.bytes.clone();
            let at = (f.data_offset + t.offset) as usize;
            for i in 0..t.n_elements() as usize {
                bytes[at + 4 * i..at + 4 * i + 4].copy_from_slice(&value.to_le_bytes());
            }
            let bad = write(&format!("weights-{role}-{label}.gguf"), &bytes);
            let args = if role == "model" {
                run_args(&bad, &mmproj)
            } else {
                let mut a = run_args(&model, &bad);
                a.extend(["--image".into(), s(&image(300, 200))]);
                a
            };
            cases.push(Case::error(
                format!("{role} weights {label}"),
                args,
                &["non-finite"],
            ));
        }
    }
    run_all(&cases);
}

// ---------------------------------------------------------------------------------------------
// Images

/// A gradient image of `w` x `h` encoded as `format`.
fn encoded(w: u32, h: u32, format: image::ImageFormat) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            (x * 7 % 256) as u8,
            (y * 5 % 256) as u8,
            ((x ^ y) % 256) as u8,
        ])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).expect("encode image");
    out.into_inner()
}

/// CRC-32 (ISO-HDLC) of PNG chunks.
fn crc32(bytes: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// A PNG whose header announces `w` x `h` RGB pixels, followed by a few bytes of image data:
/// a decompression bomb as far as the header goes.
fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    let chunk = |kind: &[u8], data: &[u8]| {
        let mut c = (data.len() as u32).to_be_bytes().to_vec();
        c.extend_from_slice(kind);
        c.extend_from_slice(data);
        let crc = crc32(&c[4..]);
        c.extend_from_slice(&crc.to_be_bytes());
        c
    };
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(chunk(b"IHDR", &ihdr));
    // zlib stream of a few zero bytes (stored block).
    png.extend(chunk(
        b"IDAT",
        &[
            0x78, 0x01, 0x01, 0x04, 0x00, 0xFB, 0xFF, 0, 0, 0, 0, 0x00, 0x04, 0x00, 0x01,
        ],
    ));
    png.extend(chunk(b"IEND", &[]));
    png
}

/// The commands an image goes through: `run`, `plan` and `slice-plan`.
fn image_cases(label: &str, img: &Path, needles: &[&str]) -> Vec<Case> {
    let (model, mmproj) = tiny_pair("2.6");
    let p = s(img);
    let mut with_path: Vec<&str> = vec![&p];
    with_path.extend_from_slice(needles);
    let mut run = run_args(&model, &mmproj);
    run.extend(["--image".into(), p.clone()]);
    let mut plan = plan_args(&model, &mmproj);
    plan.extend(["--image".into(), p.clone()]);
    vec![
        Case::error(format!("image {label}: run"), run, &with_path),
        Case::error(format!("image {label}: plan"), plan, &with_path),
        Case::error(
            format!("image {label}: slice-plan"),
            ["slice-plan", "--image", p.as_str()],
            &with_path,
        ),
    ]
}

#[test]
fn hostile_images_are_refused_by_run_plan_and_slice_plan() {
    use image::ImageFormat as F;
    let mut cases = Vec::new();
    let mut add = |label: &str, bytes: &[u8], needles: &[&str]| {
        let img = write(&format!("image-{label}"), bytes);
        cases.extend(image_cases(label, &img, needles));
    };
    add("empty.png", b"", &["empty"]);
    add("text.png", b"not an image at all\n", &["not an image"]);
    add(
        "bomb.png",
        &png_claiming(50_000, 50_000),
        &["50000x50000", "limit"],
    );
    add("side-above-46000.png", &png_claiming(46_001, 1), &["46001"]);
    add("zero-width.png", &png_claiming(0, 10), &[]);
    add("zero-height.png", &png_claiming(10, 0), &[]);
    for (name, format) in [
        ("cut.png", F::Png),
        ("cut.jpg", F::Jpeg),
        ("cut.gif", F::Gif),
        ("cut.webp", F::WebP),
        ("cut.bmp", F::Bmp),
        ("cut.tiff", F::Tiff),
    ] {
        let full = encoded(96, 64, format);
        add(name, &full[..full.len() / 2], &[]);
    }
    let (model, _) = tiny_pair("2.6");
    add(
        "a-model.jpg",
        &std::fs::read(&model).expect("model"),
        &["not an image"],
    );
    // Extreme aspect ratios: planned, then refused before any pixel is resized.
    let wide = write("image-46000x1.png", &encoded(46_000, 1, F::Png));
    cases.extend(
        image_cases("46000x1", &wide, &["46000x1", "aspect ratio"])
            .into_iter()
            .take(2),
    );
    let tall = write("image-1x46000.png", &encoded(1, 46_000, F::Png));
    cases.extend(
        image_cases("1x46000", &tall, &["1x46000", "aspect ratio"])
            .into_iter()
            .take(2),
    );
    // Not regular files.
    let folder = dir().join("image-folder.png");
    std::fs::create_dir_all(&folder).expect("folder");
    cases.extend(image_cases("folder", &folder, &["directory"]));
    let fifo = dir().join("image-fifo.png");
    let _ = std::fs::remove_file(&fifo);
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success(), "mkfifo");
    cases.extend(image_cases("fifo", &fifo, &["FIFO"]));
    cases.extend(image_cases(
        "dev-zero",
        Path::new("/dev/zero"),
        &["character device"],
    ));
    // 600 MB (sparse): refused from its size, nothing read.
    let huge = dir().join("image-huge.png");
    std::fs::File::create(&huge)
        .and_then(|f| f.set_len(600 << 20))
        .expect("sparse file");
    cases.extend(image_cases("600MB", &huge, &["bytes", "limit"]));
    assert!(cases.len() >= 50, "{} image cases", cases.len());
    run_all(&cases);
}

#[test]
fn unusual_but_valid_images_run() {
    let (model, mmproj) = tiny_pair("2.6");
    let mut cases = Vec::new();
    let mut add = |label: &str, bytes: Vec<u8>| {
        let img = write(&format!("valid-{label}"), &bytes);
        let mut run = run_args(&model, &mmproj);
        run.extend(["--image".into(), s(&img), "--max-slices".into(), "1".into()]);
        cases.push(Case::success(format!("valid image {label}"), run));
    };
    // A JPEG named .png: the format is read from the bytes.
    add("jpeg-named.png", encoded(64, 48, image::ImageFormat::Jpeg));
    // 16 bits per channel.
    let img16 = image::ImageBuffer::<image::Rgb<u16>, _>::from_fn(40, 30, |x, y| {
        image::Rgb([(x * 1000) as u16, (y * 2000) as u16, 65535])
    });
    let mut png16 = std::io::Cursor::new(Vec::new());
    img16
        .write_to(&mut png16, image::ImageFormat::Png)
        .expect("png16");
    add("16-bit.png", png16.into_inner());
    // Grey with alpha.
    let la = image::GrayAlphaImage::from_fn(40, 30, |x, _| image::LumaA([x as u8 * 6, 128]));
    let mut png_la = std::io::Cursor::new(Vec::new());
    la.write_to(&mut png_la, image::ImageFormat::Png)
        .expect("png la");
    add("grey-alpha.png", png_la.into_inner());
    // A palette PNG, written by hand: 4x2 pixels, 4 colours, 8-bit indices.
    add("palette.png", palette_png());
    // A CMYK (Adobe) JPEG, written by hand.
    add("cmyk.jpg", cmyk_jpeg());
    run_all(&cases);
}

/// A 4x2 palette PNG (colour type 3) with a 4-entry PLTE chunk.
fn palette_png() -> Vec<u8> {
    let chunk = |kind: &[u8], data: &[u8]| {
        let mut c = (data.len() as u32).to_be_bytes().to_vec();
        c.extend_from_slice(kind);
        c.extend_from_slice(data);
        let crc = crc32(&c[4..]);
        c.extend_from_slice(&crc.to_be_bytes());
        c
    };
    let (w, h) = (4u32, 2u32);
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 3, 0, 0, 0]);
    let plte = [255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255];
    // Two rows: filter byte 0, then 4 indices; zlib stored block with its Adler-32.
    let raw = [0u8, 0, 1, 2, 3, 0, 3, 2, 1, 0];
    let adler = {
        let (mut a, mut b) = (1u32, 0u32);
        for &x in &raw {
            a = (a + u32::from(x)) % 65521;
            b = (b + a) % 65521;
        }
        (b << 16) | a
    };
    let mut z = vec![0x78, 0x01, 0x01];
    z.extend_from_slice(&(raw.len() as u16).to_le_bytes());
    z.extend_from_slice(&(!(raw.len() as u16)).to_le_bytes());
    z.extend_from_slice(&raw);
    z.extend_from_slice(&adler.to_be_bytes());
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(chunk(b"IHDR", &ihdr));
    png.extend(chunk(b"PLTE", &plte));
    png.extend(chunk(b"IDAT", &z));
    png.extend(chunk(b"IEND", &[]));
    png
}

/// An 8x8 baseline CMYK JPEG with an Adobe APP14 marker (transform 0), every block flat:
/// one DC coefficient of 0 per component and an immediate end of block.
fn cmyk_jpeg() -> Vec<u8> {
    let mut j = vec![0xFF, 0xD8];
    // APP14 "Adobe": version 100, flags 0, 0, transform 0 (CMYK stored as is).
    j.extend_from_slice(&[
        0xFF, 0xEE, 0x00, 0x0E, b'A', b'd', b'o', b'b', b'e', 0x00, 0x64, 0, 0, 0, 0, 0,
    ]);
    // One quantization table of ones.
    j.extend_from_slice(&[0xFF, 0xDB, 0x00, 0x43, 0x00]);
    j.extend(std::iter::repeat_n(1u8, 64));
    // SOF0: 8-bit, 8x8, 4 components, no subsampling, table 0.
    j.extend_from_slice(&[0xFF, 0xC0, 0x00, 0x14, 8, 0, 8, 0, 8, 4]);
    for id in 1..=4u8 {
        j.extend_from_slice(&[id, 0x11, 0]);
    }
    // DHT: DC table 0 with one code of length 1 (symbol 0: DC difference 0); AC table 0
    // with one code of length 1 (symbol 0x00: end of block).
    let mut counts = [0u8; 16];
    counts[0] = 1;
    for class in [0x00u8, 0x10] {
        j.extend_from_slice(&[0xFF, 0xC4, 0x00, 0x14, class]);
        j.extend_from_slice(&counts);
        j.push(0x00);
    }
    // SOS: 4 components, tables 0/0, spectral 0..63.
    j.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x0E, 4]);
    for id in 1..=4u8 {
        j.extend_from_slice(&[id, 0x00]);
    }
    j.extend_from_slice(&[0, 63, 0]);
    // Per component: DC code "0" (difference 0), AC code "0" (EOB): 8 bits of 0.
    j.push(0x00);
    j.extend_from_slice(&[0xFF, 0xD9]);
    j
}

// ---------------------------------------------------------------------------------------------
// Flags, prompts and values

#[test]
fn hostile_flags_and_prompts_are_refused() {
    let (model, mmproj) = tiny_pair("2.6");
    let img = s(&image(1920, 1080));
    let small = s(&image(300, 200));
    let run = |extra: &[&str]| {
        let mut a = run_args(&model, &mmproj);
        a.extend(extra.iter().map(|x| x.to_string()));
        a
    };
    // `run` with its own prompt arguments instead of `-p Hi`.
    let run_p = |extra: &[&str]| {
        let mut a: Vec<String> = [
            "run",
            "-m",
            &s(&model),
            "--mmproj",
            &s(&mmproj),
            "-n",
            "2",
            "-t",
            "2",
        ]
        .map(String::from)
        .to_vec();
        a.extend(extra.iter().map(|x| x.to_string()));
        a
    };
    let big_prompt = write("prompt-1MB.txt", "x ".repeat(1 << 19).as_bytes());
    let bad_utf8_prompt = write("prompt-not-utf8.txt", &[b'h', 0xFF, 0xFE, b'i']);
    let mut cases = vec![
        Case::error("-c 0", run(&["-c", "0"]), &["-c"]),
        Case::error("-c 1", run(&["-c", "1"]), &["-c"]),
        Case::error(
            "-c 2^31-1",
            run(&["-c", "2147483647"]),
            &["2147483647", "trained"],
        ),
        Case::error(
            "-c 99999999 plan",
            {
                let mut a = plan_args(&model, &mmproj);
                a.extend(["-c".into(), "99999999".into()]);
                a
            },
            &["99999999", "trained"],
        ),
        Case::error("-t 0", run(&["-t", "0"]), &["--threads"]),
        Case::error("-t 100000", run(&["-t", "100000"]), &["--threads"]),
        Case::error("-b 0", run(&["-b", "0"]), &["--batch-size"]),
        Case::error("-n 0", run(&["-n", "0"]), &["--n-predict"]),
        Case::error(
            "--max-slices 0",
            run(&["--max-slices", "0"]),
            &["--max-slices"],
        ),
        Case::error(
            "--max-slices 10",
            run(&["--max-slices", "10"]),
            &["--max-slices"],
        ),
        Case::error("--temp nan", run(&["--temp", "nan"]), &["--temp"]),
        Case::error("--temp inf", run(&["--temp", "inf"]), &["--temp"]),
        Case::error("--temp -1", run(&["--temp", "-1"]), &["--temp", "-1"]),
        Case::error("--top-p 1.5", run(&["--top-p", "1.5"]), &["--top-p"]),
        Case::error("--top-p nan", run(&["--top-p", "nan"]), &["--top-p"]),
        Case::error("--min-p -0.5", run(&["--min-p", "-0.5"]), &["--min-p"]),
        Case::error("--min-p 2", run(&["--min-p", "2"]), &["--min-p"]),
        Case::error(
            "--repeat-penalty 0",
            run(&["--repeat-penalty", "0"]),
            &["--repeat-penalty"],
        ),
        Case::error(
            "--repeat-penalty nan",
            run(&["--repeat-penalty", "nan"]),
            &["--repeat-penalty"],
        ),
        Case::error("--top-k -1", run(&["--top-k", "-1"]), &["--top-k"]),
        Case::error(
            "--kv-type q9",
            run(&["--kv-type", "q9"]),
            &["--kv-type", "q9"],
        ),
        Case::error("--pipeline x", run(&["--pipeline", "x"]), &["--pipeline"]),
        Case::error("--repack maybe", run(&["--repack", "maybe"]), &["--repack"]),
        Case::error(
            "--max-image-pixels 0",
            run(&["--max-image-pixels", "0"]),
            &["--max-image-pixels"],
        ),
        Case::error(
            "prompt longer than the context",
            run_p(&["-p", &"word ".repeat(5000)]),
            &["context"],
        ),
        Case::error(
            "1 MB prompt file",
            run_p(&["-f", &s(&big_prompt)]),
            &["context"],
        ),
        Case::error("1 MB prompt on stdin", run_p(&["-f", "-"]), &["context"])
            .stdin("y ".repeat(1 << 19)),
        Case::error(
            "prompt file not UTF-8",
            run_p(&["-f", &s(&bad_utf8_prompt)]),
            &[&s(&bad_utf8_prompt), "UTF-8"],
        ),
        Case::error(
            "prompt file missing",
            run_p(&["-f", "/nonexistent/prompt.txt"]),
            &["/nonexistent/prompt.txt"],
        ),
        Case::error(
            "prompt file is /dev/zero",
            run_p(&["-f", "/dev/zero"]),
            &["/dev/zero"],
        ),
        Case::error(
            "-p and -f together",
            run_p(&["-p", "a", "-f", &s(&big_prompt)]),
            &["--file"],
        ),
        Case::error(
            "two placeholders, one image",
            run_p(&["-p", "<__media__> and <__media__>", "--image", &small]),
            &["placeholders"],
        ),
        Case::error(
            "placeholder without an image",
            run_p(&["-p", "look: <__media__>"]),
            &["placeholders"],
        ),
        Case::error("empty prompt, no image", run_p(&["-p", ""]), &["nothing"]),
    ];
    // 50 images of 9 chunks each do not fit a 4096 context.
    let mut fifty = run(&[]);
    for _ in 0..50 {
        fifty.extend(["--image".into(), img.clone()]);
    }
    cases.push(Case::error("50 images", fifty, &["context"]));
    // A prompt that is not UTF-8 (argv bytes).
    {
        use std::os::unix::ffi::OsStringExt;
        let mut a: Vec<OsString> = run(&[]).into_iter().map(Into::into).collect();
        let i = a.iter().position(|x| x == "-p").expect("-p") + 1;
        a[i] = OsString::from_vec(vec![b'h', 0xFF, 0xFE, b'i']);
        cases.push(Case {
            label: "prompt not UTF-8".into(),
            args: a,
            ..Case::error("", Vec::<String>::new(), &["UTF-8"])
        });
    }
    // The other commands' values.
    cases.push(Case::error(
        "parity --tolerance nan",
        [
            "parity",
            "-m",
            &s(&model),
            "--mmproj",
            &s(&mmproj),
            "--image",
            &small,
            "--tolerance",
            "nan",
        ],
        &["--tolerance"],
    ));
    cases.push(Case::error(
        "parity -n 0",
        [
            "parity",
            "-m",
            &s(&model),
            "--mmproj",
            &s(&mmproj),
            "--image",
            &small,
            "-n",
            "0",
        ],
        &["--n-predict"],
    ));
    cases.push(Case::error(
        "slice-plan 0x5",
        ["slice-plan", "0x5"],
        &["0x5"],
    ));
    cases.push(Case::error(
        "slice-plan 5y5",
        ["slice-plan", "5y5"],
        &["5y5"],
    ));
    cases.push(Case::error(
        "quality without images",
        [
            "quality",
            "-m",
            &s(&model),
            "--mmproj",
            &s(&mmproj),
            "--reference-model",
            &s(&model),
            "--reference-mmproj",
            &s(&mmproj),
        ],
        &["required arguments"],
    ));
    cases.push(Case::error(
        "chat -c beyond training",
        [
            "chat",
            "-m",
            &s(&model),
            "--mmproj",
            &s(&mmproj),
            "-c",
            "999999",
        ],
        &["999999", "trained"],
    ));
    run_all(&cases);
}

// ---------------------------------------------------------------------------------------------
// quantize and inspect: files and paths

#[test]
fn hostile_quantize_and_inspect_paths_are_refused() {
    let (model, mmproj) = tiny_pair("2.6");
    let text = write("q-text.gguf", b"plain text, not a model\n");
    let folder = dir().join("q-folder.gguf");
    std::fs::create_dir_all(&folder).expect("folder");
    let out = out_dir("q-paths");
    let o = |name: &str| s(&out.join(name));
    let m = s(&model);
    let cases = vec![
        Case::error(
            "quantize missing input",
            [
                "quantize",
                "/nonexistent/m.gguf",
                &o("a.gguf"),
                "--type",
                "q8_0",
            ],
            &["/nonexistent/m.gguf"],
        )
        .unchanged(&out),
        Case::error(
            "quantize folder input",
            ["quantize", &s(&folder), &o("a.gguf"), "--type", "q8_0"],
            &["directory"],
        )
        .unchanged(&out),
        Case::error(
            "quantize text input",
            ["quantize", &s(&text), &o("a.gguf"), "--type", "q8_0"],
            &[&s(&text)],
        )
        .unchanged(&out),
        Case::error(
            "quantize /dev/zero",
            ["quantize", "/dev/zero", &o("a.gguf"), "--type", "q8_0"],
            &["character device"],
        )
        .unchanged(&out),
        Case::error(
            "quantize into a missing folder",
            [
                "quantize",
                &m,
                &s(&out.join("no/such/dir/a.gguf")),
                "--type",
                "q8_0",
            ],
            &["no/such/dir"],
        )
        .unchanged(&out),
        Case::error(
            "quantize onto a folder",
            ["quantize", &m, &s(&out), "--type", "q8_0"],
            &[&s(&out)],
        )
        .unchanged(&out),
        Case::error(
            "quantize onto its input",
            ["quantize", &m, &m, "--type", "q8_0", "--force"],
            &[&m],
        )
        .unchanged(&out),
        Case::error(
            "quantize --type bogus",
            ["quantize", &m, &o("a.gguf"), "--type", "bogus"],
            &["bogus"],
        )
        .unchanged(&out),
        Case::error(
            "quantize pair, swapped",
            [
                "quantize",
                "--preset",
                "int8",
                "-m",
                &s(&mmproj),
                "--mmproj",
                &m,
                "--out-dir",
                &s(&out),
            ],
            &[&s(&mmproj)],
        )
        .unchanged(&out),
        Case::error(
            "inspect /dev/zero",
            ["inspect", "/dev/zero"],
            &["character device"],
        ),
        Case::error("inspect folder", ["inspect", &s(&folder)], &["directory"]),
        Case::error(
            "inspect missing",
            ["inspect", "/nonexistent/x.gguf"],
            &["/nonexistent/x.gguf"],
        ),
    ];
    run_all(&cases);
}

// ---------------------------------------------------------------------------------------------
// chat

#[test]
fn hostile_chat_input_is_refused_or_survived() {
    let (model, mmproj) = tiny_pair("2.6");
    let chat = |extra: &[&str]| {
        let mut a: Vec<String> = [
            "chat",
            "-m",
            &s(&model),
            "--mmproj",
            &s(&mmproj),
            "-n",
            "2",
            "-t",
            "2",
            "-q",
        ]
        .map(String::from)
        .to_vec();
        a.extend(extra.iter().map(|x| x.to_string()));
        a
    };
    let not_a_dir = write("chat-cache-is-a-file", b"x");
    let corrupt = dir().join("chat-corrupt-cache");
    std::fs::create_dir_all(&corrupt).expect("cache dir");
    std::fs::write(corrupt.join("0000.embd"), b"garbage").expect("entry");
    std::fs::write(
        corrupt.join(format!("{}.embd", "ab".repeat(32))),
        vec![0xFFu8; 4096],
    )
    .expect("entry");
    let cases = vec![
        Case::error("missing image", chat(&[]), &["/nonexistent/pic.png"])
            .stdin("/image /nonexistent/pic.png\nhi\n"),
        Case::error("image is /dev/zero", chat(&[]), &["character device"])
            .stdin("/image /dev/zero\nhi\n"),
        Case::error("10 MB line", chat(&[]), &["context"])
            .stdin(format!("{}\n", "y".repeat(10 << 20))),
        Case::error("binary garbage", chat(&[]), &["UTF-8"])
            .stdin(vec![0xFFu8, 0xFE, 0x00, 0x80, b'\n']),
        Case::error("unknown command", chat(&[]), &["/frobnicate"]).stdin("/frobnicate\n"),
        Case::error(
            "cache folder is a file",
            chat(&["--embd-cache", &s(&not_a_dir)]),
            &[&s(&not_a_dir)],
        )
        .stdin("hi\n"),
        Case::error(
            "cache folder under a file",
            chat(&["--embd-cache", &s(&not_a_dir.join("sub"))]),
            &[&s(&not_a_dir)],
        )
        .stdin("hi\n"),
        Case::success("EOF mid-line", chat(&[])).stdin("hello there"),
        Case::success(
            "corrupt cache entries are ignored",
            chat(&["--embd-cache", &s(&corrupt)]),
        )
        .stdin(format!("/image {}\nhi\n", s(&image(300, 200)))),
        Case::success("empty input", chat(&[])).stdin(""),
    ];
    run_all(&cases);
}

// ---------------------------------------------------------------------------------------------
// pull against a stub hub

/// What the stub answers to one path.
#[derive(Debug, Clone)]
pub(crate) enum Reply {
    Status(u16, String),
    Json(String),
    Redirect(String),
    /// `Content-Length: declared`, then `bytes`, then the connection closes.
    Body {
        declared: usize,
        bytes: Vec<u8>,
    },
    /// No length: bytes until the client gives up.
    Endless,
    /// `bytes` with their length, sent `chunk` bytes at a time with `delay` between chunks
    /// (a slow download, to stop midway).
    Slow {
        bytes: Vec<u8>,
        chunk: usize,
        delay: Duration,
    },
}

/// A one-thread HTTP/1.1 server on 127.0.0.1 answering from a route table; stops on drop.
pub(crate) struct Stub {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl Stub {
    pub(crate) fn start(routes: Vec<(String, Reply)>) -> Stub {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let routes = routes.clone();
                        let flag = Arc::clone(&flag);
                        std::thread::spawn(move || serve(stream, &routes, &flag));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Stub { port, stop }
    }

    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(mut stream: TcpStream, routes: &[(String, Reply)], stop: &AtomicBool) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 << 10 {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
    let reply = routes
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, r)| r.clone())
        .unwrap_or(Reply::Status(404, "not found".into()));
    let _ = match reply {
        Reply::Status(code, body) => write!(
            stream,
            "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
        Reply::Json(body) => write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
        Reply::Redirect(to) => write!(
            stream,
            "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
        Reply::Body { declared, bytes } => write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Length: {declared}\r\nConnection: close\r\n\r\n"
        )
        .and_then(|()| stream.write_all(&bytes)),
        Reply::Slow {
            bytes,
            chunk,
            delay,
        } => {
            let mut r = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                bytes.len()
            );
            for part in bytes.chunks(chunk.max(1)) {
                if r.is_err() || stop.load(Ordering::Relaxed) {
                    break;
                }
                r = stream.write_all(part);
                std::thread::sleep(delay);
            }
            r
        }
        Reply::Endless => {
            let _ = write!(stream, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
            let chunk = vec![0x42u8; 64 << 10];
            let t0 = Instant::now();
            while !stop.load(Ordering::Relaxed) && t0.elapsed() < Duration::from_secs(20) {
                if stream.write_all(&chunk).is_err() {
                    break;
                }
            }
            Ok(())
        }
    };
}

const STUB_REPO: &str = "acme/tiny-gguf";
const STUB_MODEL: &str = "tiny-Q4_K_M.gguf";
const STUB_MMPROJ: &str = "mmproj-tiny-f16.gguf";

pub(crate) fn sha_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    format!("{:x}", Sha256::digest(bytes))
}

pub(crate) fn listing(files: &[(&str, usize, &str)]) -> String {
    let entries: Vec<String> = files
        .iter()
        .map(|(path, size, oid)| {
            format!(r#"{{"type":"file","path":"{path}","size":{size},"lfs":{{"oid":"{oid}","size":{size}}}}}"#)
        })
        .collect();
    format!("[{}]", entries.join(","))
}

/// A pull case against `routes`, with a home of its own whose repository folder must end
/// without the model file.
fn pull_case(label: &str, routes: Vec<(String, Reply)>, needles: &[&str]) -> (Case, Stub) {
    let stub = Stub::start(routes);
    let home = dir().join(format!("pull-home-{label}"));
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&home).expect("home");
    let case = Case::error(
        format!("pull {label}"),
        ["pull", STUB_REPO, "--quant", "Q4_K_M"],
        needles,
    )
    .env("HF_ENDPOINT", stub.endpoint())
    .env("MINICPMV_OFFLINE", "0")
    .env("MINICPMV_HOME", home.clone());
    (case, stub)
}

#[test]
fn hostile_hubs_are_refused_by_pull() {
    let tree = format!("/api/models/{STUB_REPO}/tree/main");
    let resolve = |f: &str| format!("/{STUB_REPO}/resolve/main/{f}");
    let good = b"GGUF-bytes-of-a-pretend-model".to_vec();
    let proj = b"GGUF-bytes-of-a-pretend-projector".to_vec();
    let good_listing = listing(&[
        (STUB_MODEL, good.len(), &sha_hex(&good)),
        (STUB_MMPROJ, proj.len(), &sha_hex(&proj)),
    ]);
    let mut runs: Vec<(Case, Stub)> = Vec::new();
    let mut add = |label: &str, routes: Vec<(String, Reply)>, needles: &[&str]| {
        runs.push(pull_case(label, routes, needles));
    };
    add(
        "listing-not-json",
        vec![(tree.clone(), Reply::Json("<html>".into()))],
        &["not a valid repository listing"],
    );
    add(
        "listing-not-a-list",
        vec![(tree.clone(), Reply::Json(r#"{"error":"x"}"#.into()))],
        &["not a valid repository listing"],
    );
    add(
        "listing-401",
        vec![(tree.clone(), Reply::Status(401, "no".into()))],
        &["401"],
    );
    add("listing-404", vec![], &["404"]);
    add(
        "listing-500",
        vec![(tree.clone(), Reply::Status(500, "boom".into()))],
        &["500"],
    );
    add(
        "dot-dot-names",
        vec![(
            tree.clone(),
            Reply::Json(listing(&[
                ("../evil-Q4_K_M.gguf", 4, &sha_hex(b"evil")),
                ("../mmproj-f16.gguf", 4, &sha_hex(b"evil")),
            ])),
        )],
        &["Q4_K_M"],
    );
    add(
        "absolute-names",
        vec![(
            tree.clone(),
            Reply::Json(listing(&[
                ("/etc/evil-Q4_K_M.gguf", 4, &sha_hex(b"evil")),
                ("/tmp/mmproj-f16.gguf", 4, &sha_hex(b"evil")),
            ])),
        )],
        &["Q4_K_M"],
    );
    add(
        "oid-not-sha256",
        vec![(
            tree.clone(),
            Reply::Json(listing(&[
                (STUB_MODEL, 4, "1234"),
                (STUB_MMPROJ, 4, "abcd"),
            ])),
        )],
        &["not a sha256"],
    );
    add(
        "sha-mismatch",
        vec![
            (tree.clone(), Reply::Json(good_listing.clone())),
            (
                resolve(STUB_MODEL),
                Reply::Body {
                    declared: good.len(),
                    bytes: good.iter().map(|b| b ^ 1).collect(),
                },
            ),
            (
                resolve(STUB_MMPROJ),
                Reply::Body {
                    declared: proj.len(),
                    bytes: proj.clone(),
                },
            ),
        ],
        &["sha256"],
    );
    add(
        "truncated-body",
        vec![
            (tree.clone(), Reply::Json(good_listing.clone())),
            (
                resolve(STUB_MODEL),
                Reply::Body {
                    declared: good.len(),
                    bytes: good[..5].to_vec(),
                },
            ),
        ],
        &["stopped at"],
    );
    add(
        "redirect-loop",
        vec![
            (tree.clone(), Reply::Json(good_listing.clone())),
            (resolve(STUB_MODEL), Reply::Redirect(resolve(STUB_MODEL))),
        ],
        &[STUB_MODEL],
    );
    add(
        "endless-body",
        vec![
            (tree.clone(), Reply::Json(good_listing.clone())),
            (resolve(STUB_MODEL), Reply::Endless),
        ],
        &[STUB_MODEL],
    );
    add(
        "file-401",
        vec![
            (tree.clone(), Reply::Json(good_listing.clone())),
            (resolve(STUB_MODEL), Reply::Status(401, "gated".into())),
        ],
        &["401"],
    );
    let mut failures = Vec::new();
    let n = runs.len();
    for (case, stub) in runs {
        let home = PathBuf::from(
            &case
                .env
                .iter()
                .find(|(k, _)| k == "MINICPMV_HOME")
                .expect("home")
                .1,
        );
        let result = run_case(&case);
        drop(stub);
        let repo_dir = home.join("models").join(STUB_REPO.replace('/', "--"));
        let placed = repo_dir.join(STUB_MODEL).exists();
        match (result, placed) {
            (Ok(()), false) => {}
            (Err(e), _) => failures.push(format!("[{}] {e}", case.label)),
            (Ok(()), true) => failures.push(format!(
                "[{}] the model file was placed in the cache",
                case.label
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {n} pull cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A symbolic link planted where pull keeps its partial download is refused, not written
/// through; the link's target is untouched.
#[test]
fn pull_refuses_a_symlink_planted_at_the_partial_file() {
    let tree = format!("/api/models/{STUB_REPO}/tree/main");
    let good = b"GGUF-bytes-of-a-pretend-model".to_vec();
    let proj = b"GGUF-bytes-of-a-pretend-projector".to_vec();
    let routes = vec![
        (
            tree,
            Reply::Json(listing(&[
                (STUB_MODEL, good.len(), &sha_hex(&good)),
                (STUB_MMPROJ, proj.len(), &sha_hex(&proj)),
            ])),
        ),
        (
            format!("/{STUB_REPO}/resolve/main/{STUB_MODEL}"),
            Reply::Body {
                declared: good.len(),
                bytes: good.clone(),
            },
        ),
    ];
    let (case, stub) = pull_case("symlink-part", routes, &["symbolic link"]);
    let home = dir().join("pull-home-symlink-part");
    let repo_dir = home.join("models").join(STUB_REPO.replace('/', "--"));
    std::fs::create_dir_all(&repo_dir).expect("repo dir");
    let victim = write("pull-victim.txt", b"precious");
    std::os::unix::fs::symlink(&victim, repo_dir.join(format!("{STUB_MODEL}.part")))
        .expect("symlink");
    let result = run_case(&case);
    drop(stub);
    result.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(std::fs::read(&victim).expect("victim"), b"precious");
    assert!(!repo_dir.join(STUB_MODEL).exists());
}

/// The corpus is at least 100 inputs that must end in exit code 2, across the commands.
#[test]
fn the_corpus_holds_at_least_100_refused_inputs() {
    let n_model = model_mutations().len() * (VERSIONS.len() + 4);
    let n_mmproj = mmproj_mutations().len() * (VERSIONS.len() + 1);
    let (model, _) = tiny_pair("2.6");
    let n_raw = structural_corruptions(&model).len() * 5;
    let total = n_model + n_mmproj + n_raw;
    assert!(total >= 100, "only {total} hostile inputs");
    eprintln!("hostile corpus: {n_model} model, {n_mmproj} projector, {n_raw} structural cases (plus images, flags, chat, quantize and pull)");
}

/// A large file (8 GB, sparse: no disk used) whose header declares 2^30 metadata entries or
/// tensors: the reader once reserved memory for as many entries as the file could hold (tens
/// of GB, an abort), found by the `gguf` fuzz target. Now refused with the file named.
#[test]
fn huge_counts_in_a_large_file_are_refused_without_reserving_memory() {
    let (model, mmproj) = tiny_pair("2.6");
    let g = RawGguf::parse(std::fs::read(&model).expect("read"));
    let mut cases = Vec::new();
    for (label, bytes) in [
        ("n_kv", g.with_u64(g.n_kv_at(), 1 << 30)),
        ("n_tensors", g.with_u64(g.n_tensors_at(), 1 << 30)),
    ] {
        let path = dir().join(format!("sparse-8GB-{label}.gguf"));
        std::fs::write(&path, &bytes).expect("write");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(8 << 30))
            .expect("sparse 8 GB");
        let p = s(&path);
        cases.push(Case::error(
            format!("{label}: inspect"),
            ["inspect", p.as_str()],
            &[&p],
        ));
        cases.push(Case::error(
            format!("{label}: run"),
            run_args(&path, &mmproj),
            &[&p],
        ));
    }
    run_all(&cases);
}

/// A projector without a tensor llama.cpp requires but our checks do not read
/// (`resampler.pos_embed_k`): llama.cpp refuses it, and the error says what llama.cpp said
/// instead of "run with -v".
#[test]
fn llama_cpps_own_refusal_is_passed_on() {
    let (model, mmproj) = tiny_pair("2.6");
    let bad = remix(
        &mmproj,
        "p-no-pos-embed-k.gguf",
        &[Edit::Drop("resampler.pos_embed_k")],
    );
    let p = s(&bad);
    let mut args = run_args(&model, &bad);
    args.extend(["--image".into(), s(&image(300, 200))]);
    run_all(&[Case::error(
        "no pos_embed_k",
        args,
        &[&p, "llama.cpp says", "pos_embed_k"],
    )]);
}

/// Control characters in a file name are shown escaped: one error line, no terminal escapes.
#[test]
fn control_characters_in_paths_are_escaped() {
    let (model, mmproj) = tiny_pair("2.6");
    let img = dir().join("bad\nname\u{1b}[31m.png");
    std::fs::write(&img, b"").expect("write");
    let mut args = run_args(&model, &mmproj);
    args.extend(["--image".into(), s(&img)]);
    run_all(&[Case::error(
        "control characters",
        args,
        &["bad\\nname\\u{1b}[31m.png", "empty"],
    )]);
}

/// A full stderr (`2>/dev/full`) is no panic: the error cannot be shown, the exit code still is
/// 2 (and 0 for a success).
#[test]
fn a_full_stderr_does_not_panic() {
    let (model, mmproj) = tiny_pair("2.6");
    for (args, code) in [
        (
            vec!["inspect".to_string(), "/nonexistent/x.gguf".to_string()],
            2,
        ),
        (
            vec![
                "run".into(),
                "-m".into(),
                s(&model),
                "--mmproj".into(),
                s(&mmproj),
                "-p".into(),
                "Hi".into(),
                "-n".into(),
                "2".into(),
                "--progress".into(),
            ],
            0,
        ),
    ] {
        let out = crate::harness::command_in_shell("exec \"$0\" \"$@\" 2>/dev/full", &args)
            .stdout(Stdio::null())
            .output()
            .expect("run through sh");
        assert_eq!(out.status.code(), Some(code), "{args:?}: {out:?}");
    }
}

/// MiniCPM-V 4.6's own values: the Qwen3.5 hybrid's keys and tensors, and the merger
/// projector's scale factor, window-attention layer and shapes. Each one llama.cpp would assert
/// on (or read out of bounds with) is refused by name before it loads.
fn edge_model_mutations() -> Vec<(&'static str, Vec<Edit>, &'static str)> {
    use Edit::*;
    use MetaValue as V;
    vec![
        (
            "interval-0",
            vec![Set("{arch}.full_attention_interval", V::U32(0))],
            "full_attention_interval",
        ),
        (
            "conv-f16",
            vec![TensorType("blk.0.ssm_conv1d.weight", GgmlType::F16)],
            "blk.0.ssm_conv1d.weight",
        ),
        ("no-ssm_a", vec![Drop("blk.1.ssm_a")], "blk.1.ssm_a"),
        (
            "gated-q-unhalved",
            vec![TensorDims("blk.3.attn_q.weight", vec![128, 64])],
            "blk.3.attn_q.weight",
        ),
        (
            "state-0",
            vec![Set("{arch}.ssm.state_size", V::U32(0))],
            "ssm.state_size",
        ),
    ]
}

fn edge_mmproj_mutations() -> Vec<(&'static str, Vec<Edit>, &'static str)> {
    use Edit::*;
    use MetaValue as V;
    vec![
        (
            "scale-3",
            vec![Set("clip.vision.projector.scale_factor", V::U32(3))],
            "scale_factor",
        ),
        (
            "scale-f32",
            vec![Set("clip.vision.projector.scale_factor", V::F32(4.0))],
            "scale_factor",
        ),
        (
            "wa-layer-past-the-tower",
            vec![Set(
                "clip.vision.wa_layer_indexes",
                V::Array(MetaArray::I32(vec![99])),
            )],
            "wa_layer_indexes",
        ),
        (
            "no-vit-merger",
            vec![Drop("v.vit_merger.attn_q.weight")],
            "v.vit_merger.attn_q.weight",
        ),
        (
            "down-shape",
            // the output width is read from the weight, so its bias is the one found wrong
            vec![TensorDims("mm.down.weight", vec![128, 64])],
            "mm.down.",
        ),
        (
            "image-size-not-aligned",
            vec![Set("clip.vision.image_size", V::U32(420))],
            "image_size",
        ),
    ]
}

#[test]
fn edge_model_values_are_refused_by_name() {
    let mut cases = Vec::new();
    for version in ["4.6", "4.6-thinking"] {
        let (model, mmproj) = tiny_pair(version);
        for (label, edits, needle) in edge_model_mutations() {
            let bad = remix(&model, &format!("m{version}-{label}.gguf"), &edits);
            let p = s(&bad);
            cases.push(Case::error(
                format!("{version} model {label}: run"),
                run_args(&bad, &mmproj),
                &[&p, needle],
            ));
            cases.push(Case::error(
                format!("{version} model {label}: plan"),
                plan_args(&bad, &mmproj),
                &[&p, needle],
            ));
        }
        for (label, edits, needle) in edge_mmproj_mutations() {
            let bad = remix(&mmproj, &format!("p{version}-{label}.gguf"), &edits);
            let p = s(&bad);
            cases.push(Case::error(
                format!("{version} mmproj {label}: run"),
                run_args(&model, &bad),
                &[&p, needle],
            ));
            cases.push(Case::error(
                format!("{version} mmproj {label}: plan"),
                plan_args(&model, &bad),
                &[&p, needle],
            ));
        }
    }
    assert_eq!(run_all(&cases), 2 * 2 * (5 + 6));
}
