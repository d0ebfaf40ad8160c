//! `minicpmv inspect`: what a GGUF file is.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Args;
use serde::Serialize;

use minicpmv::gguf::{human_bytes, FileKind, GgufFile, MetaValue};
use minicpmv::model::family::{self, Version};
use minicpmv::model::inputs::IMAGE_TOKENS;

use super::output::Stdout;

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A GGUF file: language model or mmproj.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct TypeStats {
    tensors: usize,
    params: u64,
    bytes: u64,
}

#[derive(Debug, Serialize)]
struct Report {
    file: PathBuf,
    file_size: u64,
    /// "language_model", "projector" or "unknown".
    kind: &'static str,
    architecture: Option<String>,
    /// `clip.projector_type` of a projector (`resampler` when absent, as llama.cpp reads
    /// MiniCPM-V files; `minicpmv4_6` for 4.6's merger).
    projector_type: Option<String>,
    /// `clip.minicpmv_version` of a resampler projector (2 when absent, as llama.cpp).
    minicpmv_version: Option<i64>,
    model_family: Option<String>,
    name: Option<String>,
    gguf_version: u32,
    n_tensors: usize,
    n_params: u64,
    /// Hyper-parameters (metadata values that are numbers, booleans or short strings).
    hparams: BTreeMap<String, serde_json::Value>,
    /// Vocabulary size (language models).
    n_vocab: Option<usize>,
    /// Whether the vocabulary has MiniCPM-V's image tokens (language models).
    has_image_tokens: Option<bool>,
    tensor_types: BTreeMap<String, TypeStats>,
}

pub fn main(args: InspectArgs) -> Result<()> {
    let f = GgufFile::open(&args.file).context("cannot inspect")?;
    let report = build(&f);
    let text = if args.json {
        serde_json::to_string_pretty(&report)? + "\n"
    } else {
        render_text(&report)
    };
    let mut out = Stdout::default();
    out.write_str(&text);
    out.finish().context("writing to stdout")?;
    Ok(())
}

fn build(f: &GgufFile) -> Report {
    let file_kind = f.kind();
    let kind = file_kind.tag();
    let prefix = match file_kind {
        FileKind::Unknown => String::new(),
        known => format!("{}.", known.architecture()),
    };
    let mut hparams = BTreeMap::new();
    if !prefix.is_empty() {
        for (key, value) in &f.metadata {
            if !key.starts_with(&prefix) {
                continue;
            }
            let v = match value {
                MetaValue::Bool(b) => serde_json::json!(b),
                MetaValue::String(s) if s.len() <= 64 => serde_json::json!(s),
                MetaValue::F32(x) => serde_json::json!(x),
                MetaValue::F64(x) => serde_json::json!(x),
                MetaValue::Array(_) | MetaValue::String(_) => continue,
                other => match (other.as_i64(), other.as_u64()) {
                    (Some(i), _) => serde_json::json!(i),
                    (None, Some(u)) => serde_json::json!(u),
                    _ => continue,
                },
            };
            hparams.insert(key.clone(), v);
        }
    }
    let mut tensor_types: BTreeMap<String, TypeStats> = BTreeMap::new();
    for t in &f.tensors {
        let e = tensor_types
            .entry(t.ggml_type.name().to_string())
            .or_insert(TypeStats {
                tensors: 0,
                params: 0,
                bytes: 0,
            });
        e.tensors += 1;
        e.params += t.n_elements();
        e.bytes += t.n_bytes;
    }
    let tokens = f.get_str_array("tokenizer.ggml.tokens");
    let projector_type = (kind == "projector").then(|| {
        f.get_str("clip.projector_type")
            .unwrap_or(family::RESAMPLER_TYPE)
            .to_string()
    });
    // 4.6's merger has no clip.minicpmv_version; its type names the version
    let merger_version = projector_type
        .as_deref()
        .and_then(Version::from_projector_type);
    let minicpmv_version = match kind {
        "projector" if merger_version.is_none() => {
            Some(f.get_i64("clip.minicpmv_version").unwrap_or(2))
        }
        _ => None,
    };
    let model_family = merger_version
        .or_else(|| minicpmv_version.and_then(Version::from_minicpmv_version))
        .map(|v| family::spec(v).name.clone());
    Report {
        file: f.path.clone(),
        file_size: f.file_size,
        kind,
        architecture: f.architecture().map(str::to_string),
        projector_type,
        minicpmv_version,
        model_family,
        name: f.get_str("general.name").map(str::to_string),
        gguf_version: f.version,
        n_tensors: f.tensors.len(),
        n_params: f.n_params(),
        hparams,
        n_vocab: tokens.map(<[String]>::len),
        has_image_tokens: tokens.map(|t| IMAGE_TOKENS.iter().all(|it| t.iter().any(|x| x == it))),
        tensor_types,
    }
}

fn human_count(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2} B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.2} M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1} K", n as f64 / 1e3),
        n => n.to_string(),
    }
}

fn render_text(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    // Writing into a String cannot fail: the results of writeln! are ignored.
    let kind = match r.kind {
        "language_model" => "language model",
        "projector" => "vision projector (mmproj)",
        _ => "unknown (no general.architecture)",
    };
    let _ = writeln!(s, "file:          {}", r.file.display());
    let _ = writeln!(
        s,
        "size:          {} ({} bytes)",
        human_bytes(r.file_size),
        r.file_size
    );
    let _ = writeln!(s, "kind:          {kind}");
    if let Some(a) = &r.architecture {
        let _ = writeln!(s, "architecture:  {a}");
    }
    if let Some(n) = &r.name {
        let _ = writeln!(s, "name:          {n}");
    }
    if let Some(v) = r.minicpmv_version {
        let fam = r.model_family.as_deref().unwrap_or("unknown to this tool");
        let _ = writeln!(s, "MiniCPM-V:     version {v} ({fam})");
    } else if let (Some(t), Some(fam)) = (&r.projector_type, &r.model_family) {
        let scale = r
            .hparams
            .get("clip.vision.projector.scale_factor")
            .map(|f| format!(", scale factor {f}"))
            .unwrap_or_default();
        let _ = writeln!(s, "MiniCPM-V:     {fam} ({t}{scale})");
    }
    let _ = writeln!(
        s,
        "parameters:    {} ({})",
        human_count(r.n_params),
        r.n_params
    );
    let _ = writeln!(s, "tensors:       {}", r.n_tensors);
    if let Some(n) = r.n_vocab {
        let _ = writeln!(s, "vocabulary:    {n} tokens");
    }
    if let Some(b) = r.has_image_tokens {
        let _ = writeln!(
            s,
            "image tokens:  {}",
            if b {
                "present"
            } else {
                "MISSING (cannot take images)"
            }
        );
    }
    if !r.hparams.is_empty() {
        let _ = writeln!(s, "hyper-parameters:");
        for (k, v) in &r.hparams {
            let _ = writeln!(s, "  {k} = {v}");
        }
    }
    let _ = writeln!(s, "tensor types:");
    for (ty, st) in &r.tensor_types {
        let _ = writeln!(
            s,
            "  {ty:<8} {:>5} tensors {:>12} params {:>12}",
            st.tensors,
            human_count(st.params),
            human_bytes(st.bytes)
        );
    }
    s
}
