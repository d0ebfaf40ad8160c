//! The model's input sequence: the chat-formatted prompt tokenized, with each image marker
//! replaced by the version's layout of special tokens and embedding chunks ([`super::layout`]).

use crate::encode::NativeError;
use crate::ffi::{Model, Token};
use crate::prompt::layout::{image_layout, LayoutItem, LAYOUT_TOKENS};
use crate::vision::{ImageFormat, SlicePlan};

/// Token ids of the layout's special texts, found the way llama.cpp's mtmd finds them: the
/// first vocabulary entry whose rendered piece equals the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutTokens {
    ids: [Token; LAYOUT_TOKENS.len()],
}

impl LayoutTokens {
    /// Scans the vocabulary of `model` for every text in [`LAYOUT_TOKENS`], rendering special
    /// tokens; fails with [`NativeError::MissingLayoutToken`] naming the first text not found.
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

    /// The token id of `text`, one of [`LAYOUT_TOKENS`]; -1 for any other text.
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
    /// Text and layout tokens, decoded as token ids; never empty, and never next to another
    /// `Tokens` segment (adjacent runs are merged).
    Tokens(Vec<Token>),
    /// The projector's embeddings of one chunk, decoded as embeddings.
    Chunk {
        /// Index of the image in the request, in the order of the markers.
        image: usize,
        /// The chunk of that image: 0 is the overview, 1.. the slices in row-major order.
        chunk: usize,
        /// Embeddings (positions) of the chunk ([`ImageFormat::chunk_tokens`]).
        n_tokens: usize,
    },
}

impl Segment {
    /// Positions the segment takes: its tokens, or its chunk's embeddings.
    pub fn n_positions(&self) -> usize {
        match self {
            Segment::Tokens(t) => t.len(),
            Segment::Chunk { n_tokens, .. } => *n_tokens,
        }
    }
}

/// Positions of a whole sequence.
pub fn n_positions(segments: &[Segment]) -> usize {
    segments.iter().map(Segment::n_positions).sum()
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
    format: &ImageFormat,
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
            let plan = plans.get(image);
            for item in image_layout(format.style(), plan.and_then(|p| p.grid)) {
                match item {
                    LayoutItem::Token(text) => push_tokens(&mut out, &[layout.id(text)]),
                    LayoutItem::Chunk(chunk) => out.push(Segment::Chunk {
                        image,
                        chunk,
                        n_tokens: plan.map_or(0, |p| format.chunk_tokens(p, chunk)),
                    }),
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
