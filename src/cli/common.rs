//! Flags shared by `run` and `chat`: the model pair, and generation settings. One definition,
//! flattened into both commands, so the two cannot drift apart.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use minicpmv::ffi::{LoadParams, SamplerParams};
use minicpmv::vision::DEFAULT_MAX_PIXELS;

#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Language model GGUF. Without -m and --mmproj, a tiny synthetic MiniCPM-V 2.6 pair is
    /// generated (random weights: the text is noise) so the whole pipeline can be tried.
    #[arg(short = 'm', long, value_name = "MODEL.gguf", requires = "mmproj")]
    pub model: Option<PathBuf>,
    /// Vision projector GGUF (mmproj) that belongs to the language model.
    #[arg(long, value_name = "MMPROJ.gguf", requires = "model")]
    pub mmproj: Option<PathBuf>,
}

impl ModelArgs {
    /// The pair to use, and whether it is the synthetic demo pair (announced on stderr).
    pub fn resolve(&self) -> Result<(PathBuf, PathBuf, bool)> {
        match (&self.model, &self.mmproj) {
            (Some(m), Some(p)) => Ok((m.clone(), p.clone(), false)),
            _ => {
                let (m, p) = super::synth::demo_pair()?;
                eprintln!(
                    "note: no -m/--mmproj given: using a tiny synthetic MiniCPM-V 2.6 pair with random weights ({}); its text is noise. Pass -m MODEL.gguf --mmproj MMPROJ.gguf for a real model.",
                    m.parent().map(|d| d.display().to_string()).unwrap_or_default()
                );
                Ok((m, p, true))
            }
        }
    }
}

#[derive(Debug, Args)]
pub struct GenerationArgs {
    /// Maximum number of tokens to generate (per answer in `chat`).
    #[arg(short = 'n', long = "n-predict", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub n_predict: u32,
    /// Keep generating after the end-of-text token (always -n tokens; for benchmarks).
    #[arg(long)]
    pub ignore_eos: bool,
    /// Sampling temperature; 0 means greedy (deterministic).
    #[arg(long = "temp", default_value_t = SamplerParams::default().temperature)]
    pub temperature: f32,
    /// Top-k sampling (0 disables).
    #[arg(long, default_value_t = SamplerParams::default().top_k)]
    pub top_k: i32,
    /// Top-p (nucleus) sampling (1.0 disables).
    #[arg(long, default_value_t = SamplerParams::default().top_p)]
    pub top_p: f32,
    /// Min-p sampling (0.0 disables).
    #[arg(long, default_value_t = SamplerParams::default().min_p)]
    pub min_p: f32,
    /// Repetition penalty (1.0 disables).
    #[arg(long, default_value_t = SamplerParams::default().repeat_penalty)]
    pub repeat_penalty: f32,
    /// Random seed for sampling.
    #[arg(long, default_value_t = SamplerParams::default().seed)]
    pub seed: u32,
    /// Threads (default: all available cores).
    #[arg(short = 't', long, value_parser = clap::value_parser!(u32).range(1..1025))]
    pub threads: Option<u32>,
    /// Context length in tokens (prompt or whole conversation, image embeddings, answers).
    #[arg(short = 'c', long = "ctx-size", default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(16..))]
    pub ctx_size: u32,
    /// Largest image accepted, in pixels (width x height).
    #[arg(long, default_value_t = DEFAULT_MAX_PIXELS, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_image_pixels: u64,
    /// Slices per image at most, 1..=9 (1: the overview only, one projector call per image).
    /// Fewer slices: faster and fewer tokens, less detail.
    #[arg(long, default_value_t = 9, value_parser = clap::value_parser!(u32).range(1..=9))]
    pub max_slices: u32,
    /// Read the whole language model into RAM instead of memory-mapping it.
    #[arg(long)]
    pub no_mmap: bool,
    /// Draw a progress bar for image encoding even when stderr is not a terminal.
    #[arg(long)]
    pub progress: bool,
}

impl GenerationArgs {
    pub fn sampling(&self) -> SamplerParams {
        SamplerParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            seed: self.seed,
            ..SamplerParams::default()
        }
    }

    pub fn n_threads(&self) -> i32 {
        self.threads.map_or_else(default_threads, |t| t as i32)
    }

    /// Largest batch per decode call.
    pub fn n_batch(&self) -> u32 {
        512.min(self.ctx_size)
    }

    pub fn load_params(&self) -> LoadParams {
        LoadParams {
            use_mmap: !self.no_mmap,
            ..LoadParams::default()
        }
    }
}

/// All cores the process may use.
pub fn default_threads() -> i32 {
    std::thread::available_parallelism().map_or(4, |n| n.get() as i32)
}
