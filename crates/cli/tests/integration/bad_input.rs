//! Bad inputs end with exit code 2 and one clear `error:` line naming the file or value and what
//! is wrong: never a panic, a C++ abort (llama.cpp asserts on many malformed files), a hang or a
//! success. Every case runs the real binary on fixtures derived from a synthetic tiny pair (cut,
//! rewritten with the library's own GGUF writer) or written from bytes.
//!
//! Each run has a hang guard ([`HANG_LIMIT`]): the child is killed and the test fails when it is
//! still running after that long. The limit only detects hangs; every case here takes well under
//! a second.

use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use minicpmv::gguf::{GgufFile, GgufWriter, MetaArray, MetaValue, TensorInfo};

use crate::harness::{command, file_with, image, tiny_pair, work_dir, Run};

/// A run still going after this long is a hang.
const HANG_LIMIT: Duration = Duration::from_secs(120);

/// The one extra line clap prints after a usage error.
const CLAP_HINT: &str = "For more information, try '--help'.";

/// Things on stderr that mean the process crashed or leaked llama.cpp internals.
const CRASH_SIGNS: &[&str] = &[
    "panicked",
    "RUST_BACKTRACE",
    "GGML_ASSERT",
    "terminate called",
    "Aborted",
    "core dumped",
    "Segmentation fault",
];

// ---------------------------------------------------------------------------------------------
// Running the binary

/// Runs `minicpmv ARGS...` like the harness's `minicpmv` (no stdin, isolated MINICPMV_HOME), but
/// kills it and fails the test if it is still running after [`HANG_LIMIT`].
fn cli<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let mut child = command(&args, &[])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start the minicpmv binary");
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let err = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = Instant::now() + HANG_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for minicpmv") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    let Some(status) = status else {
        panic!(
            "HANG: `minicpmv {}` was still running after {HANG_LIMIT:?} and was killed\n\
             stderr:\n{stderr}",
            show_args(&args)
        );
    };
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            panic!(
                "CRASH: `minicpmv {}` was killed by signal {sig} (6 = abort)\nstderr:\n{stderr}",
                show_args(&args)
            );
        }
    }
    Run {
        code: status.code(),
        stdout,
        stderr,
    }
}

fn show_args(args: &[OsString]) -> String {
    args.iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Asserts exit code 2, nothing on stdout, and exactly one message on stderr: one line starting
/// with `error: ` that contains every `needle` (each file path at most once: no duplicated
/// message) and none of `absent` (e.g. the path of the other, good file). clap's one-line hint
/// after a usage error is tolerated. Returns the message line.
#[track_caller]
fn expect_error(run: Run, needles: &[&str], absent: &[&str]) -> String {
    let run = run.fails_with(needles);
    for sign in CRASH_SIGNS {
        assert!(!run.stderr.contains(sign), "crash sign {sign:?}: {run:#?}");
    }
    assert!(
        run.stdout.is_empty(),
        "an error must print nothing on stdout: {run:#?}"
    );
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    let (msg, rest) = lines
        .split_first()
        .unwrap_or_else(|| panic!("nothing on stderr: {run:#?}"));
    assert!(
        msg.starts_with("error: "),
        "the message must be one line starting with `error: `:\n{}",
        run.stderr
    );
    for line in rest {
        assert_eq!(
            *line, CLAP_HINT,
            "more than one line on stderr (one message expected):\n{}",
            run.stderr
        );
    }
    for n in needles {
        assert!(msg.contains(n), "the error line lacks {n:?}:\n{msg}");
        if n.contains(std::path::MAIN_SEPARATOR) {
            assert_eq!(
                msg.matches(n).count(),
                1,
                "{n:?} is named more than once (duplicated message?):\n{msg}"
            );
        }
    }
    for a in absent {
        assert!(!msg.contains(a), "the error line names {a:?}:\n{msg}");
    }
    msg.to_string()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

// ---------------------------------------------------------------------------------------------
// Fixtures

/// A folder for this module's fixtures inside the shared work dir.
fn fixture_dir() -> PathBuf {
    let d = work_dir().join("bad_input");
    std::fs::create_dir_all(&d).expect("create fixture dir");
    d
}

/// Writes `bytes` to `name` in the fixture folder.
fn fixture(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = fixture_dir();
    let path = file_with(&format!("bad_input/{name}"), bytes);
    debug_assert!(path.starts_with(dir));
    path
}

/// An empty folder named `name`.
fn fixture_folder(name: &str) -> PathBuf {
    let path = fixture_dir().join(name);
    std::fs::create_dir_all(&path).expect("create fixture folder");
    path
}

/// Text that is not a GGUF file (nor an image).
const NOT_GGUF: &[u8] = b"this is a plain text file, not a model\n";

/// The (good) tiny MiniCPM-V 2.6 pair.
fn pair() -> (PathBuf, PathBuf) {
    tiny_pair("2.6")
}

/// Lengths to cut a GGUF at: inside the magic, the version, the counts, the first key, the
/// metadata, the tensor infos / padding, and the tensor data (first byte, middle, last byte
/// missing).
fn cut_points(f: &GgufFile) -> Vec<(u64, &'static str)> {
    let data = f.data_offset;
    let size = f.file_size;
    vec![
        (2, "inside the magic"),
        (6, "inside the version"),
        (20, "inside the metadata count"),
        (40, "inside the first metadata key"),
        (data / 2, "inside the metadata"),
        (data - 40, "inside the tensor infos"),
        (data + 1, "at the start of the tensor data"),
        ((data + size) / 2, "inside the tensor data"),
        (size - 1, "one byte short"),
    ]
}

/// Copies of `src` cut at each of [`cut_points`], as `(path, where)`.
fn truncated_copies(src: &Path, prefix: &str) -> Vec<(PathBuf, &'static str)> {
    let f = GgufFile::open(src).expect("tiny file opens");
    let bytes = std::fs::read(src).expect("read tiny file");
    cut_points(&f)
        .into_iter()
        .map(|(n, what)| {
            let n = usize::try_from(n).expect("small file");
            assert!(n > 0 && n < bytes.len(), "cut {n} ({what})");
            (
                fixture(&format!("{prefix}-cut-{n}.gguf"), &bytes[..n]),
                what,
            )
        })
        .collect()
}

/// Re-writes the GGUF `src` as `name` in the fixture folder with the library's writer:
/// `meta(key, value)` returns the value to store (`None` drops the key); `dims(tensor)` returns
/// the tensor's new shape, whose data is the original data repeated or cut to the new size.
fn rewrite(
    src: &Path,
    name: &str,
    mut meta: impl FnMut(&str, &MetaValue) -> Option<MetaValue>,
    dims: impl Fn(&TensorInfo) -> Vec<u64>,
) -> PathBuf {
    let f = GgufFile::open(src).expect("source GGUF opens");
    let mut w = GgufWriter::new();
    for (key, value) in &f.metadata {
        if let Some(v) = meta(key, value) {
            w.add_kv(key, v);
        }
    }
    for t in &f.tensors {
        w.add_tensor(&t.name, &dims(t), t.ggml_type)
            .expect("add tensor");
    }
    let path = fixture_dir().join(name);
    w.write(&path, |i, info, out: &mut dyn Write| {
        let data = f
            .read_tensor_bytes(&f.tensors[i])
            .map_err(std::io::Error::other)?;
        let len = usize::try_from(info.n_bytes).expect("small tensor");
        let bytes: Vec<u8> = data.iter().copied().cycle().take(len).collect();
        out.write_all(&bytes)
    })
    .expect("write rewritten GGUF");
    path
}

/// `rewrite` changing one metadata key's value (the key must exist).
fn with_key(src: &Path, name: &str, key: &str, value: MetaValue) -> PathBuf {
    let mut seen = false;
    let path = rewrite(
        src,
        name,
        |k, v| {
            if k == key {
                seen = true;
                Some(value.clone())
            } else {
                Some(v.clone())
            }
        },
        |t| t.dims.clone(),
    );
    assert!(seen, "{} has no key {key}", src.display());
    path
}

/// The standard arguments of a run on the tiny pair (2 tokens, 2 threads).
fn run_args<'a>(model: &'a str, mmproj: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "run", "-m", model, "--mmproj", mmproj, "-p", "Hi", "-n", "2", "-t", "2",
    ];
    a.extend_from_slice(extra);
    a
}

// ---------------------------------------------------------------------------------------------
// Model files: -m and --mmproj

/// The file-level cases shared by `-m`, `--mmproj` and `inspect`: `(path, needles)`.
fn bad_gguf_files(role: &str) -> Vec<(PathBuf, Vec<&'static str>)> {
    vec![
        (
            fixture_dir().join(format!("{role}-does-not-exist.gguf")),
            vec!["no such file"],
        ),
        (
            fixture_folder(&format!("{role}-a-folder.gguf")),
            vec!["is a directory"],
        ),
        (
            fixture(&format!("{role}-empty.gguf"), b""),
            vec!["is empty"],
        ),
        (
            fixture(&format!("{role}-text.gguf"), NOT_GGUF),
            vec!["is not a GGUF file"],
        ),
    ]
}

#[test]
fn model_file_missing_folder_empty_or_not_gguf() {
    let (model, mmproj) = pair();
    for (bad, needles) in bad_gguf_files("model") {
        let mut n = vec![s(&bad)];
        n.extend(needles);
        expect_error(
            cli(run_args(s(&bad), s(&mmproj), &[])),
            &n,
            &[s(&mmproj), s(&model)],
        );
    }
}

#[test]
fn mmproj_file_missing_folder_empty_or_not_gguf() {
    let (model, mmproj) = pair();
    for (bad, needles) in bad_gguf_files("mmproj") {
        let mut n = vec![s(&bad)];
        n.extend(needles);
        expect_error(
            cli(run_args(s(&model), s(&bad), &[])),
            &n,
            &[s(&model), s(&mmproj)],
        );
    }
}

#[test]
fn truncated_model() {
    let (model, mmproj) = pair();
    for (bad, what) in truncated_copies(&model, "model") {
        let msg = expect_error(
            cli(run_args(s(&bad), s(&mmproj), &[])),
            &[s(&bad), "truncated"],
            &[s(&mmproj)],
        );
        eprintln!("model cut {what}: {msg}");
    }
}

#[test]
fn truncated_mmproj() {
    let (model, mmproj) = pair();
    for (bad, what) in truncated_copies(&mmproj, "mmproj") {
        let msg = expect_error(
            cli(run_args(s(&model), s(&bad), &[])),
            &[s(&bad), "truncated"],
            &[s(&model)],
        );
        eprintln!("mmproj cut {what}: {msg}");
    }
}

#[test]
fn mmproj_passed_as_model() {
    let (_, mmproj) = pair();
    // A second copy as --mmproj, so that the message must name the one given with -m.
    let other = fixture("mmproj-copy.gguf", &std::fs::read(&mmproj).expect("read"));
    expect_error(
        cli(run_args(s(&mmproj), s(&other), &[])),
        &[s(&mmproj), "projector", "--mmproj", "-m"],
        &[s(&other)],
    );
}

#[test]
fn model_passed_as_mmproj() {
    let (model, _) = pair();
    let other = fixture("model-copy.gguf", &std::fs::read(&model).expect("read"));
    expect_error(
        cli(run_args(s(&other), s(&model), &[])),
        &[s(&model), "language model", "--mmproj", "-m"],
        &[s(&other)],
    );
}

#[test]
fn mmproj_width_differs_from_the_model() {
    let (model, mmproj) = pair();
    let f = GgufFile::open(&mmproj).expect("tiny mmproj");
    let width = f.tensor("resampler.query").expect("resampler.query").dims[0];
    let model_width = GgufFile::open(&model)
        .expect("tiny model")
        .get_u64("qwen2.embedding_length")
        .expect("n_embd");
    assert_eq!(width, model_width, "the tiny pair belongs together");
    // Double the resampler width D everywhere it appears (query, kv, attention, norms, proj,
    // pos_embed_k); the vision tower's widths differ from D in the tiny pair.
    for key in [
        "clip.vision.embedding_length",
        "clip.vision.feed_forward_length",
    ] {
        assert_ne!(f.get_u64(key), Some(width), "{key} equals D");
    }
    let wide = rewrite(
        &mmproj,
        "mmproj-double-width.gguf",
        |_, v| Some(v.clone()),
        |t| {
            t.dims
                .iter()
                .map(|&d| if d == width { 2 * width } else { d })
                .collect()
        },
    );
    let info = cli(["inspect", "--json", s(&wide)]).ok().json();
    assert_eq!(info["kind"], "projector", "{info}");
    let (w1, w2) = (format!("{}", 2 * width), format!("{width}"));
    expect_error(
        cli(run_args(s(&model), s(&wide), &[])),
        &[s(&wide), s(&model), "width", &w1, &w2],
        &[],
    );
}

/// The model with the vocabulary entries in `remove` renamed to unused strings (vocabulary size
/// unchanged).
fn model_without_tokens(name: &str, remove: &[&str]) -> PathBuf {
    let (model, _) = pair();
    let mut renamed = 0;
    let path = rewrite(
        &model,
        name,
        |k, v| match (k, v) {
            ("tokenizer.ggml.tokens", MetaValue::Array(MetaArray::String(toks))) => {
                let toks = toks
                    .iter()
                    .enumerate()
                    .map(|(i, t)| {
                        if remove.contains(&t.as_str()) {
                            renamed += 1;
                            format!("<unused_{i}>")
                        } else {
                            t.clone()
                        }
                    })
                    .collect::<Vec<_>>();
                Some(MetaValue::Array(MetaArray::String(toks)))
            }
            _ => Some(v.clone()),
        },
        |t| t.dims.clone(),
    );
    assert_eq!(renamed, remove.len(), "tokens to remove: {remove:?}");
    path
}

#[test]
fn vocabulary_without_image_tokens() {
    let (_, mmproj) = pair();
    let all = ["<image>", "</image>", "<slice>", "</slice>"];
    let none = model_without_tokens("model-no-image-tokens.gguf", &all);
    expect_error(
        cli(run_args(s(&none), s(&mmproj), &[])),
        &[s(&none), "\"<image>\"", "image token"],
        &[s(&mmproj)],
    );
    // Each token on its own is needed, and the message names the missing one.
    for (i, tok) in all.iter().enumerate() {
        let one = model_without_tokens(&format!("model-no-image-token-{i}.gguf"), &[tok]);
        let quoted = format!("{tok:?}");
        expect_error(
            cli(run_args(s(&one), s(&mmproj), &[])),
            &[s(&one), &quoted, "image token"],
            &[s(&mmproj)],
        );
    }
    // `inspect` still describes such a model, and says so.
    let info = cli(["inspect", "--json", s(&none)]).ok().json();
    assert_eq!(info["has_image_tokens"], false, "{info}");
}

#[test]
fn mmproj_key_of_the_wrong_type() {
    // llama.cpp's clip loader aborts the process (GGML_ASSERT in gguf_get_val_*) on these.
    let (model, mmproj) = pair();
    let cases: Vec<(&str, MetaValue)> = vec![
        ("clip.vision.image_size", MetaValue::String("448".into())),
        ("clip.vision.image_size", MetaValue::F32(448.0)),
        ("clip.vision.image_size", MetaValue::U64(448)),
        ("clip.vision.patch_size", MetaValue::I32(14)),
        ("clip.vision.block_count", MetaValue::String("2".into())),
        ("clip.minicpmv_version", MetaValue::U32(3)),
        ("clip.minicpmv_version", MetaValue::String("3".into())),
        ("clip.minicpmv_query_num", MetaValue::I32(64)),
        ("clip.has_vision_encoder", MetaValue::U8(1)),
        ("clip.use_gelu", MetaValue::String("true".into())),
        ("clip.projector_type", MetaValue::U32(0)),
        (
            "clip.vision.attention.layer_norm_epsilon",
            MetaValue::F64(1e-6),
        ),
        ("clip.vision.image_mean", MetaValue::F32(0.5)),
        (
            "clip.vision.image_mean",
            MetaValue::Array(MetaArray::String(vec!["0.5".into(); 3])),
        ),
        (
            "clip.vision.image_std",
            MetaValue::Array(MetaArray::U32(vec![1; 3])),
        ),
    ];
    for (i, (key, value)) in cases.into_iter().enumerate() {
        let ty = value.type_name();
        let bad = with_key(&mmproj, &format!("mmproj-key-{i}.gguf"), key, value);
        let msg = expect_error(
            cli(run_args(s(&model), s(&bad), &[])),
            &[s(&bad), key],
            &[s(&model)],
        );
        eprintln!("{key} as {ty}: {msg}");
    }
}

#[test]
fn model_key_of_the_wrong_type() {
    let (model, mmproj) = pair();
    let bad = with_key(
        &model,
        "model-key-n-embd-string.gguf",
        "qwen2.embedding_length",
        MetaValue::String("128".into()),
    );
    expect_error(
        cli(run_args(s(&bad), s(&mmproj), &[])),
        &[s(&bad), "qwen2.embedding_length"],
        &[s(&mmproj)],
    );
}

// ---------------------------------------------------------------------------------------------
// inspect

#[test]
fn inspect_bad_files() {
    let mut cases = bad_gguf_files("inspect");
    let (model, mmproj) = pair();
    for (bad, _) in truncated_copies(&model, "inspect-model") {
        cases.push((bad, vec!["truncated"]));
    }
    for (bad, _) in truncated_copies(&mmproj, "inspect-mmproj") {
        cases.push((bad, vec!["truncated"]));
    }
    for (bad, needles) in cases {
        for json in [false, true] {
            let mut args = vec!["inspect", s(&bad)];
            if json {
                args.push("--json");
            }
            let mut n = vec![s(&bad)];
            n.extend(needles.iter().copied());
            expect_error(cli(&args), &n, &[]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Images

/// A gradient image of `w` x `h` in `format`, as bytes.
fn encoded_image(w: u32, h: u32, format: image::ImageFormat) -> Vec<u8> {
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

fn run_with_image(img: &Path, extra: &[&str]) -> Run {
    let (model, mmproj) = pair();
    let mut a = run_args(s(&model), s(&mmproj), &["--image", s(img)]);
    a.extend_from_slice(extra);
    cli(a)
}

#[test]
fn image_missing_folder_or_empty() {
    let cases = [
        (
            fixture_dir().join("image-does-not-exist.png"),
            "does not exist",
        ),
        (fixture_folder("image-a-folder.png"), "is a directory"),
        (fixture("image-empty.png", b""), "is empty"),
    ];
    for (img, needle) in cases {
        expect_error(run_with_image(&img, &[]), &[s(&img), needle], &[]);
    }
}

#[test]
fn image_that_is_not_an_image() {
    let (model, _) = pair();
    let text = fixture("image-text.png", NOT_GGUF);
    let gguf = fixture(
        "image-is-a-gguf.jpg",
        &std::fs::read(&model).expect("read model"),
    );
    for img in [text, gguf] {
        expect_error(run_with_image(&img, &[]), &[s(&img), "not an image"], &[]);
    }
}

#[test]
fn truncated_png() {
    let png = encoded_image(300, 200, image::ImageFormat::Png);
    // The last 12 bytes are the IEND chunk; 13 bytes short cuts the last IDAT chunk's CRC.
    // (A PNG missing only part of IEND has all its pixels and is not asserted on.)
    let iend = png.len() - 12;
    assert_eq!(&png[iend + 4..iend + 8], b"IEND");
    // Inside the signature, inside IHDR, just after IHDR, in the pixel data, no IEND chunk,
    // the end of the pixel data.
    for n in [4, 20, 40, png.len() / 2, iend, iend - 1] {
        let img = fixture(&format!("image-cut-{n}.png"), &png[..n]);
        let msg = expect_error(run_with_image(&img, &[]), &[s(&img)], &[]);
        assert!(
            msg.contains("truncated") || msg.contains("not an image"),
            "{n} bytes of a PNG: {msg}"
        );
        eprintln!("png cut at {n}: {msg}");
    }
}

#[test]
fn truncated_jpeg() {
    // A JPEG that lost part of its entropy-coded data must not be decoded as a partly grey
    // picture. (Only the 2-byte EOI marker missing keeps every pixel and is not asserted on.)
    let jpg = encoded_image(300, 200, image::ImageFormat::Jpeg);
    assert_eq!(&jpg[jpg.len() - 2..], [0xFF, 0xD9], "ends with EOI");
    for n in [jpg.len() / 2, jpg.len() - 10] {
        let img = fixture(&format!("image-cut-{n}.jpg"), &jpg[..n]);
        let msg = expect_error(run_with_image(&img, &[]), &[s(&img), "truncated"], &[]);
        eprintln!("jpeg cut at {n}: {msg}");
    }
}

#[test]
fn image_above_the_pixel_limit() {
    let img = image(640, 480);
    expect_error(
        run_with_image(&img, &["--max-image-pixels", "307199"]),
        &[s(&img), "640x480", "307200", "307199", "--max-image-pixels"],
        &[],
    );
    // At the limit is fine.
    run_with_image(&image(300, 200), &["--max-image-pixels", "60000"]).ok();
}

#[test]
fn image_above_the_default_pixel_limit() {
    // 8000 x 8001 = 64,008,000 pixels > 64 MP. Grey, fast compression: a small file.
    let path = fixture_dir().join("image-64mp.png");
    let (w, h) = (8000u32, 8001u32);
    let file = std::fs::File::create(&path).expect("create image");
    let enc = image::codecs::png::PngEncoder::new_with_quality(
        std::io::BufWriter::new(file),
        image::codecs::png::CompressionType::Fast,
        image::codecs::png::FilterType::NoFilter,
    );
    let pixels = vec![128u8; (w * h) as usize];
    image::ImageEncoder::write_image(enc, &pixels, w, h, image::ExtendedColorType::L8)
        .expect("write 64 MP image");
    expect_error(
        run_with_image(&path, &[]),
        &[s(&path), "8000x8001", "64000000", "--max-image-pixels"],
        &[],
    );
}

// ---------------------------------------------------------------------------------------------
// Values

#[test]
fn prompt_and_image_do_not_fit_the_context() {
    // 1920x1080 = overview + 4x2 slices = 9 x 64 = 576 image embeddings, plus text.
    let img = image(1920, 1080);
    expect_error(
        run_with_image(&img, &["-c", "256"]),
        &["576", "256", "-c"],
        &[],
    );
}

#[test]
fn zero_threads() {
    let (model, mmproj) = pair();
    let img = image(300, 200);
    expect_error(
        cli([
            "run",
            "-m",
            s(&model),
            "--mmproj",
            s(&mmproj),
            "--image",
            s(&img),
            "-p",
            "Hi",
            "-n",
            "2",
            "-t",
            "0",
        ]),
        &["'0'", "--threads"],
        &[],
    );
}

#[test]
fn zero_tokens_to_generate() {
    let (model, mmproj) = pair();
    let img = image(300, 200);
    expect_error(
        cli([
            "run",
            "-m",
            s(&model),
            "--mmproj",
            s(&mmproj),
            "--image",
            s(&img),
            "-p",
            "Hi",
            "-n",
            "0",
            "-t",
            "2",
        ]),
        &["'0'", "--n-predict"],
        &[],
    );
}
