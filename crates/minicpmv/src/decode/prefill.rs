//! Prefill: the input sequence fed to the language model, text tokens and embedding rows packed
//! into full batches.

use crate::encode::{ImageEmbeddings, NativeError};
use crate::ffi::{Context, DecodeError, Input};
use crate::prompt::sequence::Segment;

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
            // One position per row, as llama.cpp's mtmd gives MiniCPM-V's chunks (its
            // split_batch_to_chunk leaves them at MTMD_POS_TYPE_NORMAL, so even 4.6's M-RoPE
            // model reads every section at the row's position).
            Segment::Chunk { image, chunk, .. } => inputs.extend(
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
    use crate::vision::{plan_slices, SliceParams};

    /// An image of `n_chunks` chunks of `rows` embeddings of width 2, each row `[c, r]`.
    fn embeddings(n_chunks: usize, rows: usize) -> ImageEmbeddings {
        let params = SliceParams {
            image_size: 448,
            patch_size: 14,
            max_slices: 9,
            merge: 1,
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
            Segment::Chunk {
                image: 0,
                chunk: 1,
                n_tokens: 3,
            },
            Segment::Tokens(vec![3]),
            Segment::Chunk {
                image: 1,
                chunk: 0,
                n_tokens: 2,
            },
            Segment::Chunk {
                image: 0,
                chunk: 0,
                n_tokens: 3,
            },
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
