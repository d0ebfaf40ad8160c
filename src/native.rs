//! The native image pipeline: slices planned and preprocessed in Rust (src/vision), one
//! projector call per slice through our shim, and the embeddings placed in the language model's
//! input with the version's layout (src/layout.rs).

use std::time::Instant;

use crate::ffi::{ClipProjector, Context, DecodeError, Input, Model, Token};
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

/// What a prefill did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefill {
    /// The position after the sequence.
    pub n_past: i32,
    /// `llama_decode` calls it took.
    pub n_decode_calls: usize,
}

/// Feeds a sequence to the context from position `n_past`, with logits for the last position
/// only.
///
/// Text tokens and embedding rows are packed into batches of `n_batch` entries across segment
/// boundaries. llama.cpp's mtmd helper instead decodes every text and image chunk on its own,
/// so each short text run between two slices (`</image><slice>`, two tokens) costs a whole pass
/// over the weights, and ggml computes runs of fewer than four rows one matrix-vector product
/// at a time. On the 9-slice MiniCPM-V 2.6 layout that is 19 decode calls instead of 2. A model
/// whose architecture cannot mix tokens and embeddings in one batch (none of MiniCPM-V's) gets
/// one decode call per segment, as with mtmd.
pub fn prefill(
    ctx: &mut Context<'_>,
    segments: &[Segment],
    images: &[&ImageEmbeddings],
    n_embd: usize,
    n_batch: usize,
    n_past: i32,
) -> Result<Prefill, NativeError> {
    let inputs = sequence_inputs(segments, images, n_embd);
    let n_batch = n_batch.clamp(1, ctx.n_batch().max(1));
    let mut done = Prefill {
        n_past,
        n_decode_calls: 0,
    };
    for (c, part) in inputs.chunks(n_batch).enumerate() {
        let last = (c + 1) * n_batch >= inputs.len();
        match ctx.decode_inputs(part, done.n_past, last) {
            Ok(()) => {
                done.n_past += part.len() as i32;
                done.n_decode_calls += 1;
            }
            Err(DecodeError::Rejected { .. }) if is_mixed(part) => {
                // The cache is unchanged after a rejected batch: go on segment by segment.
                let rest = &inputs[(done.n_past - n_past) as usize..];
                let tail = decode_per_segment(ctx, rest, n_batch, done.n_past)?;
                return Ok(Prefill {
                    n_past: tail.n_past,
                    n_decode_calls: done.n_decode_calls + tail.n_decode_calls,
                });
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(done)
}

/// [`prefill`] with llama.cpp's mtmd batching: one decode call (or more, past `n_batch`) per
/// text run and per image chunk. Slower; the reference the packed prefill is tested against.
pub fn prefill_per_segment(
    ctx: &mut Context<'_>,
    segments: &[Segment],
    images: &[&ImageEmbeddings],
    n_embd: usize,
    n_batch: usize,
    n_past: i32,
) -> Result<Prefill, NativeError> {
    let inputs = sequence_inputs(segments, images, n_embd);
    let n_batch = n_batch.clamp(1, ctx.n_batch().max(1));
    decode_per_segment(ctx, &inputs, n_batch, n_past)
}

/// The model input of a sequence, one entry per position.
fn sequence_inputs<'a>(
    segments: &'a [Segment],
    images: &[&'a ImageEmbeddings],
    n_embd: usize,
) -> Vec<Input<'a>> {
    let mut inputs = Vec::new();
    for seg in segments {
        match seg {
            Segment::Tokens(toks) => inputs.extend(toks.iter().map(|&t| Input::Token(t))),
            Segment::Chunk { image, chunk } => inputs.extend(
                images[*image].chunks[*chunk]
                    .chunks(n_embd.max(1))
                    .map(Input::Embedding),
            ),
        }
    }
    inputs
}

fn is_mixed(inputs: &[Input<'_>]) -> bool {
    let tokens = inputs
        .iter()
        .filter(|i| matches!(i, Input::Token(_)))
        .count();
    tokens > 0 && tokens < inputs.len()
}

/// Decodes `inputs` as llama.cpp's mtmd helper does: each run of tokens and each run of
/// embeddings on its own, in batches of `n_batch`, logits for the last position only.
fn decode_per_segment(
    ctx: &mut Context<'_>,
    inputs: &[Input<'_>],
    n_batch: usize,
    n_past: i32,
) -> Result<Prefill, NativeError> {
    let mut done = Prefill {
        n_past,
        n_decode_calls: 0,
    };
    let mut rest = inputs;
    while !rest.is_empty() {
        let is_token = matches!(rest[0], Input::Token(_));
        let run = rest
            .iter()
            .position(|i| matches!(i, Input::Token(_)) != is_token)
            .unwrap_or(rest.len());
        for (c, part) in rest[..run].chunks(n_batch).enumerate() {
            let last = run == rest.len() && (c + 1) * n_batch >= run;
            ctx.decode_inputs(part, done.n_past, last)?;
            done.n_past += part.len() as i32;
            done.n_decode_calls += 1;
        }
        rest = &rest[run..];
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An image of `n_chunks` chunks of `rows` embeddings of width 2, each row `[c, r]`.
    fn embeddings(n_chunks: usize, rows: usize) -> ImageEmbeddings {
        let params = SliceParams {
            image_size: 448,
            patch_size: 14,
            max_slices: 9,
        };
        ImageEmbeddings {
            plan: plan_slices(448, 448, &params).expect("plan"),
            chunks: (0..n_chunks)
                .map(|c| (0..rows).flat_map(|r| [c as f32, r as f32]).collect())
                .collect(),
            n_embd: 2,
            encode_secs: Vec::new(),
        }
    }

    #[test]
    fn sequence_inputs_follow_the_segments_position_by_position() {
        let a = embeddings(2, 3);
        let b = embeddings(1, 2);
        let segments = [
            Segment::Tokens(vec![1, 2]),
            Segment::Chunk { image: 0, chunk: 1 },
            Segment::Tokens(vec![3]),
            Segment::Chunk { image: 1, chunk: 0 },
            Segment::Chunk { image: 0, chunk: 0 },
            Segment::Tokens(vec![4, 5]),
        ];
        let inputs = sequence_inputs(&segments, &[&a, &b], 2);
        let expected: Vec<Input<'_>> = vec![
            Input::Token(1),
            Input::Token(2),
            Input::Embedding(&[1.0, 0.0]),
            Input::Embedding(&[1.0, 1.0]),
            Input::Embedding(&[1.0, 2.0]),
            Input::Token(3),
            Input::Embedding(&[0.0, 0.0]),
            Input::Embedding(&[0.0, 1.0]),
            Input::Embedding(&[0.0, 0.0]),
            Input::Embedding(&[0.0, 1.0]),
            Input::Embedding(&[0.0, 2.0]),
            Input::Token(4),
            Input::Token(5),
        ];
        assert_eq!(inputs, expected);
        assert!(is_mixed(&inputs[..3]));
        assert!(!is_mixed(&inputs[2..5]));
        assert!(!is_mixed(&inputs[..2]));
    }
}
