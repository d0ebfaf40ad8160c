//! The engine: one thread owns the loaded pair and answers requests one at a time, in the
//! order they arrived. HTTP handlers reach it through a bounded queue (a full queue is a 429,
//! never a dropped request) and hear back through a channel per request: text as it streams,
//! then the end. A request whose client has gone (its channel closed, or its cancel flag set
//! when the response is dropped) is skipped if still queued and stopped within one token if
//! running.
//!
//! One at a time: llama.cpp can decode several sequences in one batch (`n_seq_max`), but then
//! an answer depends on what else is in the batch (the kernels round differently by batch
//! size), and our KV prefix reuse and image-embedding placement work on one sequence. One
//! sequence keeps every answer equal to the same request run alone, which the tests check.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use tokio::sync::{mpsc, oneshot};

use minicpmv::decode::generate::StopReason;
use minicpmv::decode::stop::StopScan;
use minicpmv::encode::cache::CacheConfig;
use minicpmv::session::chat::{AnswerSettings, ConversationMessage, TurnTimings};
use minicpmv::{ChatConfig, ChatSession, Event, Pair, SessionOptions};

use crate::error::ApiError;
use crate::metrics::{add, Metrics};

/// One request for the engine.
#[derive(Debug)]
pub struct Job {
    /// The whole conversation; the last message is the user's question.
    pub conversation: Vec<ConversationMessage>,
    /// Generation, slice cap and thinking mode of the answer.
    pub settings: AnswerSettings,
    /// Stop strings: the answer ends before the first of them.
    pub stop: Vec<String>,
    /// Where the answer goes.
    pub updates: mpsc::UnboundedSender<Update>,
    /// Set when the client has gone: the answer stops within one token.
    pub cancel: Arc<AtomicBool>,
    /// When the request arrived (for queue and first-token times).
    pub arrived: Instant,
}

/// What the engine tells a request's handler.
#[derive(Debug)]
pub enum Update {
    /// Answer text, as it streams (stop strings already cut).
    Text(String),
    /// A thinking model's reasoning, as it streams.
    Thinking(String),
    /// The end: the answer's figures, or why it could not be given.
    Done(Result<Box<Answer>, ApiError>),
}

/// Why an answer ended, in OpenAI's words (`finish_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// An end-of-text token or a stop string.
    Stop,
    /// `max_tokens`, or the context is full.
    Length,
    /// The client went away, or the server is shutting down.
    Cancelled,
}

impl Finish {
    /// OpenAI's `finish_reason` and Ollama's `done_reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
            Finish::Cancelled => "cancelled",
        }
    }
}

/// A finished answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The answer text, as streamed.
    pub text: String,
    /// A thinking model's reasoning.
    pub thinking: Option<String>,
    /// Why it ended.
    pub finish: Finish,
    /// Prompt positions (text tokens and image embeddings).
    pub prompt_tokens: usize,
    /// Prompt positions already in the KV cache.
    pub reused_tokens: usize,
    /// Tokens generated.
    pub generated_tokens: usize,
    /// Images found in the embedding cache / encoded.
    pub cache_hits: usize,
    /// Projector calls made.
    pub projector_calls: usize,
    /// Seconds waiting in the queue.
    pub queue_secs: f64,
    /// Seconds from arrival to the first token.
    pub time_to_first_token_secs: f64,
    /// The engine's figures of the turn.
    pub timings: TurnTimings,
}

/// The engine's state, for `/health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    /// The model is loading.
    Loading = 0,
    /// Serving.
    Ready = 1,
    /// Loading failed, or the engine stopped.
    Stopped = 2,
}

/// What was loaded, for `/v1/models` and `/api/show`.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// What the checks found in the files.
    pub facts: minicpmv::model::inputs::PairFacts,
    /// Seconds the language model took to load.
    pub load_secs: f64,
}

/// A handle on the engine thread; cheap to clone.
#[derive(Debug, Clone)]
pub struct Engine {
    queue: SyncSender<Job>,
    state: Arc<AtomicU8>,
    metrics: Arc<Metrics>,
    max_queue: usize,
}

/// A started engine: its handle, the news of its model load, and its thread.
pub type Started = (
    Engine,
    oneshot::Receiver<Result<Loaded, String>>,
    JoinHandle<()>,
);

/// How the engine loads and runs.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The model files.
    pub pair: Pair,
    /// Loading and running settings (context, threads, low-memory mode, ...).
    pub options: SessionOptions,
    /// The image-embedding cache (memory, and a folder if set).
    pub cache: CacheConfig,
    /// Requests that may wait while one is answered; more are refused with 429.
    pub max_queue: usize,
}

impl Engine {
    /// Starts the engine thread, which loads the pair and then serves. `loaded` hears whether
    /// loading worked; `abort` (set after the shutdown grace period) stops the running answer.
    /// Fails only when the operating system cannot start a thread.
    pub fn start(
        config: EngineConfig,
        metrics: Arc<Metrics>,
        abort: Arc<AtomicBool>,
    ) -> std::io::Result<Started> {
        let (queue, jobs) = sync_channel(config.max_queue);
        let (loaded_tx, loaded) = oneshot::channel();
        let state = Arc::new(AtomicU8::new(State::Loading as u8));
        let engine = Engine {
            queue,
            state: Arc::clone(&state),
            metrics: Arc::clone(&metrics),
            max_queue: config.max_queue,
        };
        let thread = std::thread::Builder::new()
            .name("minicpmv-engine".into())
            .spawn(move || {
                engine_main(config, jobs, &metrics, &abort, &state, loaded_tx);
                state.store(State::Stopped as u8, Ordering::SeqCst);
            })?;
        Ok((engine, loaded, thread))
    }

    /// An engine with no thread, stuck in `state`, and its queue's receiving end (tests of the
    /// HTTP side).
    #[cfg(test)]
    pub(crate) fn stuck(state: State, max_queue: usize) -> (Engine, Receiver<Job>) {
        let (queue, jobs) = sync_channel(max_queue);
        let engine = Engine {
            queue,
            state: Arc::new(AtomicU8::new(state as u8)),
            metrics: Arc::new(Metrics::default()),
            max_queue,
        };
        (engine, jobs)
    }

    /// Where the engine is.
    pub fn state(&self) -> State {
        match self.state.load(Ordering::SeqCst) {
            0 => State::Loading,
            1 => State::Ready,
            _ => State::Stopped,
        }
    }

    /// Queues a request; refused with 503 while loading and 429 when the queue is full.
    pub fn submit(&self, job: Job) -> Result<(), ApiError> {
        match self.state() {
            State::Loading => {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the model is still loading; retry shortly",
                )
                .retry_after(1))
            }
            State::Stopped => {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the engine has stopped",
                ))
            }
            State::Ready => {}
        }
        if let Some(err) = lost_worker_error() {
            return Err(err);
        }
        self.metrics.queue_depth.fetch_add(1, Ordering::SeqCst);
        match self.queue.try_send(job) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.metrics.queue_depth.fetch_sub(1, Ordering::SeqCst);
                Err(match e {
                    TrySendError::Full(_) => {
                        add(&self.metrics.rejected_queue_full, 1);
                        ApiError::new(
                            StatusCode::TOO_MANY_REQUESTS,
                            format!(
                                "the server is busy: one request is being answered and {} are waiting (--max-queue); retry later",
                                self.max_queue
                            ),
                        )
                        .retry_after(1)
                    }
                    TrySendError::Disconnected(_) => {
                        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the engine has stopped")
                    }
                })
            }
        }
    }
}

/// 503 when an RPC worker of the model (`serve --rpc`) has gone: the layers it held are lost
/// with it, and ggml's client ends the process on their next use.
pub fn lost_worker_error() -> Option<ApiError> {
    let lost = minicpmv::ffi::rpc::lost_workers();
    if lost.is_empty() {
        return None;
    }
    let names: Vec<String> = lost.iter().map(|a| a.to_string()).collect();
    Some(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "RPC worker {} is gone, and the model's layers it held with it: restart the worker, then this server",
            names.join(", ")
        ),
    ))
}

fn engine_main(
    config: EngineConfig,
    jobs: Receiver<Job>,
    metrics: &Metrics,
    abort: &AtomicBool,
    state: &AtomicU8,
    loaded: oneshot::Sender<Result<Loaded, String>>,
) {
    let t = Instant::now();
    let mut session = match Pair::open(&config.pair.model, &config.pair.mmproj, config.options) {
        Ok(s) => s,
        Err(e) => {
            let _ = loaded.send(Err(e.to_string()));
            return;
        }
    };
    let facts = session.facts().clone();
    let mut chat = match session.chat(ChatConfig::default().cache(config.cache)) {
        Ok(c) => c,
        Err(e) => {
            let _ = loaded.send(Err(e.to_string()));
            return;
        }
    };
    state.store(State::Ready as u8, Ordering::SeqCst);
    let load_secs = t.elapsed().as_secs_f64();
    log::info!("model loaded in {load_secs:.2} s");
    let _ = loaded.send(Ok(Loaded { facts, load_secs }));
    loop {
        let job = match jobs.recv_timeout(Duration::from_millis(100)) {
            Ok(job) => job,
            Err(RecvTimeoutError::Timeout) if !abort.load(Ordering::SeqCst) => continue,
            Err(_) => break,
        };
        metrics.queue_depth.fetch_sub(1, Ordering::SeqCst);
        metrics.running.store(1, Ordering::SeqCst);
        answer(&mut chat, job, metrics, abort);
        metrics.running.store(0, Ordering::SeqCst);
    }
}

/// Answers one job and reports to its handler.
fn answer(chat: &mut ChatSession<'_>, job: Job, metrics: &Metrics, abort: &AtomicBool) {
    let queue_secs = job.arrived.elapsed().as_secs_f64();
    metrics.queue_seconds.observe(queue_secs);
    let gone = || job.cancel.load(Ordering::SeqCst) || job.updates.is_closed();
    if gone() {
        add(&metrics.cancelled, 1);
        log::info!("a queued request was dropped by its client before it started");
        return;
    }
    let mut scan = StopScan::new(job.stop.iter().cloned());
    let stopped = Cell::new(false);
    let mut first_token: Option<Instant> = None;
    let mut text = String::new();
    let updates = &job.updates;
    let mut on_event = |e: Event<'_>| match e {
        Event::Text(t) => {
            first_token.get_or_insert_with(Instant::now);
            let shown = scan.push(t);
            stopped.set(scan.stopped());
            if !shown.is_empty() {
                text.push_str(&shown);
                let _ = updates.send(Update::Text(shown));
            }
        }
        Event::Thinking(t) => {
            first_token.get_or_insert_with(Instant::now);
            let _ = updates.send(Update::Thinking(t.to_string()));
        }
        _ => {}
    };
    // A worker lost while this request waited: refuse it (using its layers would end the
    // process).
    if let Some(err) = lost_worker_error() {
        let _ = job.updates.send(Update::Done(Err(err)));
        return;
    }
    let cancel = || stopped.get() || gone() || abort.load(Ordering::SeqCst);
    let result = chat.answer(&job.conversation, &job.settings, &mut on_event, &cancel);
    let out = match result {
        Ok(out) => out,
        Err(e) => {
            let err = ApiError::from_chat(&e);
            log::warn!("request refused: {}", err.message);
            let _ = job.updates.send(Update::Done(Err(err)));
            return;
        }
    };
    if !stopped.get() {
        let rest = scan.finish();
        if !rest.is_empty() {
            text.push_str(&rest);
            let _ = job.updates.send(Update::Text(rest));
        }
    }
    let finish = match out.stop {
        _ if stopped.get() => Finish::Stop,
        StopReason::EndOfText => Finish::Stop,
        StopReason::MaxTokens | StopReason::ContextFull => Finish::Length,
        StopReason::Cancelled => Finish::Cancelled,
    };
    if finish == Finish::Cancelled {
        add(&metrics.cancelled, 1);
        log::info!(
            "answer stopped after {} tokens: the client went away or the server is stopping",
            out.token_ids.len()
        );
    }
    let ttft = first_token.map_or(job.arrived.elapsed(), |t| t.duration_since(job.arrived));
    let answer = Answer {
        text,
        thinking: out.thinking,
        finish,
        prompt_tokens: out.n_prompt_positions,
        reused_tokens: out.n_reused_positions,
        generated_tokens: out.token_ids.len(),
        cache_hits: out.cache_hits,
        projector_calls: out.n_projector_calls,
        queue_secs,
        time_to_first_token_secs: ttft.as_secs_f64(),
        timings: out.timings,
    };
    record(metrics, &answer, out.cache_misses, job.arrived.elapsed());
    let _ = job.updates.send(Update::Done(Ok(Box::new(answer))));
}

fn record(metrics: &Metrics, a: &Answer, cache_misses: usize, total: Duration) {
    add(&metrics.prompt_tokens, a.prompt_tokens);
    add(&metrics.reused_prompt_tokens, a.reused_tokens);
    add(&metrics.generated_tokens, a.generated_tokens);
    add(&metrics.cache_hits, a.cache_hits);
    add(&metrics.cache_misses, cache_misses);
    add(&metrics.projector_calls, a.projector_calls);
    metrics
        .time_to_first_token_seconds
        .observe(a.time_to_first_token_secs);
    if a.projector_calls > 0 {
        metrics.encode_seconds.observe(a.timings.image_encode_secs);
    }
    metrics.request_seconds.observe(total.as_secs_f64());
}
