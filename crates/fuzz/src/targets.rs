//! The fuzz targets: every parser and check a user's input passes through before llama.cpp,
//! run in process with no llama.cpp call. Each target makes its inputs from seeds (generated
//! by the project's own code) and runs one input, returning `Err` when an oracle fails; a
//! panic is a failure too. Every input is bytes, so a failure can be saved and replayed.

use std::path::Path;
use std::sync::OnceLock;

use minicpmv::encode::cache::{decode_file, encode_file, EmbdKey};
use minicpmv::encode::ImageEmbeddings;
use minicpmv::gguf::{FileKind, GgmlType, GgufFile, MetaArray, MetaValue};
use minicpmv::model::family::{Scale, Version};
use minicpmv::model::inputs::{check_model_file, check_projector_file};
use minicpmv::session::chat::ChatLine;
use minicpmv::tools::synth::{self, SynthOptions, WeightType};
use minicpmv::vision::{decode_image, plan_slices, SliceParams};
use minicpmv_hub::{parse_listing, select, Repo};
use sha2::{Digest, Sha256};

use crate::mutate::{mutate_bytes, Rng, INTERESTING_U64};

/// One fuzz target.
pub struct Target {
    /// Its name on the command line.
    pub name: &'static str,
    /// What it exercises.
    pub about: &'static str,
    /// Makes one input (the seeds are the target's own, loaded once).
    pub make: fn(&mut Rng) -> Vec<u8>,
    /// Runs one input: whether the code under test accepted it, or `Err` when an oracle
    /// fails.
    pub run: fn(&[u8]) -> Result<Verdict, String>,
}

/// What the code under test made of an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Parsed, decoded or planned: the deep paths ran.
    Accepted,
    /// Refused with an error (which the oracles checked).
    Rejected,
}

use Verdict::{Accepted, Rejected};

/// Every target, in the order a run takes them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "gguf",
        about: "GGUF header reader, then the language-model or projector checks, on byte-mutated headers of the tiny pairs of every version",
        make: make_gguf,
        run: run_gguf,
    },
    Target {
        name: "gguf-fields",
        about: "the language-model and projector checks on headers whose values, types, shapes, tensors and vocabulary are mutated field by field",
        make: make_fields,
        run: run_fields,
    },
    Target {
        name: "image",
        about: "image header check and decoder up to the pixel limit, on byte-mutated PNG, JPEG, GIF, WebP, BMP and TIFF files",
        make: make_image,
        run: run_image,
    },
    Target {
        name: "slice",
        about: "slice planning over all sizes and projector settings up to the limits, with the plan's invariants",
        make: make_slice,
        run: run_slice,
    },
    Target {
        name: "chat-line",
        about: "the chat line grammar (/image, /reset, messages)",
        make: make_chat_line,
        run: run_chat_line,
    },
    Target {
        name: "embd-cache",
        about: "embedding-cache file decoding (a decoded entry must re-encode to the same bytes)",
        make: make_embd,
        run: run_embd,
    },
    Target {
        name: "hub-listing",
        about: "Hugging Face listing JSON and the choice of the model/mmproj pair",
        make: make_listing,
        run: run_listing,
    },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

// ---------------------------------------------------------------------------------------------
// GGUF: byte-level

/// The name errors must carry.
const GGUF_NAME: &str = "fuzz-input.gguf";

/// The tiny pairs of every version, written once per process by the library's synth into a
/// temporary folder (removed again): each file's bytes and header.
fn tiny_files() -> &'static Vec<(Vec<u8>, GgufFile)> {
    static FILES: OnceLock<Vec<(Vec<u8>, GgufFile)>> = OnceLock::new();
    FILES.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("minicpmv-fuzz-seeds-{}", std::process::id()));
        let mut files = Vec::new();
        for version in Version::ALL {
            let out = synth::synth(&SynthOptions {
                version,
                scale: Scale::Tiny,
                out_dir: dir.join(version.to_string()),
                dtype: WeightType::F16,
                seed: 1,
                scale_factor: None,
            })
            .unwrap_or_else(|e| panic!("seed pair {version}: {e}"));
            for path in [out.model, out.mmproj] {
                let bytes = std::fs::read(&path).expect("read seed");
                let f = GgufFile::open(&path).expect("seed file opens");
                files.push((bytes, f));
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        files
    })
}

/// The GGUF seeds as fuzz inputs: the file size (u64 LE), then the header bytes.
fn gguf_seeds() -> &'static Vec<Vec<u8>> {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        tiny_files()
            .iter()
            .map(|(bytes, f)| {
                let mut input = f.file_size.to_le_bytes().to_vec();
                input.extend_from_slice(&bytes[..f.data_offset as usize]);
                input
            })
            .collect()
    })
}

fn make_gguf(rng: &mut Rng) -> Vec<u8> {
    let seeds = gguf_seeds();
    let mut input = {
        let seed = rng.pick(seeds);
        mutate_bytes(rng, seed, seeds)
    };
    if rng.one_in(8) && input.len() >= 8 {
        // The claimed file size: shorter, longer, absurd.
        let v = *rng.pick(&INTERESTING_U64);
        input[..8].copy_from_slice(&v.to_le_bytes());
    }
    input
}

fn run_gguf(input: &[u8]) -> Result<Verdict, String> {
    if input.len() < 8 {
        return Ok(Rejected);
    }
    let size = u64::from_le_bytes(input[..8].try_into().unwrap_or_default());
    let name = Path::new(GGUF_NAME);
    match GgufFile::parse_prefix(&input[8..], size, name) {
        Err(e) => names_the_file(&e.to_string()),
        Ok(f) => check_any(f),
    }
}

/// The checks `run` makes, on whatever the file is; every refusal must name the file.
fn check_any(f: GgufFile) -> Result<Verdict, String> {
    let result = match f.kind() {
        FileKind::Projector => check_projector_file(f).map(|_| ()),
        _ => check_model_file(f).map(|_| ()),
    };
    match result {
        Ok(()) => Ok(Accepted),
        Err(e) => names_the_file(&e.to_string()),
    }
}

fn names_the_file(message: &str) -> Result<Verdict, String> {
    if message.contains(GGUF_NAME) {
        Ok(Rejected)
    } else {
        Err(format!("the error does not name the file: {message}"))
    }
}

// ---------------------------------------------------------------------------------------------
// GGUF: field by field

/// An input of `gguf-fields`: which seed, and the seed of the mutations applied to its fields.
fn make_fields(rng: &mut Rng) -> Vec<u8> {
    let mut input = vec![rng.below(tiny_files().len()) as u8, 1 + rng.below(4) as u8];
    input.extend_from_slice(&rng.next_u64().to_le_bytes());
    input
}

fn run_fields(input: &[u8]) -> Result<Verdict, String> {
    if input.len() < 10 {
        return Ok(Rejected);
    }
    let files = tiny_files();
    let seed = &files[usize::from(input[0]) % files.len()].1;
    let mut rng = Rng::new(u64::from_le_bytes(
        input[2..10].try_into().unwrap_or_default(),
    ));
    let mut meta = seed.metadata.clone();
    let mut tensors: Vec<(String, Vec<u64>, GgmlType)> = seed
        .tensors
        .iter()
        .map(|t| (t.name.clone(), t.dims.clone(), t.ggml_type))
        .collect();
    for _ in 0..input[1].min(8) {
        mutate_field(&mut rng, &mut meta, &mut tensors);
    }
    check_any(GgufFile::from_header(Path::new(GGUF_NAME), meta, tensors))
}

/// One field-level change: a value, a value's type, a key, a tensor's shape or type, a tensor,
/// or the vocabulary.
fn mutate_field(
    rng: &mut Rng,
    meta: &mut Vec<(String, MetaValue)>,
    tensors: &mut Vec<(String, Vec<u64>, GgmlType)>,
) {
    match rng.below(8) {
        0 | 1 if !meta.is_empty() => {
            let i = rng.below(meta.len());
            meta[i].1 = mutate_value(rng, &meta[i].1);
        }
        2 if !meta.is_empty() => {
            meta.remove(rng.below(meta.len()));
        }
        3 | 4 if !tensors.is_empty() => {
            let i = rng.below(tensors.len());
            let dims = &mut tensors[i].1;
            match rng.below(3) {
                0 if !dims.is_empty() => {
                    let d = rng.below(dims.len());
                    dims[d] = *rng.pick(&INTERESTING_U64);
                }
                1 if dims.len() < 4 => dims.push(1 + rng.below(4) as u64),
                _ => {
                    dims.pop();
                }
            }
        }
        5 if !tensors.is_empty() => {
            let i = rng.below(tensors.len());
            let types = [
                GgmlType::F32,
                GgmlType::F16,
                GgmlType::BF16,
                GgmlType::Q8_0,
                GgmlType::Q4_K,
                GgmlType::Q8_1,
                GgmlType::I32,
                GgmlType::F64,
            ];
            tensors[i].2 = *rng.pick(&types);
        }
        6 if !tensors.is_empty() => {
            let i = rng.below(tensors.len());
            if rng.one_in(2) {
                tensors.remove(i);
            } else {
                // A copy under another block number, or a class token.
                let (name, dims, ty) = tensors[i].clone();
                let renamed = if rng.one_in(3) {
                    "v.class_embd".to_string()
                } else {
                    name.replacen('0', &rng.below(600).to_string(), 1)
                };
                tensors.push((renamed, dims, ty));
            }
        }
        _ => {
            if let Some((_, MetaValue::Array(MetaArray::String(toks)))) =
                meta.iter_mut().find(|(k, _)| k == "tokenizer.ggml.tokens")
            {
                if !toks.is_empty() {
                    let i = rng.below(toks.len());
                    match rng.below(3) {
                        0 => toks[i] = toks[rng.below(toks.len())].clone(),
                        1 => toks[i] = String::new(),
                        _ => toks.truncate(i),
                    }
                }
            }
        }
    }
}

/// Another value for a metadata entry: an interesting number of the same type, another type,
/// a non-finite float, or a changed array.
fn mutate_value(rng: &mut Rng, v: &MetaValue) -> MetaValue {
    let n = *rng.pick(&INTERESTING_U64);
    match (rng.below(6), v) {
        (0, _) => MetaValue::U32(n as u32),
        (1, _) => MetaValue::I32(n as i32),
        (2, _) => MetaValue::F32(*rng.pick(&[f32::NAN, f32::INFINITY, -1.0, 0.0, 1e-30, 1e30])),
        (3, _) => MetaValue::String(n.to_string()),
        (4, MetaValue::Array(MetaArray::F32(a))) => MetaValue::Array(MetaArray::F32(
            a.iter().map(|_| f32::NAN).take(rng.below(4)).collect(),
        )),
        (4, MetaValue::Array(MetaArray::I32(a))) => {
            MetaValue::Array(MetaArray::I32(a.iter().map(|_| n as i32).collect()))
        }
        (_, MetaValue::U32(_)) => MetaValue::U32(n as u32),
        (_, MetaValue::I32(_)) => MetaValue::I32(n as i32),
        (_, MetaValue::F32(_)) => MetaValue::F32(f32::from_bits(rng.next_u64() as u32)),
        (_, MetaValue::Bool(b)) => MetaValue::Bool(!b),
        (_, MetaValue::String(s)) => MetaValue::String(format!("{s}x")),
        (_, other) => other.clone(),
    }
}

// ---------------------------------------------------------------------------------------------
// Images

/// Largest image decoded by the target (keeps each input cheap; the limit itself is the code
/// under test).
const IMAGE_MAX_PIXELS: u64 = 1 << 16;

fn image_seeds() -> &'static Vec<Vec<u8>> {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        use image::ImageFormat as F;
        let rgb = image::RgbImage::from_fn(24, 16, |x, y| {
            image::Rgb([(x * 10) as u8, (y * 15) as u8, ((x ^ y) * 7) as u8])
        });
        let rgba = image::RgbaImage::from_fn(9, 7, |x, y| {
            image::Rgba([(x * 20) as u8, (y * 30) as u8, 77, (x * y) as u8])
        });
        let mut seeds = Vec::new();
        for format in [F::Png, F::Jpeg, F::Gif, F::WebP, F::Bmp, F::Tiff] {
            let mut out = std::io::Cursor::new(Vec::new());
            rgb.write_to(&mut out, format).expect("encode seed image");
            seeds.push(out.into_inner());
        }
        for format in [F::Png, F::WebP, F::Tiff] {
            let mut out = std::io::Cursor::new(Vec::new());
            rgba.write_to(&mut out, format).expect("encode seed image");
            seeds.push(out.into_inner());
        }
        seeds
    })
}

fn make_image(rng: &mut Rng) -> Vec<u8> {
    let seeds = image_seeds();
    let seed = rng.pick(seeds);
    let mut input = mutate_bytes(rng, seed, seeds);
    // PNG chunks carry CRCs: mostly made right again, so the mutation reaches the decoder.
    if !rng.one_in(4) {
        fix_png_crcs(&mut input);
    }
    input
}

/// Recomputes the CRC of every whole chunk of a PNG (nothing for other data).
fn fix_png_crcs(png: &mut [u8]) {
    if !png.starts_with(b"\x89PNG\r\n\x1a\n") {
        return;
    }
    let mut at = 8usize;
    while at + 12 <= png.len() {
        let len = u32::from_be_bytes([png[at], png[at + 1], png[at + 2], png[at + 3]]) as usize;
        let Some(end) = at.checked_add(8 + len) else {
            return;
        };
        if end + 4 > png.len() {
            return;
        }
        let crc = crc32(&png[at + 4..end]);
        png[end..end + 4].copy_from_slice(&crc.to_be_bytes());
        at = end + 4;
    }
}

/// CRC-32 (ISO-HDLC), as PNG uses it.
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

fn run_image(input: &[u8]) -> Result<Verdict, String> {
    let name = Path::new("fuzz-image.png");
    match decode_image(input, name, IMAGE_MAX_PIXELS) {
        Ok(img) => {
            let pixels = u64::from(img.width) * u64::from(img.height);
            if img.width == 0 || img.height == 0 || pixels > IMAGE_MAX_PIXELS {
                return Err(format!("decoded a {}x{} image", img.width, img.height));
            }
            if img.rgb.len() as u64 != pixels * 3 {
                return Err(format!(
                    "{} bytes for {}x{}",
                    img.rgb.len(),
                    img.width,
                    img.height
                ));
            }
            Ok(Accepted)
        }
        Err(e) if e.to_string().contains("fuzz-image.png") => Ok(Rejected),
        Err(e) => Err(format!("the error does not name the image: {e}")),
    }
}

// ---------------------------------------------------------------------------------------------
// Slice planning

fn make_slice(rng: &mut Rng) -> Vec<u8> {
    let mut v = Vec::with_capacity(20);
    // Mostly realistic settings and sizes up to the limits, sometimes anything.
    let side = |rng: &mut Rng| -> u32 {
        match rng.below(4) {
            0 => rng.next_u64() as u32,
            1 => 1 + rng.below(46_000) as u32,
            2 => 1 + rng.below(4_000) as u32,
            _ => *rng.pick(&[
                1u32, 2, 13, 14, 447, 448, 449, 895, 896, 45_999, 46_000, 46_001,
            ]),
        }
    };
    let (w, h) = (side(rng), side(rng));
    let (image, patch) = if rng.one_in(4) {
        (rng.next_u64() as u32 % 2000, rng.next_u64() as u32 % 64)
    } else {
        (448, 14)
    };
    let max_slices = rng.below(12) as u32;
    for x in [w, h, image, patch, max_slices] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    v
}

fn run_slice(input: &[u8]) -> Result<Verdict, String> {
    if input.len() < 20 {
        return Ok(Rejected);
    }
    let u = |i: usize| u32::from_le_bytes(input[4 * i..4 * i + 4].try_into().unwrap_or_default());
    let (w, h) = (u(0), u(1));
    let params = SliceParams {
        image_size: u(2),
        patch_size: u(3),
        max_slices: u(4),
        // 4.6's merger (2 or 4) from a sixth word; the resampler's 1 without it
        merge: if input.len() >= 24 { u(5) } else { 1 },
    };
    let Ok(plan) = plan_slices(w, h, &params) else {
        return Ok(Rejected);
    };
    let _ = plan.check_resizable();
    if plan.source != (w, h) {
        return Err(format!("source {:?} for {w}x{h}", plan.source));
    }
    let p = params.patch_size;
    // (A projector whose image size is not a multiple of its patch is refused by the file
    // checks; for small images llama.cpp stretches to the image size itself.)
    let aligned = params.image_size % p == 0;
    if aligned && (plan.overview.0 % p != 0 || plan.overview.1 % p != 0) || plan.overview.0 == 0 {
        return Err(format!(
            "overview {:?} is not a multiple of the patch {p}",
            plan.overview
        ));
    }
    match (plan.grid, plan.refine, plan.slice) {
        (None, None, None) => {
            if !plan.slices.is_empty() {
                return Err("slices without a grid".into());
            }
        }
        (Some((cols, rows)), Some(refine), Some(cell)) => {
            if (cols * rows) as usize != plan.slices.len() {
                return Err(format!(
                    "grid {cols}x{rows} but {} slices",
                    plan.slices.len()
                ));
            }
            if plan.slices.len() > params.max_slices as usize + 1 {
                return Err(format!(
                    "{} slices for max {}",
                    plan.slices.len(),
                    params.max_slices
                ));
            }
            if (cell.0 * cols, cell.1 * rows) != refine {
                return Err(format!(
                    "cell {cell:?} x grid does not make refine {refine:?}"
                ));
            }
            for r in &plan.slices {
                if r.x + r.w > refine.0 || r.y + r.h > refine.1 || (r.w, r.h) != cell {
                    return Err(format!(
                        "slice {r:?} outside refine {refine:?} or not a cell"
                    ));
                }
            }
        }
        other => return Err(format!("inconsistent plan parts {other:?}")),
    }
    if plan.n_chunks() != 1 + plan.slices.len() {
        return Err("n_chunks".into());
    }
    Ok(Accepted)
}

// ---------------------------------------------------------------------------------------------
// Chat lines

const CHAT_SEEDS: [&str; 6] = [
    "What is in the picture?",
    "/image photo.jpg",
    "/image \"a b.png\"",
    "/reset",
    "  /quit  ",
    "/help me",
];

fn make_chat_line(rng: &mut Rng) -> Vec<u8> {
    let seeds: Vec<Vec<u8>> = CHAT_SEEDS.iter().map(|s| s.as_bytes().to_vec()).collect();
    {
        let seed = rng.pick(&seeds);
        mutate_bytes(rng, seed, &seeds)
    }
}

fn run_chat_line(input: &[u8]) -> Result<Verdict, String> {
    let line = String::from_utf8_lossy(input);
    match ChatLine::parse(&line) {
        ChatLine::Ask(text) if text.is_empty() || text.trim() != text || text.starts_with('/') => {
            return Err(format!("message {text:?}"));
        }
        ChatLine::Empty if !line.trim().is_empty() => {
            return Err(format!("{line:?} parsed as empty"));
        }
        ChatLine::Unknown(name) if matches!(name, "image" | "reset" | "quit" | "exit" | "help") => {
            return Err(format!("/{name} parsed as unknown"));
        }
        _ => {}
    }
    Ok(Accepted)
}

// ---------------------------------------------------------------------------------------------
// Embedding-cache files

fn embd_seeds() -> &'static Vec<Vec<u8>> {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut seeds = Vec::new();
        for (w, h) in [(300, 200), (1000, 700), (448, 448)] {
            let plan = plan_slices(w, h, &SliceParams::default()).expect("plan");
            let n_embd = 8;
            let chunks = (0..plan.n_chunks())
                .map(|c| {
                    (0..4 * n_embd)
                        .map(|i| (c * 100 + i) as f32 * 0.5)
                        .collect()
                })
                .collect();
            let emb = ImageEmbeddings {
                plan,
                chunks,
                n_embd,
                encode_secs: Vec::new(),
            };
            seeds.push(encode_file(&EMBD_KEY, &emb));
        }
        seeds
    })
}

const EMBD_KEY: EmbdKey = EmbdKey([7; 32]);

fn make_embd(rng: &mut Rng) -> Vec<u8> {
    let seeds = embd_seeds();
    let seed = rng.pick(seeds);
    let mut input = mutate_bytes(rng, seed, seeds);
    // Mostly with the trailing SHA-256 made right again, so the mutation reaches the parser
    // behind the checksum.
    if !rng.one_in(4) && input.len() > 32 {
        let n = input.len() - 32;
        let digest = Sha256::digest(&input[..n]);
        input[n..].copy_from_slice(&digest);
    }
    input
}

fn run_embd(input: &[u8]) -> Result<Verdict, String> {
    match decode_file(input, &EMBD_KEY) {
        Err(_) => Ok(Rejected),
        Ok(emb) => {
            if emb.chunks.len() != emb.plan.n_chunks() {
                return Err(format!(
                    "{} chunks for a plan of {}",
                    emb.chunks.len(),
                    emb.plan.n_chunks()
                ));
            }
            // The format is canonical: what decodes re-encodes to the same bytes.
            if encode_file(&EMBD_KEY, &emb) != input {
                return Err("a decoded entry does not re-encode to its bytes".into());
            }
            Ok(Accepted)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Hub listings

fn make_listing(rng: &mut Rng) -> Vec<u8> {
    if rng.one_in(2) {
        let seeds: Vec<Vec<u8>> = LISTING_SEEDS
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect();
        return {
            let seed = rng.pick(&seeds);
            mutate_bytes(rng, seed, &seeds)
        };
    }
    // A listing built from random entries: names that may be unsafe, sizes, hashes.
    let names = [
        "ggml-model-Q4_K_M.gguf",
        "ggml-model-q8_0.gguf",
        "mmproj-model-f16.gguf",
        "mmproj-model-Q8_0.gguf",
        "../mmproj-evil.gguf",
        "/etc/passwd-Q4_K_M.gguf",
        "sub/dir/model-Q4_K_M.gguf",
        "README.md",
        "mmproj-..gguf",
        "Q4_K_M",
        "",
    ];
    let n = rng.below(6);
    let entries: Vec<String> = (0..n)
        .map(|_| {
            let name = rng.pick(&names);
            let size = *rng.pick(&INTERESTING_U64);
            let oid = if rng.one_in(3) {
                "x".repeat(rng.below(70))
            } else {
                format!("{:064x}", u128::from(rng.next_u64()))
            };
            let kind = if rng.one_in(5) { "directory" } else { "file" };
            if rng.one_in(3) {
                format!(r#"{{"type":"{kind}","path":"{name}","size":{size}}}"#)
            } else {
                format!(
                    r#"{{"type":"{kind}","path":"{name}","size":{size},"lfs":{{"oid":"{oid}","size":{size}}}}}"#
                )
            }
        })
        .collect();
    format!("[{}]", entries.join(",")).into_bytes()
}

const LISTING_SEEDS: [&str; 2] = [
    r#"[{"type":"file","path":"ggml-model-Q4_K_M.gguf","size":5,"lfs":{"oid":"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef","size":5}},{"type":"file","path":"mmproj-model-f16.gguf","size":6}]"#,
    r#"[{"type":"directory","path":"x"},{"type":"file","path":"a-q8_0.gguf","size":1},{"type":"file","path":"mmproj-f16.gguf","size":2},{"type":"file","path":"mmproj-q8_0.gguf","size":3}]"#,
];

fn run_listing(input: &[u8]) -> Result<Verdict, String> {
    let json = String::from_utf8_lossy(input);
    let Ok(files) = parse_listing(&json, "fuzz-listing") else {
        return Ok(Rejected);
    };
    for f in &files {
        if f.path.contains('/') || f.path.contains('\\') || f.path == ".." || f.path.is_empty() {
            return Err(format!("unsafe file name {:?} accepted", f.path));
        }
        if let Some(sha) = &f.sha256 {
            if sha.len() != 64
                || !sha
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            {
                return Err(format!("sha256 {sha:?} accepted"));
            }
        }
    }
    let repo = Repo::parse("openbmb/MiniCPM-V-2_6-gguf").map_err(|e| e.to_string())?;
    for quant in ["Q4_K_M", "q8_0", ""] {
        if let Ok(pair) = select(&files, &repo, quant) {
            if !pair
                .model
                .path
                .to_ascii_lowercase()
                .contains(&quant.to_ascii_lowercase())
            {
                return Err(format!("{} chosen for quant {quant}", pair.model.path));
            }
            if !pair.mmproj.path.to_ascii_lowercase().starts_with("mmproj") {
                return Err(format!("{} chosen as the projector", pair.mmproj.path));
            }
        }
    }
    Ok(Accepted)
}
