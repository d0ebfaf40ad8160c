//! `minicpmv run`: one prompt about one or more images.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Args;
use serde::Serialize;

use minicpmv::plan::memory::Media;
use minicpmv::session::run::{run, Event, Pipeline, RunConfig, RunOutput};
use minicpmv::{Pair, RunRequest};

use super::common::{GenerationArgs, ModelArgs, VideoArgs};
use super::output::{show_progress, EncodeProgress, Stdout, ThinkingOutput};

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub pair: ModelArgs,
    /// Image file (PNG, JPEG, WebP, GIF, BMP, TIFF); repeat for several images.
    #[arg(long = "image", value_name = "IMG")]
    pub images: Vec<PathBuf>,
    #[command(flatten)]
    pub video: VideoArgs,
    /// The prompt. Images go before it unless it contains `<__media__>` placeholders
    /// (default: "Describe this image.", or "Describe this video." with --video).
    #[arg(short, long)]
    pub prompt: Option<String>,
    /// Read the prompt from FILE (`-`: standard input) instead of -p: UTF-8 text, at most
    /// 16 MiB.
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE",
        conflicts_with = "prompt"
    )]
    pub prompt_file: Option<PathBuf>,
    #[command(flatten)]
    pub gen: GenerationArgs,
    /// Image pipeline: ours (Rust slicing, one projector call per slice) or llama.cpp's own
    /// mtmd pipeline (the reference; always up to 9 slices).
    #[arg(long, value_name = "native|llama.cpp", default_value = "native")]
    pub pipeline: Pipeline,
    /// Run llama.cpp's projector warm-up (compute-graph reservation) at load time. Default:
    /// off for the native pipeline, on for the llama.cpp pipeline (as llama.cpp does).
    #[arg(long, overrides_with = "no_warmup")]
    pub warmup: bool,
    /// Skip the projector warm-up.
    #[arg(long, overrides_with = "warmup")]
    pub no_warmup: bool,
    /// Decode the prompt as llama.cpp's mtmd does, one decode call per text run and image
    /// chunk, instead of packed into full batches. Slower (on MiniCPM-V 2.6 with a 9-slice
    /// image, 19 decode calls instead of 2); reproduces llama.cpp's numerics bit for bit.
    #[arg(long)]
    pub per_chunk_prefill: bool,
    /// Print one JSON object (text, token ids, counts, timings) instead of streaming text.
    #[arg(long)]
    pub json: bool,
    /// No timing summary on stderr.
    #[arg(short, long)]
    pub quiet: bool,
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
    let (model, mmproj, synthetic) = args.pair.resolve()?;
    let pipeline = args.pipeline;
    let gen = &args.gen;
    let warmup = if args.warmup || args.no_warmup {
        args.warmup
    } else {
        pipeline == Pipeline::LlamaCpp
    };
    args.video.check_needs_video()?;
    let video = args.video.request();
    // llama.cpp's pipeline refuses --low-mem with an error; it is never chosen for it.
    let media = Media {
        images: &args.images,
        video: video.as_ref(),
    };
    let low_mem = match pipeline {
        Pipeline::Native => gen.low_mem_for(&model, &mmproj, &media),
        Pipeline::LlamaCpp => gen.memory.low_mem,
    };
    let prompt = match (&args.prompt_file, &args.prompt) {
        (Some(path), _) => super::common::read_prompt_file(path)?,
        (None, Some(p)) => p.clone(),
        (None, None) if args.video.video.is_some() => "Describe this video.".to_string(),
        (None, None) => "Describe this image.".to_string(),
    };
    let mut request = RunRequest::new(prompt)
        .images(&args.images)
        .generation(gen.generation())
        .max_slices(gen.memory.max_slices)
        .per_chunk_prefill(args.per_chunk_prefill)
        .thinking(gen.thinking());
    if let Some(video) = video {
        request = request.video(video);
    }
    let cfg = RunConfig::new(
        Pair::new(&model, &mmproj),
        gen.session_options(&model, low_mem, warmup)?,
        request,
    )
    .pipeline(pipeline);
    let mut stdout = Stdout::default();
    let streaming = !args.json;
    let mut bar = EncodeProgress::new(show_progress(gen.progress));
    let mut thought = ThinkingOutput::new(streaming && !gen.hide_thinking);
    let out = run(&cfg, &mut |event| match event {
        Event::Text(s) if streaming => {
            thought.end();
            stdout.write_str(s)
        }
        Event::Text(_) => {}
        Event::Thinking(s) => thought.write(s),
        other => bar.on_event(&other),
    });
    thought.end();
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
    if let Some(v) = &out.video {
        crate::note!(
            "video: {} of {} frames ({} per second, {}), {}x{}, {} projector calls and {} embeddings per frame (packing 1)",
            v.frame_indices.len(),
            v.source_frames,
            v.fps,
            v.decoder,
            v.width,
            v.height,
            v.chunks_per_frame,
            v.tokens_per_frame
        );
    }
    let t = &out.timings;
    let memory = out.peak_rss_bytes.map_or_else(String::new, |b| {
        format!(
            " | peak memory {}{}",
            super::output::human_bytes(b),
            if out.low_mem { " (--low-mem)" } else { "" }
        )
    });
    crate::note!(
        "load {:.2} s | image encode {:.2} s ({} projector calls, {} image embeddings) | prompt {} tokens in {:.2} s ({:.1} tok/s, {} decode calls) | generated {} tokens in {:.2} s ({:.1} tok/s), stop: {} | first token after {:.2} s, total {:.2} s{}",
        t.load_secs,
        t.image_encode_secs,
        out.n_image_chunks,
        out.n_image_tokens,
        out.n_prompt_tokens,
        t.prompt_secs,
        t.prompt_tokens_per_sec,
        out.prompt_decode_calls,
        out.token_ids.len(),
        t.generate_secs,
        t.generate_tokens_per_sec,
        serde_json::to_value(out.stop)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        t.time_to_first_token_secs,
        t.total_secs,
        memory,
    );
}
