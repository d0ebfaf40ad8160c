//! `minicpmv quality`: a candidate (quantized) pair against a reference pair — KL divergence,
//! top-1 agreement, perplexity and projector cosine, for the projector and the language model
//! separately and together.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use minicpmv::session::options;

use minicpmv::ffi::LoadParams;
use minicpmv::tools::quality::{evaluate, Metrics, QualityConfig, QualityReport, Side, Stage};
use minicpmv::vision::DEFAULT_MAX_PIXELS;

use super::output::{show_progress, Stdout};

#[derive(Debug, Args)]
pub struct QualityArgs {
    /// Reference language model GGUF (e.g. the f16 file).
    #[arg(long, value_name = "MODEL.gguf")]
    pub reference_model: PathBuf,
    /// Reference projector GGUF (mmproj).
    #[arg(long, value_name = "MMPROJ.gguf")]
    pub reference_mmproj: PathBuf,
    /// Candidate language model GGUF (e.g. a quantized file).
    #[arg(short = 'm', long, value_name = "MODEL.gguf")]
    pub model: PathBuf,
    /// Candidate projector GGUF (mmproj).
    #[arg(long, value_name = "MMPROJ.gguf")]
    pub mmproj: PathBuf,
    /// Image file; repeat for several (each is evaluated with each prompt).
    #[arg(long = "image", value_name = "IMG", required = true)]
    pub images: Vec<PathBuf>,
    /// Prompt; repeat for several.
    #[arg(short = 'p', long = "prompt", default_value = "Describe this image.")]
    pub prompts: Vec<String>,
    /// Tokens of the reference's greedy continuation to score (end of text ignored).
    #[arg(short = 'n', long = "n-predict", default_value_t = minicpmv::tools::quality::DEFAULT_N_PREDICT as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub n_predict: u32,
    #[arg(short = 't', long, value_parser = clap::value_parser!(u32).range(1..1025))]
    pub threads: Option<u32>,
    #[arg(short = 'c', long = "ctx-size", default_value_t = options::DEFAULT_N_CTX,
          value_parser = clap::value_parser!(u32).range(16..))]
    pub ctx_size: u32,
    /// Slices per image at most, 1..=9.
    #[arg(long, default_value_t = options::DEFAULT_MAX_SLICES,
          value_parser = clap::value_parser!(u32).range(1..=options::DEFAULT_MAX_SLICES as i64))]
    pub max_slices: u32,
    /// Print stage messages on stderr even when it is not a terminal.
    #[arg(long)]
    pub progress: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn main(args: QualityArgs) -> Result<()> {
    let cfg = QualityConfig {
        reference_model: args.reference_model,
        reference_mmproj: args.reference_mmproj,
        model: args.model,
        mmproj: args.mmproj,
        images: args.images,
        prompts: args.prompts,
        n_predict: args.n_predict as usize,
        n_threads: args
            .threads
            .map_or_else(super::common::default_threads, |t| t as i32),
        n_ctx: args.ctx_size,
        n_batch: 512.min(args.ctx_size),
        max_image_pixels: DEFAULT_MAX_PIXELS,
        max_slices: args.max_slices,
        load: LoadParams::default(),
    };
    let progress = show_progress(args.progress);
    let mut on_stage = |stage: Stage| {
        if progress {
            let msg = match stage {
                Stage::Encode(Side::Reference) => {
                    "encoding the images with the reference projector"
                }
                Stage::Encode(Side::Candidate) => {
                    "encoding the images with the candidate projector"
                }
                Stage::LanguageModel(Side::Reference) => {
                    "reference language model: greedy continuations and scoring"
                }
                Stage::LanguageModel(Side::Candidate) => "candidate language model: scoring",
            };
            crate::note!("{msg}");
        }
    };
    let report = evaluate(&cfg, &mut on_stage)?;
    let mut out = Stdout::default();
    if args.json {
        out.write_str(&(serde_json::to_string_pretty(&report)? + "\n"));
    } else {
        out.write_str(&table(&report));
    }
    out.finish()?;
    Ok(())
}

const HEADER: &str =
    "  combination  proj  LM    mean KL     max KL      top-1   perplexity  min cosine\n";

fn row(m: &Metrics) -> String {
    format!(
        "  {:<11}  {:<4}  {:<4}  {:<10.4e}  {:<10.4e}  {:<6.4}  {:<10.4}  {:.6}\n",
        m.combination,
        m.projector.short(),
        m.language_model.short(),
        m.mean_kl,
        m.max_kl,
        m.top1_agreement,
        m.perplexity,
        m.min_cosine
    )
}

fn table(r: &QualityReport) -> String {
    let mut s = format!(
        "reference: {} + {}\ncandidate: {} + {}\n{} continuation tokens (the reference's greedy text); KL(ref || combination) in nats\n",
        r.reference.model.display(),
        r.reference.mmproj.display(),
        r.candidate.model.display(),
        r.candidate.mmproj.display(),
        r.n_predict
    );
    for c in &r.cases {
        let cos: Vec<String> = c
            .chunks
            .iter()
            .map(|k| format!("{} {:.6}", k.chunk, k.cosine))
            .collect();
        s.push_str(&format!(
            "\n{} {:?}\n  cosine per chunk, candidate vs reference projector: {}\n",
            c.image.display(),
            c.prompt,
            cos.join(", ")
        ));
        s.push_str(HEADER);
        for m in &c.combinations {
            s.push_str(&row(m));
        }
    }
    if r.cases.len() > 1 {
        s.push_str(&format!("\nsummary over {} cases\n", r.cases.len()));
        s.push_str(HEADER);
        for m in &r.summary {
            s.push_str(&row(m));
        }
    }
    s
}
