//! A loaded model pair that serves many runs: the library's entry point.
//!
//! ```no_run
//! use minicpmv::session::{Pair, RunRequest, SessionOptions};
//!
//! let mut session = Pair::open("model.gguf", "mmproj.gguf", SessionOptions::default())?;
//! let request = RunRequest::new("Describe this image.").image("photo.jpg");
//! let out = session.run(&request, &mut |event| {
//!     if let minicpmv::session::run::Event::Text(t) = event {
//!         print!("{t}");
//!     }
//! })?;
//! println!("\n{} tokens", out.token_ids.len());
//! # Ok::<(), minicpmv::session::run::RunError>(())
//! ```
//!
//! [`Pair::open`] checks both files with our own GGUF reader (llama.cpp aborts the process on
//! many malformed files) and only then loads the language model. A [`Session`] cannot be made
//! without those checks. Every [`Session::run`] reuses the loaded model; the projector is loaded
//! at the first run with an image and kept. Each run gets a fresh context, so runs do not see
//! each other. A run gives the same tokens as [`crate::session::run::run`] with the same settings (the
//! native pipeline; tests/integration/session.rs checks it).

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::ffi::{ClipProjector, KvType, LoadParams, Model, ProjectorAttention, SamplerParams};
use crate::model::inputs::{check_pair, PairFacts};
use crate::session::run::{self, Event, Pipeline, RunConfig, RunError, RunOutput};
use crate::vision::DEFAULT_MAX_PIXELS;

/// How a [`Session`] loads and runs its pair. Start from [`SessionOptions::default`] (the CLI's
/// defaults) and change what you need with the builder methods.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SessionOptions {
    /// CPU threads for the language model and the projector.
    pub n_threads: i32,
    /// Context length in tokens.
    pub n_ctx: u32,
    /// Largest batch per decode call (at most `n_ctx`).
    pub n_batch: u32,
    /// Element type of the KV cache.
    pub kv_type: KvType,
    /// How the language model's weights are loaded (mmap, repack, ...).
    pub load: LoadParams,
    /// Run llama.cpp's warm-up (compute-graph reservation) when the projector loads.
    pub warmup: bool,
    /// Attention kernel of the projector's vision tower.
    pub projector_attention: ProjectorAttention,
    /// Largest image accepted, in pixels (checked before decoding the pixels).
    pub max_image_pixels: u64,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            n_threads: crate::plan::system::performance_cores() as i32,
            n_ctx: 4096,
            n_batch: 512,
            kv_type: KvType::default(),
            load: LoadParams::default(),
            warmup: true,
            projector_attention: ProjectorAttention::Flash,
            max_image_pixels: DEFAULT_MAX_PIXELS,
        }
    }
}

impl SessionOptions {
    /// CPU threads.
    pub fn threads(mut self, n: i32) -> Self {
        self.n_threads = n;
        self
    }

    /// Context length in tokens.
    pub fn context(mut self, n_ctx: u32) -> Self {
        self.n_ctx = n_ctx;
        self
    }

    /// Largest batch per decode call.
    pub fn batch(mut self, n_batch: u32) -> Self {
        self.n_batch = n_batch;
        self
    }

    /// Element type of the KV cache.
    pub fn kv_type(mut self, kv_type: KvType) -> Self {
        self.kv_type = kv_type;
        self
    }

    /// How the language model's weights are loaded.
    pub fn load(mut self, load: LoadParams) -> Self {
        self.load = load;
        self
    }

    /// Whether the projector runs llama.cpp's warm-up at load.
    pub fn warmup(mut self, warmup: bool) -> Self {
        self.warmup = warmup;
        self
    }

    /// Attention kernel of the projector's vision tower.
    pub fn projector_attention(mut self, attention: ProjectorAttention) -> Self {
        self.projector_attention = attention;
        self
    }

    /// Largest image accepted, in pixels.
    pub fn max_image_pixels(mut self, pixels: u64) -> Self {
        self.max_image_pixels = pixels;
        self
    }
}

/// One question to a [`Session`]: a prompt, its images and how to generate.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RunRequest {
    /// The user's text. Images without a marker in it go before the text.
    pub prompt: String,
    /// Image files, in order.
    pub images: Vec<PathBuf>,
    /// Tokens to generate at most.
    pub n_predict: usize,
    /// Keep generating after an end-of-generation token (exactly `n_predict` tokens).
    pub ignore_eos: bool,
    /// Sampling; a temperature of 0 gives greedy tokens.
    pub sampling: SamplerParams,
    /// Slices per image at most (1..=9; 1 = overview only).
    pub max_slices: u32,
}

impl Default for RunRequest {
    fn default() -> Self {
        RunRequest {
            prompt: String::new(),
            images: Vec::new(),
            n_predict: 256,
            ignore_eos: false,
            sampling: SamplerParams::default(),
            max_slices: 9,
        }
    }
}

impl RunRequest {
    /// A request with this prompt and the defaults otherwise.
    pub fn new(prompt: impl Into<String>) -> Self {
        RunRequest {
            prompt: prompt.into(),
            ..RunRequest::default()
        }
    }

    /// Adds an image file.
    pub fn image(mut self, path: impl Into<PathBuf>) -> Self {
        self.images.push(path.into());
        self
    }

    /// Tokens to generate at most.
    pub fn max_tokens(mut self, n: usize) -> Self {
        self.n_predict = n;
        self
    }

    /// Keep generating after an end-of-generation token.
    pub fn ignore_eos(mut self, ignore: bool) -> Self {
        self.ignore_eos = ignore;
        self
    }

    /// Sampling settings.
    pub fn sampling(mut self, sampling: SamplerParams) -> Self {
        self.sampling = sampling;
        self
    }

    /// Slices per image at most.
    pub fn max_slices(mut self, n: u32) -> Self {
        self.max_slices = n;
        self
    }
}

/// A language model and its projector, named by their files: [`Pair::open`] is how a
/// [`Session`] is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    /// The language-model GGUF.
    pub model: PathBuf,
    /// The projector (mmproj) GGUF.
    pub mmproj: PathBuf,
}

impl Pair {
    /// Checks both files, then loads the language model. Errors name the file and what is
    /// wrong with it; nothing reaches llama.cpp before the checks pass.
    pub fn open(
        model: impl AsRef<Path>,
        mmproj: impl AsRef<Path>,
        options: SessionOptions,
    ) -> Result<Session, RunError> {
        let pair = Pair {
            model: model.as_ref().to_path_buf(),
            mmproj: mmproj.as_ref().to_path_buf(),
        };
        let facts = check_pair(&pair.model, &pair.mmproj)?;
        let t_load = Instant::now();
        let model = Model::load(&pair.model, options.load)?;
        Ok(Session {
            pair,
            facts,
            options,
            model,
            projector: None,
            pending_load_secs: t_load.elapsed().as_secs_f64(),
        })
    }
}

/// A loaded pair. See the module docs.
pub struct Session {
    pair: Pair,
    facts: PairFacts,
    options: SessionOptions,
    model: Model,
    /// Loaded at the first run with an image, then kept.
    projector: Option<ClipProjector>,
    /// Loading time not yet reported: the model's, counted in the first run's `load_secs`.
    pending_load_secs: f64,
}

impl Session {
    /// The files this session runs.
    pub fn pair(&self) -> &Pair {
        &self.pair
    }

    /// What the checks found in the files (version, dimensions, chat template).
    pub fn facts(&self) -> &PairFacts {
        &self.facts
    }

    /// The options it was opened with.
    pub fn options(&self) -> &SessionOptions {
        &self.options
    }

    /// Runs one request on the loaded model; `on_event` receives the generated text as it
    /// streams and the encode progress. The run starts from an empty context.
    pub fn run(
        &mut self,
        request: &RunRequest,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<RunOutput, RunError> {
        let t_start = Instant::now();
        let cfg = self.run_config(request);
        let prep = run::prepare_prompt(&cfg, self.facts.clone(), &[])?;
        let seq = run::native_sequence(&cfg, &prep, &self.model)?;
        let mut load_secs = 0.0;
        let mut enc = run::Encoded::nothing();
        if !prep.images.is_empty() {
            let t_load = Instant::now();
            let projector = match &mut self.projector {
                Some(p) => p,
                slot @ None => slot.insert(ClipProjector::load(
                    &self.pair.mmproj,
                    self.options.warmup,
                    self.options.projector_attention,
                )?),
            };
            load_secs += t_load.elapsed().as_secs_f64();
            enc = run::encode_with(projector, &cfg, &prep, seq.n_chunks, on_event)?;
        }
        // The model's own load is reported by the first run that gets this far.
        load_secs += std::mem::take(&mut self.pending_load_secs);
        let (mut ctx, pre) =
            run::prefill_native(&cfg, &self.model, cfg.context_params(), seq, enc)?;
        run::generate_and_report(
            &cfg,
            &self.model,
            &mut ctx,
            pre,
            load_secs,
            t_start,
            on_event,
        )
    }

    /// The one-run configuration of `request` on this session's pair and options.
    fn run_config(&self, request: &RunRequest) -> RunConfig {
        let o = &self.options;
        RunConfig {
            model: self.pair.model.clone(),
            mmproj: self.pair.mmproj.clone(),
            images: request.images.clone(),
            prompt: request.prompt.clone(),
            n_predict: request.n_predict,
            ignore_eos: request.ignore_eos,
            sampling: request.sampling,
            n_threads: o.n_threads,
            n_ctx: o.n_ctx,
            n_batch: o.n_batch.min(o.n_ctx),
            max_image_pixels: o.max_image_pixels,
            max_slices: request.max_slices,
            pipeline: Pipeline::Native,
            warmup: o.warmup,
            projector_attention: o.projector_attention,
            load: o.load,
            kv_type: o.kv_type,
            low_mem: false,
            per_chunk_prefill: false,
        }
    }
}
