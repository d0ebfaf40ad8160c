//! `minicpmv slice-plan`: how images are cut into an overview and slices, and what they cost
//! in tokens, without loading any model.

use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use minicpmv::session::options;
use serde::Serialize;

use minicpmv::model::family::{self, Version};
use minicpmv::prompt::layout::n_layout_tokens;
use minicpmv::vision::{load_image, ImageFormat, SlicePlan, DEFAULT_MAX_PIXELS};

use super::common::VideoArgs;
use super::output::Stdout;
use minicpmv::plan::memory::VIDEO_PROMPT_RESERVE;
use minicpmv::prompt::video::video_budget;

#[derive(Debug, Args)]
pub struct SlicePlanArgs {
    /// Image sizes as WIDTHxHEIGHT (e.g. 1920x1080).
    #[arg(value_name = "WxH", value_parser = parse_size)]
    pub sizes: Vec<(u32, u32)>,
    /// Image files whose size to plan for (decoded, EXIF orientation applied).
    #[arg(long = "image", value_name = "IMG")]
    pub images: Vec<PathBuf>,
    /// Slices per image at most, 1..=9 (1: overview only).
    #[arg(long, default_value_t = options::DEFAULT_MAX_SLICES,
          value_parser = clap::value_parser!(u32).range(1..=options::DEFAULT_MAX_SLICES as i64))]
    pub max_slices: u32,
    /// Largest image file accepted, in pixels (width x height, read from its header).
    #[arg(long, default_value_t = DEFAULT_MAX_PIXELS, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_image_pixels: u64,
    /// MiniCPM-V version (tokens per slice and layout): 2.5, 2.6, o2.6, 4.0, 4.5, o4.5, 4.6,
    /// 4.6-thinking.
    #[arg(long = "version", value_name = "V", default_value = "2.6")]
    pub version: Version,
    /// 4.6 only: the projector's scale factor, 4 (16x fewer tokens, the default) or 2 (4x,
    /// for fine detail).
    #[arg(long, value_name = "N")]
    pub scale_factor: Option<u32>,
    #[command(flatten)]
    pub video: VideoArgs,
    /// With --video: the context length the frames must fit.
    #[arg(short = 'c', long = "ctx-size", default_value_t = options::DEFAULT_N_CTX,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub ctx_size: u32,
    /// Print a JSON array (with --video: an object) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `WIDTHxHEIGHT` with positive integers.
fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("{s:?} is not WIDTHxHEIGHT (e.g. 1920x1080)"))?;
    let parse = |v: &str, what: &str| {
        v.trim()
            .parse::<u32>()
            .map_err(|_| format!("{what} {v:?} in {s:?} is not a whole number"))
    };
    let (w, h) = (parse(w, "width")?, parse(h, "height")?);
    if w == 0 || h == 0 {
        return Err(format!("{s:?}: width and height must be at least 1"));
    }
    Ok((w, h))
}

#[derive(Debug, Serialize)]
struct PlanOut {
    width: u32,
    height: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<PathBuf>,
    overview: [u32; 2],
    grid: Option<[u32; 2]>,
    refine: Option<[u32; 2]>,
    slice: Option<[u32; 2]>,
    n_slices: usize,
    /// Image embeddings fed to the model: the query count per chunk for a resampler, one per
    /// `scale_factor x scale_factor` patches of each chunk for 4.6's merger.
    n_image_tokens: usize,
    /// Special tokens around them (`<image>`, `<slice>`, `\n`, ...).
    n_layout_tokens: usize,
    /// Context positions the image takes: embeddings plus layout tokens.
    n_positions: usize,
}

fn describe(
    w: u32,
    h: u32,
    image: Option<PathBuf>,
    plan: &SlicePlan,
    format: &ImageFormat,
) -> PlanOut {
    let n_image_tokens = format.plan_tokens(plan).iter().sum();
    let n_layout = n_layout_tokens(format.style(), plan.grid);
    PlanOut {
        width: w,
        height: h,
        image,
        overview: [plan.overview.0, plan.overview.1],
        grid: plan.grid.map(|g| [g.0, g.1]),
        refine: plan.refine.map(|r| [r.0, r.1]),
        slice: plan.slice.map(|s| [s.0, s.1]),
        n_slices: plan.n_slices(),
        n_image_tokens,
        n_layout_tokens: n_layout,
        n_positions: n_image_tokens + n_layout,
    }
}

pub fn main(args: SlicePlanArgs) -> Result<bool> {
    let spec = family::spec(args.version);
    let projector = spec
        .projector
        .with_scale_factor(args.scale_factor)
        .map_err(|e| anyhow::anyhow!("--scale-factor: {e}"))?;
    args.video.check_needs_video()?;
    if let Some(req) = args.video.request() {
        if !args.sizes.is_empty() || !args.images.is_empty() {
            bail!("--video plans a video alone: drop the sizes and --image");
        }
        let v = req.open(&spec.video, args.max_image_pixels)?;
        let format = ImageFormat::of_spec(spec, Some(projector), v.max_slices);
        let budget = video_budget(
            &v,
            &format,
            args.ctx_size,
            VIDEO_PROMPT_RESERVE,
            u64::from(spec.text.real.n_embd),
        )
        .with_context(|| {
            format!(
                "planning the {}x{} frames of {}",
                v.width,
                v.height,
                req.path.display()
            )
        })?;
        let mut out = Stdout::default();
        if args.json {
            out.write_str(&(serde_json::to_string_pretty(&budget)? + "\n"));
        } else {
            let lines = super::plan::video_lines(&budget);
            out.write_str(&format!("{}: {}", spec.name, lines.trim_start()));
        }
        out.finish()?;
        return Ok(budget.fits);
    }
    if args.sizes.is_empty() && args.images.is_empty() {
        bail!("give at least one size (e.g. 1920x1080), --image FILE or --video FILE");
    }
    let format = ImageFormat::of_spec(spec, Some(projector), args.max_slices);
    let mut inputs: Vec<(u32, u32, Option<PathBuf>)> =
        args.sizes.iter().map(|&(w, h)| (w, h, None)).collect();
    for path in &args.images {
        let img = load_image(path, args.max_image_pixels)?;
        inputs.push((img.width, img.height, Some(path.clone())));
    }
    let mut plans = Vec::with_capacity(inputs.len());
    for (w, h, image) in inputs {
        let plan = format
            .plan(w, h)
            .with_context(|| format!("planning {w}x{h}"))?;
        plans.push(describe(w, h, image, &plan, &format));
    }
    let mut out = Stdout::default();
    if args.json {
        out.write_str(&(serde_json::to_string_pretty(&plans)? + "\n"));
    } else {
        for p in &plans {
            let name = p
                .image
                .as_ref()
                .map(|i| format!("{} ", i.display()))
                .unwrap_or_default();
            let geometry = match (p.grid, p.refine, p.slice) {
                (Some(g), Some(r), Some(s)) => format!(
                    "grid {}x{}, refine {}x{}, {} slices of {}x{}",
                    g[0], g[1], r[0], r[1], p.n_slices, s[0], s[1]
                ),
                _ => "no slices".to_string(),
            };
            out.write_str(&format!(
                "{name}{}x{}: overview {}x{}, {geometry}; {} projector calls, {} image tokens + {} layout tokens = {} positions\n",
                p.width,
                p.height,
                p.overview[0],
                p.overview[1],
                p.n_slices + 1,
                p.n_image_tokens,
                p.n_layout_tokens,
                p.n_positions
            ));
        }
    }
    out.finish()?;
    Ok(true)
}
