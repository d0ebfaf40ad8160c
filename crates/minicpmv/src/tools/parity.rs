//! Parity between our native image pipeline and llama.cpp's own mtmd pipeline on the same
//! files: same input sequence (text tokens and image chunks), same embeddings, same greedy
//! tokens (ours decoding the prompt with mtmd's batching), and our packed prefill equal to
//! that batching up to rounding. Used by the tests and by `minicpmv parity`, so users can check
//! their own files.

use serde::Serialize;

use crate::decode::prefill;
use crate::encode::{ImageEmbeddings, NativeError};
use crate::ffi::mtmd::{ChunkInfo, Mtmd};
use crate::ffi::{ClipProjector, Context, Model, SamplerParams, Token};
use crate::prompt::sequence::{self, LayoutTokens, Segment};
use crate::session::run::{mtmd_images, plan_images, prepare, run, Pipeline, RunConfig, RunError};
use crate::vision::video::VideoError;
use crate::vision::{preprocess, LoadedImage, SlicePlan};

/// One element of a model input sequence, comparable across pipelines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SeqItem {
    /// A run of text tokens (consecutive text merged).
    Text(Vec<Token>),
    /// An image chunk of `n` embeddings.
    Image(usize),
}

/// The comparison of the two pipelines on one run configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParityReport {
    /// Our input sequence: the chat template's tokens with the layout tokens and one
    /// [`SeqItem::Image`] per chunk, as [`sequence::build_sequence`] lays them out.
    pub sequence_native: Vec<SeqItem>,
    /// llama.cpp's, from `mtmd_tokenize` on the same formatted prompt and images.
    pub sequence_llama_cpp: Vec<SeqItem>,
    /// Whether the two sequences are identical (every token, every chunk's size).
    pub sequence_equal: bool,
    /// Per image chunk (in input order): the size of the preprocessed input of both pipelines
    /// and the largest absolute difference between their embeddings.
    pub chunks: Vec<ChunkParity>,
    /// The largest [`ChunkParity::max_abs_diff`]; infinite when the pipelines produced a
    /// different number of chunks.
    pub max_abs_diff: f32,
    /// The greedy tokens of our whole pipeline (prefill batched as mtmd does, so that the
    /// comparison is exact).
    pub tokens_native: Vec<Token>,
    /// The greedy tokens of llama.cpp's mtmd pipeline, `n_predict` of them (EOS ignored).
    pub tokens_llama_cpp: Vec<Token>,
    /// Whether the two token lists are identical.
    pub tokens_equal: bool,
    /// Our prefill packs text and image embeddings into full batches; llama.cpp's mtmd decodes
    /// each text run and image chunk on its own. Both over our embeddings, in one context.
    pub prefill: PrefillParity,
}

/// The packed prefill against mtmd's per-chunk batching, on the same input: the logits of the
/// last prompt position (from which the first token is sampled).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PrefillParity {
    /// `llama_decode` calls of our packed prefill (full `n_batch` batches across text and
    /// image boundaries).
    pub decode_calls_packed: usize,
    /// `llama_decode` calls when each text run and image chunk is decoded on its own, as
    /// mtmd's `mtmd_helper_eval_chunks` does.
    pub decode_calls_per_chunk: usize,
    /// Largest absolute difference between the two logit vectors.
    pub logits_max_abs_diff: f32,
    /// Largest absolute logit (the scale of the difference).
    pub logits_max_abs: f32,
    /// Both pick the same greedy token.
    pub argmax_equal: bool,
    /// Largest absolute difference between the last-position logits of our per-chunk prefill
    /// and of llama.cpp's own (`mtmd_helper_eval_chunk_single` / `mtmd_helper_decode_image_chunk`
    /// on a fresh context): the same batches at the same positions (M-RoPE sections included)
    /// give the same bits, so anything but 0 is a difference in what is fed.
    pub llama_cpp_max_abs_diff: f32,
}

impl PrefillParity {
    /// The packed prefill computes the same function: same greedy pick, and logits equal up to
    /// float rounding (the batching changes only the order of some additions).
    pub fn holds(&self) -> bool {
        self.argmax_equal
            && self.logits_max_abs_diff
                <= PREFILL_LOGITS_REL_TOLERANCE * self.logits_max_abs.max(1.0)
            && self.llama_cpp_max_abs_diff == 0.0
    }
}

/// Tolerance on the packed-vs-per-chunk logits, relative to the largest logit. llama.cpp's
/// own logits move with the micro-batch size (its kernels switch paths with the number of
/// rows; its CPU flash attention, for one, accumulates in f16 below 64 query rows and in f32
/// tiles from 64 up). Measured with 9-slice images: the two prefills differ by 0.3-0.7% of the
/// largest logit on the tiny synthetic pairs and by 2.7% on the real-shape 2.6 pair (random
/// weights over 28 layers amplify rounding), while feeding two image chunks in swapped order
/// moves the logits by 6-8% (tiny) and 11% (real shape).
pub const PREFILL_LOGITS_REL_TOLERANCE: f32 = 5e-2;

/// One image chunk (overview or slice) compared across the pipelines: our projector call on our
/// preprocessing against mtmd's `mtmd_encode_chunk` on its own.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChunkParity {
    /// Embeddings our projector produced for the chunk (its query count, 64 or 96).
    pub n_tokens: usize,
    /// Largest absolute difference between the two embedding matrices; infinite when their
    /// sizes differ.
    pub max_abs_diff: f32,
}

impl ParityReport {
    /// Sequences and greedy tokens equal, embeddings within `tolerance`, packed prefill equal
    /// to the per-chunk one up to rounding.
    pub fn holds(&self, tolerance: f32) -> bool {
        self.sequence_equal
            && self.tokens_equal
            && self.max_abs_diff <= tolerance
            && self.prefill.holds()
    }
}

fn merge_text(items: impl IntoIterator<Item = SeqItem>) -> Vec<SeqItem> {
    let mut out: Vec<SeqItem> = Vec::new();
    for item in items {
        match (out.last_mut(), item) {
            (_, SeqItem::Text(t)) if t.is_empty() => {}
            (Some(SeqItem::Text(prev)), SeqItem::Text(t)) => prev.extend(t),
            (_, item) => out.push(item),
        }
    }
    out
}

/// Compares both pipelines on `cfg` (its `pipeline`, `max_slices` and sampling are ignored:
/// 9 slices, greedy decoding and exactly `n_predict` tokens (EOS ignored) are used).
pub fn compare(cfg: &RunConfig) -> Result<ParityReport, RunError> {
    let mut cfg = cfg.clone();
    cfg.request.max_slices = 9;
    if let Some(v) = &mut cfg.request.video {
        v.frame_slices = Some(9);
    }
    cfg.request.generation.ignore_eos = true;
    cfg.request.generation.sampling = SamplerParams {
        temperature: 0.0,
        ..SamplerParams::default()
    };
    let prep = prepare(&cfg)?;
    // A video's sampled frames, decoded, follow the images in both pipelines.
    let images: Vec<LoadedImage> = match &prep.video {
        Some(v) => prep
            .images
            .iter()
            .cloned()
            .map(Ok)
            .chain(v.source.frames(&v.sample.indices)?)
            .collect::<Result<_, VideoError>>()?,
        None => prep.images.clone(),
    };
    let model = Model::load(&cfg.pair.model, cfg.options.load)?;

    // llama.cpp's sequence and embeddings.
    let mut mtmd = Mtmd::load(
        &cfg.pair.mmproj,
        &model,
        cfg.options.n_threads,
        true,
        cfg.options.projector_attention,
    )?;
    let rgb = mtmd_images(&images);
    let chunks = mtmd.tokenize(&prep.formatted, &rgb, true)?;
    let infos = chunks.infos();
    let n_embd = model.n_embd();
    let mut ref_embd = Vec::new();
    for (i, info) in infos.iter().enumerate() {
        if matches!(info, ChunkInfo::Image { .. }) {
            ref_embd.push(mtmd.encode_chunk(&chunks, i, n_embd)?);
        }
    }
    let llama_cpp_logits = {
        let mut ctx = Context::new(&model, cfg.options.context_params())?;
        mtmd.eval(&mut ctx, &chunks, 0, cfg.options.effective_batch() as i32)?;
        ctx.logits(-1).ok_or(RunError::NoLogits)?.to_vec()
    };
    drop(mtmd);
    let sequence_llama_cpp = merge_text(infos.into_iter().map(|i| match i {
        ChunkInfo::Text(t) => SeqItem::Text(t),
        ChunkInfo::Image { n_tokens, .. } => SeqItem::Image(n_tokens),
    }));

    // Ours.
    let format = prep.format(9);
    let mut projector = ClipProjector::load(
        &cfg.pair.mmproj,
        cfg.options.warmup,
        cfg.options.projector_attention,
    )?;
    let info = *projector.info();
    let plans = plan_images(&images, &format)?;
    let layout = LayoutTokens::lookup(&model)?;
    let plan_refs: Vec<&SlicePlan> = plans.iter().collect();
    let segments = sequence::build_sequence(
        &model,
        &prep.formatted,
        &prep.marker,
        &plan_refs,
        &format,
        &layout,
    );
    let sequence_native = merge_text(segments.iter().map(|s| match s {
        Segment::Tokens(t) => SeqItem::Text(t.clone()),
        Segment::Chunk { n_tokens, .. } => SeqItem::Image(*n_tokens),
    }));
    let mut ours = Vec::new();
    for (img, plan) in images.iter().zip(&plans) {
        let pre =
            preprocess(img, plan, info.image_mean, info.image_std).map_err(NativeError::from)?;
        for chunk in pre.chunks() {
            ours.push(projector.encode(
                &chunk.data,
                chunk.width,
                chunk.height,
                cfg.options.n_threads,
            )?);
        }
    }
    drop(projector);
    let prefill = compare_prefill(&cfg, &model, (&segments, &plans, &ours), &llama_cpp_logits)?;
    drop(model);

    let chunk_parity: Vec<ChunkParity> = ours
        .iter()
        .zip(&ref_embd)
        .map(|(a, b)| ChunkParity {
            n_tokens: a.len() / n_embd.max(1),
            max_abs_diff: if a.len() == b.len() {
                a.iter()
                    .zip(b)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0.0, f32::max)
            } else {
                f32::INFINITY
            },
        })
        .collect();
    let mut max_abs_diff = chunk_parity
        .iter()
        .map(|c| c.max_abs_diff)
        .fold(0.0, f32::max);
    if ours.len() != ref_embd.len() {
        max_abs_diff = f32::INFINITY;
    }

    // Greedy generation through each whole pipeline.
    // Ours with mtmd's batching, so that the tokens compare bit for bit; the packed prefill
    // is compared on its own above.
    let mut native_cfg = cfg.clone();
    native_cfg.pipeline = Pipeline::Native;
    native_cfg.request.per_chunk_prefill = true;
    let mut llama_cfg = cfg.clone();
    llama_cfg.pipeline = Pipeline::LlamaCpp;
    llama_cfg.options.warmup = true;
    let tokens_native = run(&native_cfg, &mut |_| {})?.token_ids;
    let tokens_llama_cpp = run(&llama_cfg, &mut |_| {})?.token_ids;

    Ok(ParityReport {
        sequence_equal: sequence_native == sequence_llama_cpp,
        sequence_native,
        sequence_llama_cpp,
        chunks: chunk_parity,
        max_abs_diff,
        tokens_equal: tokens_native == tokens_llama_cpp,
        tokens_native,
        tokens_llama_cpp,
        prefill,
    })
}

/// Prefills `segments` (with `chunks`, the embeddings of every image in order) twice in one
/// context, packed and per chunk, and compares the last position's logits.
/// Our packed and per-chunk prefills of `segments` (with the embeddings `chunks` of the images
/// planned as `plans`) against each other, and the per-chunk one against llama.cpp's logits.
fn compare_prefill(
    cfg: &RunConfig,
    model: &Model,
    (segments, plans, chunks): (&[Segment], &[SlicePlan], &[Vec<f32>]),
    llama_cpp_logits: &[f32],
) -> Result<PrefillParity, RunError> {
    let n_embd = model.n_embd();
    let mut rest = chunks;
    let mut images = Vec::with_capacity(plans.len());
    for plan in plans {
        let n = (1 + plan.slices.len()).min(rest.len());
        images.push(ImageEmbeddings {
            plan: plan.clone(),
            chunks: rest[..n].to_vec(),
            n_embd,
            encode_secs: Vec::new(),
        });
        rest = &rest[n..];
    }
    let refs: Vec<&ImageEmbeddings> = images.iter().collect();
    let mut ctx = Context::new(model, cfg.options.context_params())?;
    let n_batch = cfg.options.effective_batch() as usize;
    let packed = prefill::prefill(&mut ctx, segments, &refs, n_embd, n_batch, 0)?;
    let a = ctx.logits(-1).ok_or(RunError::NoLogits)?.to_vec();
    ctx.clear_memory();
    let per_chunk = prefill::prefill_per_segment(&mut ctx, segments, &refs, n_embd, n_batch, 0)?;
    let b = ctx.logits(-1).ok_or(RunError::NoLogits)?;
    let max_diff = |x: &[f32], y: &[f32]| {
        if x.len() != y.len() {
            return f32::INFINITY;
        }
        x.iter()
            .zip(y)
            .map(|(p, q)| (p - q).abs())
            .fold(0.0, f32::max)
    };
    Ok(PrefillParity {
        llama_cpp_max_abs_diff: max_diff(b, llama_cpp_logits),
        decode_calls_packed: packed.n_decode_calls,
        decode_calls_per_chunk: per_chunk.n_decode_calls,
        logits_max_abs_diff: max_diff(&a, b),
        logits_max_abs: a.iter().map(|x| x.abs()).fold(0.0, f32::max),
        argmax_equal: argmax(&a) == argmax(b),
    })
}

fn argmax(v: &[f32]) -> Option<usize> {
    v.iter()
        .enumerate()
        .max_by(|x, y| x.1.total_cmp(y.1))
        .map(|(i, _)| i)
}
