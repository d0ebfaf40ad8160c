//! `minicpmv parity`: our native pipeline against llama.cpp's own, on the user's files.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use minicpmv::session::options;

use minicpmv::session::run::RunConfig;
use minicpmv::tools::parity::{compare, SeqItem};
use minicpmv::{Pair, RunRequest, SessionOptions};

use super::common::VideoArgs;
use super::output::Stdout;

#[derive(Debug, Args)]
pub struct ParityArgs {
    /// Language model GGUF.
    #[arg(short = 'm', long, value_name = "MODEL.gguf")]
    pub model: PathBuf,
    /// Vision projector GGUF (mmproj).
    #[arg(long, value_name = "MMPROJ.gguf")]
    pub mmproj: PathBuf,
    /// Image file; repeat for several.
    #[arg(long = "image", value_name = "IMG", required_unless_present = "video")]
    pub images: Vec<PathBuf>,
    /// A video instead of images: its sampled frames (each sliced up to 9 times, as llama.cpp
    /// does) go through both pipelines; llama.cpp's is given the decoded frames as images.
    #[command(flatten)]
    pub video: VideoArgs,
    #[arg(short, long, default_value = "Describe this image.")]
    pub prompt: String,
    /// Greedy tokens to generate and compare.
    #[arg(short = 'n', long = "n-predict", default_value_t = 32,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub n_predict: u32,
    #[arg(short = 't', long, value_parser = clap::value_parser!(u32).range(1..1025))]
    pub threads: Option<u32>,
    #[arg(short = 'c', long = "ctx-size", default_value_t = options::DEFAULT_N_CTX,
          value_parser = clap::value_parser!(u32).range(16..))]
    pub ctx_size: u32,
    /// Largest embedding difference still counted as equal.
    #[arg(long, default_value_t = 0.0, value_parser = super::common::non_negative,
          allow_negative_numbers = true)]
    pub tolerance: f32,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Returns whether parity holds (the caller turns `false` into exit code 1).
pub fn main(args: ParityArgs) -> Result<bool> {
    let threads = args
        .threads
        .map_or_else(super::common::default_threads, |t| t as i32);
    let options = SessionOptions::default()
        .threads(threads)
        .context(args.ctx_size);
    let mut request = RunRequest::new(args.prompt)
        .images(args.images)
        .max_tokens(args.n_predict as usize)
        .ignore_eos(true);
    args.video.check_needs_video()?;
    if let Some(video) = args.video.request() {
        request = request.video(video.frame_slices(options::DEFAULT_MAX_SLICES));
    }
    let cfg = RunConfig::new(Pair::new(args.model, args.mmproj), options, request);
    let report = compare(&cfg)?;
    let holds = report.holds(args.tolerance);
    let mut out = Stdout::default();
    if args.json {
        let mut v = serde_json::to_value(&report)?;
        v["holds"] = serde_json::json!(holds);
        out.write_str(&(serde_json::to_string_pretty(&v)? + "\n"));
    } else {
        let describe = |seq: &[SeqItem]| {
            seq.iter()
                .map(|i| match i {
                    SeqItem::Text(t) => format!("text({})", t.len()),
                    SeqItem::Image(n) => format!("image({n})"),
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
        out.write_str(&format!(
            "input sequence: {} ({})\n  native:    {}\n  llama.cpp: {}\n",
            if report.sequence_equal {
                "identical"
            } else {
                "DIFFERENT"
            },
            report.sequence_native.len(),
            describe(&report.sequence_native),
            describe(&report.sequence_llama_cpp),
        ));
        out.write_str(&format!(
            "embeddings: {} image chunks, max abs difference {:e}\n",
            report.chunks.len(),
            report.max_abs_diff
        ));
        let pf = &report.prefill;
        out.write_str(&format!(
            "prefill: packed ({} decode calls) vs llama.cpp's per-chunk batching ({} calls): last-position logits max abs difference {:e} (largest logit {:.3}), greedy pick {}\n",
            pf.decode_calls_packed,
            pf.decode_calls_per_chunk,
            pf.logits_max_abs_diff,
            pf.logits_max_abs,
            if pf.argmax_equal { "identical" } else { "DIFFERENT" },
        ));
        out.write_str(&format!(
            "prefill logits, ours with llama.cpp's batching vs llama.cpp's own: max abs difference {:e}{}\n",
            pf.llama_cpp_max_abs_diff,
            if pf.llama_cpp_max_abs_diff == 0.0 { " (bit for bit)" } else { " (must be 0)" },
        ));
        out.write_str(&format!(
            "greedy tokens ({}, ours with llama.cpp's batching): {}\nparity {}\n",
            report.tokens_native.len(),
            if report.tokens_equal {
                "identical"
            } else {
                "DIFFERENT"
            },
            if holds { "holds" } else { "DOES NOT HOLD" }
        ));
    }
    out.finish()?;
    Ok(holds)
}
