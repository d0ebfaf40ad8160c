//! Chat formatting: where images go in the user's message, and the chat template around it.
//! Pure functions except [`format_chat`]'s use of llama.cpp's template engine for templates
//! that come in a GGUF file.

use crate::ffi::apply_chat_template;
use crate::model::family::{self, Version};

/// Who speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Instructions that frame the conversation; the version may supply a default one.
    System,
    /// The person asking: prompts and images.
    User,
    /// The model's replies.
    Assistant,
}

impl Role {
    /// The role name chat templates use: `system`, `user` or `assistant`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Who says it.
    pub role: Role,
    /// The text, with one image marker per image for user messages (see [`user_content`]).
    pub content: String,
}

impl Message {
    /// A message from [`Role::User`].
    pub fn user(content: impl Into<String>) -> Message {
        Message {
            role: Role::User,
            content: content.into(),
        }
    }

    /// A message from [`Role::Assistant`], e.g. an earlier reply in a chat.
    pub fn assistant(content: impl Into<String>) -> Message {
        Message {
            role: Role::Assistant,
            content: content.into(),
        }
    }
}

/// The user's message with one `marker` per image. When the prompt already contains markers
/// the user placed the images; their count must equal the number of images
/// (`Err((markers, images))` otherwise). Without markers, the version's layout applies
/// (llama.cpp's mtmd-cli: all markers before the prompt, no separator).
pub fn user_content(
    version: Version,
    prompt: &str,
    n_images: usize,
    marker: &str,
) -> Result<String, (usize, usize)> {
    let markers = prompt.matches(marker).count();
    if markers > 0 {
        return if markers == n_images {
            Ok(prompt.to_string())
        } else {
            Err((markers, n_images))
        };
    }
    let layout = &family::spec(version).chat.user_content;
    Ok(substitute(
        layout,
        &[("image", &marker.repeat(n_images)), ("prompt", prompt)],
    ))
}

/// The user's message about a video of `n_frames` frames: each frame's `marker` followed by the
/// version's `separator`, then the prompt. This is the reference's `"\n".join(frames +
/// [question])` for 2.6/4.5 (separator `"\n"`) and 4.6's concatenated frame blocks
/// (separator `""`); see docs/video-reference.md. A prompt holding markers of its own is
/// refused (`Err(markers)`): with a video, the frames are the media.
pub fn video_content(
    prompt: &str,
    n_frames: usize,
    separator: &str,
    marker: &str,
) -> Result<String, usize> {
    let markers = prompt.matches(marker).count();
    if markers > 0 {
        return Err(markers);
    }
    let mut out = String::with_capacity(n_frames * (marker.len() + separator.len()) + prompt.len());
    for _ in 0..n_frames {
        out.push_str(marker);
        out.push_str(separator);
    }
    out.push_str(prompt);
    Ok(out)
}

/// Formats a conversation for the model. A `tokenizer.chat_template` from the GGUF file is used
/// when llama.cpp recognises it; otherwise the version's built-in template.
pub fn format_chat(
    version: Version,
    gguf_template: Option<&str>,
    messages: &[Message],
    add_generation_prompt: bool,
) -> String {
    if let Some(tmpl) = gguf_template {
        let pairs: Vec<(&str, &str)> = messages
            .iter()
            .map(|m| (m.role.as_str(), m.content.as_str()))
            .collect();
        if let Some(s) = apply_chat_template(tmpl, &pairs, add_generation_prompt) {
            return s;
        }
    }
    format_builtin(version, messages, add_generation_prompt)
}

/// How a prompt asks for thinking: the text appended after the generation prompt and how the
/// output then starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThinkingPrompt {
    /// Text appended after the generation prompt (possibly empty).
    pub suffix: &'static str,
    /// Whether the model thinks: its output is split into reasoning and answer.
    pub on: bool,
    /// Whether the suffix opens the reasoning block itself, so the output starts inside it.
    pub opened: bool,
    /// The block's opening and closing tags (`<think>`, `</think>`; empty without thinking).
    pub tags: (&'static str, &'static str),
}

/// Why thinking cannot be switched as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ThinkingError {
    /// The version has no thinking mode.
    #[error("{name} has no thinking mode; drop the thinking request")]
    NoThinking {
        /// The version's name.
        name: &'static str,
    },
    /// The checkpoint cannot switch to the mode asked.
    #[error("{name} cannot {what} (its template has no way to); {hint}")]
    CannotSwitch {
        /// The version's name.
        name: &'static str,
        /// What was asked: "think" or "answer without thinking".
        what: &'static str,
        /// What to do instead.
        hint: &'static str,
    },
}

/// The thinking mode of a prompt for `version`: `wanted` (None: the model's default) checked
/// against what its template can do (models/*.toml, `[chat.thinking]`).
pub fn thinking_prompt(
    version: Version,
    wanted: Option<bool>,
) -> Result<ThinkingPrompt, ThinkingError> {
    let spec = family::spec(version);
    let name = spec.name.as_str();
    let Some(t) = &spec.chat.thinking else {
        return match wanted {
            Some(true) => Err(ThinkingError::NoThinking { name }),
            _ => Ok(ThinkingPrompt {
                suffix: "",
                on: false,
                opened: false,
                tags: ("", ""),
            }),
        };
    };
    let on = wanted.unwrap_or(t.default);
    match t.suffix(on) {
        Some(suffix) => Ok(ThinkingPrompt {
            suffix,
            on,
            opened: on && suffix.trim_end().ends_with(t.open.as_str()),
            tags: (t.open.as_str(), t.close.as_str()),
        }),
        None if on => Err(ThinkingError::CannotSwitch {
            name,
            what: "think",
            hint: "its Thinking variant does (4.6-thinking)",
        }),
        None => Err(ThinkingError::CannotSwitch {
            name,
            what: "answer without thinking",
            hint: "leave thinking on",
        }),
    }
}

/// The version's built-in chat template (models/*.toml, `[chat]`).
pub fn format_builtin(
    version: Version,
    messages: &[Message],
    add_generation_prompt: bool,
) -> String {
    let chat = &family::spec(version).chat;
    let mut out = String::new();
    if let Some(system) = &chat.default_system {
        if messages.first().map(|m| m.role) != Some(Role::System) {
            out.push_str(&substitute(&chat.system, &[("content", system)]));
        }
    }
    for m in messages {
        let tmpl = match m.role {
            Role::System => &chat.system,
            Role::User => &chat.user,
            Role::Assistant => &chat.assistant,
        };
        out.push_str(&substitute(tmpl, &[("content", &m.content)]));
    }
    if add_generation_prompt {
        out.push_str(&chat.generation_prompt);
    }
    out
}

/// Replaces `{name}` placeholders in one pass; unknown `{...}` text is kept verbatim.
fn substitute(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let replaced = after.find('}').and_then(|close| {
            let name = &after[..close];
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v, close))
        });
        match replaced {
            Some((value, close)) => {
                out.push_str(value);
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::family::MEDIA_MARKER;

    /// docs/video-reference.md: 2.6's `"\n".join(frames + [question])` and 4.6's frame blocks
    /// with nothing between them.
    #[test]
    fn video_frames_come_before_the_question_with_the_versions_separator() {
        let m = MEDIA_MARKER;
        assert_eq!(
            video_content("what happens?", 3, "\n", m).unwrap(),
            format!("{m}\n{m}\n{m}\nwhat happens?")
        );
        assert_eq!(video_content("q", 2, "", m).unwrap(), format!("{m}{m}q"));
        assert_eq!(video_content(&format!("a {m} b"), 2, "", m), Err(1));
    }

    /// Each version's thinking switches as models/*.toml states them (4.5: Qwen3's
    /// enable_thinking; 4.6: separate Instruct and Thinking checkpoints).
    #[test]
    fn thinking_prompts_follow_each_checkpoint() {
        let p = |v, w| thinking_prompt(v, w).map(|t| (t.suffix, t.on, t.opened));
        let block = "<think>\n\n</think>\n\n";
        assert_eq!(p(Version::V2_6, None), Ok(("", false, false)));
        assert_eq!(p(Version::V2_6, Some(false)), Ok(("", false, false)));
        assert!(matches!(
            p(Version::V2_6, Some(true)),
            Err(ThinkingError::NoThinking { .. })
        ));
        assert_eq!(p(Version::V4_5, None), Ok(("", true, false)));
        assert_eq!(p(Version::V4_5, Some(false)), Ok((block, false, false)));
        assert_eq!(p(Version::V4_6, None), Ok((block, false, false)));
        let e = thinking_prompt(Version::V4_6, Some(true)).unwrap_err();
        assert!(e.to_string().contains("MiniCPM-V 4.6 cannot think"), "{e}");
        assert_eq!(
            p(Version::V4_6Thinking, None),
            Ok(("<think>\n", true, true))
        );
        assert_eq!(
            p(Version::V4_6Thinking, Some(false)),
            Ok((block, false, false))
        );
    }

    fn system(content: &str) -> Message {
        Message {
            role: Role::System,
            content: content.to_string(),
        }
    }

    /// The built-in templates of models/*.toml, one version per layout family.
    #[test]
    fn builtin_chat_formatting() {
        let content = user_content(Version::V2_6, "What is {content}?", 1, MEDIA_MARKER);
        let p = format_builtin(Version::V2_6, &[Message::user(content.unwrap())], true);
        assert_eq!(
            p,
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n\
             <|im_start|>user\n<__media__>What is {content}?<|im_end|>\n\
             <|im_start|>assistant\n"
        );
        let content = user_content(Version::V4_5, "Hi", 2, MEDIA_MARKER).unwrap();
        let messages = [system("Be brief."), Message::user(content)];
        assert_eq!(
            format_builtin(Version::V4_5, &messages, true),
            "<|im_start|>system\nBe brief.<|im_end|>\n\
             <|im_start|>user\n<__media__><__media__>Hi<|im_end|>\n<|im_start|>assistant\n"
        );
        let content = user_content(Version::V2_5, "Hi", 0, MEDIA_MARKER).unwrap();
        assert_eq!(
            format_builtin(Version::V2_5, &[Message::user(content)], true),
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>\
             <|start_header_id|>assistant<|end_header_id|>\n\n"
        );
    }

    #[test]
    fn markers_placed_by_the_user_must_match_the_images() {
        let m = MEDIA_MARKER;
        let placed = format!("first {m} then {m}");
        assert_eq!(
            user_content(Version::V2_6, &placed, 2, m),
            Ok(placed.clone())
        );
        assert_eq!(user_content(Version::V2_6, &placed, 3, m), Err((2, 3)));
    }

    #[test]
    fn substitution_is_one_pass() {
        assert_eq!(substitute("{a}{b}{", &[("a", "{b}")]), "{b}{b}{");
        assert_eq!(substitute("{x}-{y}", &[("y", "{x}")]), "{x}-{x}");
    }
}
