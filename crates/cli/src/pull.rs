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
    self as pull, cached, fetch_pair, quant_of, select, Cache, Hub, Pair, PullError, Repo,
    DEFAULT_ENDPOINT, DEFAULT_QUANT, DEFAULT_REPO,
};

use minicpmv::model::family::{self, Version};

use super::output::show_progress;

#[derive(Debug, Args)]
pub struct PullArgs {
    /// A MiniCPM-V version (2.5, 2.6, o2.6, 4.0, 4.5, o4.5, 4.6, 4.6-thinking: its openbmb GGUF
    /// repository), or a Hugging Face repository (OWNER/NAME) holding GGUF language models and
    /// an mmproj. Default: MiniCPM-V 4.6.
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
const DEFAULT_LABEL: &str = "MiniCPM-V 4.6 Q4_K_M";

/// The repository `pull` reads for `arg`: a version's short name (`4.6`, `o2.6`, ...; any case)
/// maps to its official GGUF repository (models/*.toml, `[download] gguf_repo`); anything else
/// is taken as OWNER/NAME.
pub fn resolve_repo(arg: &str) -> Result<Repo, PullError> {
    let short = arg.trim().to_ascii_lowercase();
    match short.parse::<Version>() {
        Ok(v) => Repo::parse(&family::spec(v).download.gguf_repo),
        Err(_) => Repo::parse(arg),
    }
}

pub fn main(args: PullArgs) -> Result<()> {
    let cache = Cache::new(&super::synth::home_dir()?);
    let mut progress = BarProgress::new(show_progress(args.progress));
    let pair = pull_pair(&args, &cache, &mut progress).map_err(|e| hinted(e, Caller::Pull))?;
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
        crate::note!("ready: minicpmv run --image IMG -p PROMPT (uses this pair by default)");
    } else {
        crate::note!(
            "ready: minicpmv run -m {} --mmproj {} --image IMG -p PROMPT",
            pair.model.path.display(),
            pair.mmproj.path.display()
        );
    }
    Ok(())
}

/// The pair `args` asks for: from the cache alone when offline, else listed, selected and
/// fetched.
fn pull_pair(
    args: &PullArgs,
    cache: &Cache,
    progress: &mut BarProgress,
) -> Result<Pair, PullError> {
    let repo = resolve_repo(&args.repo)?;
    if offline(args.offline) {
        return cached(cache, &repo, &args.quant, progress);
    }
    let hub = hub()?;
    let listing = hub.listing(&repo)?;
    let sel = select(&listing, &repo, &args.quant)?;
    fetch_pair(&hub, cache, &repo, &args.quant, &listing, &sel, progress)
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
fn hub() -> Result<Hub, PullError> {
    let endpoint = env_endpoint().unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
    Hub::new(&endpoint, std::env::var("HF_TOKEN").ok())
}

/// `HF_ENDPOINT`, when set and not blank.
fn env_endpoint() -> Option<String> {
    std::env::var("HF_ENDPOINT")
        .ok()
        .filter(|e| !e.trim().is_empty())
}

/// `4.7 GB`, `3.1 MB` (decimal units, as download sizes are usually given).
fn gb(bytes: u64) -> String {
    if bytes >= 100_000_000 {
        format!("{:.1} GB", bytes as f64 / 1e9)
    } else {
        format!("{:.1} MB", bytes as f64 / 1e6)
    }
}

/// The default pair (MiniCPM-V 4.6 Q4_K_M, the edge model): from the cache when it is there (no network),
/// else downloaded after asking on a terminal (a note on stderr when stdin is not one).
pub fn default_pair(offline_flag: bool) -> Result<Pair> {
    let repo = Repo::parse(DEFAULT_REPO)?;
    let home = super::synth::home_dir()?;
    let cache = Cache::new(&home);
    let mut progress = BarProgress::new(show_progress(false));
    let hint = |e| hinted(e, Caller::DefaultModel);
    let err = match cached(&cache, &repo, DEFAULT_QUANT, &mut progress) {
        Ok(pair) => return Ok(pair),
        Err(e @ PullError::NotCached { .. }) => e,
        Err(e) => return Err(hint(e)),
    };
    if offline(offline_flag) {
        return Err(hint(err));
    }
    let hub = hub().map_err(hint)?;
    let listing = hub.listing(&repo).map_err(hint)?;
    let sel = select(&listing, &repo, DEFAULT_QUANT).map_err(hint)?;
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
        crate::note!(
            "note: no -m/--mmproj given: downloading the default model, {DEFAULT_LABEL} ({sizes}), from {} into {} (once; `minicpmv pull` does the same)",
            hub.endpoint(),
            dir.display()
        );
    }
    fetch_pair(
        &hub,
        &cache,
        &repo,
        DEFAULT_QUANT,
        &listing,
        &sel,
        &mut progress,
    )
    .map_err(hint)
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
    crate::note!(
        "note: no -m/--mmproj given: using the default model {DEFAULT_LABEL} from {}",
        pair.dir.display()
    );
}

/// Which command met a [`PullError`], for the wording of its hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    /// `minicpmv pull`.
    Pull,
    /// `run` or `chat` without `-m`, fetching the default pair.
    DefaultModel,
}

/// What to do about a [`PullError`], in terms of this program's flags and environment
/// variables (the library's errors only state the facts).
fn hint(err: &PullError, caller: Caller) -> Option<String> {
    let again = match caller {
        Caller::Pull => "pull again",
        Caller::DefaultModel => "run the same command (or `minicpmv pull`) again",
    };
    Some(match err {
        PullError::NotCached { repo, quant, .. } => match caller {
            Caller::Pull => format!("run `minicpmv pull{}` while online", pull_args(repo, quant)),
            Caller::DefaultModel => "offline mode does not download the default model: run `minicpmv pull` while online, or pass -m MODEL.gguf --mmproj MMPROJ.gguf, or --demo for a tiny synthetic pair".into(),
        },
        PullError::Interrupted { have, .. } => format!("{again} to resume from byte {have}"),
        PullError::BadRange { .. } | PullError::TooLong { .. } => {
            format!("{again} to download the file from the start")
        }
        PullError::Http { status: 416, .. } => {
            format!("{again} to download the file from the start")
        }
        PullError::Http {
            status: 401 | 403, ..
        } => match std::env::var("HF_TOKEN") {
            Ok(t) if !t.trim().is_empty() => {
                "the token in HF_TOKEN was sent: check that it can read this repository (and that its terms are accepted)".into()
            }
            _ => "set HF_TOKEN to a Hugging Face access token that can read this repository".into(),
        },
        PullError::Unreachable { endpoint, .. } => match env_endpoint() {
            Some(_) => format!("check the network and HF_ENDPOINT (now {endpoint})"),
            None => format!("check the network; HF_ENDPOINT sets another endpoint than {endpoint} (a mirror, say)"),
        },
        PullError::BadEndpoint(_) => format!(
            "the endpoint comes from HF_ENDPOINT: unset it for {DEFAULT_ENDPOINT}, or give an http:// or https:// URL"
        ),
        PullError::BadRepo(_) if caller == Caller::Pull => {
            format!(
                "give a version ({}) or a repository as OWNER/NAME, e.g. `minicpmv pull {DEFAULT_REPO}`",
                Version::ALL.map(|v| v.id()).join(", ")
            )
        }
        PullError::QuantNotFound { .. } if caller == Caller::Pull => {
            "choose one of the available quants with --quant".into()
        }
        PullError::QuantAmbiguous { files, .. } if caller == Caller::Pull => {
            let example = files.first().map_or(DEFAULT_QUANT, |f| quant_of(f));
            format!("give the full quant name with --quant, e.g. --quant {example}")
        }
        _ => return None,
    })
}

/// The `minicpmv pull` arguments that fetch `repo` + `quant` (empty for the defaults).
fn pull_args(repo: &str, quant: &str) -> String {
    let mut s = String::new();
    if repo != DEFAULT_REPO {
        s.push_str(&format!(" {repo}"));
    }
    if !quant.eq_ignore_ascii_case(DEFAULT_QUANT) {
        s.push_str(&format!(" --quant {quant}"));
    }
    s
}

/// A [`PullError`] with its hint: `main` prints errors as `error: CHAIN` and skips causes
/// already in the message, so the message carries the whole chain, then the hint line. The
/// error stays in the chain (as the source) for callers that look for it.
#[derive(Debug)]
struct Hinted {
    err: PullError,
    hint: String,
}

impl std::fmt::Display for Hinted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut msg = self.err.to_string();
        let mut cause = std::error::Error::source(&self.err);
        while let Some(c) = cause {
            let s = c.to_string();
            if !msg.contains(&s) {
                msg.push_str(": ");
                msg.push_str(&s);
            }
            cause = c.source();
        }
        write!(f, "{msg}\nhint: {}", self.hint)
    }
}

impl std::error::Error for Hinted {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.err)
    }
}

/// `err` for printing: with its hint when it has one.
fn hinted(err: PullError, caller: Caller) -> anyhow::Error {
    match hint(&err, caller) {
        Some(hint) => Hinted { err, hint }.into(),
        None => err.into(),
    }
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
            crate::note!("{label} ({total} bytes{from})");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_map_to_each_versions_gguf_repository() {
        for v in Version::ALL {
            let repo = resolve_repo(v.id()).expect("repo");
            assert_eq!(repo.to_string(), family::spec(v).download.gguf_repo, "{v}");
        }
        assert_eq!(
            resolve_repo("4.6").unwrap().to_string(),
            "openbmb/MiniCPM-V-4.6-gguf"
        );
        assert_eq!(
            resolve_repo("4.6-Thinking").unwrap().to_string(),
            "openbmb/MiniCPM-V-4.6-Thinking-gguf"
        );
        assert_eq!(resolve_repo("a/b").unwrap().to_string(), "a/b");
        assert!(resolve_repo("9.9").is_err());
        // the default is 4.6's repository, as models/minicpm-v4.6.toml names it
        assert_eq!(DEFAULT_REPO, family::spec(Version::V4_6).download.gguf_repo);
    }

    #[test]
    fn pull_args_name_only_what_differs_from_the_defaults() {
        assert_eq!(pull_args(DEFAULT_REPO, "q4_k_m"), "");
        assert_eq!(pull_args("a/b", "Q8_0"), " a/b --quant Q8_0");
    }
}
