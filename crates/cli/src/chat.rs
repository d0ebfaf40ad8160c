//! `minicpmv chat`: an interactive multi-turn conversation about images.
//!
//! Input: with a terminal on stdin, a line editor (rustyline); otherwise plain lines from stdin,
//! so a script can be piped in. Each line is a user message, except the commands `/image PATH`
//! (attach an image to the next message), `/video PATH` (attach a video instead), `/reset`
//! (forget the conversation), `/quit` and `/help`. EOF ends the session. Answers stream to stdout (or, with `--json`, one JSON object
//! per turn, JSON lines); per-turn statistics go to stderr. Ctrl-C during an answer stops that
//! answer, not the program.

use std::io::{self, BufRead, IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context as _, Result};
use clap::Args;
use serde::Serialize;

use minicpmv::encode::cache::CacheStats;
use minicpmv::session::chat::{ChatConfig, ChatLine, ChatSession, TurnOutput};
use minicpmv::session::run::Event;
use minicpmv::Pair;

use super::common::{CacheArgs, GenerationArgs, ModelArgs, VideoArgs};
use super::output::{show_progress, EncodeProgress, Stdout, ThinkingOutput};

#[derive(Debug, Args)]
pub struct ChatArgs {
    #[command(flatten)]
    pub pair: ModelArgs,
    /// Image attached to the first message; repeat for several. Later: `/image PATH`.
    #[arg(long = "image", value_name = "IMG")]
    pub images: Vec<PathBuf>,
    /// (--video: attached to the first message; later: `/video PATH`, with the same frame
    /// settings. Frame embeddings are cached: asking again about a video costs no projector
    /// call.)
    #[command(flatten)]
    pub video: VideoArgs,
    /// A system message at the start of the conversation (default: the model's own).
    #[arg(long)]
    pub system: Option<String>,
    #[command(flatten)]
    pub gen: GenerationArgs,
    /// Run llama.cpp's projector warm-up when the projector is loaded.
    #[arg(long)]
    pub warmup: bool,
    #[command(flatten)]
    pub cache: CacheArgs,
    /// One JSON object per turn on stdout (JSON lines) instead of streamed text.
    #[arg(long)]
    pub json: bool,
    /// No per-turn statistics on stderr.
    #[arg(short, long)]
    pub quiet: bool,
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

/// Longest line read from a non-terminal stdin (16 MiB): far above any prompt a context holds,
/// and a bound on memory when stdin never ends a line (`< /dev/zero`).
const MAX_LINE_BYTES: u64 = 16 << 20;

/// Where the user's lines come from.
enum Source {
    Editor(Box<rustyline::DefaultEditor>),
    Lines(io::StdinLock<'static>),
}

/// The user's lines, counted for messages.
struct Input {
    source: Source,
    line_no: u64,
}

impl Input {
    fn open() -> Input {
        let source = if io::stdin().is_terminal() {
            match rustyline::DefaultEditor::new() {
                Ok(ed) => Source::Editor(Box::new(ed)),
                Err(e) => {
                    log::warn!("no line editor ({e}); reading plain lines");
                    Source::Lines(io::stdin().lock())
                }
            }
        } else {
            Source::Lines(io::stdin().lock())
        };
        Input { source, line_no: 0 }
    }

    fn interactive(&self) -> bool {
        matches!(self.source, Source::Editor(_))
    }

    /// The next line, `None` at the end of input. Lines from a pipe or file must be UTF-8 and
    /// at most [`MAX_LINE_BYTES`] long.
    fn next_line(&mut self) -> Result<Option<String>> {
        self.line_no += 1;
        let line_no = self.line_no;
        match &mut self.source {
            Source::Editor(ed) => match ed.readline("> ") {
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
            Source::Lines(stdin) => {
                let mut bytes = Vec::new();
                let n = stdin
                    .take(MAX_LINE_BYTES + 1)
                    .read_until(b'\n', &mut bytes)
                    .context("reading stdin")?;
                if n as u64 > MAX_LINE_BYTES {
                    anyhow::bail!(
                        "line {line_no} of stdin is longer than {} MiB",
                        MAX_LINE_BYTES >> 20
                    );
                }
                if n == 0 {
                    return Ok(None);
                }
                String::from_utf8(bytes)
                    .map(Some)
                    .map_err(|_| anyhow::anyhow!("line {line_no} of stdin is not valid UTF-8"))
            }
        }
    }
}

const HELP: &str = "commands: /image PATH (attach an image to the next message), /video PATH (attach a video instead), /reset (forget the conversation), /quit, /help; any other line is a message";

pub fn main(args: ChatArgs) -> Result<()> {
    let (model_path, mmproj, _synthetic) = args.pair.resolve()?;
    let gen = &args.gen;
    let first_video = args.video.request();
    let low_mem = gen.low_mem_for(
        &model_path,
        &mmproj,
        &minicpmv::plan::memory::Media {
            images: &args.images,
            video: first_video.as_ref(),
        },
    );
    let mut loaded = Pair::open(
        &model_path,
        &mmproj,
        gen.session_options(&model_path, low_mem, args.warmup)?,
    )?;
    let mut config = ChatConfig::default()
        .thinking(gen.thinking())
        .generation(gen.generation())
        .max_slices(gen.memory.max_slices)
        .cache(args.cache.config());
    if let Some(system) = &args.system {
        config = config.system(system);
    }
    let mut session = loaded.chat(config)?;
    for img in &args.images {
        session.attach_image(img)?;
    }
    if let Some(video) = &first_video {
        session.attach_video(video)?;
    }
    install_ctrl_c();
    let mut input = Input::open();
    let interactive = input.interactive();
    if interactive && !args.quiet {
        crate::note!("{HELP}");
    }
    let mut stdout = Stdout::default();
    while let Some(line) = input.next_line()? {
        let result = match ChatLine::parse(&line) {
            ChatLine::Empty => Ok(()),
            ChatLine::Quit => break,
            ChatLine::Help => {
                crate::note!("{HELP}");
                Ok(())
            }
            ChatLine::Reset => {
                session.reset();
                if !args.quiet {
                    crate::note!("(conversation reset)");
                }
                Ok(())
            }
            ChatLine::Image("") => Err(anyhow::anyhow!("usage: /image PATH")),
            ChatLine::Image(path) => session.attach_image(Path::new(path)).map_err(Into::into),
            ChatLine::Video("") => Err(anyhow::anyhow!("usage: /video PATH")),
            ChatLine::Video(path) => session
                .attach_video(&args.video.request_for(Path::new(path)))
                .map_err(Into::into),
            ChatLine::Unknown(name) => Err(anyhow::anyhow!("unknown command /{name}; {HELP}")),
            ChatLine::Ask(text) => turn(&mut session, text, &args, &mut stdout),
        };
        if stdout.broken.is_some() {
            break;
        }
        if let Err(e) = result {
            if !interactive {
                return Err(e);
            }
            crate::note!(
                "error: {}",
                super::output::printable(&super::hints::with_hint(&e))
            );
        }
    }
    stdout.finish().context("writing to stdout")?;
    if !args.quiet {
        let s = session.cache_stats();
        crate::note!(
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
    let mut thought = ThinkingOutput::new(streaming && !args.gen.hide_thinking);
    CANCEL.store(false, Ordering::SeqCst);
    GENERATING.store(true, Ordering::SeqCst);
    let out = session.ask_until(
        text,
        &mut |event| match event {
            Event::Text(s) if streaming => {
                thought.end();
                stdout.write_str(s)
            }
            Event::Text(_) => {}
            Event::Thinking(s) => thought.write(s),
            other => bar.on_event(&other),
        },
        &|| CANCEL.load(Ordering::SeqCst),
    );
    GENERATING.store(false, Ordering::SeqCst);
    thought.end();
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
        crate::note!(
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
