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
//!
//! [`evaluate`] runs, in order: the input checks, the chat formatting of the prompts, the
//! projector stage (every image encoded by each projector, then compared chunk by chunk), the
//! language-model stage (the reference model builds the cases and scores the combinations with
//! the reference language model; the candidate model scores the other two, `total` being the
//! combined candidate pair), and the report assembly.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::decode::prefill;
use crate::encode::{self, ImageEmbeddings, NativeError};
use crate::ffi::{
    Batch, BatchError, ClipProjector, Context, ContextParams, DecodeError, LoadParams, Model, Token,
};
use crate::gguf::GgufFile;
use crate::model::inputs::{check_pair, InputError, PairFacts, ProjectorFacts};
use crate::prompt::sequence::{self, LayoutTokens, Segment};
use crate::session::run::{prepare, RunConfig, RunError};
use crate::session::{Pair, RunRequest, SessionOptions};
use crate::vision::{load_image, ImageFormat, LoadedImage, SlicePlan};

/// The default number of continuation tokens.
pub const DEFAULT_N_PREDICT: usize = 32;

/// What to compare and on what.
#[derive(Debug, Clone)]
pub struct QualityConfig {
    /// The reference language model GGUF (e.g. the f16 file). Its greedy continuation is the
    /// text every combination is scored on, its next-token distributions are the `p` of
    /// `KL(p || q)`, and its tokenizer and chat template build every input.
    pub reference_model: PathBuf,
    /// The reference projector GGUF (mmproj). Its image embeddings are what the candidate
    /// projector's are compared with (cosine), and the input of the reference-projector
    /// combinations.
    pub reference_mmproj: PathBuf,
    /// The candidate language model.
    pub model: PathBuf,
    /// The candidate projector.
    pub mmproj: PathBuf,
    /// Every image is evaluated with every prompt.
    pub images: Vec<PathBuf>,
    /// The user prompts, each chat-formatted with the reference model's template around one
    /// image.
    pub prompts: Vec<String>,
    /// Continuation tokens per (image, prompt); 0 counts as 1.
    pub n_predict: usize,
    /// Threads for the projectors and for the language models (decode and batch).
    pub n_threads: i32,
    /// Context size, in positions, of every context created: it must hold the prompt
    /// positions plus `n_predict`, or the comparison fails with
    /// [`QualityError::ContextTooSmall`].
    pub n_ctx: u32,
    /// Tokens per llama.cpp decode call, for prefill and scoring (0 counts as 1 there); also
    /// the contexts' batch size.
    pub n_batch: u32,
    /// Largest image accepted, in pixels (width × height, read from the file's header before
    /// decoding).
    pub max_image_pixels: u64,
    /// Slices per image at most (1..=9).
    pub max_slices: u32,
    /// How both language models are loaded (mmap, GPU layers, repacking, ...).
    pub load: LoadParams,
}

/// Which file of a combination is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The reference pair's file (`reference_model` or `reference_mmproj`).
    Reference,
    /// The candidate pair's file (`model` or `mmproj`).
    Candidate,
}

impl Side {
    /// A short label for tables: `ref` or `cand`.
    pub fn short(self) -> &'static str {
        match self {
            Side::Reference => "ref",
            Side::Candidate => "cand",
        }
    }
}

/// One (projector, language model) combination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct Combination {
    /// `baseline`, `text_model`, `projector` or `total` (see [`COMBINATIONS`]).
    pub name: &'static str,
    /// Whose projector makes the image embeddings.
    pub projector: Side,
    /// Whose language model reads them and predicts the continuation.
    pub language_model: Side,
}

/// The four combinations, baseline first: `text_model` isolates the candidate language model,
/// `projector` the candidate projector, `total` is both.
pub(crate) const COMBINATIONS: [Combination; 4] = [
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
///
/// Every metric compares this combination with the baseline (reference projector and
/// reference language model) on the reference's greedy continuation, so the baseline itself
/// always has KL 0, agreement 1 and cosine 1; its perplexity is the reference's own.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    /// The combination's name: `baseline` (reference projector and language model),
    /// `text_model` (candidate language model only), `projector` (candidate projector only)
    /// or `total` (both candidates).
    pub combination: &'static str,
    /// Whose projector made the image embeddings.
    pub projector: Side,
    /// Whose language model predicted the continuation.
    pub language_model: Side,
    /// Positions compared (continuation tokens).
    pub n_positions: usize,
    /// Mean over positions of `KL(reference || combination)`, in nats (≥ 0; 0 when the
    /// distributions are identical): `Σ_v p_ref(v) (log p_ref(v) − log p_comb(v))` over the
    /// vocabulary, computed in f64 from the log-softmax of both logit rows. The reference is
    /// the baseline combination.
    pub mean_kl: f64,
    /// Largest `KL(reference || combination)` over positions, in nats (≥ 0; 0 without
    /// positions).
    pub max_kl: f64,
    /// Fraction of positions whose argmax equals the reference's, in [0, 1] (the first
    /// maximum on ties).
    pub top1_agreement: f64,
    /// Perplexity of the continuation under this combination, ≥ 1:
    /// `exp(−mean over positions of log p_comb(continuation token))`. Lower is better; the
    /// baseline's value is the reference's, to compare with.
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
    /// Mean over the chunk's query tokens of the cosine between the candidate projector's
    /// and the reference projector's embedding of that token, computed in f64; in [−1, 1],
    /// exactly 1 for identical embeddings, and 0 when the candidate's chunk is missing or of
    /// another size.
    pub cosine: f64,
}

/// One image with one prompt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CaseReport {
    /// The image file, as given in [`QualityConfig::images`].
    pub image: PathBuf,
    /// The user prompt, as given (before chat formatting).
    pub prompt: String,
    /// Positions of the input before the continuation (text tokens and image embeddings).
    pub n_prompt_tokens: usize,
    /// The reference pair's greedy continuation: the text every combination is scored on.
    pub continuation: Vec<Token>,
    /// The continuation detokenized by the reference model (invalid UTF-8 replaced).
    pub continuation_text: String,
    /// Candidate vs reference projector, per chunk (overview first).
    pub chunks: Vec<ChunkCosine>,
    /// The lowest of the `chunks` cosines (1 if there are none).
    pub min_cosine: f64,
    /// The metrics of each combination on this case, in the order `baseline`, `text_model`,
    /// `projector`, `total`.
    pub combinations: Vec<Metrics>,
}

/// Which files were compared.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairPaths {
    /// The language model GGUF.
    pub model: PathBuf,
    /// The projector GGUF (mmproj).
    pub mmproj: PathBuf,
}

/// The whole comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QualityReport {
    /// The reference pair: the baseline every metric is measured against.
    pub reference: PairPaths,
    /// The candidate pair.
    pub candidate: PairPaths,
    /// Continuation tokens per case (the configured value, at least 1).
    pub n_predict: usize,
    /// One report per (image, prompt), images in the outer loop, prompts in the inner one.
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
    /// The reference pair failed the input checks (files, GGUF metadata, model/projector
    /// match).
    #[error("reference pair: {0}")]
    Reference(#[source] InputError),
    /// The candidate pair failed the input checks.
    #[error("candidate pair: {0}")]
    Candidate(#[source] InputError),
    /// The two language models' token lists (`tokenizer.ggml.tokens`) differ, so their
    /// next-token distributions are over different vocabularies.
    #[error("the language models {} (reference) and {} (candidate) do not share a vocabulary ({reason}): their next-token distributions cannot be compared", reference.display(), candidate.display())]
    VocabularyMismatch {
        /// The reference language model.
        reference: PathBuf,
        /// The candidate language model.
        candidate: PathBuf,
        /// The first difference found (missing list, length, or first differing token).
        reason: String,
    },
    /// The two projectors differ in a property their embeddings depend on.
    #[error("the projectors {} (reference) and {} (candidate) differ in {reason}: their embeddings cannot be compared", reference.display(), candidate.display())]
    ProjectorMismatch {
        /// The reference projector.
        reference: PathBuf,
        /// The candidate projector.
        candidate: PathBuf,
        /// Every differing property with both values (version, width, query tokens, image
        /// size, patch size).
        reason: String,
    },
    /// [`QualityConfig::images`] is empty.
    #[error("no image given: the quality report compares image embeddings")]
    NoImage,
    /// A case's input plus its continuation does not fit in [`QualityConfig::n_ctx`].
    #[error("the comparison needs {needed} positions ({n_prompt} prompt positions + {n_predict} continuation tokens) but the context holds {n_ctx}: raise -c, lower -n or --max-slices")]
    ContextTooSmall {
        /// `n_prompt + n_predict`.
        needed: usize,
        /// Positions of the input before the continuation (text tokens and image embeddings).
        n_prompt: usize,
        /// Continuation tokens.
        n_predict: usize,
        /// The configured context size.
        n_ctx: u32,
    },
    /// llama.cpp had no logits for this output index of the last decode call (−1: the last
    /// output).
    #[error("llama.cpp returned no logits for output {0}")]
    NoLogits(i32),
    /// Preparing a prompt (file checks, chat formatting) or loading an image failed.
    #[error(transparent)]
    Run(#[from] RunError),
    /// Encoding an image, looking up the model's image layout tokens or prefilling an input
    /// (text tokens and image embeddings) failed.
    #[error(transparent)]
    Native(#[from] NativeError),
    /// llama.cpp could not load a language model.
    #[error(transparent)]
    ModelLoad(#[from] crate::ffi::ModelLoadError),
    /// A projector could not be loaded.
    #[error(transparent)]
    Clip(#[from] crate::ffi::ClipError),
    /// Creating a context or decoding a batch of continuation tokens failed.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A batch could not hold a token.
    #[error(transparent)]
    Batch(#[from] BatchError),
}

/// Checks both pairs, and that the two language models share a vocabulary and the two
/// projectors are interchangeable (width, query tokens, version, image and patch size).
pub(crate) fn check_inputs(cfg: &QualityConfig) -> Result<(PairFacts, PairFacts), QualityError> {
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
    let mut diffs: Vec<String> = Vec::new();
    if r.kind != c.kind {
        diffs.push(format!("projector ({} vs {})", r.kind, c.kind));
    }
    diffs.extend(
        [
            ("width", r.n_embd, c.n_embd),
            ("image size", r.image_size, c.image_size),
            ("patch size", r.patch_size, c.patch_size),
        ]
        .iter()
        .filter(|(_, a, b)| a != b)
        .map(|(what, a, b)| format!("{what} ({a} vs {b})")),
    );
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
    /// Positions compared.
    n: usize,
    /// Sum and max over positions of `KL(reference || combination)`, nats.
    kl_sum: f64,
    kl_max: f64,
    /// Positions whose argmax equals the reference's.
    agree: usize,
    /// Sum over positions of `−log p(continuation token)`, nats.
    nll_sum: f64,
    /// Lowest chunk cosine of the combination's projector (1 for the reference projector).
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
    /// Index into [`QualityConfig::images`].
    image: usize,
    prompt: String,
    /// The input sequence, tokenized by the reference model.
    segments: Vec<Segment>,
    /// Positions of `segments`.
    n_prompt: usize,
    continuation: Vec<Token>,
    continuation_text: String,
    /// The baseline's logits at each continuation position: the reference distributions.
    baseline: Vec<Vec<f32>>,
    /// Running metrics per combination, in [`COMBINATIONS`] order.
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

/// A prompt after chat formatting with the reference model's template.
struct FormattedPrompt {
    /// The user prompt as given.
    prompt: String,
    /// The chat-formatted text, with one image marker.
    text: String,
    /// The image marker in `text`.
    marker: String,
}

/// Every image's embeddings by each projector, in image order.
struct Embeddings {
    reference: Vec<ImageEmbeddings>,
    candidate: Vec<ImageEmbeddings>,
}

impl Embeddings {
    fn of(&self, side: Side, image: usize) -> &ImageEmbeddings {
        match side {
            Side::Reference => &self.reference[image],
            Side::Candidate => &self.candidate[image],
        }
    }
}

/// Settings shared by every language-model run of one comparison.
struct LmSettings {
    ctx_params: ContextParams,
    /// Tokens per decode call (at least 1).
    n_batch: usize,
    /// Continuation tokens per case (at least 1).
    n_predict: usize,
    n_ctx: u32,
    /// The reference projector's image format (slicing, embeddings per chunk, layout); the
    /// candidate's is checked equal.
    format: ImageFormat,
}

impl LmSettings {
    fn new(cfg: &QualityConfig, ref_facts: &PairFacts, n_predict: usize) -> LmSettings {
        LmSettings {
            ctx_params: ContextParams {
                n_ctx: cfg.n_ctx,
                n_batch: cfg.n_batch,
                n_threads: cfg.n_threads,
                n_threads_batch: cfg.n_threads,
                kv_type: Default::default(),
            },
            n_batch: cfg.n_batch.max(1) as usize,
            n_predict,
            n_ctx: cfg.n_ctx,
            format: ImageFormat::of_projector(&ref_facts.projector, cfg.max_slices),
        }
    }
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
    let prompts = format_prompts(cfg, n_predict)?;
    let images = load_images(cfg)?;
    let settings = LmSettings::new(cfg, &ref_facts, n_predict);
    let format = &settings.format;
    let embeddings = Embeddings {
        reference: encode_images(
            cfg,
            format,
            (Side::Reference, &cfg.reference_mmproj),
            &images,
            on_stage,
        )?,
        candidate: encode_images(
            cfg,
            format,
            (Side::Candidate, &cfg.mmproj),
            &images,
            on_stage,
        )?,
    };
    let chunk_cosines = compare_projectors(&embeddings);
    let cases = run_language_models(
        cfg,
        &settings,
        &prompts,
        &embeddings,
        &chunk_cosines,
        on_stage,
    )?;
    Ok(assemble_report(cfg, n_predict, cases, &chunk_cosines))
}

/// Chat-formats each prompt with the reference pair's template, around one image marker.
fn format_prompts(
    cfg: &QualityConfig,
    n_predict: usize,
) -> Result<Vec<FormattedPrompt>, QualityError> {
    let mut formatted = Vec::new();
    for prompt in &cfg.prompts {
        let prep = prepare(&reference_run_config(cfg, prompt, n_predict))?;
        formatted.push(FormattedPrompt {
            prompt: prompt.clone(),
            text: prep.formatted,
            marker: prep.marker,
        });
    }
    Ok(formatted)
}

/// A run of the reference pair on `prompt` and the first image: what [`prepare`] needs to
/// check the files and format the prompt.
fn reference_run_config(cfg: &QualityConfig, prompt: &str, n_predict: usize) -> RunConfig {
    let options = SessionOptions::default()
        .threads(cfg.n_threads)
        .context(cfg.n_ctx)
        .batch(cfg.n_batch)
        .max_image_pixels(cfg.max_image_pixels)
        .load(cfg.load);
    let request = RunRequest::new(prompt)
        .image(&cfg.images[0])
        .max_tokens(n_predict)
        .ignore_eos(true)
        .max_slices(cfg.max_slices);
    RunConfig::new(
        Pair::new(&cfg.reference_model, &cfg.reference_mmproj),
        options,
        request,
    )
}

fn load_images(cfg: &QualityConfig) -> Result<Vec<LoadedImage>, QualityError> {
    let images = cfg
        .images
        .iter()
        .map(|p| load_image(p, cfg.max_image_pixels))
        .collect::<Result<_, _>>()
        .map_err(RunError::from)?;
    Ok(images)
}

/// The projector stage of one side: loads its projector (once) and encodes every image.
fn encode_images(
    cfg: &QualityConfig,
    format: &ImageFormat,
    (side, mmproj): (Side, &Path),
    images: &[LoadedImage],
    on_stage: &mut dyn FnMut(Stage),
) -> Result<Vec<ImageEmbeddings>, QualityError> {
    on_stage(Stage::Encode(side));
    let mut projector = ClipProjector::load(mmproj, false, Default::default())?;
    let embs = images
        .iter()
        .map(|img| encode::encode_image(&mut projector, img, format, cfg.n_threads, &mut |_, _| {}))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(embs)
}

/// Per image, the cosine of each chunk of the candidate projector's embeddings with the
/// reference projector's (0 for a chunk the candidate lacks).
fn compare_projectors(embeddings: &Embeddings) -> Vec<Vec<ChunkCosine>> {
    embeddings
        .reference
        .iter()
        .zip(&embeddings.candidate)
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
        .collect()
}

/// The lowest chunk cosine of one image (1 without chunks).
fn min_cosine(chunks: &[ChunkCosine]) -> f64 {
    chunks.iter().map(|c| c.cosine).fold(1.0f64, f64::min)
}

/// The language-model stages, reference first, each model loaded once: the reference model
/// builds the cases (input sequences, greedy continuations), then each model scores the
/// combinations that use it.
fn run_language_models(
    cfg: &QualityConfig,
    settings: &LmSettings,
    prompts: &[FormattedPrompt],
    embeddings: &Embeddings,
    chunk_cosines: &[Vec<ChunkCosine>],
    on_stage: &mut dyn FnMut(Stage),
) -> Result<Vec<Case>, QualityError> {
    let mut cases: Vec<Case> = Vec::new();
    for (lm_side, lm_path) in [
        (Side::Reference, &cfg.reference_model),
        (Side::Candidate, &cfg.model),
    ] {
        on_stage(Stage::LanguageModel(lm_side));
        let model = Model::load(lm_path, cfg.load)?;
        if lm_side == Side::Reference {
            cases = build_cases(&model, settings, prompts, &embeddings.reference)?;
        }
        let ctx = ScoreContext {
            model: &model,
            settings,
            embeddings,
            chunk_cosines,
        };
        score_combinations(&ctx, lm_side, &mut cases)?;
    }
    Ok(cases)
}

/// The cases, images in the outer loop and prompts in the inner one, with the reference
/// model: input sequences (tokenized once) and greedy continuations.
fn build_cases(
    model: &Model,
    settings: &LmSettings,
    prompts: &[FormattedPrompt],
    ref_emb: &[ImageEmbeddings],
) -> Result<Vec<Case>, QualityError> {
    let layout = LayoutTokens::lookup(model)?;
    let mut cases = Vec::new();
    for (image, emb) in ref_emb.iter().enumerate() {
        for prompt in prompts {
            cases.push(build_case(model, settings, &layout, image, emb, prompt)?);
        }
    }
    Ok(cases)
}

/// One case: the input sequence of `prompt` with image `image`, checked against the context
/// size, and the reference's greedy continuation of it.
fn build_case(
    model: &Model,
    settings: &LmSettings,
    layout: &LayoutTokens,
    image: usize,
    emb: &ImageEmbeddings,
    prompt: &FormattedPrompt,
) -> Result<Case, QualityError> {
    let segments = sequence::build_sequence(
        model,
        &prompt.text,
        &prompt.marker,
        &[&emb.plan],
        &settings.format,
        layout,
    );
    let n_prompt = sequence::n_positions(&segments);
    let n_predict = settings.n_predict;
    if n_prompt + n_predict > settings.n_ctx as usize {
        return Err(QualityError::ContextTooSmall {
            needed: n_prompt + n_predict,
            n_prompt,
            n_predict,
            n_ctx: settings.n_ctx,
        });
    }
    let continuation = greedy(
        model,
        settings.ctx_params,
        &segments,
        emb,
        n_predict,
        settings.n_batch,
    )?;
    let bytes: Vec<u8> = continuation
        .iter()
        .flat_map(|&t| model.token_to_bytes(t, true))
        .collect();
    Ok(Case {
        image,
        prompt: prompt.prompt.clone(),
        segments,
        n_prompt,
        continuation,
        continuation_text: String::from_utf8_lossy(&bytes).into_owned(),
        baseline: Vec::new(),
        accs: [Acc::new(); 4],
    })
}

/// What scoring with one loaded language model reads.
struct ScoreContext<'a> {
    model: &'a Model,
    settings: &'a LmSettings,
    embeddings: &'a Embeddings,
    chunk_cosines: &'a [Vec<ChunkCosine>],
}

/// Scores, on every case, each combination whose language model is `lm_side` (the loaded
/// one), in [`COMBINATIONS`] order: the baseline (first) records the reference logits the
/// others are compared with.
fn score_combinations(
    ctx: &ScoreContext<'_>,
    lm_side: Side,
    cases: &mut [Case],
) -> Result<(), QualityError> {
    for (k, combo) in COMBINATIONS.iter().enumerate() {
        if combo.language_model != lm_side {
            continue;
        }
        for case in cases.iter_mut() {
            score_case(ctx, k, combo, case)?;
        }
    }
    Ok(())
}

/// Combination `k` on one case: its logits at each continuation position, compared with the
/// baseline's (with themselves for the baseline, which stores them), and the projector's
/// lowest chunk cosine.
fn score_case(
    ctx: &ScoreContext<'_>,
    k: usize,
    combo: &Combination,
    case: &mut Case,
) -> Result<(), QualityError> {
    let logits = score(
        ctx.model,
        ctx.settings.ctx_params,
        &case.segments,
        ctx.embeddings.of(combo.projector, case.image),
        &case.continuation,
        ctx.settings.n_batch,
    )?;
    let mut acc = if k == 0 {
        case.baseline = logits;
        compare(&case.baseline, &case.baseline, &case.continuation)
    } else {
        compare(&case.baseline, &logits, &case.continuation)
    };
    acc.min_cosine = match combo.projector {
        Side::Reference => 1.0,
        Side::Candidate => min_cosine(&ctx.chunk_cosines[case.image]),
    };
    case.accs[k] = acc;
    Ok(())
}

/// The report: one per case, and the summary over all cases (sums merged in case order).
fn assemble_report(
    cfg: &QualityConfig,
    n_predict: usize,
    cases: Vec<Case>,
    chunk_cosines: &[Vec<ChunkCosine>],
) -> QualityReport {
    let mut totals = [Acc::new(); 4];
    for case in &cases {
        for (t, a) in totals.iter_mut().zip(&case.accs) {
            t.merge(a);
        }
    }
    let reports = cases
        .into_iter()
        .map(|case| case_report(cfg, case, chunk_cosines))
        .collect();
    QualityReport {
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
        summary: all_metrics(&totals),
    }
}

fn case_report(cfg: &QualityConfig, case: Case, chunk_cosines: &[Vec<ChunkCosine>]) -> CaseReport {
    CaseReport {
        image: cfg.images[case.image].clone(),
        prompt: case.prompt,
        n_prompt_tokens: case.n_prompt,
        continuation: case.continuation,
        continuation_text: case.continuation_text,
        chunks: chunk_cosines[case.image].clone(),
        min_cosine: min_cosine(&chunk_cosines[case.image]),
        combinations: all_metrics(&case.accs),
    }
}

/// The metrics of each combination, in [`COMBINATIONS`] order.
fn all_metrics(accs: &[Acc; 4]) -> Vec<Metrics> {
    COMBINATIONS
        .iter()
        .zip(accs)
        .map(|(c, a)| a.metrics(c))
        .collect()
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
