//! The settings of sessions, runs and chats, each in one type: how a pair is loaded and run
//! ([`SessionOptions`]), how an answer is generated ([`Generation`]) and what one question asks
//! ([`RunRequest`]). They start from `Default` (the CLI's defaults) and change with builder
//! methods; all are `#[non_exhaustive]`, so new settings do not break callers.

use std::path::PathBuf;

use crate::ffi::{ContextParams, KvType, LoadParams, ProjectorAttention, SamplerParams};
use crate::model::inputs::PairFacts;
use crate::vision::video::VideoRequest;
use crate::vision::DEFAULT_MAX_PIXELS;

/// Default context length in tokens ([`SessionOptions::n_ctx`], the CLI's `-c`).
pub const DEFAULT_N_CTX: u32 = 4096;
/// Default batch per decode call ([`SessionOptions::n_batch`], the CLI's `-b`).
pub const DEFAULT_N_BATCH: u32 = 512;
/// Default answer length ([`Generation::n_predict`], the CLI's `-n`).
pub const DEFAULT_N_PREDICT: usize = 256;
/// Default and largest slice cap ([`RunRequest::max_slices`], the CLI's `--max-slices`):
/// llama.cpp's own.
pub const DEFAULT_MAX_SLICES: u32 = 9;

/// How a [`crate::Session`] (or a one-shot run) loads and runs its pair.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SessionOptions {
    /// CPU threads for the language model and the projector.
    pub n_threads: i32,
    /// Context length in tokens (a chat's whole conversation must fit).
    pub n_ctx: u32,
    /// Largest batch per decode call (capped at `n_ctx` where used).
    pub n_batch: u32,
    /// Element type of the KV cache.
    pub kv_type: KvType,
    /// How the language model's weights are loaded (mmap, mlock, repack, ...).
    pub load: LoadParams,
    /// Run llama.cpp's warm-up (compute-graph reservation) when the projector loads.
    pub warmup: bool,
    /// Attention kernel of the projector's vision tower.
    pub projector_attention: ProjectorAttention,
    /// Largest image accepted, in pixels (width x height from the file header); larger images
    /// fail before any pixel is decoded.
    pub max_image_pixels: u64,
    /// Keep the projector resident only while it encodes. A one-shot run encodes the images
    /// with the projector alone, frees it and only then loads the language model; a
    /// [`crate::Session`] frees the projector after each image it encodes.
    pub low_mem: bool,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            n_threads: crate::plan::system::performance_cores() as i32,
            n_ctx: DEFAULT_N_CTX,
            n_batch: DEFAULT_N_BATCH,
            kv_type: KvType::default(),
            load: LoadParams::default(),
            warmup: false,
            projector_attention: ProjectorAttention::default(),
            max_image_pixels: DEFAULT_MAX_PIXELS,
            low_mem: false,
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

    /// Keep the projector resident only while it encodes.
    pub fn low_mem(mut self, low_mem: bool) -> Self {
        self.low_mem = low_mem;
        self
    }

    /// The batch actually used: `n_batch`, at most `n_ctx`.
    pub fn effective_batch(&self) -> u32 {
        self.n_batch.min(self.n_ctx)
    }

    /// The language-model context these options create.
    pub fn context_params(&self) -> ContextParams {
        ContextParams {
            n_ctx: self.n_ctx,
            n_batch: self.effective_batch(),
            n_threads: self.n_threads,
            n_threads_batch: self.n_threads,
            kv_type: self.kv_type,
        }
    }
}

/// Most threads accepted (the CLI's `-t` bound).
pub const MAX_THREADS: i32 = 1024;
/// Shortest context accepted, in tokens (the CLI's `-c` bound).
pub const MIN_N_CTX: u32 = 16;

/// A [`SessionOptions`] value that cannot work with the pair it is used on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// The context is longer than the language model's `{arch}.context_length`: the model was
    /// never trained there, and the KV cache would grow with it (a context of 2^31 tokens
    /// asks for terabytes).
    #[error("a context of {n_ctx} tokens is longer than the {n_ctx_train} tokens the language model {} was trained for", model.display())]
    ContextTooLong {
        /// [`SessionOptions::n_ctx`].
        n_ctx: u32,
        /// The model's trained context length.
        n_ctx_train: u64,
        /// The language model file.
        model: PathBuf,
    },
    /// The context is shorter than [`MIN_N_CTX`].
    #[error("a context of {n_ctx} tokens is too short; it must be at least {MIN_N_CTX}")]
    ContextTooShort {
        /// [`SessionOptions::n_ctx`].
        n_ctx: u32,
    },
    /// [`SessionOptions::n_threads`] is outside 1..=[`MAX_THREADS`].
    #[error("{n_threads} threads: the thread count must be 1 to {MAX_THREADS}")]
    Threads {
        /// The value given.
        n_threads: i32,
    },
    /// [`SessionOptions::n_batch`] is 0.
    #[error("a batch of 0 tokens: the batch must be at least 1")]
    Batch,
}

impl SessionOptions {
    /// Checks these options against a checked pair, before anything is loaded: thread count,
    /// batch, and a context within the language model's trained length.
    pub fn check(&self, model: &std::path::Path, facts: &PairFacts) -> Result<(), SettingsError> {
        if !(1..=MAX_THREADS).contains(&self.n_threads) {
            return Err(SettingsError::Threads {
                n_threads: self.n_threads,
            });
        }
        if self.n_batch == 0 {
            return Err(SettingsError::Batch);
        }
        if self.n_ctx < MIN_N_CTX {
            return Err(SettingsError::ContextTooShort { n_ctx: self.n_ctx });
        }
        if u64::from(self.n_ctx) > facts.model.n_ctx_train {
            return Err(SettingsError::ContextTooLong {
                n_ctx: self.n_ctx,
                n_ctx_train: facts.model.n_ctx_train,
                model: model.to_path_buf(),
            });
        }
        Ok(())
    }
}

/// How an answer is generated: its length and its sampling.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Generation {
    /// Tokens to generate at most.
    pub n_predict: usize,
    /// Keep generating after an end-of-generation token (exactly `n_predict` tokens).
    pub ignore_eos: bool,
    /// Sampling settings of the llama.cpp sampler chain; a temperature of 0 is greedy.
    pub sampling: SamplerParams,
}

impl Default for Generation {
    fn default() -> Self {
        Generation {
            n_predict: DEFAULT_N_PREDICT,
            ignore_eos: false,
            sampling: SamplerParams::default(),
        }
    }
}

impl Generation {
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
}

/// One question: a prompt, its images, and how to answer it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RunRequest {
    /// The user's text, placed in the chat template. It may contain image markers
    /// (`<__media__>`), one per image in order; images without a marker go before the text.
    pub prompt: String,
    /// Image files, in order.
    pub images: Vec<PathBuf>,
    /// Length and sampling of the answer.
    pub generation: Generation,
    /// Slices per image at most (1..=9; 1 = overview only). llama.cpp's pipeline only does 9.
    pub max_slices: u32,
    /// Decode the prompt as llama.cpp's mtmd does, one decode call per text run and image
    /// chunk, instead of packing it into full batches. Slower; gives llama.cpp's numerics bit
    /// for bit.
    pub per_chunk_prefill: bool,
    /// Whether a thinking model reasons before answering (MiniCPM-V 4.5, 4.6-Thinking);
    /// `None`: the model's default. Asking a model that cannot is an error.
    pub thinking: Option<bool>,
    /// A video to ask about (not together with images): its sampled frames go before the
    /// prompt, each laid out as an image.
    pub video: Option<VideoRequest>,
}

impl Default for RunRequest {
    fn default() -> Self {
        RunRequest {
            prompt: String::new(),
            images: Vec::new(),
            generation: Generation::default(),
            max_slices: DEFAULT_MAX_SLICES,
            per_chunk_prefill: false,
            thinking: None,
            video: None,
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

    /// Adds image files.
    pub fn images<P: Into<PathBuf>>(mut self, paths: impl IntoIterator<Item = P>) -> Self {
        self.images.extend(paths.into_iter().map(Into::into));
        self
    }

    /// Length and sampling of the answer.
    pub fn generation(mut self, generation: Generation) -> Self {
        self.generation = generation;
        self
    }

    /// Tokens to generate at most.
    pub fn max_tokens(mut self, n: usize) -> Self {
        self.generation.n_predict = n;
        self
    }

    /// Keep generating after an end-of-generation token.
    pub fn ignore_eos(mut self, ignore: bool) -> Self {
        self.generation.ignore_eos = ignore;
        self
    }

    /// Sampling settings.
    pub fn sampling(mut self, sampling: SamplerParams) -> Self {
        self.generation.sampling = sampling;
        self
    }

    /// Slices per image at most.
    pub fn max_slices(mut self, n: u32) -> Self {
        self.max_slices = n;
        self
    }

    /// Decode the prompt chunk by chunk, as llama.cpp's mtmd does.
    pub fn per_chunk_prefill(mut self, per_chunk: bool) -> Self {
        self.per_chunk_prefill = per_chunk;
        self
    }

    /// Thinking on or off for a thinking model; `None`: the model's default.
    pub fn thinking(mut self, thinking: Option<bool>) -> Self {
        self.thinking = thinking;
        self
    }

    /// A video to ask about.
    pub fn video(mut self, video: VideoRequest) -> Self {
        self.video = Some(video);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_set_what_they_name_and_nothing_else() {
        let o = SessionOptions::default()
            .threads(3)
            .context(1024)
            .batch(2048)
            .low_mem(true);
        assert_eq!(
            (o.n_threads, o.n_ctx, o.n_batch, o.low_mem),
            (3, 1024, 2048, true)
        );
        assert_eq!(o.effective_batch(), 1024);
        assert_eq!(o.context_params().n_batch, 1024);
        assert_eq!(o.max_image_pixels, DEFAULT_MAX_PIXELS);

        let r = RunRequest::new("hi")
            .image("a.png")
            .images(["b.png", "c.png"])
            .max_tokens(7)
            .ignore_eos(true)
            .max_slices(4);
        assert_eq!(r.prompt, "hi");
        assert_eq!(
            r.images,
            ["a.png", "b.png", "c.png"].map(PathBuf::from).to_vec()
        );
        assert_eq!(r.generation.n_predict, 7);
        assert!(r.generation.ignore_eos);
        assert_eq!(r.max_slices, 4);
        assert!(!r.per_chunk_prefill);
        assert_eq!(r.generation.sampling, SamplerParams::default());
    }
}
