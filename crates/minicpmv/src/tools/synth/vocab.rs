//! The synthetic tokenizer: a gpt2-style byte-level BPE vocabulary with the version's special
//! tokens.

use crate::model::family::ModelSpec;

// ---------------------------------------------------------------------------------------------
// Vocabulary

/// GGUF token types (llama.cpp `llama_token_type`).
pub(super) const TOKEN_NORMAL: i32 = 1;
pub(super) const TOKEN_CONTROL: i32 = 3;
pub(super) const TOKEN_USER_DEFINED: i32 = 4;

/// Words whose byte-level spellings get merge chains (a leading space is GPT-2's `Ġ`).
const MERGE_WORDS: [&str; 40] = [
    " the",
    " a",
    " an",
    " and",
    " of",
    " to",
    " in",
    " is",
    " it",
    " on",
    " with",
    " for",
    " this",
    " that",
    " what",
    " image",
    " picture",
    " photo",
    " describe",
    " color",
    " cat",
    " dog",
    " man",
    " woman",
    " red",
    " blue",
    " green",
    " white",
    " black",
    " text",
    " there",
    " are",
    " you",
    "What",
    "Describe",
    "The",
    "This",
    "Hello",
    "ing",
    "ed",
];

/// A gpt2-style vocabulary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Vocab {
    pub tokens: Vec<String>,
    pub types: Vec<i32>,
    pub merges: Vec<String>,
}

impl Vocab {
    pub fn id(&self, text: &str) -> Option<u32> {
        self.tokens
            .iter()
            .rposition(|t| t == text)
            .and_then(|i| u32::try_from(i).ok())
    }
}

/// GPT-2's `bytes_to_unicode`: the printable stand-in character for each byte, in the order
/// byte-level vocabularies list them (`!` first).
fn byte_chars() -> Vec<(u8, char)> {
    let mut bs: Vec<u32> = (33..=126).chain(161..=172).chain(174..=255).collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    bs.into_iter()
        .zip(cs)
        .filter_map(|(b, c)| Some((u8::try_from(b).ok()?, char::from_u32(c)?)))
        .collect()
}

pub(super) fn build_vocab(spec: &ModelSpec, n_vocab: Option<u32>) -> Result<Vocab, String> {
    let chars = byte_chars();
    let mut map = ['\0'; 256];
    for &(b, c) in &chars {
        map[usize::from(b)] = c;
    }
    let mut tokens: Vec<String> = chars.iter().map(|&(_, c)| c.to_string()).collect();
    let mut seen: std::collections::HashSet<String> = tokens.iter().cloned().collect();

    // Left-to-right merge chains: "Ġ t" -> "Ġt", "Ġt h" -> "Ġth", "Ġth e" -> "Ġthe".
    let mut merges = Vec::new();
    for word in MERGE_WORDS {
        let spelled: Vec<String> = word
            .bytes()
            .map(|b| map[usize::from(b)].to_string())
            .collect();
        let mut acc = spelled[0].clone();
        for piece in &spelled[1..] {
            let merged = format!("{acc}{piece}");
            if seen.insert(merged.clone()) {
                merges.push(format!("{acc} {piece}"));
                tokens.push(merged.clone());
            }
            acc = merged;
        }
    }

    let t = &spec.tokens;
    let n_added = t.user_defined.len() + t.control.len();
    if let Some(n) = n_vocab {
        let n = n as usize;
        let fixed = tokens.len() + n_added;
        if n < fixed {
            return Err(format!(
                "vocabulary size {n} is smaller than the {fixed} byte, merge and special tokens"
            ));
        }
        for i in 0..n - fixed {
            // decodes to " fill<i>": only printable byte-level characters
            let filler = format!("\u{120}fill{i}");
            if !seen.insert(filler.clone()) {
                return Err(format!("filler token {filler:?} is not unique"));
            }
            tokens.push(filler);
        }
    }
    let mut types = vec![TOKEN_NORMAL; tokens.len()];
    for (list, ty) in [
        (&t.user_defined, TOKEN_USER_DEFINED),
        (&t.control, TOKEN_CONTROL),
    ] {
        for tok in list {
            if !seen.insert(tok.clone()) {
                return Err(format!("special token {tok:?} collides with another token"));
            }
            tokens.push(tok.clone());
            types.push(ty);
        }
    }
    Ok(Vocab {
        tokens,
        types,
        merges,
    })
}
