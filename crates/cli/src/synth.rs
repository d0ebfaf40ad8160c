//! `minicpmv synth`: synthetic MiniCPM-V GGUF pairs, and the demo pair `run` falls back to.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, Result};
use clap::{Args, ValueEnum};

use minicpmv::model::family::Version;
use minicpmv::tools::synth::{synth, Scale, SynthOptions, WeightType};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ScaleArg {
    /// A few MB: for tests and trying the pipeline.
    Tiny,
    /// The public model's true shapes (e.g. 2.6: Qwen2-7B + SigLIP-400M): for benchmarks.
    Real,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TypeArg {
    F16,
    F32,
}

#[derive(Debug, Args)]
pub struct SynthArgs {
    /// MiniCPM-V version: 2.5, 2.6, o2.6, 4.0, 4.5, o4.5, 4.6 or 4.6-thinking.
    #[arg(long = "version", value_name = "V")]
    pub version: Version,
    /// 4.6 only: the projector's scale factor, 4 (16x, the default) or 2 (4x).
    #[arg(long, value_name = "N")]
    pub scale_factor: Option<u32>,
    #[arg(long, value_enum, default_value = "tiny")]
    pub scale: ScaleArg,
    /// Folder to write model.gguf and mmproj.gguf into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out_dir: PathBuf,
    /// Element type of the weight matrices (norms and biases are always f32).
    #[arg(long = "type", value_enum, default_value = "f16")]
    pub dtype: TypeArg,
    /// Seed of the random weights: the same seed gives the same bytes.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn main(args: SynthArgs) -> Result<()> {
    let opts = SynthOptions {
        version: args.version,
        scale: match args.scale {
            ScaleArg::Tiny => Scale::Tiny,
            ScaleArg::Real => Scale::Real,
        },
        out_dir: args.out_dir.clone(),
        dtype: match args.dtype {
            TypeArg::F16 => WeightType::F16,
            TypeArg::F32 => WeightType::F32,
        },
        seed: args.seed,
        scale_factor: args.scale_factor,
    };
    let t0 = Instant::now();
    let out = synth(&opts).with_context(|| {
        format!(
            "writing a synthetic MiniCPM-V {} pair into {}",
            args.version,
            args.out_dir.display()
        )
    })?;
    println!(
        "{}\t{} bytes\t{} text parameters",
        out.model.display(),
        out.model_bytes,
        out.text_params
    );
    println!(
        "{}\t{} bytes\t{} vision parameters",
        out.mmproj.display(),
        out.mmproj_bytes,
        out.vision_params
    );
    crate::note!("done in {:.1} s", t0.elapsed().as_secs_f64());
    Ok(())
}

/// The folder for files minicpmv keeps between runs: `$MINICPMV_HOME`, else
/// `$XDG_CACHE_HOME/minicpmv`, else `~/.cache/minicpmv`.
pub fn home_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("MINICPMV_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d).join("minicpmv"));
    }
    let home = std::env::var_os("HOME")
        .filter(|d| !d.is_empty())
        .context("cannot find a cache folder: set MINICPMV_HOME")?;
    Ok(PathBuf::from(home).join(".cache/minicpmv"))
}

/// The tiny synthetic MiniCPM-V 4.6 pair of `--demo` (the default model's version): written
/// once into the cache folder (each file atomically), reused afterwards.
pub fn demo_pair() -> Result<(PathBuf, PathBuf)> {
    let dir = home_dir()?.join("synthetic/minicpm-v4.6-tiny-f16-seed0");
    let (model, mmproj) = (dir.join("model.gguf"), dir.join("mmproj.gguf"));
    if !(model.is_file() && mmproj.is_file()) {
        let opts = SynthOptions {
            version: Version::V4_6,
            scale: Scale::Tiny,
            out_dir: dir.clone(),
            dtype: WeightType::F16,
            seed: 0,
            scale_factor: None,
        };
        synth(&opts)
            .with_context(|| format!("writing the synthetic demo model into {}", dir.display()))?;
    }
    Ok((model, mmproj))
}
