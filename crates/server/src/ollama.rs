//! Ollama's API: `POST /api/chat` and `/api/generate` (newline-delimited JSON streaming by
//! default, base64 `images`), `GET /api/tags`, `POST /api/show`, `GET /api/ps` and
//! `GET /api/version`, as its docs (docs/api.md) describe them, so that Ollama clients and Open
//! WebUI's Ollama connection work unchanged. Any model name is accepted: one model is loaded.

use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use minicpmv::prompt::template::Role;
use minicpmv::session::chat::ConversationMessage;

use crate::engine::{Answer, Update};
use crate::error::{ApiError, Flavor};
use crate::request::{self, check_image_count, image_bytes, Knobs, Names, Started};
use crate::{unix_now, AppState};

const NAMES: Names = Names {
    prefix: "options.",
    max_tokens: "num_predict",
    flavor: Flavor::Ollama,
};

fn yes() -> bool {
    true
}

/// Ollama's `options` (the ones that apply; others, such as `num_ctx`, are ignored: the
/// context is the server's).
#[derive(Debug, Default, Deserialize)]
struct Options {
    temperature: Option<f64>,
    top_p: Option<f64>,
    top_k: Option<i64>,
    min_p: Option<f64>,
    num_predict: Option<i64>,
    seed: Option<i64>,
    stop: Option<Vec<String>>,
    repeat_penalty: Option<f64>,
    repeat_last_n: Option<i64>,
    max_slices: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum InRole {
    System,
    User,
    Assistant,
}

#[derive(Debug, Deserialize)]
struct InMessage {
    role: InRole,
    #[serde(default)]
    content: String,
    #[serde(default)]
    images: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct ChatRequest {
    #[serde(default)]
    model: Option<String>,
    messages: Vec<InMessage>,
    #[serde(default = "yes")]
    stream: bool,
    #[serde(default)]
    options: Options,
    think: Option<bool>,
    format: Option<Value>,
    tools: Option<Vec<Value>>,
}

#[derive(Debug, Deserialize)]
struct GenerateRequest {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    prompt: String,
    #[serde(default)]
    system: Option<String>,
    #[serde(default)]
    images: Vec<String>,
    #[serde(default = "yes")]
    stream: bool,
    #[serde(default)]
    options: Options,
    think: Option<bool>,
    format: Option<Value>,
    #[serde(default)]
    raw: bool,
}

impl Options {
    fn knobs(&self, think: Option<bool>, limit: usize) -> Knobs {
        Knobs {
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            seed: self.seed,
            // Ollama's -1 (no limit) and -2 (fill the context): as long as allowed.
            max_tokens: self
                .num_predict
                .map(|n| if n == -1 || n == -2 { limit as i64 } else { n }),
            max_slices: self.max_slices,
            ignore_eos: None,
            think,
        }
    }
}

fn refuse_format(format: &Option<Value>) -> Result<(), ApiError> {
    match format {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(s)) if s.is_empty() => Ok(()),
        Some(_) => Err(ApiError::bad(
            "format",
            "format (structured output) is not supported by this server",
        )
        .flavor(Flavor::Ollama)),
    }
}

async fn images(
    list: &[String],
    field: &str,
    app: &AppState,
) -> Result<Vec<minicpmv::session::chat::ImageBytes>, ApiError> {
    let mut out = Vec::with_capacity(list.len());
    for (j, b64) in list.iter().enumerate() {
        out.push(image_bytes(b64, &format!("{field}[{j}]"), &app.config, Flavor::Ollama).await?);
    }
    Ok(out)
}

/// `POST /api/chat`.
pub async fn chat(State(app): State<AppState>, body: Body) -> Response {
    let arrived = Instant::now();
    let run = async {
        let req: ChatRequest = request::read_json(body, &app.config, Flavor::Ollama).await?;
        refuse_format(&req.format)?;
        if req.tools.as_ref().is_some_and(|t| !t.is_empty()) {
            return Err(
                ApiError::bad("tools", "tools are not supported by this server")
                    .flavor(Flavor::Ollama),
            );
        }
        if req.messages.is_empty() {
            return Err(ApiError::bad(
                "messages",
                "messages is empty; send at least one user message",
            )
            .flavor(Flavor::Ollama));
        }
        let n_images = req.messages.iter().map(|m| m.images.len()).sum();
        check_image_count(n_images, &app.config, "messages", Flavor::Ollama)?;
        let settings = req
            .options
            .knobs(req.think, app.config.limits.max_tokens)
            .settings(&app.config, NAMES)?;
        let mut conversation = Vec::with_capacity(req.messages.len());
        for (i, m) in req.messages.iter().enumerate() {
            let role = match m.role {
                InRole::System => Role::System,
                InRole::User => Role::User,
                InRole::Assistant => Role::Assistant,
            };
            if role != Role::User && !m.images.is_empty() {
                return Err(ApiError::bad(
                    format!("messages[{i}].images"),
                    format!(
                        "messages[{i}] is not a user message; only user messages can carry images"
                    ),
                )
                .flavor(Flavor::Ollama));
            }
            conversation.push(ConversationMessage {
                role,
                text: m.content.clone(),
                images: images(&m.images, &format!("messages[{i}].images"), &app).await?,
                video: None,
            });
        }
        let stop = req.options.stop.clone().unwrap_or_default();
        let started = request::start(
            &app,
            conversation,
            settings,
            stop,
            arrived,
            Flavor::Ollama,
            Vec::new(),
        )
        .await?;
        let model = req
            .model
            .clone()
            .unwrap_or_else(|| app.config.model_name.clone());
        Ok(respond(started, model, req.stream, Shape::Chat, arrived).await)
    };
    run.await
        .unwrap_or_else(|e: ApiError| e.flavor(Flavor::Ollama).into_response())
}

/// `POST /api/generate`. An empty prompt without images loads the model (it is loaded) and
/// answers `done_reason: "load"`, as Ollama does.
pub async fn generate(State(app): State<AppState>, body: Body) -> Response {
    let arrived = Instant::now();
    let run = async {
        let req: GenerateRequest = request::read_json(body, &app.config, Flavor::Ollama).await?;
        refuse_format(&req.format)?;
        let model = req
            .model
            .clone()
            .unwrap_or_else(|| app.config.model_name.clone());
        if req.prompt.is_empty() && req.images.is_empty() {
            return Ok(Json(json!({"model": model, "created_at": rfc3339(unix_now()), "response": "", "done": true, "done_reason": "load"})).into_response());
        }
        if req.raw {
            return Err(ApiError::bad(
                "raw",
                "raw prompts are not supported: the server applies the model's chat template",
            )
            .flavor(Flavor::Ollama));
        }
        check_image_count(req.images.len(), &app.config, "images", Flavor::Ollama)?;
        let settings = req
            .options
            .knobs(req.think, app.config.limits.max_tokens)
            .settings(&app.config, NAMES)?;
        let mut conversation = Vec::new();
        if let Some(system) = &req.system {
            conversation.push(ConversationMessage {
                role: Role::System,
                text: system.clone(),
                images: Vec::new(),
                video: None,
            });
        }
        conversation.push(ConversationMessage {
            role: Role::User,
            text: req.prompt.clone(),
            images: images(&req.images, "images", &app).await?,
            video: None,
        });
        let stop = req.options.stop.clone().unwrap_or_default();
        let started = request::start(
            &app,
            conversation,
            settings,
            stop,
            arrived,
            Flavor::Ollama,
            Vec::new(),
        )
        .await?;
        Ok(respond(started, model, req.stream, Shape::Generate, arrived).await)
    };
    run.await
        .unwrap_or_else(|e: ApiError| e.flavor(Flavor::Ollama).into_response())
}

/// Which of Ollama's two response shapes.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// `message: {role, content, thinking}`.
    Chat,
    /// `response`, `thinking`.
    Generate,
}

fn piece(shape: Shape, model: &str, text: &str, thinking: Option<&str>, done: bool) -> Value {
    let mut v = json!({"model": model, "created_at": rfc3339(unix_now()), "done": done});
    match shape {
        Shape::Chat => {
            let mut m = json!({"role": "assistant", "content": text});
            if let Some(t) = thinking {
                m["thinking"] = json!(t);
            }
            v["message"] = m;
        }
        Shape::Generate => {
            v["response"] = json!(text);
            if let Some(t) = thinking {
                v["thinking"] = json!(t);
            }
        }
    }
    v
}

fn ns(secs: f64) -> u64 {
    (secs * 1e9) as u64
}

/// The last object: `done: true` with Ollama's counts and durations (nanoseconds).
fn last(
    shape: Shape,
    model: &str,
    a: &Answer,
    text: &str,
    thinking: Option<&str>,
    arrived: Instant,
) -> Value {
    let mut v = piece(shape, model, text, thinking, true);
    let t = &a.timings;
    v["done_reason"] = json!(a.finish.as_str());
    v["total_duration"] = json!(ns(arrived.elapsed().as_secs_f64()));
    v["load_duration"] = json!(ns(t.projector_load_secs));
    v["prompt_eval_count"] = json!(a.prompt_tokens - a.reused_tokens);
    v["prompt_eval_duration"] = json!(ns(t.prompt_secs + t.image_encode_secs));
    v["eval_count"] = json!(a.generated_tokens);
    v["eval_duration"] = json!(ns(t.generate_secs));
    v["timings"] = crate::openai::timings(a);
    v
}

async fn respond(
    started: Started,
    model: String,
    stream: bool,
    shape: Shape,
    arrived: Instant,
) -> Response {
    if !stream {
        return match request::collect(started, Flavor::Ollama).await {
            Ok(a) => Json(last(
                shape,
                &model,
                &a,
                &a.text,
                a.thinking.as_deref(),
                arrived,
            ))
            .into_response(),
            Err(e) => e.into_response(),
        };
    }
    let state = (Some(started.first), started.updates, started.guard, false);
    let lines = futures_util::stream::unfold(state, move |(first, mut updates, guard, done)| {
        let model = model.clone();
        async move {
            if done {
                return None;
            }
            let update = match first {
                Some(u) => Some(u),
                None => updates.recv().await,
            };
            let (v, done) = match update {
                Some(Update::Text(t)) => (piece(shape, &model, &t, None, false), false),
                Some(Update::Thinking(t)) => (piece(shape, &model, "", Some(&t), false), false),
                Some(Update::Done(Ok(a))) => (last(shape, &model, &a, "", None, arrived), true),
                Some(Update::Done(Err(e))) => (e.flavor(Flavor::Ollama).body(), true),
                None => (
                    json!({"error": "the engine stopped in the middle of the answer"}),
                    true,
                ),
            };
            let line = format!("{v}\n");
            Some((
                Ok::<_, std::convert::Infallible>(line),
                (None, updates, guard, done),
            ))
        }
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response()
}

/// Unix seconds as RFC 3339 UTC (`2026-12-06T13:11:23Z`), as Ollama's `created_at`.
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The model entry of `/api/tags` and `/api/ps`.
fn model_entry(app: &AppState) -> Value {
    let size: u64 = [&app.config.pair.model, &app.config.pair.mmproj]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let name = tagged(&app.config.model_name);
    json!({
        "name": name,
        "model": name,
        "modified_at": rfc3339(app.started),
        "size": size,
        "digest": "",
        "details": details(app),
    })
}

/// Ollama names carry a tag.
fn tagged(name: &str) -> String {
    if name.contains(':') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

fn details(app: &AppState) -> Value {
    let arch = app
        .loaded
        .get()
        .map(|l| l.facts.model.arch.clone())
        .unwrap_or_default();
    json!({
        "parent_model": "",
        "format": "gguf",
        "family": arch,
        "families": [arch, "clip"],
        "parameter_size": "",
        "quantization_level": "",
    })
}

/// `GET /api/tags`: the one loaded model.
pub async fn tags(State(app): State<AppState>) -> Json<Value> {
    Json(json!({"models": [model_entry(&app)]}))
}

/// `GET /api/ps`: the loaded model.
pub async fn ps(State(app): State<AppState>) -> Json<Value> {
    let mut entry = model_entry(&app);
    entry["expires_at"] = json!("2318-01-01T00:00:00Z");
    entry["size_vram"] = json!(0);
    entry["context_length"] = json!(app.config.options.n_ctx);
    Json(json!({"models": [entry]}))
}

/// `GET /api/version`.
pub async fn version() -> Json<Value> {
    Json(json!({"version": env!("CARGO_PKG_VERSION")}))
}

/// `POST /api/show`: the model's details, template and capabilities.
pub async fn show(State(app): State<AppState>, body: Body) -> Response {
    #[derive(Deserialize)]
    struct ShowRequest {
        #[allow(dead_code)]
        model: Option<String>,
    }
    if let Err(e) = request::read_json::<ShowRequest>(body, &app.config, Flavor::Ollama).await {
        return e.into_response();
    }
    let Some(l) = app.loaded.get() else {
        return ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "the model is still loading",
        )
        .flavor(Flavor::Ollama)
        .into_response();
    };
    let arch = &l.facts.model.arch;
    let mut capabilities = vec!["completion", "vision"];
    if minicpmv::prompt::template::thinking_prompt(l.facts.version, Some(true)).is_ok() {
        capabilities.push("thinking");
    }
    Json(json!({
        "modelfile": "",
        "parameters": "",
        "template": l.facts.model.chat_template.clone().unwrap_or_default(),
        "details": details(&app),
        "model_info": {
            "general.architecture": arch,
            format!("{arch}.context_length"): l.facts.model.n_ctx_train,
            format!("{arch}.embedding_length"): l.facts.model.n_embd,
            format!("{arch}.block_count"): l.facts.model.n_layer,
            "minicpmv.version": l.facts.version.to_string(),
        },
        "capabilities": capabilities,
        "modified_at": rfc3339(app.started),
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        // 2026-12-06T13:11:23Z (date -u -d @1796562683)
        assert_eq!(rfc3339(1_796_562_683), "2026-12-06T13:11:23Z");
        // A leap day: 2024-02-29T23:59:59Z.
        assert_eq!(rfc3339(1_709_251_199), "2024-02-29T23:59:59Z");
    }

    #[test]
    fn names_get_ollamas_default_tag() {
        assert_eq!(tagged("minicpm-v"), "minicpm-v:latest");
        assert_eq!(tagged("minicpm-v:8b"), "minicpm-v:8b");
    }
}
