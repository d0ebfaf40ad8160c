//! `minicpmv plan`: predicted peak memory of a run, before loading anything.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Args;

use minicpmv::plan::memory::{self as memplan, MemPlan};

use super::common::MemoryArgs;
use super::output::{human_bytes, Stdout};

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Language model GGUF.
    #[arg(short = 'm', long, value_name = "MODEL.gguf")]
    pub model: PathBuf,
    /// Vision projector GGUF (mmproj).
    #[arg(long, value_name = "MMPROJ.gguf")]
    pub mmproj: PathBuf,
    /// Image the run would encode; repeat for several.
    #[arg(long = "image", value_name = "IMG")]
    pub images: Vec<PathBuf>,
    #[command(flatten)]
    pub memory: MemoryArgs,
    /// Print the plan as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Returns whether the run fits (the caller turns `false` into exit code 1).
pub fn main(args: PlanArgs) -> Result<bool> {
    let plan = memplan::plan(
        &args.model,
        &args.mmproj,
        &args.images,
        args.memory.max_image_pixels,
        &args.memory.plan_settings(super::common::default_threads()),
    )?;
    let mut out = Stdout::default();
    if args.json {
        let text = serde_json::to_string_pretty(&plan).context("serializing the plan")?;
        out.write_str(&(text + "\n"));
    } else {
        out.write_str(&render(&plan));
    }
    out.finish().context("writing to stdout")?;
    Ok(plan.fits)
}

fn render(plan: &MemPlan) -> String {
    let p = &plan.prediction;
    let s = &p.settings;
    let mut t = String::new();
    let mode = if s.low_mem { "--low-mem" } else { "default" };
    let load = match (s.use_mmap, s.use_mlock) {
        (true, false) => "mmap",
        (true, true) => "mmap+mlock",
        (false, true) => "read+mlock",
        (false, false) => "read (no mmap)",
    };
    let repack = &plan.footprint.repack;
    let repack = format!(
        "repack {} ({})",
        if repack.repack { "on" } else { "off" },
        repack.reason
    );
    t += &format!(
        "plan: {} + {}\nmode {mode}, -c {}, kv {}, {load}, {repack}, {} image chunk(s)\n\n",
        plan.model.display(),
        plan.mmproj.display(),
        s.n_ctx,
        s.kv_type.name(),
        plan.footprint.n_image_chunks,
    );
    for phase in &p.phases {
        t += &format!("{} phase\n", phase.name);
        for item in phase.items.iter().filter(|i| i.bytes > 0) {
            t += &format!("  {:<58} {:>10}\n", item.what, human_bytes(item.bytes));
        }
        t += &format!("  {:<58} {:>10}\n\n", "total", human_bytes(phase.total));
    }
    t += &format!(
        "predicted peak resident memory: {} ({} phase)\n",
        human_bytes(p.peak),
        p.peak_phase
    );
    match &plan.available {
        Some(a) => {
            t += &format!(
                "available now: {} ({})\nverdict: {}\n",
                human_bytes(a.bytes),
                a.source,
                if plan.fits { "fits" } else { "does NOT fit" }
            );
        }
        None => t += "available now: unknown on this system\n",
    }
    if !plan.fits {
        for sg in &plan.suggestions {
            t += &format!("  with {:<40} peak {}\n", sg.flags, human_bytes(sg.peak));
        }
    }
    t
}
