//! `minicpmv serve`: an HTTP server for one loaded MiniCPM-V pair, speaking OpenAI's chat
//! completions API (`/v1/chat/completions`, `/v1/models`) and Ollama's (`/api/chat`,
//! `/api/generate`, `/api/tags`, `/api/show`, `/api/ps`, `/api/version`), with `/health` and
//! Prometheus `/metrics`.
//!
//! The HTTP side is axum on tokio; the model lives on one engine thread ([`engine`]) that
//! answers requests one at a time from a bounded queue. Requests carry whole conversations;
//! the engine keeps the KV cache of the last one and the image embeddings of all recent ones,
//! so a follow-up question, or another question about the same image, skips the work already
//! done ([`minicpmv::ChatSession::answer`]).
//!
//! Every request is checked before it reaches the engine (body size and time, field types and
//! ranges, image count); the engine checks what needs the model (image format and size, the
//! prompt against the context). Refusals are 4xx with an error object naming the field.

#![forbid(unsafe_code)]

pub mod engine;
pub mod error;
pub mod metrics;
mod ollama;
mod openai;
pub mod request;
pub mod video;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use subtle::ConstantTimeEq;

use minicpmv::encode::cache::CacheConfig;
use minicpmv::{Generation, Pair, SessionOptions};

use crate::engine::{Engine, EngineConfig, Loaded, State as EngineState};
use crate::error::{ApiError, Flavor};
use crate::metrics::Metrics;

/// What a request may ask for at most. Each has a `minicpmv serve` flag.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body, in bytes (base64 images included).
    pub max_body_bytes: usize,
    /// Time allowed for a request body to arrive.
    pub body_timeout: Duration,
    /// Images per request, over all its messages.
    pub max_images: usize,
    /// Largest `max_tokens` / `num_predict`.
    pub max_tokens: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 32 << 20,
            body_timeout: Duration::from_secs(30),
            max_images: 16,
            max_tokens: 4096,
        }
    }
}

/// Everything `minicpmv serve` was started with.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The model files.
    pub pair: Pair,
    /// Loading and running settings; `max_image_pixels` is the per-image pixel limit.
    pub options: SessionOptions,
    /// The image-embedding cache.
    pub cache: CacheConfig,
    /// Generation settings of a request that sets none.
    pub defaults: Generation,
    /// Slice cap of a request that sets none.
    pub max_slices: u32,
    /// Thinking mode of a request that sets none (`None`: the model's default).
    pub thinking: Option<bool>,
    /// The name `/v1/models` and `/api/tags` give the model.
    pub model_name: String,
    /// Request limits.
    pub limits: Limits,
    /// Requests that may wait while one is answered.
    pub max_queue: usize,
    /// The key clients must send as `Authorization: Bearer KEY` (not for `/health`).
    pub api_key: Option<String>,
    /// Fetch `http(s)://` image URLs.
    pub allow_remote_images: bool,
    /// The folder `file://` image URLs may name (canonical), if any.
    pub media_dir: Option<PathBuf>,
    /// How long a shutdown waits for answers in progress before stopping them.
    pub shutdown_grace: Duration,
}

/// What every handler sees.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The start settings.
    pub config: Arc<ServerConfig>,
    /// The engine thread.
    pub engine: Engine,
    /// The counters.
    pub metrics: Arc<Metrics>,
    /// Set once the model has loaded.
    pub loaded: Arc<OnceLock<Loaded>>,
    /// Unix seconds when the server started.
    pub started: u64,
    /// Videos of requests, written for ffmpeg.
    pub videos: Arc<video::VideoStore>,
}

/// Why the server stopped with an error.
#[derive(Debug)]
pub enum ServeError {
    /// The model could not be loaded.
    Load(String),
    /// The address could not be bound.
    Bind {
        /// `HOST:PORT` as given.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// Serving failed (the listener broke, or no runtime could be made).
    Io(std::io::Error),
}

impl std::error::Error for ServeError {}

impl std::fmt::Display for ServeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServeError::Load(e) => write!(f, "cannot load the model: {e}"),
            ServeError::Bind { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            ServeError::Io(e) => write!(f, "the server failed: {e}"),
        }
    }
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The routes, with authentication and request counting around them.
pub fn router(app: AppState) -> Router {
    let api = Router::new()
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/chat/completions", post(openai::chat_completions))
        .route("/v1/models", get(openai::models))
        .route("/models", get(openai::models))
        .route("/metrics", get(metrics_text))
        .route("/api/chat", post(ollama::chat))
        .route("/api/generate", post(ollama::generate))
        .route("/api/tags", get(ollama::tags))
        .route("/api/show", post(ollama::show))
        .route("/api/ps", get(ollama::ps))
        .route("/api/version", get(ollama::version))
        .route_layer(middleware::from_fn_with_state(app.clone(), require_key));
    Router::new()
        .route("/health", get(health))
        .route("/v1/health", get(health))
        .merge(api)
        .fallback(not_found)
        .method_not_allowed_fallback(wrong_method)
        .layer(middleware::from_fn_with_state(app.clone(), count))
        .with_state(app)
}

/// The API of a path, for the shape of its errors.
fn flavor_of(path: &str) -> Flavor {
    if path.starts_with("/api/") {
        Flavor::Ollama
    } else {
        Flavor::OpenAi
    }
}

async fn not_found(req: Request) -> ApiError {
    let path = req.uri().path().to_string();
    ApiError::new(StatusCode::NOT_FOUND, format!("no route {path}")).flavor(flavor_of(&path))
}

async fn wrong_method(req: Request) -> ApiError {
    let path = req.uri().path().to_string();
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} is not allowed on {path}", req.method()),
    )
    .flavor(flavor_of(&path))
}

/// Requires `Authorization: Bearer KEY` when the server has a key, compared in constant time.
async fn require_key(State(app): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(key) = &app.config.api_key {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !bool::from(given.as_bytes().ct_eq(key.as_bytes())) {
            let path = req.uri().path().to_string();
            let what = if given.is_empty() {
                "this server needs an API key: send Authorization: Bearer KEY"
            } else {
                "the API key is wrong"
            };
            return ApiError::new(StatusCode::UNAUTHORIZED, what)
                .param("Authorization")
                .flavor(flavor_of(&path))
                .into_response();
        }
    }
    next.run(req).await
}

/// Counts every answered request by route and status, and logs it (the access log: the time
/// is until the response starts, which for a stream is its first token).
async fn count(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let t = std::time::Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    app.metrics.count_request(&route, status);
    log::info!(
        "{method} {path} {status} {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    resp
}

async fn health(State(app): State<AppState>) -> Response {
    match app.engine.state() {
        EngineState::Ready => match engine::lost_worker_error() {
            None => Json(json!({"status": "ok"})).into_response(),
            Some(err) => (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "worker_lost", "error": {"message": err.message, "type": "unavailable_error", "code": 503}})),
            )
                .into_response(),
        },
        EngineState::Loading => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "loading", "error": {"message": "the model is loading", "type": "unavailable_error", "code": 503}})),
        )
            .into_response(),
        EngineState::Stopped => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "stopped", "error": {"message": "the engine has stopped", "type": "unavailable_error", "code": 503}})),
        )
            .into_response(),
    }
}

async fn metrics_text(State(app): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
        .into_response()
}

/// Serves on `listener` until `shutdown` completes, then drains: answers in progress get
/// [`ServerConfig::shutdown_grace`] to finish (new connections are refused), then are stopped.
/// `on_ready` is called once the model has loaded.
pub async fn serve(
    config: ServerConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(&Loaded) + Send + 'static,
) -> Result<(), ServeError> {
    let metrics = Arc::new(Metrics::default());
    let abort = Arc::new(AtomicBool::new(false));
    let engine_config = EngineConfig {
        pair: config.pair.clone(),
        options: config.options.clone(),
        cache: config.cache.clone(),
        max_queue: config.max_queue,
    };
    let (engine, loaded_rx, engine_thread) =
        Engine::start(engine_config, Arc::clone(&metrics), Arc::clone(&abort))
            .map_err(ServeError::Io)?;
    let grace = config.shutdown_grace;
    let app = AppState {
        config: Arc::new(config),
        engine,
        metrics,
        loaded: Arc::new(OnceLock::new()),
        started: unix_now(),
        videos: Arc::new(video::VideoStore::new().map_err(ServeError::Io)?),
    };
    let loaded_slot = Arc::clone(&app.loaded);

    // Shutdown starts on the signal, or when loading fails.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let load_error: Arc<OnceLock<String>> = Arc::new(OnceLock::new());
    {
        let stop_tx = stop_tx.clone();
        let load_error = Arc::clone(&load_error);
        tokio::spawn(async move {
            match loaded_rx.await {
                Ok(Ok(loaded)) => {
                    // Set before "ready" is said: a client told the server is ready finds the
                    // model's facts (/api/show, /v1/models).
                    let _ = loaded_slot.set(loaded);
                    if let Some(loaded) = loaded_slot.get() {
                        on_ready(loaded);
                    }
                }
                Ok(Err(e)) => {
                    let _ = load_error.set(e);
                    let _ = stop_tx.send(true);
                }
                Err(_) => {
                    let _ = load_error.set("the engine thread ended while loading".into());
                    let _ = stop_tx.send(true);
                }
            }
        });
    }
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let mut stopping = stop_rx.clone();
    let drained = async move {
        let _ = stopping.wait_for(|s| *s).await;
    };
    let server = axum::serve(
        listener,
        router(app).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(drained);

    let mut stopping = stop_rx;
    let result = tokio::select! {
        r = server => r,
        () = async {
            let _ = stopping.wait_for(|s| *s).await;
            tokio::time::sleep(grace).await;
        } => {
            log::warn!("answers still running after the {} s grace period are stopped", grace.as_secs_f64());
            Ok(())
        }
    };
    // Stop whatever still runs, and let the engine thread end before the process does.
    abort.store(true, Ordering::SeqCst);
    let _ = tokio::task::spawn_blocking(move || engine_thread.join()).await;
    if let Some(e) = load_error.get() {
        return Err(ServeError::Load(e.clone()));
    }
    result.map_err(ServeError::Io)
}

/// Runs the server until SIGTERM or SIGINT (then drains, see [`serve`]) on its own tokio
/// runtime: binds `addr` (`HOST:PORT`; port 0 picks a free one), calls `on_listening` with the
/// bound address, and `on_ready` once the model has loaded.
pub fn run(
    config: ServerConfig,
    addr: &str,
    on_listening: impl FnOnce(SocketAddr),
    on_ready: impl FnOnce(&Loaded) + Send + 'static,
) -> Result<(), ServeError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("minicpmv-http")
        .build()
        .map_err(ServeError::Io)?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind {
                addr: addr.to_string(),
                source,
            })?;
        on_listening(listener.local_addr().map_err(ServeError::Io)?);
        serve(config, listener, termination(), on_ready).await
    })
}

/// Completes at SIGTERM or SIGINT.
async fn termination() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        log::warn!("no signal handlers: stop the server with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => log::info!("SIGTERM: draining"),
        _ = int.recv() => log::info!("SIGINT: draining"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request as HttpRequest;
    use tower::ServiceExt as _;

    fn app(state: EngineState) -> (Router, std::sync::mpsc::Receiver<engine::Job>) {
        let (engine, jobs) = Engine::stuck(state, 4);
        let config = ServerConfig {
            pair: Pair::new("model.gguf", "mmproj.gguf"),
            options: SessionOptions::default(),
            cache: CacheConfig::default(),
            defaults: Generation::default(),
            max_slices: 9,
            thinking: None,
            model_name: "m".into(),
            limits: Limits::default(),
            max_queue: 4,
            api_key: None,
            allow_remote_images: false,
            media_dir: None,
            shutdown_grace: Duration::from_secs(1),
        };
        let state = AppState {
            config: Arc::new(config),
            metrics: Arc::new(Metrics::default()),
            engine,
            loaded: Arc::new(OnceLock::new()),
            started: 0,
            videos: Arc::new(video::VideoStore::new().unwrap()),
        };
        (router(state), jobs)
    }

    async fn call(
        router: Router,
        method: &str,
        path: &str,
        body: &str,
    ) -> (u16, serde_json::Value) {
        let req = HttpRequest::builder()
            .method(method)
            .uri(path)
            .body(Body::from(body.to_string()))
            .unwrap();
        let resp = router.oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn while_the_model_loads_health_and_completions_are_503() {
        let (router, jobs) = app(EngineState::Loading);
        let (status, body) = call(router.clone(), "GET", "/health", "").await;
        assert_eq!((status, body["status"].as_str()), (503, Some("loading")));
        let ask = r#"{"messages": [{"role": "user", "content": "hi"}]}"#;
        let (status, body) = call(router.clone(), "POST", "/v1/chat/completions", ask).await;
        assert_eq!(status, 503, "{body}");
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("loading"));
        let (status, body) = call(router, "POST", "/api/chat", ask).await;
        assert_eq!(status, 503);
        assert!(body["error"].as_str().unwrap().contains("loading"));
        assert!(jobs.try_recv().is_err(), "nothing reached the engine");
    }

    #[tokio::test]
    async fn once_loaded_health_is_200_and_requests_reach_the_engine() {
        let (router, jobs) = app(EngineState::Ready);
        assert_eq!(call(router.clone(), "GET", "/health", "").await.0, 200);
        // The engine never answers here: the handler waits; the job must be in the queue.
        let ask = r#"{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}"#;
        let pending = tokio::spawn(call(router, "POST", "/v1/chat/completions", ask));
        let job = tokio::task::spawn_blocking(move || jobs.recv_timeout(Duration::from_secs(60)))
            .await
            .unwrap()
            .expect("the request reached the engine");
        assert_eq!(job.conversation.len(), 1);
        assert_eq!(job.settings.generation.n_predict, 3);
        pending.abort();
    }
}
