//! Reasoning apart from the answer: a thinking model (MiniCPM-V 4.5, 4.6-Thinking) writes
//! `<think>…</think>` before its answer. [`ThinkSplitter`] cuts the streamed text into the two
//! parts as it arrives, also when a tag is split across token pieces.

/// Which part of the output a piece of text belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The reasoning trace, tags excluded.
    Thinking,
    /// The answer.
    Answer,
}

/// Splits streamed text at the reasoning block's tags. Only the first block counts: a block
/// opens at the start of the output (leading whitespace allowed) or is already open when the
/// prompt opened it (4.6-Thinking's generation prompt ends in `<think>\n`); once it closes,
/// everything else is answer, tags included.
#[derive(Debug, Clone)]
pub struct ThinkSplitter {
    open: String,
    close: String,
    state: State,
    /// Text held back because it may be the start of a tag.
    pending: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing but whitespace yet: a block may still open.
    Start,
    Thinking,
    /// Just after the closing tag: whitespace here belongs to neither part.
    Closed,
    Answer,
}

impl ThinkSplitter {
    /// A splitter for the tags `open` and `close`; `opened`: the prompt already opened the
    /// block, so the output starts inside it.
    pub fn new(open: &str, close: &str, opened: bool) -> ThinkSplitter {
        ThinkSplitter {
            open: open.to_string(),
            close: close.to_string(),
            state: if opened {
                State::Thinking
            } else {
                State::Start
            },
            pending: String::new(),
        }
    }

    /// Feeds a piece of streamed text; returns the parts now certain, in order (empty texts
    /// left out).
    pub fn push(&mut self, piece: &str) -> Vec<(Part, String)> {
        self.pending.push_str(piece);
        let mut out = Vec::new();
        loop {
            match self.state {
                State::Start => {
                    let trimmed = self.pending.trim_start();
                    if trimmed.starts_with(self.open.as_str()) {
                        let skip = self.pending.len() - trimmed.len() + self.open.len();
                        self.pending.drain(..skip);
                        self.state = State::Thinking;
                    } else if self.open.starts_with(trimmed) {
                        // whitespace only, or a prefix of the tag: wait for more
                        return out;
                    } else {
                        self.state = State::Answer;
                    }
                }
                State::Thinking => match self.pending.find(self.close.as_str()) {
                    Some(at) => {
                        push(&mut out, Part::Thinking, &self.pending[..at]);
                        self.pending.drain(..at + self.close.len());
                        self.state = State::Closed;
                    }
                    None => {
                        let keep = partial_suffix(&self.pending, &self.close);
                        let cut = self.pending.len() - keep;
                        push(&mut out, Part::Thinking, &self.pending[..cut]);
                        self.pending.drain(..cut);
                        return out;
                    }
                },
                State::Closed => {
                    // the blank line after the tag belongs to neither part
                    let rest = self.pending.trim_start().len();
                    self.pending.drain(..self.pending.len() - rest);
                    if self.pending.is_empty() {
                        return out;
                    }
                    self.state = State::Answer;
                }
                State::Answer => {
                    push(&mut out, Part::Answer, &self.pending);
                    self.pending.clear();
                    return out;
                }
            }
        }
    }

    /// The end of the output: what was held back, in the part it was in (an unfinished tag is
    /// text).
    pub fn finish(&mut self) -> Vec<(Part, String)> {
        let part = match self.state {
            State::Thinking => Part::Thinking,
            State::Start | State::Closed | State::Answer => Part::Answer,
        };
        let mut out = Vec::new();
        push(&mut out, part, &self.pending);
        self.pending.clear();
        out
    }
}

fn push(out: &mut Vec<(Part, String)>, part: Part, text: &str) {
    if !text.is_empty() {
        out.push((part, text.to_string()));
    }
}

/// Length of the longest end of `text` that is a proper start of `tag` (held back until the
/// next piece tells whether the tag follows); always on a character boundary.
fn partial_suffix(text: &str, tag: &str) -> usize {
    (1..tag.len().min(text.len() + 1))
        .rev()
        .find(|&n| {
            text.is_char_boundary(text.len() - n) && tag.starts_with(&text[text.len() - n..])
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `pieces` and joins each part.
    fn split(opened: bool, pieces: &[&str]) -> (String, String) {
        let mut s = ThinkSplitter::new("<think>", "</think>", opened);
        let mut parts: Vec<(Part, String)> = Vec::new();
        for p in pieces {
            parts.extend(s.push(p));
        }
        parts.extend(s.finish());
        let join = |want: Part| {
            parts
                .iter()
                .filter(|(p, _)| *p == want)
                .map(|(_, t)| t.as_str())
                .collect::<String>()
        };
        (join(Part::Thinking), join(Part::Answer))
    }

    #[test]
    fn a_block_the_model_opens() {
        let want = ("\nlook at it\n".to_string(), "A cat.".to_string());
        assert_eq!(
            split(false, &["<think>\nlook at it\n</think>\n\nA cat."]),
            want
        );
        // every tag cut across pieces, one character at a time
        let text = "<think>\nlook at it\n</think>\n\nA cat.";
        let chars: Vec<String> = text.chars().map(String::from).collect();
        let refs: Vec<&str> = chars.iter().map(String::as_str).collect();
        assert_eq!(split(false, &refs), want);
        assert_eq!(
            split(false, &["  <thi", "nk>x</th", "ink>y"]),
            ("x".into(), "y".into())
        );
    }

    #[test]
    fn a_block_the_prompt_opened() {
        assert_eq!(
            split(true, &["step 1", " <", "/think>\n\nDone"]),
            ("step 1 ".into(), "Done".into())
        );
        // never closed: all of it is reasoning (cut by the token limit)
        assert_eq!(
            split(true, &["still </thi"]),
            ("still </thi".into(), String::new())
        );
    }

    #[test]
    fn no_block_is_all_answer() {
        assert_eq!(split(false, &["A cat."]), (String::new(), "A cat.".into()));
        assert_eq!(
            split(false, &["<thi", "s is text"]),
            (String::new(), "<this is text".into())
        );
        assert_eq!(split(false, &["  "]), (String::new(), "  ".into()));
        // a later block is answer text, tags and all
        assert_eq!(
            split(false, &["A <think>b</think>"]),
            (String::new(), "A <think>b</think>".into())
        );
        // an empty block (thinking switched off in the prompt is not seen here; a model that
        // writes one anyway gives an empty trace)
        assert_eq!(
            split(false, &["<think>\n\n</think>\n\nHi"]),
            ("\n\n".into(), "Hi".into())
        );
    }

    #[test]
    fn multibyte_text_is_not_cut_inside_a_character() {
        assert_eq!(split(true, &["é<", "/think>ü"]), ("é".into(), "ü".into()));
        assert_eq!(partial_suffix("aé", "</think>"), 0);
        assert_eq!(partial_suffix("a</thi", "</think>"), 5);
    }
}
