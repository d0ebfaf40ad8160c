//! OpenAI's chat completions API: `POST /v1/chat/completions` (plain JSON or server-sent
//! events) and `GET /v1/models`, with llama.cpp server's extensions (`top_k`, `min_p`,
//! `repeat_penalty`, `ignore_eos`, `timings`, `reasoning_content`) and our `max_slices`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use minicpmv::prompt::template::Role;
use minicpmv::session::chat::ConversationMessage;

use crate::engine::{Answer, Update};
use crate::error::{ApiError, Flavor};
use crate::request::{self, check_image_count, image_bytes, CancelGuard, Knobs, Names};
use crate::video::StoredVideo;
use crate::{unix_now, AppState};

const NAMES: Names = Names {
    prefix: "",
    max_tokens: "max_tokens",
    flavor: Flavor::OpenAi,
};

/// A chat completion request. Unknown fields are ignored, as OpenAI clients send many.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    #[serde(default)]
    model: Option<String>,
    messages: Vec<InMessage>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    top_k: Option<i64>,
    min_p: Option<f64>,
    max_tokens: Option<i64>,
    max_completion_tokens: Option<i64>,
    seed: Option<i64>,
    stop: Option<Stop>,
    repeat_penalty: Option<f64>,
    repeat_last_n: Option<i64>,
    frequency_penalty: Option<f64>,
    presence_penalty: Option<f64>,
    n: Option<i64>,
    max_slices: Option<i64>,
    ignore_eos: Option<bool>,
    /// Thinking on or off (thinking models); also `chat_template_kwargs.enable_thinking`.
    think: Option<bool>,
    chat_template_kwargs: Option<TemplateKwargs>,
    tools: Option<Vec<Value>>,
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Debug, Deserialize)]
struct TemplateKwargs {
    enable_thinking: Option<bool>,
}

/// `stop`: one string or several.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
struct InMessage {
    role: InRole,
    #[serde(default)]
    content: Value,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum InRole {
    System,
    Developer,
    User,
    Assistant,
}

impl InRole {
    fn role(self) -> Role {
        match self {
            InRole::System | InRole::Developer => Role::System,
            InRole::User => Role::User,
            InRole::Assistant => Role::Assistant,
        }
    }
}

/// One piece of a message's content, in order.
enum Piece<'a> {
    Text(&'a str),
    Image(&'a str),
    /// An `input_video` part (llama-server's name): its object.
    Video(&'a serde_json::Map<String, Value>),
}

/// The pieces of `messages[i].content`: a string, or an array of `text` and `image_url` parts.
fn pieces<'a>(i: usize, m: &'a InMessage) -> Result<Vec<Piece<'a>>, ApiError> {
    let field = format!("messages[{i}].content");
    match &m.content {
        Value::String(s) => Ok(vec![Piece::Text(s)]),
        Value::Null if m.role == InRole::Assistant => Ok(Vec::new()),
        Value::Null => Err(ApiError::bad(&field, format!("{field} is missing"))),
        Value::Array(parts) => parts
            .iter()
            .enumerate()
            .map(|(j, p)| part(&format!("{field}[{j}]"), p))
            .collect(),
        other => Err(ApiError::bad(
            &field,
            format!(
                "{field} is {}; it must be a string or an array of content parts",
                kind(other)
            ),
        )),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn part<'a>(field: &str, p: &'a Value) -> Result<Piece<'a>, ApiError> {
    let str_at = |v: Option<&'a Value>, name: &str| -> Result<&'a str, ApiError> {
        match v {
            Some(Value::String(s)) => Ok(s),
            Some(other) => Err(ApiError::bad(
                name,
                format!("{name} is {}; it must be a string", kind(other)),
            )),
            None => Err(ApiError::bad(name, format!("{name} is missing"))),
        }
    };
    if !p.is_object() {
        return Err(ApiError::bad(
            field,
            format!(
                "{field} is {}; a content part is an object with a \"type\"",
                kind(p)
            ),
        ));
    }
    match str_at(p.get("type"), &format!("{field}.type"))? {
        "text" => Ok(Piece::Text(str_at(
            p.get("text"),
            &format!("{field}.text"),
        )?)),
        "image_url" => {
            let name = format!("{field}.image_url");
            match p.get("image_url") {
                Some(Value::Object(o)) => {
                    Ok(Piece::Image(str_at(o.get("url"), &format!("{name}.url"))?))
                }
                other => Ok(Piece::Image(str_at(other, &name)?)),
            }
        }
        "input_video" => match p.get("input_video") {
            Some(Value::Object(o)) => Ok(Piece::Video(o)),
            other => Err(ApiError::bad(
                format!("{field}.input_video"),
                format!(
                    "{field}.input_video is {}; it must be an object with \"data\" (base64) or \"url\"",
                    other.map_or("missing", kind)
                ),
            )),
        },
        t => Err(ApiError::bad(
            format!("{field}.type"),
            format!("{field}.type is {t:?}; this server takes \"text\", \"image_url\" and \"input_video\" parts"),
        )),
    }
}

/// The conversation of a request: texts joined, images fetched. Images that all come before
/// the text are placed by the model's own layout (as `minicpmv run` places them); images
/// between texts get a marker where they stand.
async fn conversation(
    req: &ChatRequest,
    app: &AppState,
) -> Result<(Vec<ConversationMessage>, Vec<Arc<StoredVideo>>), ApiError> {
    if req.messages.is_empty() {
        return Err(ApiError::bad(
            "messages",
            "messages is empty; send at least one user message",
        ));
    }
    let all: Vec<Vec<Piece<'_>>> = req
        .messages
        .iter()
        .enumerate()
        .map(|(i, m)| pieces(i, m))
        .collect::<Result<_, _>>()?;
    let n_images = all
        .iter()
        .flatten()
        .filter(|p| matches!(p, Piece::Image(_)))
        .count();
    check_image_count(n_images, &app.config, "messages", Flavor::OpenAi)?;
    let marker = minicpmv::ffi::mtmd::default_marker();
    let mut out = Vec::with_capacity(all.len());
    let mut stored = Vec::new();
    for (i, (m, pieces)) in req.messages.iter().zip(&all).enumerate() {
        let mut texts: Vec<String> = Vec::new();
        let mut images = Vec::new();
        let mut video = None;
        let first_text = pieces.iter().position(|p| matches!(p, Piece::Text(_)));
        let last_image = pieces.iter().rposition(|p| matches!(p, Piece::Image(_)));
        let interleaved = matches!((first_text, last_image), (Some(t), Some(im)) if t < im);
        for (j, p) in pieces.iter().enumerate() {
            match p {
                Piece::Text(t) => texts.push(t.to_string()),
                Piece::Image(url) => {
                    let field = format!("messages[{i}].content[{j}].image_url");
                    if m.role != InRole::User {
                        return Err(ApiError::bad(field, format!("messages[{i}] is not a user message; only user messages can carry images")));
                    }
                    images.push(image_bytes(url, &field, &app.config, Flavor::OpenAi).await?);
                    if interleaved {
                        texts.push(marker.clone());
                    }
                }
                Piece::Video(o) => {
                    let field = format!("messages[{i}].content[{j}].input_video");
                    if m.role != InRole::User {
                        return Err(ApiError::bad(field, format!("messages[{i}] is not a user message; only user messages can carry a video")));
                    }
                    if video.is_some() {
                        return Err(ApiError::bad(
                            field,
                            format!("messages[{i}] has a second video; a message takes one"),
                        ));
                    }
                    let (request, file) = video_request(o, &field, app).await?;
                    stored.push(file);
                    video = Some(request);
                }
            }
        }
        if video.is_some() && !images.is_empty() {
            return Err(ApiError::bad(
                format!("messages[{i}].content"),
                format!("messages[{i}] has a video and images; a message takes a video alone"),
            ));
        }
        out.push(ConversationMessage {
            role: m.role.role(),
            text: texts.join("\n"),
            images,
            video,
        });
    }
    Ok((out, stored))
}

/// An `input_video` part: `data` (base64) or `url` (as `image_url.url`), and our own optional
/// `fps`, `max_frames` and `frame_slices`. The bytes are written to the server's video folder.
async fn video_request(
    o: &serde_json::Map<String, Value>,
    field: &str,
    app: &AppState,
) -> Result<(minicpmv::vision::video::VideoRequest, Arc<StoredVideo>), ApiError> {
    let (name, reference) = match (o.get("data"), o.get("url")) {
        (Some(Value::String(d)), None) => (format!("{field}.data"), d.as_str()),
        (None, Some(Value::String(u))) => (format!("{field}.url"), u.as_str()),
        _ => {
            return Err(ApiError::bad(
                field,
                format!("{field} must have one of \"data\" (base64) and \"url\", as a string"),
            ))
        }
    };
    let bytes = image_bytes(reference, &name, &app.config, Flavor::OpenAi).await?;
    let file = app.videos.store(&bytes.bytes).map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot store the video of {field}: {e}"),
        )
    })?;
    let mut req = minicpmv::vision::video::VideoRequest::new(file.path());
    let number = |key: &str| -> Result<Option<f64>, ApiError> {
        match o.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(other) => Err(ApiError::bad(
                format!("{field}.{key}"),
                format!("{field}.{key} is {}; it must be a number", kind(other)),
            )),
        }
    };
    let whole = |key: &str, v: f64| -> Result<u64, ApiError> {
        if v.fract() == 0.0 && v >= 0.0 && v <= u32::MAX as f64 {
            Ok(v as u64)
        } else {
            Err(ApiError::bad(
                format!("{field}.{key}"),
                format!("{field}.{key} is {v}; it must be a whole number"),
            ))
        }
    };
    if let Some(fps) = number("fps")? {
        req = req.fps(fps);
    }
    if let Some(n) = number("max_frames")? {
        req = req.max_frames(whole("max_frames", n)? as usize);
    }
    if let Some(n) = number("frame_slices")? {
        req = req.frame_slices(whole("frame_slices", n)? as u32);
    }
    req.check().map_err(|e| {
        let key = match &e {
            minicpmv::vision::video::VideoError::Setting { name, .. } => name.replace(' ', "_"),
            _ => String::new(),
        };
        ApiError::bad(format!("{field}.{key}"), format!("{field}: {e}"))
    })?;
    Ok((req, file))
}

impl ChatRequest {
    fn knobs(&self) -> Knobs {
        Knobs {
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            seed: self.seed,
            max_tokens: self.max_completion_tokens.or(self.max_tokens),
            max_slices: self.max_slices,
            ignore_eos: self.ignore_eos,
            think: self.think.or(self
                .chat_template_kwargs
                .as_ref()
                .and_then(|k| k.enable_thinking)),
        }
    }

    /// Refuses what this server does not do, rather than ignoring it silently.
    fn check_unsupported(&self) -> Result<(), ApiError> {
        if let Some(n) = self.n.filter(|&n| n != 1) {
            return Err(ApiError::bad(
                "n",
                format!("n is {n}; this server gives one choice per request (n = 1)"),
            ));
        }
        for (name, v) in [
            ("frequency_penalty", self.frequency_penalty),
            ("presence_penalty", self.presence_penalty),
        ] {
            if let Some(v) = v.filter(|&v| v != 0.0) {
                return Err(ApiError::bad(
                    name,
                    format!("{name} is {v}; this server does not support it (use repeat_penalty)"),
                ));
            }
        }
        if self.tools.as_ref().is_some_and(|t| !t.is_empty()) {
            return Err(ApiError::bad(
                "tools",
                "tools are not supported by this server",
            ));
        }
        Ok(())
    }

    fn stops(&self) -> Vec<String> {
        match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        }
    }
}

/// Completion ids: `chatcmpl-` and a counter.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// `POST /v1/chat/completions`.
pub async fn chat_completions(State(app): State<AppState>, body: Body) -> Response {
    match completions(app, body).await {
        Ok(r) => r,
        Err(e) => e.flavor(Flavor::OpenAi).into_response(),
    }
}

async fn completions(app: AppState, body: Body) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    let req: ChatRequest = request::read_json(body, &app.config, Flavor::OpenAi).await?;
    req.check_unsupported()?;
    let settings = req.knobs().settings(&app.config, NAMES)?;
    let stop = req.stops();
    if stop.len() > 16 {
        return Err(ApiError::bad(
            "stop",
            format!("stop has {} strings; at most 16 are allowed", stop.len()),
        ));
    }
    let (conversation, videos) = conversation(&req, &app).await?;
    let started = request::start(
        &app,
        conversation,
        settings,
        stop,
        arrived,
        Flavor::OpenAi,
        videos,
    )
    .await?;
    let meta = Meta {
        id: format!("chatcmpl-{}", NEXT_ID.fetch_add(1, Ordering::Relaxed)),
        created: unix_now(),
        model: req
            .model
            .clone()
            .unwrap_or_else(|| app.config.model_name.clone()),
    };
    if !req.stream {
        let answer = request::collect(started, Flavor::OpenAi).await?;
        return Ok(Json(completion(&meta, &answer)).into_response());
    }
    let include_usage = req.stream_options.as_ref().is_some_and(|o| o.include_usage);
    let mut pending = VecDeque::new();
    pending.push_back(chunk(
        &meta,
        json!({"role": "assistant", "content": ""}),
        None,
    ));
    let state = StreamState {
        meta,
        include_usage,
        pending,
        next: Some(started.first),
        updates: started.updates,
        _guard: started.guard,
        done: false,
    };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        let ev = st.next_event().await?;
        Some((Ok::<_, Infallible>(ev), st))
    });
    Ok(Sse::new(stream).into_response())
}

/// Fields every response object repeats.
struct Meta {
    id: String,
    created: u64,
    model: String,
}

fn usage(a: &Answer) -> Value {
    json!({
        "prompt_tokens": a.prompt_tokens,
        "completion_tokens": a.generated_tokens,
        "total_tokens": a.prompt_tokens + a.generated_tokens,
        "prompt_tokens_details": {"cached_tokens": a.reused_tokens},
    })
}

/// llama.cpp server's `timings`, with our cache and queue figures.
pub fn timings(a: &Answer) -> Value {
    let t = &a.timings;
    let prompt_n = a.prompt_tokens - a.reused_tokens;
    json!({
        "prompt_n": prompt_n,
        "prompt_ms": t.prompt_secs * 1e3,
        "prompt_per_second": t.prompt_tokens_per_sec,
        "predicted_n": a.generated_tokens,
        "predicted_ms": t.generate_secs * 1e3,
        "predicted_per_second": t.generate_tokens_per_sec,
        "cache_n": a.reused_tokens,
        "queue_ms": a.queue_secs * 1e3,
        "time_to_first_token_ms": a.time_to_first_token_secs * 1e3,
        "image_encode_ms": t.image_encode_secs * 1e3,
        "projector_calls": a.projector_calls,
        "image_cache_hits": a.cache_hits,
    })
}

fn completion(meta: &Meta, a: &Answer) -> Value {
    let mut message = json!({"role": "assistant", "content": a.text});
    if let Some(th) = &a.thinking {
        message["reasoning_content"] = json!(th);
    }
    json!({
        "id": meta.id,
        "object": "chat.completion",
        "created": meta.created,
        "model": meta.model,
        "choices": [{"index": 0, "message": message, "finish_reason": a.finish.as_str()}],
        "usage": usage(a),
        "timings": timings(a),
    })
}

fn chunk(meta: &Meta, delta: Value, finish: Option<&str>) -> SseEvent {
    sse(json!({
        "id": meta.id,
        "object": "chat.completion.chunk",
        "created": meta.created,
        "model": meta.model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }))
}

fn sse(v: Value) -> SseEvent {
    SseEvent::default().data(v.to_string())
}

/// A streamed answer: the engine's updates as chunk events, then `[DONE]`. Dropping it (the
/// client went away) drops the guard, which stops the answer.
struct StreamState {
    meta: Meta,
    include_usage: bool,
    pending: VecDeque<SseEvent>,
    next: Option<Update>,
    updates: tokio::sync::mpsc::UnboundedReceiver<Update>,
    _guard: CancelGuard,
    done: bool,
}

impl StreamState {
    async fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Some(ev);
            }
            if self.done {
                return None;
            }
            let update = match self.next.take() {
                Some(u) => Some(u),
                None => self.updates.recv().await,
            };
            match update {
                Some(Update::Text(t)) => {
                    self.pending
                        .push_back(chunk(&self.meta, json!({"content": t}), None))
                }
                Some(Update::Thinking(t)) => {
                    self.pending
                        .push_back(chunk(&self.meta, json!({"reasoning_content": t}), None))
                }
                Some(Update::Done(Ok(a))) => {
                    self.pending
                        .push_back(chunk(&self.meta, json!({}), Some(a.finish.as_str())));
                    if self.include_usage {
                        self.pending.push_back(sse(json!({
                            "id": self.meta.id,
                            "object": "chat.completion.chunk",
                            "created": self.meta.created,
                            "model": self.meta.model,
                            "choices": [],
                            "usage": usage(&a),
                            "timings": timings(&a),
                        })));
                    }
                    self.pending.push_back(SseEvent::default().data("[DONE]"));
                    self.done = true;
                }
                Some(Update::Done(Err(e))) => {
                    self.pending.push_back(sse(e.body()));
                    self.done = true;
                }
                None => {
                    let e = ApiError::new(
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        "the engine stopped in the middle of the answer",
                    );
                    self.pending.push_back(sse(e.body()));
                    self.done = true;
                }
            }
        }
    }
}

/// `GET /v1/models`: the one loaded model.
pub async fn models(State(app): State<AppState>) -> Json<Value> {
    let meta = app.loaded.get().map(|l| {
        json!({
            "version": l.facts.version.to_string(),
            "n_ctx": app.config.options.n_ctx,
            "n_ctx_train": l.facts.model.n_ctx_train,
            "n_embd": l.facts.model.n_embd,
            "n_vocab": l.facts.model.n_vocab,
        })
    });
    Json(json!({
        "object": "list",
        "data": [{
            "id": app.config.model_name,
            "object": "model",
            "created": app.started,
            "owned_by": "minicpmv",
            "meta": meta,
        }],
    }))
}
