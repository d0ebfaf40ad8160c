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
//! at the first run with an image and kept (with [`SessionOptions::low_mem`], freed after each
//! encode). Each run gets a fresh context, so runs do not see each other. A run gives the same
//! tokens as [`crate::session::run::run`] with the same settings (the native pipeline;
//! crates/cli/tests/session.rs checks it). [`Session::chat`] starts a conversation on the same
//! loaded model, reusing its KV cache from turn to turn.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::ffi::{ClipProjector, Model};
use crate::model::inputs::{check_pair, PairFacts};
use crate::session::chat::{ChatConfig, ChatError, ChatSession};
use crate::session::options::{RunRequest, SessionOptions};
use crate::session::run::{self, Event, RunConfig, RunError, RunOutput};

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
    /// The pair of these two files (nothing is read yet).
    pub fn new(model: impl Into<PathBuf>, mmproj: impl Into<PathBuf>) -> Pair {
        Pair {
            model: model.into(),
            mmproj: mmproj.into(),
        }
    }

    /// Checks both files, then loads the language model. Errors name the file and what is
    /// wrong with it; nothing reaches llama.cpp before the checks pass.
    pub fn open(
        model: impl AsRef<Path>,
        mmproj: impl AsRef<Path>,
        options: SessionOptions,
    ) -> Result<Session, RunError> {
        let pair = Pair::new(model.as_ref(), mmproj.as_ref());
        let facts = check_pair(&pair.model, &pair.mmproj)?;
        options.check(&pair.model, &facts)?;
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
        let cfg = RunConfig::new(self.pair.clone(), self.options.clone(), request.clone());
        let prep = run::prepare_prompt(&cfg, self.facts.clone(), &[])?;
        let seq = run::native_sequence(&cfg, &prep, &self.model)?;
        let mut load_secs = 0.0;
        let mut enc = run::Encoded::nothing();
        if prep.has_media() {
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
            if self.options.low_mem {
                // Resident only while it encodes: freed before the prefill's buffers exist.
                self.projector = None;
                crate::ffi::trim_heap();
            }
        }
        // The model's own load is reported by the first run that gets this far.
        load_secs += std::mem::take(&mut self.pending_load_secs);
        let (mut ctx, pre) =
            run::prefill_native(&cfg, &self.model, cfg.options.context_params(), seq, enc)?;
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

    /// Starts a conversation on the loaded model: each [`ChatSession::ask`] streams its
    /// answer, and the KV cache is reused from one turn to the next. The chat uses this
    /// session's projector (loaded at its first image, if not yet) and options; it borrows the
    /// session until it is dropped.
    pub fn chat(&mut self, config: ChatConfig) -> Result<ChatSession<'_>, ChatError> {
        ChatSession::new(
            &self.model,
            &mut self.projector,
            &self.pair,
            &self.facts,
            &self.options,
            config,
        )
    }
}
