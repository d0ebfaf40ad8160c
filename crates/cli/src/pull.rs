//! `minicpmv pull`: download a language model + mmproj pair from Hugging Face into the cache;
//! and the default pair that `run` and `chat` use without `-m`.
//!
//! Environment: `MINICPMV_HOME` (the cache, see [`super::synth::home_dir`]), `HF_ENDPOINT`
//! (default `https://huggingface.co`), `HF_TOKEN` (bearer token for gated repositories),
//! `MINICPMV_OFFLINE=1` or `HF_HUB_OFFLINE=1` (never use the network, like `--offline`).

use std::io::{self, BufRead, IsTerminal, Write};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use clap::Args;

use minicpmv_hub::{
    self as pull, cached, fetch_pair, select, Cache, Hub, Pair, PullError, Repo, DEFAULT_ENDPOINT,
    DEFAULT_QUANT, DEFAULT_REPO,
};

use super::output::show_progress;

#[derive(Debug, Args)]
pub struct PullArgs {
    /// Hugging Face repository (OWNER/NAME) holding GGUF language models and an mmproj.
    #[arg(default_value = DEFAULT_REPO)]
    pub repo: String,
    /// Quantization of the language model: the part of its file name that names it
    /// (case-insensitive), e.g. Q4_K_M, Q8_0, F16.
    #[arg(long, default_value = DEFAULT_QUANT)]
    pub quant: String,
    /// Never use the network: only check that the pair is in the cache and print it (also
    /// MINICPMV_OFFLINE=1 or HF_HUB_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
    /// Draw progress bars even when stderr is not a terminal.
    #[arg(long)]
    pub progress: bool,
    /// Print one JSON object (repository, quant, folder, files) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// What the default pair is called in messages.
const DEFAULT_LABEL: &str = "MiniCPM-V 2.6 Q4_K_M";

pub fn main(args: PullArgs) -> Result<()> {
    let repo = Repo::parse(&args.repo)?;
    let cache = Cache::new(&super::synth::home_dir()?);
    let mut progress = BarProgress::new(show_progress(args.progress));
    let pair = if offline(args.offline) {
        cached(&cache, &repo, &args.quant, &mut progress)?
    } else {
        let hub = hub()?;
        let listing = hub.listing(&repo)?;
        let sel = select(&listing, &repo, &args.quant)?;
        fetch_pair(
            &hub,
            &cache,
            &repo,
            &args.quant,
            &listing,
            &sel,
            &mut progress,
        )?
    };
    if args.json {
        let s = serde_json::to_string_pretty(&pair).context("encoding the JSON output")?;
        let mut out = super::output::Stdout::default();
        out.write_str(&format!("{s}\n"));
        return Ok(out.finish()?);
    }
    let mut out = super::output::Stdout::default();
    for f in [&pair.model, &pair.mmproj] {
        out.write_str(&format!(
            "{}\t{} bytes\t{}\n",
            f.path.display(),
            f.size,
            if f.downloaded {
                "downloaded"
            } else {
                "already in the cache"
            }
        ));
    }
    out.finish()?;
    if pair.repo == DEFAULT_REPO && pair.quant.eq_ignore_ascii_case(DEFAULT_QUANT) {
        eprintln!("ready: minicpmv run --image IMG -p PROMPT (uses this pair by default)");
    } else {
        eprintln!(
            "ready: minicpmv run -m {} --mmproj {} --image IMG -p PROMPT",
            pair.model.path.display(),
            pair.mmproj.path.display()
        );
    }
    Ok(())
}

/// Whether an environment variable is set to a true value (1, true, yes, on).
fn env_truthy(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

/// Offline mode: the flag, `MINICPMV_OFFLINE` or `HF_HUB_OFFLINE`.
pub fn offline(flag: bool) -> bool {
    flag || env_truthy("MINICPMV_OFFLINE") || env_truthy("HF_HUB_OFFLINE")
}

/// The hub client: `HF_ENDPOINT` (default Hugging Face) and `HF_TOKEN`.
fn hub() -> Result<Hub> {
    let endpoint = std::env::var("HF_ENDPOINT")
        .ok()
        .filter(|e| !e.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
    Ok(Hub::new(&endpoint, std::env::var("HF_TOKEN").ok())?)
}

/// `4.7 GB`, `3.1 MB` (decimal units, as download sizes are usually given).
fn gb(bytes: u64) -> String {
    if bytes >= 100_000_000 {
        format!("{:.1} GB", bytes as f64 / 1e9)
    } else {
        format!("{:.1} MB", bytes as f64 / 1e6)
    }
}

/// The default pair (MiniCPM-V 2.6 Q4_K_M): from the cache when it is there (no network),
/// else downloaded after asking on a terminal (a note on stderr when stdin is not one).
pub fn default_pair(offline_flag: bool) -> Result<Pair> {
    let repo = Repo::parse(DEFAULT_REPO)?;
    let home = super::synth::home_dir()?;
    let cache = Cache::new(&home);
    let mut progress = BarProgress::new(show_progress(false));
    let err = match cached(&cache, &repo, DEFAULT_QUANT, &mut progress) {
        Ok(pair) => return Ok(pair),
        Err(e @ PullError::NotCached { .. }) => e,
        Err(e) => return Err(e.into()),
    };
    if offline(offline_flag) {
        bail!("{err} (offline mode does not download the default model), or pass -m MODEL.gguf --mmproj MMPROJ.gguf, or --demo for a tiny synthetic pair");
    }
    let hub = hub()?;
    let listing = hub.listing(&repo)?;
    let sel = select(&listing, &repo, DEFAULT_QUANT)?;
    let dir = cache.repo_dir(&repo);
    let sizes = format!("{} + {}", gb(sel.model.size), gb(sel.mmproj.size));
    if io::stdin().is_terminal() {
        if !confirm(&format!(
            "Download {DEFAULT_LABEL} ({sizes}) to {}? [Y/n] ",
            dir.display()
        ))? {
            bail!("download declined: pass -m MODEL.gguf --mmproj MMPROJ.gguf, or --demo for a tiny synthetic pair");
        }
    } else {
        eprintln!(
            "note: no -m/--mmproj given: downloading the default model, {DEFAULT_LABEL} ({sizes}), from {} into {} (once; `minicpmv pull` does the same)",
            hub.endpoint(),
            dir.display()
        );
    }
    Ok(fetch_pair(
        &hub,
        &cache,
        &repo,
        DEFAULT_QUANT,
        &listing,
        &sel,
        &mut progress,
    )?)
}

/// Asks a yes/no question on stderr, reads the answer from stdin; yes by default.
fn confirm(question: &str) -> Result<bool> {
    let mut err = io::stderr();
    let _ = write!(err, "{question}");
    let _ = err.flush();
    let mut line = String::new();
    io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the answer from stdin")?;
    let answer = line.trim().to_ascii_lowercase();
    Ok(matches!(answer.as_str(), "" | "y" | "yes"))
}

/// Announces which default pair is used.
pub fn announce(pair: &Pair) {
    eprintln!(
        "note: no -m/--mmproj given: using the default model {DEFAULT_LABEL} from {}",
        pair.dir.display()
    );
}

/// Progress on stderr: bars with bytes, speed and ETA when enabled (a terminal or
/// `--progress`), else one line per step.
struct BarProgress {
    enabled: bool,
    bar: Option<indicatif::ProgressBar>,
}

impl BarProgress {
    fn new(enabled: bool) -> BarProgress {
        BarProgress { enabled, bar: None }
    }
}

impl pull::Progress for BarProgress {
    fn start(&mut self, label: &str, total: u64, pos: u64) {
        self.finish();
        if !self.enabled {
            let from = if pos > 0 {
                format!(", from byte {pos}")
            } else {
                String::new()
            };
            eprintln!("{label} ({total} bytes{from})");
            return;
        }
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(total),
            indicatif::ProgressDrawTarget::stderr(),
        );
        let style = indicatif::ProgressStyle::with_template(
            "{msg} {wide_bar} {bytes}/{total_bytes} {binary_bytes_per_sec} {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_message(label.to_string());
        bar.set_position(pos);
        // Speed and ETA from this run's bytes only, not the resumed part.
        bar.reset_eta();
        bar.enable_steady_tick(Duration::from_millis(250));
        self.bar = Some(bar);
    }

    fn advance(&mut self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Drop for BarProgress {
    fn drop(&mut self) {
        pull::Progress::finish(self);
    }
}
