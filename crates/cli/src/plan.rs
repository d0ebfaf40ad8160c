//! `minicpmv plan`: predicted peak memory of a run, before loading anything.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Args;

use minicpmv::plan::memory::{self as memplan, MemPlan};
use minicpmv::prompt::video::VideoBudget;

use super::common::{MemoryArgs, RpcArgs, VideoArgs};
use super::output::{human_bytes, Stdout};
use minicpmv::plan::split::{self, RpcPlan};

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
    pub video: VideoArgs,
    #[command(flatten)]
    pub memory: MemoryArgs,
    /// Plan a split over RPC workers: each box's layers, weights and KV cache, and whether it
    /// fits. Asks each worker for its memory (nothing is loaded or sent).
    #[command(flatten)]
    pub rpc: RpcArgs,
    /// With --video: load the projector and encode one blank frame of the video's size, to
    /// predict the time the frames' encoding takes on this machine (seconds of work; off by
    /// default, since the plan otherwise loads nothing).
    #[arg(long, requires = "video")]
    pub measure: bool,
    /// Print the plan as JSON.
    #[arg(long)]
    pub json: bool,
}

/// One frame's encode time, measured.
struct Measured {
    secs_per_frame: f64,
    threads: i32,
}

/// Encodes one blank frame of the planned video's size and slices with the projector.
fn measure_frame(args: &PlanArgs, v: &VideoBudget, threads: i32) -> Result<Measured> {
    use minicpmv::ffi::ClipProjector;
    use minicpmv::vision::{ImageFormat, LoadedImage};
    let facts = minicpmv::model::inputs::check_pair(&args.model, &args.mmproj)?;
    let format = ImageFormat::of_projector(&facts.projector, v.frame_slices);
    let mut projector = ClipProjector::load(&args.mmproj, false, args.memory.projector_attention)?;
    let frame = LoadedImage {
        path: v.path.clone(),
        width: v.width,
        height: v.height,
        rgb: vec![128; v.width as usize * v.height as usize * 3],
    };
    let emb =
        minicpmv::encode::encode_image(&mut projector, &frame, &format, threads, &mut |_, _| {})
            .context("encoding a test frame")?;
    Ok(Measured {
        secs_per_frame: emb.encode_secs.iter().sum(),
        threads,
    })
}

/// Returns whether the run fits (the caller turns `false` into exit code 1).
pub fn main(args: PlanArgs) -> Result<bool> {
    args.video.check_needs_video()?;
    let video = args.video.request();
    if video.is_some() && !args.images.is_empty() {
        anyhow::bail!("--video and --image together: a run asks about a video alone");
    }
    let media = memplan::Media {
        images: &args.images,
        video: video.as_ref(),
    };
    let plan = memplan::plan(
        &args.model,
        &args.mmproj,
        &media,
        args.memory.max_image_pixels,
        &args.memory.plan_settings(super::common::default_threads()),
    )?;
    let threads = super::common::default_threads();
    let measured = match (&plan.video, args.measure) {
        (Some(v), true) => Some(measure_frame(&args, v, threads)?),
        _ => None,
    };
    let rpc = match &args.rpc.rpc {
        Some(workers) => Some(split::plan_rpc(
            &plan,
            &workers.0,
            args.rpc.rpc_split.as_ref().map(|s| &s.0[..]),
        )?),
        None => None,
    };
    let mut out = Stdout::default();
    if args.json {
        let mut value = serde_json::to_value(&plan).context("serializing the plan")?;
        if let Some(r) = &rpc {
            value["rpc"] = serde_json::to_value(r).context("serializing the plan")?;
        }
        if let (Some(m), Some(v)) = (&measured, value.get_mut("video")) {
            v["measured_secs_per_frame"] = serde_json::json!(m.secs_per_frame);
            v["predicted_encode_secs"] = serde_json::json!(
                m.secs_per_frame * plan.video.as_ref().map_or(0, |b| b.frames) as f64
            );
            v["measure_threads"] = serde_json::json!(m.threads);
        }
        let text = serde_json::to_string_pretty(&value).context("serializing the plan")?;
        out.write_str(&(text + "\n"));
    } else {
        out.write_str(&render(&plan));
        if let Some(r) = &rpc {
            out.write_str(&render_rpc(r));
        }
        if let (Some(m), Some(v)) = (&measured, &plan.video) {
            out.write_str(&format!(
                "  predicted encode: {:.1} s for {} frames (one {}x{} frame took {:.2} s on {} threads; decoding and the prefill come on top)\n",
                m.secs_per_frame * v.frames as f64,
                v.frames,
                v.width,
                v.height,
                m.secs_per_frame,
                m.threads
            ));
        }
    }
    out.finish().context("writing to stdout")?;
    // With workers, this machine's verdict is its share's, not the whole model's.
    let fits = rpc.as_ref().map_or(plan.fits, |r| r.fits);
    Ok(fits && plan.video.as_ref().is_none_or(|v| v.fits))
}

/// The per-box table of `plan --rpc`.
fn render_rpc(r: &RpcPlan) -> String {
    let shares = if r.by_memory {
        "shares by memory".to_string()
    } else {
        let shares: Vec<String> = r.shares.iter().map(|s| s.to_string()).collect();
        format!("--rpc-split {}", shares.join(","))
    };
    let mut t = format!(
        "\nsplit over {} boxes ({shares}): llama.cpp n_gpu_layers {}, tensor_split {:?}\n",
        r.boxes.len(),
        r.split.n_gpu_layers,
        r.split.tensor_split
    );
    let row = |cells: [&str; 9], verdict: &str| {
        format!(
            "  {:<22} {:<6} {:<18} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}  {verdict}\n",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            cells[5],
            cells[6],
            cells[7],
            cells[8]
        )
    };
    t += &row(
        [
            "box",
            "device",
            "layers",
            "weights",
            "kv cache",
            "compute",
            "projector",
            "total",
            "memory",
        ],
        "verdict",
    );
    for b in &r.boxes {
        let layers = match (b.layers, b.output) {
            (Some((a, z)), true) => format!("{a}-{z} + output"),
            (Some((a, z)), false) => format!("{a}-{z}"),
            (None, true) => "output".to_string(),
            (None, false) => "-".to_string(),
        };
        let verdict = match b.fits {
            Some(true) => "fits",
            Some(false) => "does NOT fit",
            None => "unknown",
        };
        let memory = b.memory.map_or_else(|| "?".to_string(), human_bytes);
        t += &row(
            [
                &b.name,
                &b.device,
                &layers,
                &human_bytes(b.weights),
                &human_bytes(b.kv_cache),
                &human_bytes(b.compute),
                &human_bytes(b.projector),
                &human_bytes(b.total),
                &memory,
            ],
            verdict,
        );
    }
    t += if r.fits {
        "split verdict: every box fits\n"
    } else {
        "split verdict: a box does NOT fit: give it a smaller share with --rpc-split\n"
    };
    t
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
    if let Some(v) = &plan.video {
        t += &video_lines(v);
    }
    if !plan.fits {
        for sg in &plan.suggestions {
            t += &format!("  with {:<40} peak {}\n", sg.flags, human_bytes(sg.peak));
        }
    }
    t
}

/// The video part of a plan, or of `slice-plan --video`.
pub fn video_lines(v: &VideoBudget) -> String {
    let mut t = format!(
        "\nvideo {}: {}x{}, {} frames at {:.3} fps ({:.1} s)\n",
        v.path.display(),
        v.width,
        v.height,
        v.source_frames,
        v.source_fps,
        v.duration_secs
    );
    t += &format!(
        "  frames taken: {} ({} per second, at most {}), indices {}\n",
        v.frames,
        v.fps,
        v.max_frames,
        abbreviate(&v.frame_indices)
    );
    t += &format!(
        "  per frame: up to {} slices, {} projector calls, {} embeddings, {} positions (packing 1: frames are not packed)\n",
        v.frame_slices, v.chunks_per_frame, v.tokens_per_frame, v.positions_per_frame
    );
    t += &format!(
        "  all frames: {} projector calls, {} positions, {} of embeddings\n",
        v.projector_calls,
        v.positions,
        human_bytes(v.embedding_bytes)
    );
    if v.fits {
        t += &format!(
            "  context: fits in -c {} with {} positions kept for the prompt\n",
            v.n_ctx, v.prompt_reserve
        );
    } else if v.fitting_max_frames == 0 {
        t += &format!(
            "  context: does NOT fit in -c {} (with {} positions kept for the prompt), not even one frame: use fewer --frame-slices or a longer -c\n",
            v.n_ctx, v.prompt_reserve
        );
    } else {
        t += &format!(
            "  context: does NOT fit in -c {} (with {} positions kept for the prompt): use --max-frames {}, fewer --frame-slices, or a longer -c\n",
            v.n_ctx, v.prompt_reserve, v.fitting_max_frames
        );
    }
    t
}

/// `[0, 30, 60, ..., 1770]` for long lists.
fn abbreviate(xs: &[usize]) -> String {
    if xs.len() <= 8 {
        return format!("{xs:?}");
    }
    let head: Vec<String> = xs[..4].iter().map(ToString::to_string).collect();
    format!("[{}, ..., {}]", head.join(", "), xs[xs.len() - 1])
}
