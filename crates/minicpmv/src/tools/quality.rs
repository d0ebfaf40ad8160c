//! Quality of a candidate (e.g. quantized) MiniCPM-V pair against a reference pair on the same
//! images and prompts, measured for the projector and the language model separately and
//! together.
//!
//! The text is fixed: the reference pair's greedy continuation of each prompt (`n_predict`
//! tokens, end-of-generation ignored). Every combination of (projector, language model) in
//! {reference, candidate}² then reads the same input (the prompt, the image embeddings of its
//! projector, the continuation), and its next-token distribution at each continuation position
//! (including the position that predicts the first continuation token) is compared with the
//! reference's:
//!
//! - KL divergence `KL(ref || cand) = Σ p_ref (log p_ref − log p_cand)`, in f64 from the
//!   log-softmax of the logits; mean and max over positions;
//! - top-1 agreement: the fraction of positions where both argmaxes agree;
//! - perplexity of the continuation under the combination: `exp(−mean log p(token))`;
//! - the projector: per image chunk (overview, slices), the mean over its query tokens of the
//!   cosine between the reference's and the combination's embedding of that token; the lowest.
//!
//! All four combinations go through the same code path (fresh context, prefill, one batch of
//! continuation tokens with logits for every position), so a candidate identical to the
//! reference gives exactly KL 0, agreement 1 and equal perplexities.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::decode::prefill;
use crate::encode::{self, ImageEmbeddings, NativeError};
use crate::ffi::{
    Batch, BatchError, ClipProjector, Context, ContextParams, DecodeError, LoadParams, Model, Token,
};
use crate::gguf::GgufFile;
use crate::model::inputs::{check_pair, InputError, PairFacts, ProjectorFacts};
use crate::prompt::layout::LayoutStyle;
use crate::prompt::sequence::{self, LayoutTokens, Segment};
use crate::session::run::{prepare, Pipeline, RunConfig, RunError};
use crate::vision::{load_image, LoadedImage, SlicePlan};

/// The default number of continuation tokens.
pub const DEFAULT_N_PREDICT: usize = 32;

/// What to compare and on what.
#[derive(Debug, Clone)]
pub struct QualityConfig {
    pub reference_model: PathBuf,
    pub reference_mmproj: PathBuf,
    /// The candidate language model.
    pub model: PathBuf,
    /// The candidate projector.
    pub mmproj: PathBuf,
    /// Every image is evaluated with every prompt.
    pub images: Vec<PathBuf>,
    pub prompts: Vec<String>,
    /// Continuation tokens per (image, prompt).
    pub n_predict: usize,
    pub n_threads: i32,
    pub n_ctx: u32,
    pub n_batch: u32,
    pub max_image_pixels: u64,
    /// Slices per image at most (1..=9).
    pub max_slices: u32,
    pub load: LoadParams,
}

/// Which file of a combination is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Reference,
    Candidate,
}

impl Side {
    pub fn short(self) -> &'static str {
        match self {
            Side::Reference => "ref",
            Side::Candidate => "cand",
        }
    }
}

/// One (projector, language model) combination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Combination {
    pub name: &'static str,
    pub projector: Side,
    pub language_model: Side,
}

/// The four combinations, baseline first: `text_model` isolates the candidate language model,
/// `projector` the candidate projector, `total` is both.
pub const COMBINATIONS: [Combination; 4] = [
    Combination {
        name: "baseline",
        projector: Side::Reference,
        language_model: Side::Reference,
    },
    Combination {
        name: "text_model",
        projector: Side::Reference,
        language_model: Side::Candidate,
    },
    Combination {
        name: "projector",
        projector: Side::Candidate,
        language_model: Side::Reference,
    },
    Combination {
        name: "total",
        projector: Side::Candidate,
        language_model: Side::Candidate,
    },
];

/// The metrics of one combination (on one case, or summed over all cases).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    pub combination: &'static str,
    pub projector: Side,
    pub language_model: Side,
    /// Positions compared (continuation tokens).
    pub n_positions: usize,
    /// Mean and largest `KL(reference || combination)` over positions, in nats.
    pub mean_kl: f64,
    pub max_kl: f64,
    /// Fraction of positions whose argmax equals the reference's.
    pub top1_agreement: f64,
    /// Perplexity of the continuation under this combination.
    pub perplexity: f64,
    /// Lowest per-chunk cosine between this combination's projector embeddings and the
    /// reference projector's (1 for the combinations with the reference projector).
    pub min_cosine: f64,
}

/// Cosine of one image chunk's embeddings (candidate vs reference projector).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChunkCosine {
    /// `overview`, or `slice R,C` (row, column from 0).
    pub chunk: String,
    /// Mean over the chunk's query tokens of the per-token cosine.
    pub cosine: f64,
}

/// One image with one prompt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CaseReport {
    pub image: PathBuf,
    pub prompt: String,
    /// Positions of the input before the continuation (text tokens and image embeddings).
    pub n_prompt_tokens: usize,
    /// The reference pair's greedy continuation: the text every combination is scored on.
    pub continuation: Vec<Token>,
    pub continuation_text: String,
    /// Candidate vs reference projector, per chunk (overview first).
    pub chunks: Vec<ChunkCosine>,
    pub min_cosine: f64,
    pub combinations: Vec<Metrics>,
}

/// Which files were compared.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairPaths {
    pub model: PathBuf,
    pub mmproj: PathBuf,
}

/// The whole comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QualityReport {
    pub reference: PairPaths,
    pub candidate: PairPaths,
    pub n_predict: usize,
    pub cases: Vec<CaseReport>,
    /// Per combination over all cases: KL mean over all positions, max over all positions,
    /// agreement over all positions, perplexity from the mean log-probability over all
    /// positions, lowest chunk cosine.
    pub summary: Vec<Metrics>,
}

/// Why a comparison failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QualityError {
    #[error("reference pair: {0}")]
    Reference(#[source] InputError),
    #[error("candidate pair: {0}")]
    Candidate(#[source] InputError),
    #[error("the language models {} (reference) and {} (candidate) do not share a vocabulary ({reason}): their next-token distributions cannot be compared", reference.display(), candidate.display())]
    VocabularyMismatch {
        reference: PathBuf,
        candidate: PathBuf,
        reason: String,
    },
    #[error("the projectors {} (reference) and {} (candidate) differ in {reason}: their embeddings cannot be compared", reference.display(), candidate.display())]
    ProjectorMismatch {
        reference: PathBuf,
        candidate: PathBuf,
        reason: String,
    },
    #[error("no image given: the quality report compares image embeddings")]
    NoImage,
    #[error("the comparison needs {needed} positions ({n_prompt} prompt positions + {n_predict} continuation tokens) but the context holds {n_ctx}: raise -c, lower -n or --max-slices")]
    ContextTooSmall {
        needed: usize,
        n_prompt: usize,
        n_predict: usize,
        n_ctx: u32,
    },
    #[error("llama.cpp returned no logits for output {0}")]
    NoLogits(i32),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Native(#[from] NativeError),
    #[error(transparent)]
    ModelLoad(#[from] crate::ffi::ModelLoadError),
    #[error(transparent)]
    Clip(#[from] crate::ffi::ClipError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Batch(#[from] BatchError),
}

/// Checks both pairs, and that the two language models share a vocabulary and the two
/// projectors are interchangeable (width, query tokens, version, image and patch size).
pub fn check_inputs(cfg: &QualityConfig) -> Result<(PairFacts, PairFacts), QualityError> {
    let reference =
        check_pair(&cfg.reference_model, &cfg.reference_mmproj).map_err(QualityError::Reference)?;
    let candidate = check_pair(&cfg.model, &cfg.mmproj).map_err(QualityError::Candidate)?;
    check_vocabulary(&cfg.reference_model, &cfg.model)?;
    check_projectors(
        &reference.projector,
        &candidate.projector,
        &cfg.reference_mmproj,
        &cfg.mmproj,
    )?;
    Ok((reference, candidate))
}

fn check_vocabulary(reference: &Path, candidate: &Path) -> Result<(), QualityError> {
    let r =
        GgufFile::open(reference).map_err(|e| QualityError::Reference(InputError::ModelFile(e)))?;
    let c =
        GgufFile::open(candidate).map_err(|e| QualityError::Candidate(InputError::ModelFile(e)))?;
    let mismatch = |reason: String| QualityError::VocabularyMismatch {
        reference: reference.to_path_buf(),
        candidate: candidate.to_path_buf(),
        reason,
    };
    const KEY: &str = "tokenizer.ggml.tokens";
    let (rt, ct) = match (r.get_str_array(KEY), c.get_str_array(KEY)) {
        (Some(a), Some(b)) => (a, b),
        _ => return Err(mismatch(format!("{KEY} is missing or not a string array"))),
    };
    if rt.len() != ct.len() {
        return Err(mismatch(format!(
            "{} tokens vs {} tokens",
            rt.len(),
            ct.len()
        )));
    }
    if let Some(i) = rt.iter().zip(ct).position(|(a, b)| a != b) {
        return Err(mismatch(format!(
            "token {i} is {:?} in the reference and {:?} in the candidate",
            rt[i], ct[i]
        )));
    }
    Ok(())
}

fn check_projectors(
    r: &ProjectorFacts,
    c: &ProjectorFacts,
    reference: &Path,
    candidate: &Path,
) -> Result<(), QualityError> {
    let diffs: Vec<String> = [
        (
            "clip.minicpmv_version",
            r.minicpmv_version as u64,
            c.minicpmv_version as u64,
        ),
        ("width", r.n_embd, c.n_embd),
        ("query tokens", r.query_num, c.query_num),
        ("image size", r.image_size, c.image_size),
        ("patch size", r.patch_size, c.patch_size),
    ]
    .iter()
    .filter(|(_, a, b)| a != b)
    .map(|(what, a, b)| format!("{what} ({a} vs {b})"))
    .collect();
    if diffs.is_empty() {
        return Ok(());
    }
    Err(QualityError::ProjectorMismatch {
        reference: reference.to_path_buf(),
        candidate: candidate.to_path_buf(),
        reason: diffs.join(", "),
    })
}

/// Log-softmax in f64.
fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits
        .iter()
        .map(|&x| f64::from(x))
        .fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = logits.iter().map(|&x| (f64::from(x) - max).exp()).sum();
    let lse = max + sum.ln();
    logits.iter().map(|&x| f64::from(x) - lse).collect()
}

/// Index of the largest logit (the first one on ties; NaN never wins).
fn argmax(logits: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in logits.iter().enumerate() {
        if x > logits[best] || logits[best].is_nan() {
            best = i;
        }
    }
    best
}

/// `KL(p || q)` from log-probabilities; terms with `p = 0` contribute nothing. Identical inputs
/// give exactly 0 (every term is `p * 0`); rounding can make a near-zero sum slightly
/// negative, which is clamped to 0.
fn kl_divergence(lp: &[f64], lq: &[f64]) -> f64 {
    let kl: f64 = lp
        .iter()
        .zip(lq)
        .map(|(&a, &b)| {
            let p = a.exp();
            if p == 0.0 {
                0.0
            } else {
                p * (a - b)
            }
        })
        .sum();
    kl.max(0.0)
}

/// Cosine of two vectors in f64; `dot / sqrt(|a|² |b|²)`, so that identical vectors give
/// exactly 1 (IEEE `sqrt(x*x) == x`). Two zero vectors count as identical.
fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut dot, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        return if na == nb { 1.0 } else { 0.0 };
    }
    dot / (na * nb).sqrt()
}

/// Mean per-token cosine of one chunk (`n_embd`-wide rows).
fn chunk_cosine(a: &[f32], b: &[f32], n_embd: usize) -> f64 {
    let rows: Vec<f64> = a
        .chunks(n_embd.max(1))
        .zip(b.chunks(n_embd.max(1)))
        .map(|(x, y)| cosine(x, y))
        .collect();
    if rows.is_empty() || a.len() != b.len() {
        return 0.0;
    }
    rows.iter().sum::<f64>() / rows.len() as f64
}

fn chunk_name(plan: &SlicePlan, chunk: usize) -> String {
    if chunk == 0 {
        return "overview".to_string();
    }
    let cols = plan.grid.map_or(1, |(c, _)| c.max(1)) as usize;
    let k = chunk - 1;
    format!("slice {},{}", k / cols, k % cols)
}

/// Running sums of one combination's metrics.
#[derive(Debug, Clone, Copy)]
struct Acc {
    n: usize,
    kl_sum: f64,
    kl_max: f64,
    agree: usize,
    nll_sum: f64,
    min_cosine: f64,
}

impl Acc {
    fn new() -> Acc {
        Acc {
            n: 0,
            kl_sum: 0.0,
            kl_max: 0.0,
            agree: 0,
            nll_sum: 0.0,
            min_cosine: 1.0,
        }
    }

    fn merge(&mut self, o: &Acc) {
        self.n += o.n;
        self.kl_sum += o.kl_sum;
        self.kl_max = self.kl_max.max(o.kl_max);
        self.agree += o.agree;
        self.nll_sum += o.nll_sum;
        self.min_cosine = self.min_cosine.min(o.min_cosine);
    }

    fn metrics(&self, c: &Combination) -> Metrics {
        let n = self.n.max(1) as f64;
        Metrics {
            combination: c.name,
            projector: c.projector,
            language_model: c.language_model,
            n_positions: self.n,
            mean_kl: self.kl_sum / n,
            max_kl: self.kl_max,
            top1_agreement: self.agree as f64 / n,
            perplexity: (self.nll_sum / n).exp(),
            min_cosine: self.min_cosine,
        }
    }
}

/// Compares `logits` (one row per position) with the reference's on `continuation`.
fn compare(reference: &[Vec<f32>], logits: &[Vec<f32>], continuation: &[Token]) -> Acc {
    let mut acc = Acc::new();
    for ((r, c), &tok) in reference.iter().zip(logits).zip(continuation) {
        let lr = log_softmax(r);
        let lc = log_softmax(c);
        let kl = kl_divergence(&lr, &lc);
        acc.n += 1;
        acc.kl_sum += kl;
        acc.kl_max = acc.kl_max.max(kl);
        acc.agree += usize::from(argmax(r) == argmax(c));
        acc.nll_sum -= lc.get(tok as usize).copied().unwrap_or(f64::NEG_INFINITY);
    }
    acc
}

/// One (image, prompt) pair while it is being evaluated.
struct Case {
    image: usize,
    prompt: String,
    segments: Vec<Segment>,
    n_prompt: usize,
    continuation: Vec<Token>,
    continuation_text: String,
    baseline: Vec<Vec<f32>>,
    accs: [Acc; 4],
}

/// A stage of the comparison, for progress display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// Encoding the images with one side's projector.
    Encode(Side),
    /// Evaluating with one side's language model (greedy continuation first for the reference).
    LanguageModel(Side),
}

/// Runs the comparison. `on_stage` is told when each stage starts.
pub fn evaluate(
    cfg: &QualityConfig,
    on_stage: &mut dyn FnMut(Stage),
) -> Result<QualityReport, QualityError> {
    if cfg.images.is_empty() {
        return Err(QualityError::NoImage);
    }
    let (ref_facts, _) = check_inputs(cfg)?;
    let n_predict = cfg.n_predict.max(1);

    // Chat formatting of each prompt (with the reference's template), one image per case.
    let mut formatted = Vec::new();
    for prompt in &cfg.prompts {
        let run_cfg = RunConfig {
            model: cfg.reference_model.clone(),
            mmproj: cfg.reference_mmproj.clone(),
            images: vec![cfg.images[0].clone()],
            prompt: prompt.clone(),
            n_predict,
            ignore_eos: true,
            sampling: crate::ffi::SamplerParams::default(),
            n_threads: cfg.n_threads,
            n_ctx: cfg.n_ctx,
            n_batch: cfg.n_batch,
            max_image_pixels: cfg.max_image_pixels,
            max_slices: cfg.max_slices,
            pipeline: Pipeline::Native,
            warmup: false,
            projector_attention: Default::default(),
            kv_type: Default::default(),
            low_mem: false,
            per_chunk_prefill: false,
            load: cfg.load,
        };
        let prep = prepare(&run_cfg)?;
        formatted.push((prompt.clone(), prep.formatted, prep.marker));
    }
    let images: Vec<LoadedImage> = cfg
        .images
        .iter()
        .map(|p| load_image(p, cfg.max_image_pixels))
        .collect::<Result<_, _>>()
        .map_err(RunError::from)?;

    // Embeddings of every image with each projector, each loaded once.
    let mut embeddings: Vec<Vec<ImageEmbeddings>> = Vec::with_capacity(2);
    for (side, path) in [
        (Side::Reference, &cfg.reference_mmproj),
        (Side::Candidate, &cfg.mmproj),
    ] {
        on_stage(Stage::Encode(side));
        let mut projector = ClipProjector::load(path, false, Default::default())?;
        let embs = images
            .iter()
            .map(|img| {
                encode::encode_image(
                    &mut projector,
                    img,
                    cfg.max_slices,
                    cfg.n_threads,
                    &mut |_, _| {},
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        embeddings.push(embs);
    }
    let (ref_emb, cand_emb) = (&embeddings[0], &embeddings[1]);
    let chunk_cosines: Vec<Vec<ChunkCosine>> = ref_emb
        .iter()
        .zip(cand_emb)
        .map(|(r, c)| {
            r.chunks
                .iter()
                .enumerate()
                .map(|(k, rc)| ChunkCosine {
                    chunk: chunk_name(&r.plan, k),
                    cosine: c
                        .chunks
                        .get(k)
                        .map_or(0.0, |cc| chunk_cosine(rc, cc, r.n_embd)),
                })
                .collect()
        })
        .collect();
    let min_cos = |image: usize| {
        chunk_cosines[image]
            .iter()
            .map(|c| c.cosine)
            .fold(1.0f64, f64::min)
    };

    let ctx_params = ContextParams {
        n_ctx: cfg.n_ctx,
        n_batch: cfg.n_batch,
        n_threads: cfg.n_threads,
        n_threads_batch: cfg.n_threads,
        kv_type: Default::default(),
    };
    let n_batch = cfg.n_batch.max(1) as usize;
    let style = LayoutStyle::for_minicpmv_version(ref_facts.projector.minicpmv_version);
    let q = ref_facts.projector.query_num as usize;
    let mut cases: Vec<Case> = Vec::new();

    for (lm_side, lm_path) in [
        (Side::Reference, &cfg.reference_model),
        (Side::Candidate, &cfg.model),
    ] {
        on_stage(Stage::LanguageModel(lm_side));
        let model = Model::load(lm_path, cfg.load)?;
        if lm_side == Side::Reference {
            // The input sequences (tokenized once, with the reference model) and the greedy
            // continuations.
            let layout = LayoutTokens::lookup(&model)?;
            for (image, emb) in ref_emb.iter().enumerate() {
                for (prompt, text, marker) in &formatted {
                    let segments = sequence::build_sequence(
                        &model,
                        text,
                        marker,
                        &[&emb.plan],
                        style,
                        &layout,
                    );
                    let n_prompt: usize = segments
                        .iter()
                        .map(|s| match s {
                            Segment::Tokens(t) => t.len(),
                            Segment::Chunk { .. } => q,
                        })
                        .sum();
                    if n_prompt + n_predict > cfg.n_ctx as usize {
                        return Err(QualityError::ContextTooSmall {
                            needed: n_prompt + n_predict,
                            n_prompt,
                            n_predict,
                            n_ctx: cfg.n_ctx,
                        });
                    }
                    let continuation =
                        greedy(&model, ctx_params, &segments, emb, n_predict, n_batch)?;
                    let bytes: Vec<u8> = continuation
                        .iter()
                        .flat_map(|&t| model.token_to_bytes(t, true))
                        .collect();
                    cases.push(Case {
                        image,
                        prompt: prompt.clone(),
                        segments,
                        n_prompt,
                        continuation,
                        continuation_text: String::from_utf8_lossy(&bytes).into_owned(),
                        baseline: Vec::new(),
                        accs: [Acc::new(); 4],
                    });
                }
            }
        }
        for (k, combo) in COMBINATIONS.iter().enumerate() {
            if combo.language_model != lm_side {
                continue;
            }
            for case in &mut cases {
                let emb = match combo.projector {
                    Side::Reference => &ref_emb[case.image],
                    Side::Candidate => &cand_emb[case.image],
                };
                let logits = score(
                    &model,
                    ctx_params,
                    &case.segments,
                    emb,
                    &case.continuation,
                    n_batch,
                )?;
                let mut acc = if k == 0 {
                    case.baseline = logits;
                    compare(&case.baseline, &case.baseline, &case.continuation)
                } else {
                    compare(&case.baseline, &logits, &case.continuation)
                };
                acc.min_cosine = match combo.projector {
                    Side::Reference => 1.0,
                    Side::Candidate => min_cos(case.image),
                };
                case.accs[k] = acc;
            }
        }
    }

    let mut totals = [Acc::new(); 4];
    let reports = cases
        .into_iter()
        .map(|case| {
            for (t, a) in totals.iter_mut().zip(&case.accs) {
                t.merge(a);
            }
            CaseReport {
                image: cfg.images[case.image].clone(),
                prompt: case.prompt,
                n_prompt_tokens: case.n_prompt,
                continuation: case.continuation,
                continuation_text: case.continuation_text,
                chunks: chunk_cosines[case.image].clone(),
                min_cosine: min_cos(case.image),
                combinations: COMBINATIONS
                    .iter()
                    .zip(&case.accs)
                    .map(|(c, a)| a.metrics(c))
                    .collect(),
            }
        })
        .collect();
    Ok(QualityReport {
        reference: PairPaths {
            model: cfg.reference_model.clone(),
            mmproj: cfg.reference_mmproj.clone(),
        },
        candidate: PairPaths {
            model: cfg.model.clone(),
            mmproj: cfg.mmproj.clone(),
        },
        n_predict,
        cases: reports,
        summary: COMBINATIONS
            .iter()
            .zip(&totals)
            .map(|(c, a)| a.metrics(c))
            .collect(),
    })
}

/// The greedy (argmax) continuation of `segments`, `n` tokens, end-of-generation ignored.
fn greedy(
    model: &Model,
    params: ContextParams,
    segments: &[Segment],
    emb: &ImageEmbeddings,
    n: usize,
    n_batch: usize,
) -> Result<Vec<Token>, QualityError> {
    let mut ctx = Context::new(model, params)?;
    let mut n_past =
        prefill::prefill(&mut ctx, segments, &[emb], model.n_embd(), n_batch, 0)?.n_past;
    let mut out = Vec::with_capacity(n);
    let mut batch = Batch::tokens(1);
    loop {
        let logits = ctx.logits(-1).ok_or(QualityError::NoLogits(-1))?;
        let tok = argmax(logits) as Token;
        out.push(tok);
        if out.len() == n {
            return Ok(out);
        }
        batch.clear();
        batch.push_token(tok, n_past, true)?;
        n_past += 1;
        ctx.decode(&batch)?;
    }
}

/// Logits at each continuation position: the last prompt position, then the continuation
/// tokens but the last, fed in batches with an output for every token. A fresh context per
/// call, so every combination is computed the same way.
fn score(
    model: &Model,
    params: ContextParams,
    segments: &[Segment],
    emb: &ImageEmbeddings,
    continuation: &[Token],
    n_batch: usize,
) -> Result<Vec<Vec<f32>>, QualityError> {
    let mut ctx = Context::new(model, params)?;
    let mut n_past =
        prefill::prefill(&mut ctx, segments, &[emb], model.n_embd(), n_batch, 0)?.n_past;
    let mut out = Vec::with_capacity(continuation.len());
    out.push(ctx.logits(-1).ok_or(QualityError::NoLogits(-1))?.to_vec());
    let feed = &continuation[..continuation.len().saturating_sub(1)];
    let mut batch = Batch::tokens(n_batch);
    for part in feed.chunks(n_batch) {
        batch.clear();
        for &t in part {
            batch.push_token(t, n_past, true)?;
            n_past += 1;
        }
        ctx.decode(&batch)?;
        for j in 0..part.len() {
            let j = j as i32;
            out.push(ctx.logits(j).ok_or(QualityError::NoLogits(j))?.to_vec());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_distributions_have_zero_kl() {
        let l = [1.0f32, -2.0, 3.5, 0.25, -40.0];
        let lp = log_softmax(&l);
        assert_eq!(kl_divergence(&lp, &lp), 0.0);
        let s: f64 = lp.iter().map(|x| x.exp()).sum();
        assert!((s - 1.0).abs() < 1e-12);
    }

    #[test]
    fn kl_matches_a_hand_computed_value() {
        // p = (1/2, 1/2), q = (1/4, 3/4): KL = 0.5 ln 2 + 0.5 ln(2/3).
        let lp = [0.5f64.ln(), 0.5f64.ln()];
        let lq = [0.25f64.ln(), 0.75f64.ln()];
        let expected = 0.5 * 2f64.ln() + 0.5 * (2.0f64 / 3.0).ln();
        assert!((kl_divergence(&lp, &lq) - expected).abs() < 1e-15);
    }

    #[test]
    fn cosine_of_identical_vectors_is_exactly_one() {
        let v: Vec<f32> = (0..257)
            .map(|i| ((i * 37) % 101) as f32 * 0.013 - 0.6)
            .collect();
        assert_eq!(cosine(&v, &v), 1.0);
        assert_eq!(chunk_cosine(&v[..256], &v[..256], 64), 1.0);
        let w: Vec<f32> = v.iter().map(|x| -x).collect();
        assert!((cosine(&v, &w) + 1.0).abs() < 1e-12);
    }

    #[test]
    fn argmax_takes_the_first_maximum() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 0.5, 0.7]), 2);
    }

    #[test]
    fn accumulated_metrics() {
        let r = vec![vec![2.0f32, 0.0, 0.0], vec![0.0, 2.0, 0.0]];
        let c = vec![vec![2.0f32, 0.0, 0.0], vec![2.0, 0.0, 0.0]];
        let same = compare(&r, &r, &[0, 1]);
        assert_eq!(same.kl_sum, 0.0);
        assert_eq!(same.agree, 2);
        let diff = compare(&r, &c, &[0, 1]);
        assert_eq!(diff.agree, 1);
        assert!(diff.kl_max > 0.0 && diff.kl_sum == diff.kl_max);
        let m = diff.metrics(&COMBINATIONS[3]);
        assert_eq!(m.top1_agreement, 0.5);
        assert!(m.perplexity > same.metrics(&COMBINATIONS[0]).perplexity);
    }
}
