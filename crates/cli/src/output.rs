//! Printing helpers shared by the commands: logger, errors, stdout that tolerates a closed pipe.

use std::io::{self, IsTerminal, Write};
use std::time::Duration;

/// `eprintln!` that never panics: a message that cannot be written (stderr closed, or a full
/// device such as `2>/dev/full`) is dropped, and the command goes on to its exit code.
#[macro_export]
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// Installs a minimal stderr logger: warnings always, everything with `-v`.
pub fn init_logger(verbose: bool) {
    static LOGGER: StderrLogger = StderrLogger;
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(if verbose {
            log::LevelFilter::Debug
        } else {
            log::LevelFilter::Warn
        });
    }
}

/// Whether the server's own informational messages (one line per request, clients that went
/// away) are shown without `-v`.
static SERVER_LOG: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Shows the server's informational messages (`minicpmv serve`): its access log.
pub fn enable_server_log() {
    SERVER_LOG.store(true, std::sync::atomic::Ordering::Relaxed);
    if log::max_level() < log::LevelFilter::Info {
        log::set_max_level(log::LevelFilter::Info);
    }
}

struct StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        let level = metadata.level();
        if level == log::Level::Info
            && log::max_level() == log::LevelFilter::Info
            && SERVER_LOG.load(std::sync::atomic::Ordering::Relaxed)
        {
            return metadata.target().starts_with("minicpmv_server");
        }
        level <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            let _ = writeln!(io::stderr(), "[{}] {}", record.target(), record.args());
        }
    }

    fn flush(&self) {}
}

/// `error: outer: inner: innermost`, without repeating a cause already in the message.
pub fn error_chain(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let s = cause.to_string();
        if out.contains(&s) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&s);
    }
    out
}

/// `s` with control characters (newlines, tabs, escape sequences, ...) shown as escapes
/// (`\n`, `\t`, `\u{1b}`), so a file name cannot break or recolour an error line.
pub fn printable(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Whether the error is stdout having been closed by the reader (`minicpmv ... | head`).
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// Writes to stdout and flushes; remembers a broken pipe so the caller can stop.
#[derive(Debug, Default)]
pub struct Stdout {
    pub broken: Option<io::Error>,
}

impl Stdout {
    pub fn write_str(&mut self, s: &str) {
        if self.broken.is_some() {
            return;
        }
        let mut out = io::stdout().lock();
        if let Err(e) = out.write_all(s.as_bytes()).and_then(|_| out.flush()) {
            self.broken = Some(e);
        }
    }

    /// The first write error, if any, as a result.
    pub fn finish(self) -> io::Result<()> {
        match self.broken {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Whether progress output should be drawn: stderr is a terminal, or `--progress` forced it.
pub fn show_progress(forced: bool) -> bool {
    forced || io::stderr().is_terminal()
}

/// A progress bar over projector calls (slices), with ETA, on stderr; a no-op when disabled.
pub struct EncodeProgress {
    enabled: bool,
    bar: Option<indicatif::ProgressBar>,
    /// Counting video frames, not projector calls.
    frames: bool,
}

impl EncodeProgress {
    pub fn new(enabled: bool) -> EncodeProgress {
        EncodeProgress {
            enabled,
            bar: None,
            frames: false,
        }
    }

    fn draw(&mut self, total: usize, what: &str) {
        self.finish();
        if !self.enabled || total == 0 {
            return;
        }
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(total as u64),
            indicatif::ProgressDrawTarget::stderr(),
        );
        let style = indicatif::ProgressStyle::with_template(&format!(
            "{what} {{bar:30}} {{pos}}/{{len}} [{{elapsed_precise}}, ETA {{eta}}]"
        ))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(250));
        self.bar = Some(bar);
    }

    /// Projector calls ahead.
    pub fn start(&mut self, total: usize) {
        self.frames = false;
        self.draw(total, "encoding image slices");
    }

    /// Video frames ahead: the bar counts frames from now on.
    pub fn start_frames(&mut self, total: usize) {
        self.frames = true;
        self.draw(total, "decoding and encoding video frames");
    }

    /// Projector calls done (ignored while counting frames).
    pub fn set(&mut self, done: usize) {
        if !self.frames {
            self.position(done);
        }
    }

    /// Frames done.
    pub fn set_frames(&mut self, done: usize) {
        if self.frames {
            self.position(done);
        }
    }

    fn position(&self, done: usize) {
        if let Some(bar) = &self.bar {
            bar.set_position(done as u64);
        }
    }

    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }

    /// Routes a run's progress events to the bar; other events are ignored.
    pub fn on_event(&mut self, event: &minicpmv::Event<'_>) {
        use minicpmv::Event;
        match *event {
            Event::EncodeStart { total } => self.start(total),
            Event::ChunkEncoded { done, .. } => self.set(done),
            Event::VideoStart { frames } => self.start_frames(frames),
            Event::FrameEncoded { done, .. } => self.set_frames(done),
            Event::Text(_) | Event::Thinking(_) => {}
        }
    }
}

pub use minicpmv::gguf::human_bytes;

/// A thinking model's reasoning as it streams: on stderr, so that stdout holds the answer
/// alone, framed by `[thinking]` and `[/thinking]` lines; nothing when hidden.
pub struct ThinkingOutput {
    enabled: bool,
    open: bool,
}

impl ThinkingOutput {
    pub fn new(enabled: bool) -> ThinkingOutput {
        ThinkingOutput {
            enabled,
            open: false,
        }
    }

    pub fn write(&mut self, s: &str) {
        if !self.enabled {
            return;
        }
        let mut err = io::stderr().lock();
        if !self.open {
            self.open = true;
            let _ = err.write_all(b"[thinking]\n");
        }
        let _ = err.write_all(s.as_bytes());
        let _ = err.flush();
    }

    /// The reasoning is over (the answer starts, or the run ended).
    pub fn end(&mut self) {
        if self.open {
            self.open = false;
            let _ = io::stderr().write_all(b"\n[/thinking]\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(printable("plain/path é.png"), "plain/path é.png");
        assert_eq!(printable("a\nb\tc\u{1b}[31m"), "a\\nb\\tc\\u{1b}[31m");
    }
}
