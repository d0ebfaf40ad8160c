//! The decode loop: sample, stream, stop.

use std::time::Instant;

use crate::ffi::{Batch, Context, DecodeError, Model, Sampler, Token};

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The model produced an end-of-generation token (EOS/EOT).
    EndOfText,
    /// `-n` tokens were generated.
    MaxTokens,
    /// The context is full.
    ContextFull,
    /// The caller asked to stop (e.g. Ctrl-C in `minicpmv chat`), see [`generate_until`].
    Cancelled,
}

/// What the decode loop produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// The sampled tokens in order, excluding the end-of-generation token that stopped the
    /// loop (if any); its length is the number of generated tokens.
    pub token_ids: Vec<Token>,
    /// The detokenized text of `token_ids` (special tokens not rendered), the same text that
    /// was streamed to `on_text`.
    pub text: String,
    /// Why the loop ended.
    pub stop: StopReason,
    /// Seconds spent sampling and decoding the generated tokens.
    pub secs: f64,
    /// When the first token was sampled (None if none was).
    pub first_token_at: Option<Instant>,
    /// The position after the last token decoded into the KV cache: the prompt plus the
    /// generated tokens that were fed back (the last sampled token is not, unless generation
    /// ended on an end-of-generation token or a cancel).
    pub n_past: i32,
}

/// Turns token bytes into UTF-8 text as it streams: a multi-byte character split over two
/// tokens is held back until it is complete.
#[derive(Debug, Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// Adds bytes and returns the text that is complete so far.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        match std::str::from_utf8(&self.pending) {
            Ok(s) => {
                let out = s.to_string();
                self.pending.clear();
                out
            }
            Err(e) => {
                let valid = e.valid_up_to();
                // A sequence that can never become valid is emitted lossily; an incomplete
                // one at the end waits for more bytes.
                let cut = if e.error_len().is_some() {
                    self.pending.len()
                } else {
                    valid
                };
                let out = String::from_utf8_lossy(&self.pending[..cut]).into_owned();
                self.pending.drain(..cut);
                out
            }
        }
    }

    /// Whatever is left, lossily.
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

/// Generates up to `n_predict` tokens after a prompt that was decoded up to position `n_past`
/// with logits for its last position. `on_text` receives the text as it is produced. With
/// `ignore_eos`, end-of-generation tokens do not stop it (for benchmarks and comparisons).
pub fn generate(
    model: &Model,
    ctx: &mut Context<'_>,
    sampler: &mut Sampler,
    n_past: i32,
    n_predict: usize,
    ignore_eos: bool,
    on_text: &mut dyn FnMut(&str),
) -> Result<Generated, DecodeError> {
    generate_until(
        model,
        ctx,
        sampler,
        n_past,
        n_predict,
        ignore_eos,
        on_text,
        &|| false,
    )
}

/// [`generate`], also stopping with [`StopReason::Cancelled`] when `cancel()` returns true
/// (checked before each token is sampled).
#[allow(clippy::too_many_arguments)]
pub fn generate_until(
    model: &Model,
    ctx: &mut Context<'_>,
    sampler: &mut Sampler,
    mut n_past: i32,
    n_predict: usize,
    ignore_eos: bool,
    on_text: &mut dyn FnMut(&str),
    cancel: &dyn Fn() -> bool,
) -> Result<Generated, DecodeError> {
    let t0 = Instant::now();
    let n_ctx = ctx.n_ctx() as i64;
    let mut batch = Batch::tokens(1);
    let mut stream = Utf8Stream::default();
    let mut token_ids = Vec::new();
    let mut text = String::new();
    let mut first_token_at = None;
    let stop = loop {
        if token_ids.len() >= n_predict {
            break StopReason::MaxTokens;
        }
        if cancel() {
            break StopReason::Cancelled;
        }
        check_logits(ctx)?;
        let token = sampler.sample(ctx, -1);
        first_token_at.get_or_insert_with(Instant::now);
        if !ignore_eos && model.is_eog(token) {
            break StopReason::EndOfText;
        }
        token_ids.push(token);
        let piece = stream.push(&model.token_to_bytes(token, false));
        if !piece.is_empty() {
            on_text(&piece);
            text.push_str(&piece);
        }
        if token_ids.len() >= n_predict {
            break StopReason::MaxTokens;
        }
        if i64::from(n_past) >= n_ctx {
            break StopReason::ContextFull;
        }
        batch.clear();
        batch
            .push_token(token, n_past, true)
            .map_err(|_| DecodeError::NoKvSlot { n_tokens: 1 })?;
        ctx.decode(&batch)?;
        n_past += 1;
    };
    let rest = stream.finish();
    if !rest.is_empty() {
        on_text(&rest);
        text.push_str(&rest);
    }
    Ok(Generated {
        token_ids,
        text,
        stop,
        secs: t0.elapsed().as_secs_f64(),
        first_token_at,
        n_past,
    })
}

/// Refuses to sample from logits holding NaN or infinities (corrupt weights): llama.cpp's
/// samplers would pick garbage, or misbehave on NaN probabilities.
fn check_logits(ctx: &Context<'_>) -> Result<(), DecodeError> {
    if let Some(&value) = ctx
        .logits(-1)
        .and_then(|l| l.iter().find(|x| !x.is_finite()))
    {
        return Err(DecodeError::NonFiniteLogits { value });
    }
    Ok(())
}

/// `n` tokens in `secs` seconds as tokens per second; 0 when no time was measured.
pub fn tokens_per_sec(n: usize, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_stream_holds_back_split_characters() {
        let mut s = Utf8Stream::default();
        let euro = "€".as_bytes(); // 3 bytes
        assert_eq!(s.push(b"a"), "a");
        assert_eq!(s.push(&euro[..1]), "");
        assert_eq!(s.push(&euro[1..2]), "");
        assert_eq!(s.push(&euro[2..]), "€");
        assert_eq!(s.finish(), "");
    }

    #[test]
    fn utf8_stream_emits_invalid_bytes_lossily() {
        let mut s = Utf8Stream::default();
        assert_eq!(s.push(&[0xff, b'x']), "\u{fffd}x");
        assert_eq!(s.push(&[0xe2]), "");
        assert_eq!(s.finish(), "\u{fffd}");
    }
}
