//! Parity between our native image pipeline and llama.cpp's own mtmd pipeline on the same
//! files: same input sequence (text tokens and image chunks), same embeddings, same greedy
//! tokens. Used by the tests and by `minicpmv parity`, so users can check their own files.

use serde::Serialize;

use crate::ffi::mtmd::{ChunkInfo, Mtmd};
use crate::ffi::{ClipProjector, Model, SamplerParams, Token};
use crate::layout::LayoutStyle;
use crate::native::{self, LayoutTokens, Segment};
use crate::run::{mtmd_images, plan_images, prepare, run, Pipeline, RunConfig, RunError};
use crate::vision::{preprocess, SliceParams, SlicePlan};

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
    pub sequence_native: Vec<SeqItem>,
    pub sequence_llama_cpp: Vec<SeqItem>,
    pub sequence_equal: bool,
    /// Per image chunk (in input order): the size of the preprocessed input of both pipelines
    /// and the largest absolute difference between their embeddings.
    pub chunks: Vec<ChunkParity>,
    pub max_abs_diff: f32,
    pub tokens_native: Vec<Token>,
    pub tokens_llama_cpp: Vec<Token>,
    pub tokens_equal: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChunkParity {
    pub n_tokens: usize,
    pub max_abs_diff: f32,
}

impl ParityReport {
    /// Sequences and greedy tokens equal, embeddings within `tolerance`.
    pub fn holds(&self, tolerance: f32) -> bool {
        self.sequence_equal && self.tokens_equal && self.max_abs_diff <= tolerance
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
    cfg.max_slices = 9;
    cfg.ignore_eos = true;
    cfg.sampling = SamplerParams {
        temperature: 0.0,
        ..SamplerParams::default()
    };
    let prep = prepare(&cfg)?;
    let model = Model::load(&cfg.model, cfg.load)?;

    // llama.cpp's sequence and embeddings.
    let mut mtmd = Mtmd::load(&cfg.mmproj, &model, cfg.n_threads, true)?;
    let rgb = mtmd_images(&prep.images);
    let chunks = mtmd.tokenize(&prep.formatted, &rgb, true)?;
    let infos = chunks.infos();
    let n_embd = model.n_embd();
    let mut ref_embd = Vec::new();
    for (i, info) in infos.iter().enumerate() {
        if matches!(info, ChunkInfo::Image { .. }) {
            ref_embd.push(mtmd.encode_chunk(&chunks, i, n_embd)?);
        }
    }
    drop(mtmd);
    let sequence_llama_cpp = merge_text(infos.into_iter().map(|i| match i {
        ChunkInfo::Text(t) => SeqItem::Text(t),
        ChunkInfo::Image { n_tokens, .. } => SeqItem::Image(n_tokens),
    }));

    // Ours.
    let facts = &prep.facts.projector;
    let style = LayoutStyle::for_minicpmv_version(facts.minicpmv_version);
    let mut projector = ClipProjector::load(&cfg.mmproj, cfg.warmup)?;
    let info = *projector.info();
    let params = SliceParams {
        image_size: info.image_size,
        patch_size: info.patch_size,
        max_slices: 9,
    };
    let plans = plan_images(&prep.images, &params)?;
    let layout = LayoutTokens::lookup(&model)?;
    let plan_refs: Vec<&SlicePlan> = plans.iter().collect();
    let segments = native::build_sequence(
        &model,
        &prep.formatted,
        &prep.marker,
        &plan_refs,
        style,
        &layout,
    );
    let q = info.query_num as usize;
    let sequence_native = merge_text(segments.iter().map(|s| match s {
        Segment::Tokens(t) => SeqItem::Text(t.clone()),
        Segment::Chunk { .. } => SeqItem::Image(q),
    }));
    let mut ours = Vec::new();
    for (img, plan) in prep.images.iter().zip(&plans) {
        let pre = preprocess(img, plan, info.image_mean, info.image_std)
            .map_err(native::NativeError::from)?;
        for chunk in pre.chunks() {
            ours.push(projector.encode(&chunk.data, chunk.width, chunk.height, cfg.n_threads)?);
        }
    }
    drop(projector);
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
    let mut native_cfg = cfg.clone();
    native_cfg.pipeline = Pipeline::Native;
    let mut llama_cfg = cfg.clone();
    llama_cfg.pipeline = Pipeline::LlamaCpp;
    llama_cfg.warmup = true;
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
    })
}
