//! Reading llama.cpp's quantization log, and the plan: which type every tensor will get.
//!
//! `llama_model_quantize` has no per-tensor callback, but it logs one line per tensor through the
//! logger we install for the call (src/llama-quant.cpp of the bundled llama.cpp):
//!
//! ```text
//! [  12/ 339] blk.1.attn_q.weight                  - [ 3584,  3584,     1,     1], type =    f16, converting to q4_K .. size =    24.50 MiB ->     6.89 MiB
//! ```
//!
//! (as separate fragments: the header, `converting to T .. `, `size = ...`), and in a dry run
//! `size = A MiB -> B MiB (T)` instead. Before the main loop it warns about every row-length
//! fallback: `warning: NAME - ncols N not divisible by B (required for type T) -> falling back
//! to U`. [`LogParser`] turns these fragments into per-tensor events; a dry run gives the plan
//! (exact per-tensor output types, so exact output sizes), the real run gives progress.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::error::QuantizeError;
use crate::facts::GgufFacts;
use crate::ffi::{self, LogLevel, RawParams};
use crate::types::{QuantType, TensorType};
use minicpmv_gguf::FileKind;
use minicpmv_llama::quantize::sys;

/// llama.cpp pads every tensor's data to this (`GGUF_DEFAULT_ALIGNMENT`; the quantizer uses it
/// whatever the input's alignment).
const ALIGN: u64 = 32;

/// A tensor whose rows do not divide into the blocks of the type llama.cpp wanted for it, so it
/// used another type (`tensor_type_fallback` in src/llama-quant.cpp).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fallback {
    pub tensor: String,
    /// `ne[0]`, the row length.
    pub row_length: u64,
    /// Block size of the wanted type.
    pub block_size: u64,
    pub wanted: String,
    pub used: String,
}

/// One tensor as llama.cpp logged it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SeenTensor {
    pub name: String,
    pub from_type: String,
    /// `None`: stored as it is.
    pub to_type: Option<String>,
    pub done: bool,
}

/// Turns llama.cpp's log fragments into tensor events. See the module docs for the format.
#[derive(Debug, Default)]
pub(crate) struct LogParser {
    pub tensors: Vec<SeenTensor>,
    /// The `n` of `[i/n]`.
    pub total: Option<usize>,
    pub fallbacks: Vec<Fallback>,
    pending_fallback: Option<Fallback>,
    pub errors: Vec<String>,
    /// Input bytes per tensor name, to weight progress.
    weights: HashMap<String, u64>,
    pub bytes_total: u64,
    pub bytes_done: u64,
    pub finished: bool,
}

impl LogParser {
    pub(crate) fn new(input: &GgufFacts) -> LogParser {
        let weights: HashMap<String, u64> = input
            .tensors
            .iter()
            .map(|t| (t.name.clone(), t.n_bytes.max(1)))
            .collect();
        LogParser {
            bytes_total: weights.values().sum(),
            weights,
            total: Some(input.tensors.len()),
            ..LogParser::default()
        }
    }

    /// Feeds one log fragment.
    pub(crate) fn feed(&mut self, level: LogLevel, text: &str) {
        if level == LogLevel::Error {
            let line = text.trim();
            if !line.is_empty() && !line.chars().all(|c| c == '=') {
                self.errors.push(line.to_string());
            }
            return;
        }
        let t = text.trim_start();
        if let Some((_, total, name, from)) = parse_tensor_header(t) {
            self.total = Some(total);
            self.tensors.push(SeenTensor {
                name: name.to_string(),
                from_type: from.to_string(),
                to_type: None,
                done: false,
            });
        } else if let Some(rest) = t.strip_prefix("converting to ") {
            let ty = rest.split_whitespace().next().unwrap_or("");
            if let Some(cur) = self.tensors.last_mut().filter(|c| !c.done) {
                cur.to_type = Some(ty.to_string());
            }
        } else if let Some(rest) = t.strip_prefix("size = ") {
            // dry run: "A MiB -> B MiB (T)"; copy: "A MiB"; real run: "A MiB -> B MiB"
            let dry_type = rest
                .trim_end()
                .strip_suffix(')')
                .and_then(|r| r.rsplit_once('('))
                .map(|(_, ty)| ty.trim().to_string());
            if let Some(cur) = self.tensors.last_mut().filter(|c| !c.done) {
                if dry_type.is_some() {
                    cur.to_type = dry_type;
                }
                cur.done = true;
                self.bytes_done += self.weights.get(&cur.name).copied().unwrap_or(1);
            }
        } else if let Some(f) = parse_fallback_warning(t) {
            self.pending_fallback = Some(f);
        } else if let Some(rest) = t.strip_prefix("-> falling back to ") {
            if let Some(mut f) = self.pending_fallback.take() {
                f.used = rest.trim().to_string();
                self.fallbacks.push(f);
            }
        }
    }

    fn snapshot(&self) -> Progress {
        Progress {
            tensors_done: self.tensors.iter().filter(|t| t.done).count(),
            tensors_total: self.total.unwrap_or(0),
            bytes_done: self.bytes_done.min(self.bytes_total),
            bytes_total: self.bytes_total,
            current: self
                .tensors
                .last()
                .filter(|t| !t.done)
                .map(|t| t.name.clone()),
            finished: self.finished,
        }
    }

    /// The most useful error message llama.cpp logged, if any.
    pub(crate) fn error_message(&self) -> Option<String> {
        let failed = self
            .errors
            .iter()
            .rev()
            .find_map(|e| e.split_once("failed to quantize: ").map(|(_, m)| m.trim()));
        let msg = failed.or_else(|| self.errors.last().map(String::as_str))?;
        Some(msg.trim_end_matches('\n').to_string())
    }
}

/// `[  12/ 339] NAME - [shape], type =    f16, ` -> (12, 339, NAME, "f16").
fn parse_tensor_header(s: &str) -> Option<(usize, usize, &str, &str)> {
    let s = s.strip_prefix('[')?;
    let (idx, rest) = s.split_once('/')?;
    let (total, rest) = rest.split_once(']')?;
    let idx = idx.trim().parse().ok()?;
    let total = total.trim().parse().ok()?;
    let (name, rest) = rest.split_once(" - [")?;
    let (_, rest) = rest.split_once("type = ")?;
    let ty = rest.split(',').next()?.trim();
    Some((idx, total, name.trim(), ty))
}

/// `warning: NAME - ncols N not divisible by B (required for type T) `.
fn parse_fallback_warning(s: &str) -> Option<Fallback> {
    let s = s.strip_prefix("warning: ")?;
    let (name, rest) = s.split_once(" - ncols ")?;
    let (ncols, rest) = rest.trim_start().split_once(" not divisible by ")?;
    let (block, rest) = rest.trim_start().split_once(" (required for type ")?;
    let wanted = rest.split(')').next()?.trim();
    Some(Fallback {
        tensor: name.trim().to_string(),
        row_length: ncols.trim().parse().ok()?,
        block_size: block.trim().parse().ok()?,
        wanted: wanted.to_string(),
        used: String::new(),
    })
}

/// How far a quantization is, from llama.cpp's per-tensor log lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    pub tensors_done: usize,
    pub tensors_total: usize,
    /// Input bytes of the finished tensors (progress is weighted by tensor size).
    pub bytes_done: u64,
    pub bytes_total: u64,
    /// The tensor being converted.
    pub current: Option<String>,
    /// llama.cpp returned.
    pub finished: bool,
}

/// A handle to read the progress of a running quantization from another thread.
#[derive(Debug, Clone)]
pub struct ProgressProbe(pub(crate) Arc<Mutex<LogParser>>);

impl ProgressProbe {
    pub fn snapshot(&self) -> Progress {
        self.0.lock().map(|p| p.snapshot()).unwrap_or_default()
    }
}

/// One tensor of the plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannedTensor {
    pub name: String,
    pub dims: Vec<u64>,
    pub from: TensorType,
    pub to: TensorType,
    pub in_bytes: u64,
    pub out_bytes: u64,
}

/// What llama.cpp will do with every tensor, from its own dry run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    #[serde(rename = "type")]
    pub qtype: QuantType,
    /// In the input's tensor order.
    pub tensors: Vec<PlannedTensor>,
    pub fallbacks: Vec<Fallback>,
    /// Header estimate + every tensor's data padded to 32 bytes.
    pub expected_output_bytes: u64,
}

impl Plan {
    pub fn tensor(&self, name: &str) -> Option<&PlannedTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    pub fn fallback(&self, name: &str) -> Option<&Fallback> {
        self.fallbacks.iter().find(|f| f.tensor == name)
    }
}

/// Per-tensor type overrides this crate passes to llama.cpp: (regex, ggml type id).
///
/// The bundled llama.cpp aborts the process when it quantizes a clip file (mmproj) to q2_k,
/// iq4_nl or iq4_xs: for attention-V tensors (`attn_v.weight`, which every SigLIP block has) its
/// rule for these types asks `hparams.n_gqa()`, which calls `n_head(0)`, and a clip file has no
/// layers loaded (`load_hparams` returns early for `LLM_ARCH_CLIP`), so `n_head` reaches
/// `GGML_ABORT` (src/llama-hparams.cpp). With no heads known (`n_gqa() = 0`) the rule would give
/// q3_K for q2_k and keep the default type for iq4_nl/iq4_xs; passing exactly that as a manual
/// override for those tensors skips the rule and gives the same types without the abort. The
/// row-length fallback still applies to overridden tensors. Language models need none.
pub fn tensor_type_overrides(kind: &FileKind, qtype: QuantType) -> Vec<(String, u32)> {
    if *kind != FileKind::Projector {
        return Vec::new();
    }
    let ty = match qtype {
        QuantType::Q2_K => sys::GGML_TYPE_Q3_K,
        QuantType::IQ4_NL => sys::GGML_TYPE_IQ4_NL,
        QuantType::IQ4_XS => sys::GGML_TYPE_IQ4_XS,
        _ => return Vec::new(),
    };
    // llama.cpp's attention-V category: attn_v.weight, attn_qkv.weight, attn_kv_b.weight.
    vec![(
        r"attn_v\.weight|attn_qkv\.weight|attn_kv_b\.weight".to_string(),
        ty,
    )]
}

/// Bytes the quantizer's output header takes beyond the input's: `general.quantization_version`
/// and `general.file_type` (about 80 bytes) plus padding; rounded up generously.
const HEADER_SLACK: u64 = 4096;

fn pad(n: u64) -> u64 {
    n.div_ceil(ALIGN) * ALIGN
}

/// Runs llama.cpp's dry run (`llama_model_quantize_params::dry_run`: types and sizes computed,
/// nothing read or written) and builds the plan from its log.
pub(crate) fn dry_run(input: &GgufFacts, qtype: QuantType) -> Result<Plan, QuantizeError> {
    let probe = progress_probe(input);
    let sink = probe.sink();
    let parser = probe.0;
    let params = RawParams {
        nthread: 1,
        ftype: qtype.ftype(),
        allow_requantize: true,
        dry_run: true,
        tensor_types: tensor_type_overrides(&input.kind, qtype),
    };
    // A dry run opens no output file; the name only has to be a valid string.
    let unused_out = input.path.with_extension("dry-run-never-written");
    let rc = ffi::model_quantize(&input.path, &unused_out, params, sink)
        .map_err(|e| QuantizeError::io(&input.path, e))?;
    let parser = parser.lock().unwrap_or_else(|e| e.into_inner());
    let plan_err = |message: String| QuantizeError::Plan {
        path: input.path.clone(),
        message,
    };
    if rc != 0 {
        return Err(plan_err(parser.error_message().unwrap_or_else(|| {
            format!("llama_model_quantize returned {rc} (run with -v for llama.cpp's log)")
        })));
    }
    build_plan(input, qtype, &parser).map_err(plan_err)
}

fn build_plan(input: &GgufFacts, qtype: QuantType, parser: &LogParser) -> Result<Plan, String> {
    let seen: HashMap<&str, &SeenTensor> = parser
        .tensors
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    if seen.len() != input.tensors.len() || parser.tensors.len() != input.tensors.len() {
        return Err(format!(
            "its log lists {} tensors, the file has {} (has the log format of this llama.cpp \
             changed?)",
            parser.tensors.len(),
            input.tensors.len()
        ));
    }
    let mut tensors = Vec::with_capacity(input.tensors.len());
    let mut total = pad(input.data_offset + HEADER_SLACK);
    for t in &input.tensors {
        let s = seen
            .get(t.name.as_str())
            .ok_or_else(|| format!("its log does not list tensor {:?}", t.name))?;
        let from = TensorType::from_id(t.ggml_type)
            .ok_or_else(|| format!("tensor {:?}: unknown ggml type {}", t.name, t.ggml_type))?;
        if !from.name().eq_ignore_ascii_case(&s.from_type) {
            return Err(format!(
                "tensor {:?} is {} in the file but {} in llama.cpp's log",
                t.name, from, s.from_type
            ));
        }
        let to = match &s.to_type {
            None => from,
            Some(name) => TensorType::from_name(name)
                .ok_or_else(|| format!("tensor {:?}: unknown target type {name:?}", t.name))?,
        };
        let out_bytes = to
            .tensor_bytes(&t.dims)
            .ok_or_else(|| format!("tensor {:?}: {:?} does not fit type {to}", t.name, t.dims))?;
        total += pad(out_bytes);
        tensors.push(PlannedTensor {
            name: t.name.clone(),
            dims: t.dims.clone(),
            from,
            to,
            in_bytes: t.n_bytes,
            out_bytes,
        });
    }
    Ok(Plan {
        qtype,
        tensors,
        fallbacks: parser.fallbacks.clone(),
        expected_output_bytes: total,
    })
}

/// A progress probe for a run over `input`.
pub(crate) fn progress_probe(input: &GgufFacts) -> ProgressProbe {
    ProgressProbe(Arc::new(Mutex::new(LogParser::new(input))))
}

impl ProgressProbe {
    /// A log sink feeding this probe's parser.
    pub(crate) fn sink(&self) -> ffi::LogSink {
        let parser = Arc::clone(&self.0);
        Arc::new(move |level, text| {
            if let Ok(mut p) = parser.lock() {
                p.feed(level, text);
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::TensorFacts;

    fn facts() -> GgufFacts {
        GgufFacts {
            path: "x.gguf".into(),
            kind: FileKind::Projector,
            file_size: 0,
            data_offset: 1000,
            metadata: Default::default(),
            tensors: vec![
                TensorFacts {
                    name: "v.blk.0.ffn_down.weight".into(),
                    dims: vec![64, 32],
                    ggml_type: 1,
                    n_bytes: 4096,
                },
                TensorFacts {
                    name: "v.blk.0.ln1.weight".into(),
                    dims: vec![32],
                    ggml_type: 0,
                    n_bytes: 128,
                },
            ],
        }
    }

    // Fragments exactly as llama.cpp's format strings produce them.
    const DRY: &[(LogLevel, &str)] = &[
        (LogLevel::Warn, "warning: v.blk.0.ffn_down.weight              - ncols     64 not divisible by 256 (required for type    q6_K) "),
        (LogLevel::Warn, "-> falling back to    q8_0\n"),
        (LogLevel::Info, "[   1/   2] v.blk.0.ffn_down.weight              - [   64,    32,     1,     1], type =    f16, "),
        (LogLevel::Info, "size =     0.00 MiB ->     0.00 MiB (q8_0)\n"),
        (LogLevel::Info, "[   2/   2] v.blk.0.ln1.weight                   - [   32,     1,     1,     1], type =    f32, "),
        (LogLevel::Info, "size =    0.000 MiB\n"),
    ];

    #[test]
    fn dry_run_log_gives_the_plan() {
        let f = facts();
        let mut p = LogParser::new(&f);
        for (l, t) in DRY {
            p.feed(*l, t);
        }
        let plan = build_plan(&f, QuantType::Q4_K_M, &p).expect("plan");
        assert_eq!(plan.tensors[0].to.name(), "q8_0");
        assert_eq!(plan.tensors[0].out_bytes, 2 * 34 * 32);
        assert_eq!(plan.tensors[1].to.name(), "f32");
        assert_eq!(
            plan.fallbacks,
            vec![Fallback {
                tensor: "v.blk.0.ffn_down.weight".into(),
                row_length: 64,
                block_size: 256,
                wanted: "q6_K".into(),
                used: "q8_0".into(),
            }]
        );
        assert_eq!(
            plan.expected_output_bytes,
            pad(1000 + HEADER_SLACK) + pad(2176) + pad(128)
        );
    }

    #[test]
    fn real_run_log_gives_progress_and_errors() {
        let f = facts();
        let mut p = LogParser::new(&f);
        p.feed(LogLevel::Info, "[   1/   2] v.blk.0.ffn_down.weight              - [   64,    32,     1,     1], type =    f16, ");
        p.feed(LogLevel::Info, "converting to q8_0 .. ");
        let s = p.snapshot();
        assert_eq!((s.tensors_done, s.tensors_total), (0, 2));
        assert_eq!(s.current.as_deref(), Some("v.blk.0.ffn_down.weight"));
        p.feed(LogLevel::Info, "size =     0.01 MiB ->     0.00 MiB\n");
        let s = p.snapshot();
        assert_eq!(
            (s.tensors_done, s.bytes_done, s.bytes_total),
            (1, 4096, 4224)
        );
        assert_eq!(p.tensors[0].to_type.as_deref(), Some("q8_0"));
        p.feed(
            LogLevel::Error,
            "llama_model_quantize: failed to quantize: basic_ios::clear: iostream error\n",
        );
        assert_eq!(
            p.error_message().as_deref(),
            Some("basic_ios::clear: iostream error")
        );
    }

    #[test]
    fn a_changed_log_format_is_an_error_not_a_wrong_plan() {
        let f = facts();
        let p = LogParser::new(&f);
        assert!(build_plan(&f, QuantType::Q8_0, &p).is_err());
    }
}
