//! One single-turn run: model + projector + images + prompt in, streamed text out.
//!
//! Two image pipelines produce the same model input (the parity tests prove it):
//! - [`Pipeline::Native`] (default): slices planned and preprocessed in Rust, one projector call
//!   per slice through our shim, embeddings placed with the version's layout (src/native.rs);
//! - [`Pipeline::LlamaCpp`]: llama.cpp's own mtmd pipeline, the reference.

use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use crate::decode::generate::{generate, tokens_per_sec, StopReason};
use crate::decode::prefill;
use crate::decode::thinking::{Part, ThinkSplitter};
use crate::encode::{self, ImageEmbeddings, NativeError};
use crate::ffi::mtmd::{self, ChunkInfo, Mtmd, RgbImage};
use crate::ffi::{
    ClipProjector, Context, ContextParams, CpuBackend, DecodeError, Model, Sampler, Token,
};
use crate::model::family;
use crate::model::inputs::{check_pair, InputError, PairFacts};
use crate::prompt::layout::n_layout_tokens;
use crate::prompt::sequence::{self, LayoutTokens, Segment};
use crate::prompt::template::{self, Message, ThinkingPrompt};
use crate::prompt::video::{video_budget, VideoBudget};
use crate::session::options::{RunRequest, SessionOptions};
use crate::session::Pair;
use crate::vision::video::{OpenedVideo, VideoError};
use crate::vision::{load_image, ImageError, ImageFormat, LoadedImage, SliceError, SlicePlan};

/// Which implementation turns images into model input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Pipeline {
    /// Ours: Rust slicing and preprocessing, one projector call per slice.
    #[serde(rename = "native")]
    Native,
    /// llama.cpp's mtmd (fixed at 9 slices), kept as the reference.
    #[serde(rename = "llama.cpp")]
    LlamaCpp,
}

impl std::str::FromStr for Pipeline {
    type Err = String;

    /// `native` or `llama.cpp`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "native" => Ok(Pipeline::Native),
            "llama.cpp" => Ok(Pipeline::LlamaCpp),
            other => Err(format!(
                "{other:?} is not an image pipeline: use native or llama.cpp"
            )),
        }
    }
}

/// Everything a one-shot run needs: the files, how to load and run them, the question, and
/// which pipeline turns its images into model input.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RunConfig {
    /// The language model and projector files.
    pub pair: Pair,
    /// Threads, context, memory settings. With [`SessionOptions::low_mem`] (native pipeline
    /// only) the images are encoded with the projector alone, which is freed before the
    /// language model loads: the peak is the larger of the two instead of their sum.
    pub options: SessionOptions,
    /// The prompt, its images and the generation settings.
    pub request: RunRequest,
    /// Which implementation turns the images into model input.
    pub pipeline: Pipeline,
}

impl RunConfig {
    /// A run of `request` on `pair` with `options`, on the native pipeline.
    pub fn new(pair: Pair, options: SessionOptions, request: RunRequest) -> RunConfig {
        RunConfig {
            pair,
            options,
            request,
            pipeline: Pipeline::Native,
        }
    }

    /// The same run on another pipeline.
    pub fn pipeline(mut self, pipeline: Pipeline) -> RunConfig {
        self.pipeline = pipeline;
        self
    }
}

/// One earlier message of a conversation that a run continues ([`run_with_history`]): its
/// role, its text and, for a user message, the images attached to it (placed in its text like
/// [`RunRequest::images`] in the prompt).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryMessage {
    /// Who said it.
    pub role: template::Role,
    /// What was said, as typed or generated (image markers are placed by
    /// [`history_message`]).
    pub text: String,
    /// Image files attached to it; must be empty unless `role` is [`template::Role::User`].
    pub images: Vec<PathBuf>,
}

/// What a run reports while it works.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Event<'a> {
    /// Generated answer text, as it streams.
    Text(&'a str),
    /// Generated reasoning, as it streams (thinking models, before the answer; the
    /// `<think>` tags are not included).
    Thinking(&'a str),
    /// Image encoding starts: `total` projector calls ahead.
    EncodeStart {
        /// Projector calls the run will make: one per chunk (overview or slice) of every
        /// image.
        total: usize,
    },
    /// Video encoding starts: `frames` frames to decode and encode (after
    /// [`Event::EncodeStart`], which counts their projector calls).
    VideoStart {
        /// Frames the run takes.
        frames: usize,
    },
    /// One video frame was decoded and encoded.
    FrameEncoded {
        /// Frames finished so far, this one included (1..=`total`).
        done: usize,
        /// The `frames` of [`Event::VideoStart`].
        total: usize,
    },
    /// One projector call finished.
    ChunkEncoded {
        /// Projector calls finished so far, this one included (1..=`total`).
        done: usize,
        /// The `total` of [`Event::EncodeStart`].
        total: usize,
        /// Seconds this call took.
        secs: f64,
    },
}

/// Wall-clock figures of a run, in seconds (rates in tokens per second).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Timings {
    /// Loading the language model and the projector.
    pub load_secs: f64,
    /// Encoding the images with the projector.
    pub image_encode_secs: f64,
    /// Seconds of each projector call, in order (native pipeline).
    pub chunk_encode_secs: Vec<f64>,
    /// Language-model prefill of the prompt (text and image embeddings), encode excluded.
    pub prompt_secs: f64,
    /// Prompt positions (text tokens and image embeddings) per second of `prompt_secs`.
    pub prompt_tokens_per_sec: f64,
    /// From the start of the run to the first generated token.
    pub time_to_first_token_secs: f64,
    /// Sampling and decoding the generated tokens.
    pub generate_secs: f64,
    /// Generated tokens per second of `generate_secs`.
    pub generate_tokens_per_sec: f64,
    /// The whole run, from its start (checks included) to the end of generation.
    pub total_secs: f64,
}

/// The result of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunOutput {
    /// The pipeline that ran.
    pub pipeline: Pipeline,
    /// The answer, as streamed in [`Event::Text`] (a thinking model's reasoning apart).
    pub text: String,
    /// The reasoning of a thinking model, as streamed in [`Event::Thinking`]; `None` when the
    /// model did not think.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinking: Option<String>,
    /// Generated token ids.
    pub token_ids: Vec<Token>,
    /// Every position the prompt occupies: text tokens plus image embeddings.
    pub n_prompt_tokens: usize,
    /// Image embeddings fed to the model.
    pub n_image_tokens: usize,
    /// Text tokens that the image layout adds around the embeddings (`<image>`, `<slice>`, ...).
    pub n_image_layout_tokens: usize,
    /// Image chunks (overview plus slices, over all images).
    pub n_image_chunks: usize,
    /// Projector calls actually made.
    pub n_projector_calls: usize,
    /// `llama_decode` calls of the prompt prefill: the native pipeline packs text and image
    /// embeddings into full batches, llama.cpp's mtmd decodes each text run and image chunk on
    /// its own.
    pub prompt_decode_calls: usize,
    /// Why generation ended.
    pub stop: StopReason,
    /// Where the time went.
    pub timings: Timings,
    /// Whether the sequential low-memory mode ran.
    pub low_mem: bool,
    /// This process's peak resident memory at the end of the run (`VmHWM`; Linux only).
    pub peak_rss_bytes: Option<u64>,
    /// The llama.cpp CPU backend that ran: `native`, or the module a portable build chose.
    pub cpu_backend: CpuBackend,
    /// Whether llama.cpp was let repack the language model's weights ([`crate::ffi::repack`]).
    pub weight_repack: bool,
    /// The video's frames and what they cost, when the request had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub video: Option<VideoBudget>,
    /// Where the language model's memory is, per ggml device (llama.cpp's memory breakdown),
    /// when its layers are split over RPC workers ([`crate::plan::split`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<crate::ffi::DeviceUse>,
    /// Network traffic with the RPC workers, when there are some.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpc_traffic: Option<RpcTraffic>,
}

/// Payload bytes between this process and its RPC workers (both directions; the kernel's TCP
/// counters of ggml's connections).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RpcTraffic {
    /// Since the model loaded: weights, prompt and answer.
    pub total_bytes: u64,
    /// While the answer was generated.
    pub generate_bytes: u64,
    /// Per decode step of the answer (one token through the model): `generate_bytes` over the
    /// tokens generated after the first.
    pub bytes_per_token: Option<u64>,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The model or projector file failed the checks made before loading
    /// ([`check_pair`]).
    #[error(transparent)]
    Input(#[from] InputError),
    /// The video could not be opened, sampled or decoded.
    #[error(transparent)]
    Video(#[from] VideoError),
    /// A video and images in one request.
    #[error(
        "a video and images in one request: ask about the video alone (its frames are the images)"
    )]
    VideoWithImages,
    /// Image markers in a prompt about a video.
    #[error("the prompt has {0} image placeholders, but a video's frames go before the prompt: remove them")]
    VideoMarkers(usize),
    /// The video's frames do not fit the context.
    #[error("the video's {frames} frames take {tokens_per_frame} positions each, and the prompt needs {needed} positions in all, but the context holds {n_ctx}: {}", fewer_frames_hint(*fitting))]
    VideoTooLong {
        /// Frames taken.
        frames: usize,
        /// Positions per frame: embeddings, layout tokens and separator.
        tokens_per_frame: usize,
        /// Positions the prompt needs, one for the first generated token included.
        needed: usize,
        /// The context.
        n_ctx: u32,
        /// The largest frame cap that fits (0 when not even one frame does).
        fitting: usize,
    },
    /// llama.cpp's pipeline would slice the frames otherwise than asked.
    #[error("llama.cpp's pipeline slices each frame up to 9 times, which for these {width}x{height} frames differs from --frame-slices {frame_slices}: use the native pipeline or --frame-slices 9")]
    FrameSlicesNeedNative {
        /// Slices per frame asked for.
        frame_slices: u32,
        /// Frame width.
        width: u32,
        /// Frame height.
        height: u32,
    },
    /// An image file could not be read or decoded, or exceeds
    /// [`SessionOptions::max_image_pixels`].
    #[error(transparent)]
    Image(#[from] ImageError),
    /// No slice grid could be planned for an image.
    #[error("{}: {source}", path.display())]
    Slice {
        /// The image file.
        path: PathBuf,
        /// Why planning failed.
        source: SliceError,
    },
    /// llama.cpp could not load the language model (or its vocabulary).
    #[error(transparent)]
    ModelLoad(#[from] crate::ffi::ModelLoadError),
    /// The projector failed to load (native pipeline).
    #[error(transparent)]
    Clip(#[from] crate::ffi::ClipError),
    /// llama.cpp's mtmd failed to load, tokenize or evaluate (llama.cpp pipeline).
    #[error(transparent)]
    Mtmd(#[from] mtmd::MtmdError),
    /// Laying out, encoding or prefilling the prompt failed (native pipeline).
    #[error(transparent)]
    Native(#[from] NativeError),
    /// Creating the context or decoding a batch failed.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The prompt, plus one position for the first generated token, does not fit in
    /// [`SessionOptions::n_ctx`]; found before anything is decoded.
    #[error("the prompt needs {needed} positions ({n_text} text tokens + {n_image} image embeddings) but the context holds {n_ctx}")]
    ContextTooSmall {
        /// Positions needed: `n_text + n_image + 1`.
        needed: usize,
        /// Text tokens of the prompt, chat template and image layout tokens included.
        n_text: usize,
        /// Image embeddings of the prompt (`query_num` per chunk).
        n_image: usize,
        /// The context length, in positions.
        n_ctx: u32,
    },
    /// Thinking was asked for a model that cannot, or switched off where it cannot be.
    #[error(transparent)]
    Thinking(#[from] crate::prompt::template::ThinkingError),
    /// The user placed image markers in a prompt (or history message) but not one per
    /// attached image.
    #[error("the prompt has {markers} image placeholders but {images} images were given")]
    MarkerCount {
        /// Markers found in the text.
        markers: usize,
        /// Images attached to it.
        images: usize,
    },
    /// A history message of a role other than user has images attached.
    #[error("a {role} message of the history has {images} images attached; only user messages carry images")]
    HistoryImages {
        /// The message's role name ([`template::Role::as_str`]).
        role: &'static str,
        /// Images attached to it.
        images: usize,
    },
    /// [`SessionOptions::low_mem`] was asked for with [`Pipeline::LlamaCpp`].
    #[error("low-memory loading needs the native pipeline: llama.cpp's pipeline keeps the projector and the language model loaded together")]
    LowMemNeedsNative,
    /// [`RunRequest::max_slices`] is not 9 with [`Pipeline::LlamaCpp`]; holds the cap asked for.
    #[error("a cap of {0} slices needs the native pipeline: llama.cpp's pipeline always uses up to 9 slices")]
    MaxSlicesNeedsNative(u32),
    /// The prompt is empty and no image was given.
    #[error("no prompt and no image: nothing to run")]
    Nothing,
    /// llama.cpp returned no sampler chain for [`Generation::sampling`](crate::session::Generation::sampling).
    #[error("could not create the sampler")]
    Sampler,
    /// A session setting does not suit the pair (e.g. a context longer than the model's
    /// trained length); found before anything is loaded.
    #[error(transparent)]
    Settings(#[from] crate::session::options::SettingsError),
    /// A sampling setting is out of range ([`SamplerParams::check`](crate::ffi::SamplerParams::check)); found before any work.
    #[error(transparent)]
    Sampling(#[from] crate::ffi::SamplingError),
    /// After the prefill, llama.cpp had no logits for the last prompt position, so nothing can
    /// be sampled.
    #[error("llama.cpp gave no logits for the last prompt position")]
    NoLogits,
}

/// The prompt after checks: files, images and chat formatting.
pub(crate) struct Prepared {
    pub facts: PairFacts,
    pub images: Vec<LoadedImage>,
    /// The video, its frames not decoded yet (they are streamed through the encoder).
    pub video: Option<OpenedVideo>,
    /// The chat-formatted prompt, thinking suffix included.
    pub formatted: String,
    pub marker: String,
    /// Whether the model thinks, and how its output starts.
    pub thinking: ThinkingPrompt,
}

impl Prepared {
    /// The projector's image format with a cap of `max_slices`.
    pub fn format(&self, max_slices: u32) -> ImageFormat {
        ImageFormat::of_projector(&self.facts.projector, max_slices)
    }

    /// Whether anything goes through the projector.
    pub fn has_media(&self) -> bool {
        !self.images.is_empty() || self.video.is_some()
    }

    /// The video's frame format and the slice plan every frame shares.
    pub fn frame_plan(&self) -> Result<Option<(ImageFormat, SlicePlan)>, RunError> {
        let Some(v) = &self.video else {
            return Ok(None);
        };
        let format = self.format(v.max_slices);
        let plan = format
            .plan(v.width, v.height)
            .and_then(|plan| plan.check_resizable().map(|()| plan))
            .map_err(|source| RunError::Slice {
                path: v.source.path().to_path_buf(),
                source,
            })?;
        Ok(Some((format, plan)))
    }
}

/// The generated text cut into reasoning and answer as it streams ([`ThinkSplitter`]), both
/// kept for the output; a model that does not think gives answer only.
pub(crate) struct Split {
    splitter: Option<ThinkSplitter>,
    answer: String,
    thinking: String,
}

impl Split {
    pub(crate) fn new(t: ThinkingPrompt) -> Split {
        Split {
            splitter: t
                .on
                .then(|| ThinkSplitter::new(t.tags.0, t.tags.1, t.opened)),
            answer: String::new(),
            thinking: String::new(),
        }
    }

    pub(crate) fn push(&mut self, piece: &str, on_event: &mut dyn FnMut(Event<'_>)) {
        let Some(s) = &mut self.splitter else {
            self.answer.push_str(piece);
            on_event(Event::Text(piece));
            return;
        };
        let parts = s.push(piece);
        self.emit(parts, on_event);
    }

    fn emit(&mut self, parts: Vec<(Part, String)>, on_event: &mut dyn FnMut(Event<'_>)) {
        for (part, text) in parts {
            match part {
                Part::Thinking => {
                    self.thinking.push_str(&text);
                    on_event(Event::Thinking(&text));
                }
                Part::Answer => {
                    self.answer.push_str(&text);
                    on_event(Event::Text(&text));
                }
            }
        }
    }

    /// The answer and, for a thinking model, its reasoning.
    pub(crate) fn finish(
        mut self,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> (String, Option<String>) {
        let thinking = self.splitter.is_some();
        if let Some(mut s) = self.splitter.take() {
            let parts = s.finish();
            self.emit(parts, on_event);
        }
        (self.answer, thinking.then_some(self.thinking))
    }
}

/// Checks the files, loads the images and formats the prompt (no llama.cpp model loaded yet).
pub(crate) fn prepare(cfg: &RunConfig) -> Result<Prepared, RunError> {
    prepare_with_history(cfg, &[])
}

/// The chat message of one history entry (or of the final prompt): a user message gets its
/// images' markers placed by [`template::user_content`]; other roles are used verbatim, except
/// that a stray image marker in them (a model can generate any text) is removed, since it
/// would stand for an image.
pub fn history_message(
    version: crate::model::family::Version,
    m: &HistoryMessage,
    marker: &str,
) -> Result<Message, RunError> {
    if m.role == template::Role::User {
        let content = template::user_content(version, &m.text, m.images.len(), marker)
            .map_err(|(markers, images)| RunError::MarkerCount { markers, images })?;
        return Ok(Message {
            role: m.role,
            content,
        });
    }
    if !m.images.is_empty() {
        return Err(RunError::HistoryImages {
            role: m.role.as_str(),
            images: m.images.len(),
        });
    }
    Ok(Message {
        role: m.role,
        content: m.text.replace(marker, ""),
    })
}

fn prepare_with_history(cfg: &RunConfig, history: &[HistoryMessage]) -> Result<Prepared, RunError> {
    // Everything that can be checked is checked before llama.cpp sees it.
    let facts = check_pair(&cfg.pair.model, &cfg.pair.mmproj)?;
    cfg.options.check(&cfg.pair.model, &facts)?;
    prepare_prompt(cfg, facts, history)
}

/// Loads the images and formats the prompt of a pair whose files were checked into `facts`.
pub(crate) fn prepare_prompt(
    cfg: &RunConfig,
    facts: PairFacts,
    history: &[HistoryMessage],
) -> Result<Prepared, RunError> {
    let video_request = cfg.request.video.as_ref();
    if cfg.request.prompt.is_empty() && cfg.request.images.is_empty() && video_request.is_none() {
        return Err(RunError::Nothing);
    }
    if video_request.is_some()
        && (!cfg.request.images.is_empty() || history.iter().any(|m| !m.images.is_empty()))
    {
        return Err(RunError::VideoWithImages);
    }
    cfg.request.generation.sampling.check()?;
    if cfg.pipeline == Pipeline::LlamaCpp && cfg.request.max_slices != 9 {
        return Err(RunError::MaxSlicesNeedsNative(cfg.request.max_slices));
    }
    if cfg.pipeline == Pipeline::LlamaCpp && cfg.options.low_mem {
        return Err(RunError::LowMemNeedsNative);
    }
    let images: Vec<LoadedImage> = history
        .iter()
        .flat_map(|m| &m.images)
        .chain(&cfg.request.images)
        .map(|p| load_image(p, cfg.options.max_image_pixels))
        .collect::<Result<_, _>>()?;
    let marker = mtmd::default_marker();
    let version = facts.version;
    let mut messages: Vec<Message> = history
        .iter()
        .map(|m| history_message(version, m, &marker))
        .collect::<Result<_, _>>()?;
    let video = video_request
        .map(|v| v.open(&family::spec(version).video, cfg.options.max_image_pixels))
        .transpose()?;
    let content = match &video {
        Some(v) => {
            template::video_content(&cfg.request.prompt, v.n_frames(), &v.separator, &marker)
                .map_err(RunError::VideoMarkers)?
        }
        None => template::user_content(
            version,
            &cfg.request.prompt,
            cfg.request.images.len(),
            &marker,
        )
        .map_err(|(markers, images)| RunError::MarkerCount { markers, images })?,
    };
    messages.push(Message::user(content));
    let thinking = template::thinking_prompt(version, cfg.request.thinking)?;
    let mut formatted = template::format_chat(
        version,
        facts.model.chat_template.as_deref(),
        &messages,
        true,
    );
    formatted.push_str(thinking.suffix);
    Ok(Prepared {
        facts,
        images,
        video,
        formatted,
        marker,
        thinking,
    })
}

/// What the prefill of either pipeline produced.
pub(crate) struct Prefilled {
    n_past: i32,
    n_prompt_tokens: usize,
    n_image_tokens: usize,
    n_image_layout_tokens: usize,
    n_image_chunks: usize,
    n_projector_calls: usize,
    n_decode_calls: usize,
    load_secs: f64,
    encode_secs: Vec<f64>,
    prompt_secs: f64,
    thinking: ThinkingPrompt,
    video: Option<VideoBudget>,
}

/// Runs the model once; `on_event` receives the generated text as it streams and progress.
pub fn run(cfg: &RunConfig, on_event: &mut dyn FnMut(Event<'_>)) -> Result<RunOutput, RunError> {
    run_with_history(cfg, &[], on_event)
}

/// [`run`] continuing a conversation: `history` (earlier user and assistant messages, with
/// the images of each user message) comes before the prompt, everything formatted with the
/// chat template and prefilled from scratch. What `minicpmv chat` must reproduce turn by turn.
pub fn run_with_history(
    cfg: &RunConfig,
    history: &[HistoryMessage],
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<RunOutput, RunError> {
    let t_start = Instant::now();
    let prep = prepare_with_history(cfg, history)?;
    let ctx_params = cfg.options.context_params();
    let model;
    let mut load_secs;
    let (mut ctx, pre) = match (cfg.pipeline, cfg.options.low_mem) {
        (Pipeline::Native, false) => {
            let t_load = Instant::now();
            model = Model::load(&cfg.pair.model, cfg.options.load)?;
            load_secs = t_load.elapsed().as_secs_f64();
            let seq = native_sequence(cfg, &prep, &model)?;
            let enc = encode_native(cfg, &prep, seq.n_chunks, on_event)?;
            prefill_native(cfg, &model, ctx_params, seq, enc)?
        }
        (Pipeline::Native, true) => {
            // The prompt is laid out with the vocabulary alone (a few MB), the images are
            // encoded with the projector alone, and only then do the weights come in.
            let t_load = Instant::now();
            let vocab = Model::load_vocab_only(&cfg.pair.model)?;
            load_secs = t_load.elapsed().as_secs_f64();
            let seq = native_sequence(cfg, &prep, &vocab)?;
            drop(vocab);
            let enc = encode_native(cfg, &prep, seq.n_chunks, on_event)?;
            let t_load = Instant::now();
            model = Model::load(&cfg.pair.model, cfg.options.load)?;
            load_secs += t_load.elapsed().as_secs_f64();
            prefill_native(cfg, &model, ctx_params, seq, enc)?
        }
        (Pipeline::LlamaCpp, _) => {
            let t_load = Instant::now();
            model = Model::load(&cfg.pair.model, cfg.options.load)?;
            load_secs = t_load.elapsed().as_secs_f64();
            prefill_llama_cpp(cfg, &prep, &model, ctx_params)?
        }
    };
    load_secs += pre.load_secs;
    generate_and_report(cfg, &model, &mut ctx, pre, load_secs, t_start, on_event)
}

/// Generates after a prefill and assembles the run's output and timings (`t_start`: when the
/// run began; `load_secs`: its loading time, projector included).
pub(crate) fn generate_and_report(
    cfg: &RunConfig,
    model: &Model,
    ctx: &mut Context<'_>,
    pre: Prefilled,
    load_secs: f64,
    t_start: Instant,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<RunOutput, RunError> {
    let mut sampler =
        Sampler::new(&cfg.request.generation.sampling, model.n_vocab()).ok_or(RunError::Sampler)?;
    let mut split = Split::new(pre.thinking);
    let offloaded = cfg.options.load.offload.is_some();
    let traffic_before = offloaded.then(crate::ffi::rpc::traffic);
    let mut on_text = |s: &str| split.push(s, on_event);
    let gen = generate(
        model,
        ctx,
        &mut sampler,
        pre.n_past,
        cfg.request.generation.n_predict,
        cfg.request.generation.ignore_eos,
        &mut on_text,
    )?;
    let (text, thinking) = split.finish(on_event);
    let rpc_traffic = traffic_before.map(|before| {
        let after = crate::ffi::rpc::traffic();
        let generate_bytes = after.total() - before.total();
        let steps = gen.token_ids.len().saturating_sub(1) as u64;
        RpcTraffic {
            total_bytes: after.total(),
            generate_bytes,
            bytes_per_token: (steps > 0).then(|| generate_bytes / steps),
        }
    });
    let total_secs = t_start.elapsed().as_secs_f64();
    let n_gen = gen.token_ids.len();
    let timings = Timings {
        load_secs,
        image_encode_secs: pre.encode_secs.iter().sum(),
        chunk_encode_secs: pre.encode_secs,
        prompt_secs: pre.prompt_secs,
        prompt_tokens_per_sec: tokens_per_sec(pre.n_prompt_tokens, pre.prompt_secs),
        time_to_first_token_secs: gen
            .first_token_at
            .map_or(total_secs, |t| t.duration_since(t_start).as_secs_f64()),
        generate_secs: gen.secs,
        generate_tokens_per_sec: tokens_per_sec(n_gen, gen.secs),
        total_secs,
    };
    Ok(RunOutput {
        pipeline: cfg.pipeline,
        text,
        thinking,
        token_ids: gen.token_ids,
        n_prompt_tokens: pre.n_prompt_tokens,
        n_image_tokens: pre.n_image_tokens,
        n_image_layout_tokens: pre.n_image_layout_tokens,
        n_image_chunks: pre.n_image_chunks,
        n_projector_calls: pre.n_projector_calls,
        prompt_decode_calls: pre.n_decode_calls,
        stop: gen.stop,
        timings,
        low_mem: cfg.options.low_mem,
        peak_rss_bytes: crate::plan::system::process_rss().map(|(_, peak)| peak),
        cpu_backend: crate::ffi::cpu_backend(),
        weight_repack: model.repacked(),
        video: pre.video,
        devices: if offloaded {
            ctx.device_use()
        } else {
            Vec::new()
        },
        rpc_traffic,
    })
}

fn check_fits(n_text: usize, n_image: usize, n_ctx: u32) -> Result<(), RunError> {
    if n_text + n_image >= n_ctx as usize {
        return Err(RunError::ContextTooSmall {
            needed: n_text + n_image + 1,
            n_text,
            n_image,
            n_ctx,
        });
    }
    Ok(())
}

/// The model input of the native pipeline, laid out before any pixel is encoded.
pub(crate) struct NativeSequence {
    segments: Vec<Segment>,
    n_text: usize,
    n_image: usize,
    pub(crate) n_chunks: usize,
    n_layout: usize,
    thinking: ThinkingPrompt,
    video: Option<VideoBudget>,
}

/// Lays out the prompt (text tokens and image chunks) and checks it fits the context. Needs
/// only the vocabulary of `model`. A video's frames are laid out from its header alone: every
/// frame has the same size, so the same slice plan.
pub(crate) fn native_sequence(
    cfg: &RunConfig,
    prep: &Prepared,
    model: &Model,
) -> Result<NativeSequence, RunError> {
    let format = prep.format(cfg.request.max_slices);
    let mut plans = plan_images(&prep.images, &format)?;
    let frame = prep.frame_plan()?;
    if let (Some(v), Some((_, plan))) = (&prep.video, &frame) {
        plans.extend(std::iter::repeat_n(plan.clone(), v.n_frames()));
    }
    let layout = LayoutTokens::lookup(model)?;
    let plan_refs: Vec<&SlicePlan> = plans.iter().collect();
    let segments = sequence::build_sequence(
        model,
        &prep.formatted,
        &prep.marker,
        &plan_refs,
        &format,
        &layout,
    );
    let (mut n_text, mut n_image, mut n_chunks) = (0usize, 0usize, 0usize);
    for seg in &segments {
        match seg {
            Segment::Tokens(t) => n_text += t.len(),
            Segment::Chunk { n_tokens, .. } => {
                n_image += n_tokens;
                n_chunks += 1;
            }
        }
    }
    let n_layout: usize = plans
        .iter()
        .map(|p| n_layout_tokens(format.style(), p.grid))
        .sum();
    let video = match (&prep.video, &frame) {
        (Some(v), Some((frame_format, _))) => Some(run_video_budget(
            prep,
            v,
            frame_format,
            n_text + n_image,
            cfg.options.n_ctx,
        )?),
        _ => None,
    };
    check_fits(n_text, n_image, cfg.options.n_ctx)?;
    Ok(NativeSequence {
        segments,
        n_text,
        n_image,
        n_chunks,
        n_layout,
        thinking: prep.thinking,
        video,
    })
}

/// What to change when a video does not fit: the `--max-frames` that fits, if any does.
fn fewer_frames_hint(fitting: usize) -> String {
    if fitting == 0 {
        "not even one frame fits: take fewer slices per frame (--frame-slices) or a longer context (--ctx-size)".into()
    } else {
        format!("take fewer frames (--max-frames {fitting}), fewer slices per frame (--frame-slices), or a longer context (--ctx-size)")
    }
}

/// The video's budget in a run of `n_positions` (the whole prompt, frames included): the same
/// [`video_budget`] as `plan`, with the prompt's own positions as the reserve; a video that
/// does not fit is an error naming the frame cap that would.
fn run_video_budget(
    prep: &Prepared,
    v: &OpenedVideo,
    frame_format: &ImageFormat,
    n_positions: usize,
    n_ctx: u32,
) -> Result<VideoBudget, RunError> {
    let per_frame = video_budget(v, frame_format, n_ctx, 0, 0)
        .map_err(|source| RunError::Slice {
            path: v.source.path().to_path_buf(),
            source,
        })?
        .positions_per_frame;
    let reserve = n_positions.saturating_sub(v.n_frames() * per_frame);
    let budget = video_budget(v, frame_format, n_ctx, reserve, prep.facts.projector.n_embd)
        .map_err(|source| RunError::Slice {
            path: v.source.path().to_path_buf(),
            source,
        })?;
    if !budget.fits {
        return Err(RunError::VideoTooLong {
            frames: budget.frames,
            tokens_per_frame: budget.positions_per_frame,
            needed: n_positions + 1,
            n_ctx,
            fitting: budget.fitting_max_frames,
        });
    }
    Ok(budget)
}

/// The images' embeddings and what making them cost.
pub(crate) struct Encoded {
    embeddings: Vec<ImageEmbeddings>,
    encode_secs: Vec<f64>,
    n_projector_calls: usize,
    /// Loading the projector, when this run loaded it.
    load_secs: f64,
}

impl Encoded {
    /// A prompt without images: nothing encoded, no projector loaded.
    pub(crate) fn nothing() -> Encoded {
        Encoded {
            embeddings: Vec::new(),
            encode_secs: Vec::new(),
            n_projector_calls: 0,
            load_secs: 0.0,
        }
    }
}

fn encode_native(
    cfg: &RunConfig,
    prep: &Prepared,
    n_chunks: usize,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Encoded, RunError> {
    if !prep.has_media() {
        // A text-only prompt never loads the projector.
        return Ok(Encoded::nothing());
    }
    let t_load = Instant::now();
    let mut projector = ClipProjector::load(
        &cfg.pair.mmproj,
        cfg.options.warmup,
        cfg.options.projector_attention,
    )?;
    let load_secs = t_load.elapsed().as_secs_f64();
    let encoded = encode_with(&mut projector, cfg, prep, n_chunks, on_event)?;
    // The projector is freed here, before the language model's context and KV cache exist,
    // and the heap it and the preprocessed slices grew is handed back.
    drop(projector);
    crate::ffi::trim_heap();
    Ok(Encoded {
        load_secs,
        ..encoded
    })
}

/// Encodes every image of `prep` with a loaded projector (its load not counted), reporting
/// each projector call through `on_event` as it finishes.
pub(crate) fn encode_with(
    projector: &mut ClipProjector,
    cfg: &RunConfig,
    prep: &Prepared,
    n_chunks: usize,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Encoded, RunError> {
    let calls_before = projector.n_encode_calls();
    on_event(Event::EncodeStart { total: n_chunks });
    let mut done = 0usize;
    let mut embeddings: Vec<ImageEmbeddings> = Vec::with_capacity(prep.images.len());
    let mut encode_secs = Vec::with_capacity(n_chunks);
    // Each projector call of an image or frame: timed and reported.
    let mut record = |emb: &ImageEmbeddings, on_event: &mut dyn FnMut(Event<'_>)| {
        for &secs in &emb.encode_secs {
            done += 1;
            encode_secs.push(secs);
            on_event(Event::ChunkEncoded {
                done,
                total: n_chunks,
                secs,
            });
        }
    };
    let format = prep.format(cfg.request.max_slices);
    for img in &prep.images {
        let emb = encode::encode_image(
            projector,
            img,
            &format,
            cfg.options.n_threads,
            &mut |_, _| {},
        )?;
        record(&emb, on_event);
        embeddings.push(emb);
    }
    if let (Some(v), Some((frame_format, _))) = (&prep.video, prep.frame_plan()?) {
        let frames = v.n_frames();
        on_event(Event::VideoStart { frames });
        for (f, img) in v.source.frames(&v.sample.indices)?.enumerate() {
            // Decoded, encoded and dropped: one frame's pixels at a time.
            let img = img?;
            let emb = encode::encode_image(
                projector,
                &img,
                &frame_format,
                cfg.options.n_threads,
                &mut |_, _| {},
            )?;
            drop(img);
            record(&emb, on_event);
            embeddings.push(emb);
            on_event(Event::FrameEncoded {
                done: f + 1,
                total: frames,
            });
        }
        let got = embeddings.len() - prep.images.len();
        if got != frames {
            return Err(VideoError::Decode {
                path: v.source.path().to_path_buf(),
                index: got,
                reason: format!("the video gave {got} of the {frames} frames taken"),
            }
            .into());
        }
    }
    Ok(Encoded {
        embeddings,
        encode_secs,
        n_projector_calls: projector.n_encode_calls() - calls_before,
        load_secs: 0.0,
    })
}

pub(crate) fn prefill_native<'m>(
    cfg: &RunConfig,
    model: &'m Model,
    ctx_params: ContextParams,
    seq: NativeSequence,
    enc: Encoded,
) -> Result<(Context<'m>, Prefilled), RunError> {
    let mut ctx = Context::new(model, ctx_params)?;
    let t_prefill = Instant::now();
    let emb_refs: Vec<&ImageEmbeddings> = enc.embeddings.iter().collect();
    let prefill = if cfg.request.per_chunk_prefill {
        prefill::prefill_per_segment
    } else {
        prefill::prefill
    };
    let done = prefill(
        &mut ctx,
        &seq.segments,
        &emb_refs,
        model.n_embd(),
        cfg.options.effective_batch() as usize,
        0,
    )?;
    let prompt_secs = t_prefill.elapsed().as_secs_f64();
    Ok((
        ctx,
        Prefilled {
            n_past: done.n_past,
            n_prompt_tokens: seq.n_text + seq.n_image,
            n_image_tokens: seq.n_image,
            n_image_layout_tokens: seq.n_layout,
            n_image_chunks: seq.n_chunks,
            n_projector_calls: enc.n_projector_calls,
            n_decode_calls: done.n_decode_calls,
            load_secs: enc.load_secs,
            encode_secs: enc.encode_secs,
            prompt_secs,
            thinking: seq.thinking,
            video: seq.video,
        },
    ))
}

fn prefill_llama_cpp<'m>(
    cfg: &RunConfig,
    prep: &Prepared,
    model: &'m Model,
    ctx_params: ContextParams,
) -> Result<(Context<'m>, Prefilled), RunError> {
    let t_load = Instant::now();
    let mut mtmd = Mtmd::load(
        &cfg.pair.mmproj,
        model,
        cfg.options.n_threads,
        cfg.options.warmup,
        cfg.options.projector_attention,
    )?;
    let load_secs = t_load.elapsed().as_secs_f64();
    // mtmd slices the images itself (up to 9 slices); planning them here first gives an error
    // that names the image instead of mtmd's return code.
    plan_images(&prep.images, &prep.format(cfg.request.max_slices))?;
    // The reference path: the sampled frames, all decoded, given to mtmd as images.
    let (frames, video) = reference_frames(prep, cfg.options.n_ctx)?;
    let all: Vec<LoadedImage> = prep.images.iter().cloned().chain(frames).collect();
    let rgb = mtmd_images(&all);
    let chunks = mtmd.tokenize(&prep.formatted, &rgb, true)?;
    let (mut n_text, mut n_image, mut n_chunks) = (0usize, 0usize, 0usize);
    // mtmd's helper decodes each chunk on its own, in batches of n_batch.
    let mut n_decode_calls = 0usize;
    let n_batch = (cfg.options.effective_batch() as usize).max(1);
    for info in chunks.infos() {
        match info {
            ChunkInfo::Text(t) => {
                n_text += t.len();
                n_decode_calls += t.len().div_ceil(n_batch);
            }
            ChunkInfo::Image { n_pos, n_tokens } => {
                n_image += usize::try_from(n_pos).unwrap_or(0);
                n_chunks += 1;
                n_decode_calls += n_tokens.div_ceil(n_batch);
            }
        }
    }
    // Text tokens of the prompt itself, tokenized part by part as mtmd does; the rest of the
    // text chunks is image layout.
    let n_user_text: usize = prep
        .formatted
        .split(prep.marker.as_str())
        .map(|part| model.tokenize(part, false, true).len())
        .sum::<usize>()
        + usize::from(model.add_bos() && model.bos().is_some())
        + usize::from(model.add_eos() && model.eos().is_some());
    check_fits(n_text, n_image, cfg.options.n_ctx)?;
    let mut ctx = Context::new(model, ctx_params)?;
    let t_prefill = Instant::now();
    let (n_past, encode_secs) =
        mtmd.eval(&mut ctx, &chunks, 0, cfg.options.effective_batch() as i32)?;
    let prompt_secs =
        (t_prefill.elapsed().as_secs_f64() - encode_secs.iter().sum::<f64>()).max(0.0);
    Ok((
        ctx,
        Prefilled {
            n_past,
            n_prompt_tokens: n_text + n_image,
            n_image_tokens: n_image,
            n_image_layout_tokens: n_text.saturating_sub(n_user_text),
            n_image_chunks: n_chunks,
            n_projector_calls: n_chunks,
            n_decode_calls,
            load_secs,
            encode_secs,
            prompt_secs,
            thinking: prep.thinking,
            video,
        },
    ))
}

/// The video's sampled frames, decoded, for llama.cpp's pipeline, which slices each up to 9
/// times: refused when that differs from the frame slices asked for.
fn reference_frames(
    prep: &Prepared,
    n_ctx: u32,
) -> Result<(Vec<LoadedImage>, Option<VideoBudget>), RunError> {
    let (Some(v), Some((frame_format, plan))) = (&prep.video, prep.frame_plan()?) else {
        return Ok((Vec::new(), None));
    };
    let nine = prep.format(crate::session::options::DEFAULT_MAX_SLICES);
    if nine.plan(v.width, v.height).ok().map(|p| p.grid) != Some(plan.grid) {
        return Err(RunError::FrameSlicesNeedNative {
            frame_slices: v.max_slices,
            width: v.width,
            height: v.height,
        });
    }
    let frames = v
        .source
        .frames(&v.sample.indices)?
        .collect::<Result<Vec<_>, _>>()?;
    let budget = video_budget(v, &frame_format, n_ctx, 0, prep.facts.projector.n_embd).map_err(
        |source| RunError::Slice {
            path: v.source.path().to_path_buf(),
            source,
        },
    )?;
    Ok((frames, Some(budget)))
}

/// The slice plan of every image, the error naming the image that cannot be planned.
pub(crate) fn plan_images(
    images: &[LoadedImage],
    format: &ImageFormat,
) -> Result<Vec<SlicePlan>, RunError> {
    images
        .iter()
        .map(|img| {
            format
                .plan(img.width, img.height)
                .and_then(|plan| plan.check_resizable().map(|()| plan))
                .map_err(|source| RunError::Slice {
                    path: img.path.clone(),
                    source,
                })
        })
        .collect()
}

/// The images as llama.cpp's mtmd takes them.
pub(crate) fn mtmd_images(images: &[LoadedImage]) -> Vec<RgbImage<'_>> {
    images
        .iter()
        .map(|i| RgbImage {
            width: i.width,
            height: i.height,
            data: &i.rgb,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::Pipeline;

    #[test]
    fn pipelines_parse_from_their_json_names() {
        for p in [Pipeline::Native, Pipeline::LlamaCpp] {
            let name = serde_json::to_value(p).unwrap();
            assert_eq!(name.as_str().unwrap().parse::<Pipeline>(), Ok(p));
        }
        assert!("mtmd".parse::<Pipeline>().unwrap_err().contains("\"mtmd\""));
    }
}
