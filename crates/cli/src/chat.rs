//! `minicpmv chat`: an interactive multi-turn conversation about images.
//!
//! Input: with a terminal on stdin, a line editor (rustyline); otherwise plain lines from stdin,
//! so a script can be piped in. Each line is a user message, except the commands `/image PATH`
//! (attach an image to the next message), `/reset` (forget the conversation), `/quit` and
//! `/help`. EOF ends the session. Answers stream to stdout (or, with `--json`, one JSON object
//! per turn, JSON lines); per-turn statistics go to stderr. Ctrl-C during an answer stops that
//! answer, not the program.

use std::io::{self, BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context as _, Result};
use clap::Args;
use serde::Serialize;

use minicpmv::encode::cache::{CacheConfig, CacheStats};
use minicpmv::session::chat::{ChatConfig, ChatSession, TurnOutput};
use minicpmv::session::run::Event;
use minicpmv::Pair;

use super::common::{GenerationArgs, ModelArgs};
use super::output::{show_progress, EncodeProgress, Stdout};

/// Default of `--embd-cache-max-mb`.
const DEFAULT_DISK_MB: f64 = 1024.0;
/// Default of `--embd-cache-mem-mb`.
const DEFAULT_MEM_MB: f64 = 512.0;

#[derive(Debug, Args)]
pub struct ChatArgs {
    #[command(flatten)]
    pub pair: ModelArgs,
    /// Image attached to the first message; repeat for several. Later: `/image PATH`.
    #[arg(long = "image", value_name = "IMG")]
    pub images: Vec<PathBuf>,
    /// A system message at the start of the conversation (default: the model's own).
    #[arg(long)]
    pub system: Option<String>,
    #[command(flatten)]
    pub gen: GenerationArgs,
    /// Run llama.cpp's projector warm-up when the projector is loaded.
    #[arg(long)]
    pub warmup: bool,
    /// Keep image embeddings in this folder too, so that a later session on the same image
    /// (same projector and --max-slices) makes no projector call.
    #[arg(long, value_name = "DIR")]
    pub embd_cache: Option<PathBuf>,
    /// Size bound of the --embd-cache folder in MiB; least recently used files go first.
    #[arg(long, value_name = "MB", default_value_t = DEFAULT_DISK_MB, value_parser = non_negative_mb)]
    pub embd_cache_max_mb: f64,
    /// Size bound of the in-memory embedding cache in MiB (0 disables it).
    #[arg(long, value_name = "MB", default_value_t = DEFAULT_MEM_MB, value_parser = non_negative_mb)]
    pub embd_cache_mem_mb: f64,
    /// One JSON object per turn on stdout (JSON lines) instead of streamed text.
    #[arg(long)]
    pub json: bool,
    /// No per-turn statistics on stderr.
    #[arg(short, long)]
    pub quiet: bool,
}

fn non_negative_mb(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a size in MiB (a number >= 0)")),
    }
}

fn mib_to_bytes(mb: f64) -> u64 {
    (mb * 1024.0 * 1024.0) as u64
}

#[derive(Serialize)]
struct JsonTurn<'a> {
    #[serde(flatten)]
    out: &'a TurnOutput,
    /// Counters of the embedding cache since the start.
    cache_totals: CacheStats,
}

/// Set by the Ctrl-C handler while an answer is generated.
static CANCEL: AtomicBool = AtomicBool::new(false);
static GENERATING: AtomicBool = AtomicBool::new(false);

fn install_ctrl_c() {
    let r = ctrlc::set_handler(|| {
        if GENERATING.load(Ordering::SeqCst) {
            CANCEL.store(true, Ordering::SeqCst);
        } else {
            std::process::exit(130);
        }
    });
    if let Err(e) = r {
        log::debug!("no Ctrl-C handler: {e}");
    }
}

/// Where the user's lines come from.
enum Input {
    Editor(Box<rustyline::DefaultEditor>),
    Lines(io::StdinLock<'static>),
}

impl Input {
    fn open() -> Input {
        if io::stdin().is_terminal() {
            match rustyline::DefaultEditor::new() {
                Ok(ed) => return Input::Editor(Box::new(ed)),
                Err(e) => log::warn!("no line editor ({e}); reading plain lines"),
            }
        }
        Input::Lines(io::stdin().lock())
    }

    fn interactive(&self) -> bool {
        matches!(self, Input::Editor(_))
    }

    /// The next line, `None` at the end of input.
    fn next_line(&mut self) -> Result<Option<String>> {
        match self {
            Input::Editor(ed) => match ed.readline("> ") {
                Ok(line) => {
                    if !line.trim().is_empty() {
                        let _ = ed.add_history_entry(line.as_str());
                    }
                    Ok(Some(line))
                }
                // Ctrl-C at the prompt drops the line being typed
                Err(rustyline::error::ReadlineError::Interrupted) => Ok(Some(String::new())),
                Err(rustyline::error::ReadlineError::Eof) => Ok(None),
                Err(e) => Err(e).context("reading input"),
            },
            Input::Lines(stdin) => {
                let mut line = String::new();
                let n = stdin.read_line(&mut line).context("reading stdin")?;
                Ok((n > 0).then_some(line))
            }
        }
    }
}

/// One line of input, parsed.
#[derive(Debug, PartialEq, Eq)]
enum Line<'a> {
    Empty,
    Ask(&'a str),
    Image(&'a str),
    Reset,
    Quit,
    Help,
    Unknown(&'a str),
}

fn parse_line(line: &str) -> Line<'_> {
    let line = line.trim();
    if line.is_empty() {
        return Line::Empty;
    }
    let Some(cmd) = line.strip_prefix('/') else {
        return Line::Ask(line);
    };
    let (name, rest) = cmd.split_once(char::is_whitespace).unwrap_or((cmd, ""));
    let rest = rest.trim();
    match name {
        "image" => {
            let unquoted = ['"', '\'']
                .iter()
                .find_map(|q| rest.strip_prefix(*q).and_then(|r| r.strip_suffix(*q)))
                .unwrap_or(rest);
            Line::Image(unquoted)
        }
        "reset" => Line::Reset,
        "quit" | "exit" => Line::Quit,
        "help" => Line::Help,
        _ => Line::Unknown(name),
    }
}

const HELP: &str = "commands: /image PATH (attach an image to the next message), /reset (forget the conversation), /quit, /help; any other line is a message";

pub fn main(args: ChatArgs) -> Result<()> {
    let (model_path, mmproj, _synthetic) = args.pair.resolve()?;
    let gen = &args.gen;
    let low_mem = gen.low_mem_for(&model_path, &mmproj, &args.images);
    let mut loaded = Pair::open(
        &model_path,
        &mmproj,
        gen.session_options(low_mem, args.warmup),
    )?;
    let mut config = ChatConfig::default()
        .generation(gen.generation())
        .max_slices(gen.memory.max_slices)
        .cache(CacheConfig {
            mem_max_bytes: mib_to_bytes(args.embd_cache_mem_mb),
            dir: args.embd_cache.clone(),
            disk_max_bytes: mib_to_bytes(args.embd_cache_max_mb),
        });
    if let Some(system) = &args.system {
        config = config.system(system);
    }
    let mut session = loaded.chat(config)?;
    for img in &args.images {
        session.attach_image(img)?;
    }
    install_ctrl_c();
    let mut input = Input::open();
    let interactive = input.interactive();
    if interactive && !args.quiet {
        eprintln!("{HELP}");
    }
    let mut stdout = Stdout::default();
    while let Some(line) = input.next_line()? {
        let result = match parse_line(&line) {
            Line::Empty => Ok(()),
            Line::Quit => break,
            Line::Help => {
                eprintln!("{HELP}");
                Ok(())
            }
            Line::Reset => {
                session.reset();
                if !args.quiet {
                    eprintln!("(conversation reset)");
                }
                Ok(())
            }
            Line::Image("") => Err(anyhow::anyhow!("usage: /image PATH")),
            Line::Image(path) => session.attach_image(Path::new(path)).map_err(Into::into),
            Line::Unknown(name) => Err(anyhow::anyhow!("unknown command /{name}; {HELP}")),
            Line::Ask(text) => turn(&mut session, text, &args, &mut stdout),
        };
        if stdout.broken.is_some() {
            break;
        }
        if let Err(e) = result {
            if !interactive {
                return Err(e);
            }
            eprintln!("error: {}", super::hints::with_hint(&e));
        }
    }
    stdout.finish().context("writing to stdout")?;
    if !args.quiet {
        let s = session.cache_stats();
        eprintln!(
            "session: {} projector calls; embedding cache: {} hits ({} from disk), {} misses",
            session.n_projector_calls(),
            s.hits(),
            s.disk_hits,
            s.misses
        );
    }
    Ok(())
}

fn turn(
    session: &mut ChatSession<'_>,
    text: &str,
    args: &ChatArgs,
    stdout: &mut Stdout,
) -> Result<()> {
    let streaming = !args.json;
    let mut bar = EncodeProgress::new(show_progress(args.gen.progress));
    CANCEL.store(false, Ordering::SeqCst);
    GENERATING.store(true, Ordering::SeqCst);
    let out = session.ask_until(
        text,
        &mut |event| match event {
            Event::Text(s) if streaming => stdout.write_str(s),
            Event::Text(_) => {}
            Event::EncodeStart { total } => bar.start(total),
            Event::ChunkEncoded { done, .. } => bar.set(done),
        },
        &|| CANCEL.load(Ordering::SeqCst),
    );
    GENERATING.store(false, Ordering::SeqCst);
    bar.finish();
    let out = out?;
    if args.json {
        let line = serde_json::to_string(&JsonTurn {
            out: &out,
            cache_totals: session.cache_stats(),
        })
        .context("serializing the turn")?;
        stdout.write_str(&line);
    }
    stdout.write_str("\n");
    if !args.quiet {
        let t = &out.timings;
        eprintln!(
            "turn {}: projector calls: {}, reused positions: {}, new: {}, embedding cache hits: {} | prompt {:.2} s | generated {} tokens in {:.2} s ({:.1} tok/s), stop: {}",
            out.turn,
            out.n_projector_calls,
            out.n_reused_positions,
            out.n_new_positions,
            out.cache_hits,
            t.prompt_secs + t.image_encode_secs + t.projector_load_secs,
            out.token_ids.len(),
            t.generate_secs,
            t.generate_tokens_per_sec,
            serde_json::to_value(out.stop)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_messages_or_commands() {
        assert_eq!(parse_line("  \n"), Line::Empty);
        assert_eq!(parse_line("What is it?\n"), Line::Ask("What is it?"));
        assert_eq!(parse_line("/image a b.png\n"), Line::Image("a b.png"));
        assert_eq!(parse_line("/image \"x.png\""), Line::Image("x.png"));
        assert_eq!(parse_line("/image"), Line::Image(""));
        assert_eq!(parse_line("/reset"), Line::Reset);
        assert_eq!(parse_line("/quit"), Line::Quit);
        assert_eq!(parse_line("/exit"), Line::Quit);
        assert_eq!(parse_line("/help"), Line::Help);
        assert_eq!(parse_line("/frobnicate 3"), Line::Unknown("frobnicate"));
    }
}
