//! `minicpmv run`: one prompt about one or more images.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Args;
use serde::Serialize;

use minicpmv::ffi::{LoadParams, SamplerParams};
use minicpmv::run::{run, Event, Pipeline, RunConfig, RunOutput};
use minicpmv::vision::DEFAULT_MAX_PIXELS;

use super::output::{show_progress, EncodeProgress, Stdout};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Language model GGUF. Without -m and --mmproj, a tiny synthetic MiniCPM-V 2.6 pair is
    /// generated (random weights: the text is noise) so the whole pipeline can be tried.
    #[arg(short = 'm', long, value_name = "MODEL.gguf", requires = "mmproj")]
    pub model: Option<PathBuf>,
    /// Vision projector GGUF (mmproj) that belongs to the language model.
    #[arg(long, value_name = "MMPROJ.gguf", requires = "model")]
    pub mmproj: Option<PathBuf>,
    /// Image file (PNG, JPEG, WebP, GIF, BMP, TIFF); repeat for several images.
    #[arg(long = "image", value_name = "IMG")]
    pub images: Vec<PathBuf>,
    /// The prompt. Images go before it unless it contains `<__media__>` placeholders.
    #[arg(short, long, default_value = "Describe this image.")]
    pub prompt: String,
    /// Maximum number of tokens to generate.
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
    /// Context length in tokens (prompt, image embeddings and generated text).
    #[arg(short = 'c', long = "ctx-size", default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(16..))]
    pub ctx_size: u32,
    /// Largest image accepted, in pixels (width x height).
    #[arg(long, default_value_t = DEFAULT_MAX_PIXELS, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_image_pixels: u64,
    /// Image pipeline: ours (Rust slicing, one projector call per slice) or llama.cpp's own
    /// mtmd pipeline (the reference; always up to 9 slices).
    #[arg(long, value_enum, default_value = "native")]
    pub pipeline: PipelineArg,
    /// Slices per image at most, 1..=9 (1: the overview only, one projector call per image).
    /// Fewer slices: faster and fewer tokens, less detail.
    #[arg(long, default_value_t = 9, value_parser = clap::value_parser!(u32).range(1..=9))]
    pub max_slices: u32,
    /// Run llama.cpp's projector warm-up (compute-graph reservation) at load time. Default:
    /// off for the native pipeline, on for the llama.cpp pipeline (as llama.cpp does).
    #[arg(long, overrides_with = "no_warmup")]
    pub warmup: bool,
    /// Skip the projector warm-up.
    #[arg(long, overrides_with = "warmup")]
    pub no_warmup: bool,
    /// Draw a progress bar for image encoding even when stderr is not a terminal.
    #[arg(long)]
    pub progress: bool,
    /// Read the whole language model into RAM instead of memory-mapping it.
    #[arg(long)]
    pub no_mmap: bool,
    /// Print one JSON object (text, token ids, counts, timings) instead of streaming text.
    #[arg(long)]
    pub json: bool,
    /// No timing summary on stderr.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PipelineArg {
    Native,
    #[value(name = "llama.cpp")]
    LlamaCpp,
}

#[derive(Serialize)]
struct JsonOut<'a> {
    model: PathBuf,
    mmproj: PathBuf,
    images: &'a [PathBuf],
    synthetic_model: bool,
    #[serde(flatten)]
    out: &'a RunOutput,
}

pub fn main(args: RunArgs) -> Result<()> {
    let (model, mmproj, synthetic) = match (&args.model, &args.mmproj) {
        (Some(m), Some(p)) => (m.clone(), p.clone(), false),
        _ => {
            let (m, p) = super::synth::demo_pair()?;
            eprintln!(
                "note: no -m/--mmproj given: using a tiny synthetic MiniCPM-V 2.6 pair with random weights ({}); its text is noise. Pass -m MODEL.gguf --mmproj MMPROJ.gguf for a real model.",
                m.parent().map(|d| d.display().to_string()).unwrap_or_default()
            );
            (m, p, true)
        }
    };
    let n_threads = args.threads.map_or_else(default_threads, |t| t as i32);
    let pipeline = match args.pipeline {
        PipelineArg::Native => Pipeline::Native,
        PipelineArg::LlamaCpp => Pipeline::LlamaCpp,
    };
    let cfg = RunConfig {
        model: model.clone(),
        mmproj: mmproj.clone(),
        images: args.images.clone(),
        prompt: args.prompt.clone(),
        n_predict: args.n_predict as usize,
        ignore_eos: args.ignore_eos,
        sampling: SamplerParams {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            min_p: args.min_p,
            repeat_penalty: args.repeat_penalty,
            seed: args.seed,
            ..SamplerParams::default()
        },
        n_threads,
        n_ctx: args.ctx_size,
        n_batch: 512.min(args.ctx_size),
        max_image_pixels: args.max_image_pixels,
        max_slices: args.max_slices,
        pipeline,
        warmup: if args.warmup || args.no_warmup {
            args.warmup
        } else {
            pipeline == Pipeline::LlamaCpp
        },
        load: LoadParams {
            use_mmap: !args.no_mmap,
            ..LoadParams::default()
        },
    };
    let mut stdout = Stdout::default();
    let streaming = !args.json;
    let mut bar = EncodeProgress::new(show_progress(args.progress));
    let out = run(&cfg, &mut |event| match event {
        Event::Text(s) if streaming => stdout.write_str(s),
        Event::Text(_) => {}
        Event::EncodeStart { total } => bar.start(total),
        Event::ChunkEncoded { done, .. } => bar.set(done),
    });
    bar.finish();
    let out = out?;
    if args.json {
        let json = JsonOut {
            model,
            mmproj,
            images: &args.images,
            synthetic_model: synthetic,
            out: &out,
        };
        let text = serde_json::to_string_pretty(&json).context("serializing the result")?;
        stdout.write_str(&text);
        stdout.write_str("\n");
    } else {
        stdout.write_str("\n");
    }
    stdout.finish().context("writing to stdout")?;
    if !args.quiet && !args.json {
        print_summary(&out);
    }
    Ok(())
}

fn print_summary(out: &RunOutput) {
    let t = &out.timings;
    eprintln!(
        "load {:.2} s | image encode {:.2} s ({} projector calls, {} image embeddings) | prompt {} tokens in {:.2} s ({:.1} tok/s) | generated {} tokens in {:.2} s ({:.1} tok/s), stop: {} | first token after {:.2} s, total {:.2} s",
        t.load_secs,
        t.image_encode_secs,
        out.n_image_chunks,
        out.n_image_tokens,
        out.n_prompt_tokens,
        t.prompt_secs,
        t.prompt_tokens_per_sec,
        out.token_ids.len(),
        t.generate_secs,
        t.generate_tokens_per_sec,
        serde_json::to_value(out.stop)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        t.time_to_first_token_secs,
        t.total_secs,
    );
}

/// All cores the process may use.
pub fn default_threads() -> i32 {
    std::thread::available_parallelism().map_or(4, |n| n.get() as i32)
}
