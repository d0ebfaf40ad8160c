//! Chat formatting: where images go in the user's message, and the chat template around it.
//! Pure functions except [`format_chat`]'s use of llama.cpp's template engine for templates
//! that come in a GGUF file.

use crate::ffi::apply_chat_template;
use crate::model::family::{self, Version};

/// Who speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
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
    pub role: Role,
    pub content: String,
}

impl Message {
    pub fn user(content: impl Into<String>) -> Message {
        Message {
            role: Role::User,
            content: content.into(),
        }
    }

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
    Ok(layout
        .replace("{image}", &marker.repeat(n_images))
        .replace("{prompt}", prompt))
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
            out.push_str(&chat.system.replace("{content}", system));
        }
    }
    for m in messages {
        let tmpl = match m.role {
            Role::System => &chat.system,
            Role::User => &chat.user,
            Role::Assistant => &chat.assistant,
        };
        out.push_str(&tmpl.replace("{content}", &m.content));
    }
    if add_generation_prompt {
        out.push_str(&chat.generation_prompt);
    }
    out
}
