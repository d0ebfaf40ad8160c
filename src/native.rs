//! The native image pipeline: slices planned and preprocessed in Rust (src/vision), one
//! projector call per slice through our shim, and the embeddings placed in the language model's
//! input with the version's layout (src/layout.rs).

use std::time::Instant;

use crate::ffi::{Batch, ClipProjector, Context, DecodeError, Model, Token};
use crate::layout::{image_layout, LayoutItem, LayoutStyle, LAYOUT_TOKENS};
use crate::vision::{
    plan_slices, preprocess, LoadedImage, PreprocessError, SliceError, SliceParams, SlicePlan,
};

/// Why the native pipeline failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NativeError {
    #[error(transparent)]
    Slice(#[from] SliceError),
    #[error(transparent)]
    Preprocess(#[from] PreprocessError),
    #[error(transparent)]
    Clip(#[from] crate::ffi::ClipError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("the vocabulary has no single token for {0:?}, which MiniCPM-V's image layout needs")]
    MissingLayoutToken(String),
    #[error("the projector produced {got} floats for a slice, {expected} were expected")]
    EmbeddingSize { got: usize, expected: usize },
}

/// The embeddings of one image: overview first, then the slices in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageEmbeddings {
    pub plan: SlicePlan,
    /// One `n_tokens * n_embd` row-major buffer per chunk.
    pub chunks: Vec<Vec<f32>>,
    /// Width of one embedding.
    pub n_embd: usize,
    /// Seconds per projector call, in chunk order.
    pub encode_secs: Vec<f64>,
}

impl ImageEmbeddings {
    /// Embeddings (positions) this image feeds the model.
    pub fn n_tokens(&self) -> usize {
        self.chunks
            .iter()
            .map(|c| c.len() / self.n_embd.max(1))
            .sum()
    }
}

/// Slice parameters of a loaded projector with a cap on the number of slices (1..=9).
pub fn slice_params(projector: &ClipProjector, max_slices: u32) -> SliceParams {
    let info = projector.info();
    SliceParams {
        image_size: info.image_size,
        patch_size: info.patch_size,
        max_slices,
    }
}

/// Plans, preprocesses and encodes one image. `on_chunk(done, total)` is called after each
/// projector call (for progress display).
pub fn encode_image(
    projector: &mut ClipProjector,
    image: &LoadedImage,
    max_slices: u32,
    n_threads: i32,
    on_chunk: &mut dyn FnMut(usize, usize),
) -> Result<ImageEmbeddings, NativeError> {
    let params = slice_params(projector, max_slices);
    let plan = plan_slices(image.width, image.height, &params)?;
    let info = *projector.info();
    let pre = preprocess(image, &plan, info.image_mean, info.image_std)?;
    let total = 1 + pre.slices.len();
    let mut chunks = Vec::with_capacity(total);
    let mut encode_secs = Vec::with_capacity(total);
    for (i, img) in std::iter::once(&pre.overview)
        .chain(&pre.slices)
        .enumerate()
    {
        let t0 = Instant::now();
        let emb = projector.encode(&img.data, img.width, img.height, n_threads)?;
        encode_secs.push(t0.elapsed().as_secs_f64());
        let expected = info.query_num as usize * info.n_embd;
        if emb.len() != expected {
            return Err(NativeError::EmbeddingSize {
                got: emb.len(),
                expected,
            });
        }
        chunks.push(emb);
        on_chunk(i + 1, total);
    }
    Ok(ImageEmbeddings {
        plan,
        chunks,
        n_embd: info.n_embd,
        encode_secs,
    })
}

/// Token ids of the layout's special texts, found the way llama.cpp's mtmd finds them: the
/// first vocabulary entry whose rendered piece equals the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutTokens {
    ids: [Token; LAYOUT_TOKENS.len()],
}

impl LayoutTokens {
    pub fn lookup(model: &Model) -> Result<LayoutTokens, NativeError> {
        let mut ids = [-1; LAYOUT_TOKENS.len()];
        let mut missing = LAYOUT_TOKENS.len();
        for t in 0..model.n_vocab() as Token {
            let piece = model.token_to_bytes(t, true);
            for (k, text) in LAYOUT_TOKENS.iter().enumerate() {
                if ids[k] < 0 && piece == text.as_bytes() {
                    ids[k] = t;
                    missing -= 1;
                }
            }
            if missing == 0 {
                break;
            }
        }
        for (k, text) in LAYOUT_TOKENS.iter().enumerate() {
            if ids[k] < 0 {
                return Err(NativeError::MissingLayoutToken((*text).to_string()));
            }
        }
        Ok(LayoutTokens { ids })
    }

    pub fn id(&self, text: &str) -> Token {
        LAYOUT_TOKENS
            .iter()
            .position(|t| *t == text)
            .map_or(-1, |k| self.ids[k])
    }
}

/// One run of the model's input: text tokens, or the embeddings of one chunk of one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Tokens(Vec<Token>),
    Chunk { image: usize, chunk: usize },
}

/// The full input sequence for `formatted` (a chat-formatted prompt with one `marker` per
/// image), as llama.cpp's mtmd builds it: text parts tokenized without BOS/EOS and with special
/// tokens parsed, each marker replaced by the image's layout, then BOS first (and EOS last) if
/// the model adds them.
pub fn build_sequence(
    model: &Model,
    formatted: &str,
    marker: &str,
    plans: &[&SlicePlan],
    style: LayoutStyle,
    layout: &LayoutTokens,
) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::new();
    let push_tokens = |out: &mut Vec<Segment>, toks: &[Token]| {
        if toks.is_empty() {
            return;
        }
        if let Some(Segment::Tokens(last)) = out.last_mut() {
            last.extend_from_slice(toks);
        } else {
            out.push(Segment::Tokens(toks.to_vec()));
        }
    };
    for (i, part) in formatted.split(marker).enumerate() {
        if i > 0 {
            let image = i - 1;
            let grid = plans.get(image).and_then(|p| p.grid);
            for item in image_layout(style, grid) {
                match item {
                    LayoutItem::Token(text) => push_tokens(&mut out, &[layout.id(text)]),
                    LayoutItem::Chunk(chunk) => out.push(Segment::Chunk { image, chunk }),
                }
            }
        }
        let toks = model.tokenize(part, false, true);
        push_tokens(&mut out, &toks);
    }
    if model.add_bos() {
        if let Some(bos) = model.bos() {
            match out.first_mut() {
                Some(Segment::Tokens(t)) => t.insert(0, bos),
                _ => out.insert(0, Segment::Tokens(vec![bos])),
            }
        }
    }
    if model.add_eos() {
        if let Some(eos) = model.eos() {
            push_tokens(&mut out, &[eos]);
        }
    }
    out
}

/// Feeds a sequence to the context from position `n_past`, with logits for the last position
/// only. Returns the new position.
pub fn prefill(
    ctx: &mut Context<'_>,
    segments: &[Segment],
    images: &[&ImageEmbeddings],
    n_embd: usize,
    n_batch: usize,
    mut n_past: i32,
) -> Result<i32, NativeError> {
    let n_batch = n_batch.max(1);
    let mut tok_batch = Batch::tokens(n_batch);
    let mut emb_batch = Batch::embeddings(n_batch, n_embd);
    let n_seg = segments.len();
    for (s, seg) in segments.iter().enumerate() {
        let last_seg = s + 1 == n_seg;
        match seg {
            Segment::Tokens(toks) => {
                for (c, part) in toks.chunks(n_batch).enumerate() {
                    let last_part = last_seg && (c + 1) * n_batch >= toks.len();
                    tok_batch.clear();
                    for (j, &t) in part.iter().enumerate() {
                        let logits = last_part && j + 1 == part.len();
                        push(tok_batch.push_token(t, n_past, logits))?;
                        n_past += 1;
                    }
                    ctx.decode(&tok_batch)?;
                }
            }
            Segment::Chunk { image, chunk } => {
                let data = &images[*image].chunks[*chunk];
                let rows: Vec<&[f32]> = data.chunks(n_embd).collect();
                for (c, part) in rows.chunks(n_batch).enumerate() {
                    let last_part = last_seg && (c + 1) * n_batch >= rows.len();
                    emb_batch.clear();
                    for (j, row) in part.iter().enumerate() {
                        let logits = last_part && j + 1 == part.len();
                        push(emb_batch.push_embedding(row, n_past, logits))?;
                        n_past += 1;
                    }
                    ctx.decode(&emb_batch)?;
                }
            }
        }
    }
    Ok(n_past)
}

fn push(r: Result<(), crate::ffi::BatchError>) -> Result<(), NativeError> {
    r.map_err(|_| NativeError::Decode(DecodeError::NoKvSlot { n_tokens: 1 }))
}
