//! minicpmv-fuzz: mutation fuzzing of every parser and check minicpmv runs on a user's input
//! before llama.cpp sees it, on stable Rust.
//!
//! Why not cargo-fuzz or cargo-afl: cargo-fuzz needs a nightly toolchain, which this project's
//! machines cannot fetch, and cargo-afl needs AFL++ built and installed on every machine that
//! runs the CI. This is a plain Rust binary and a set of unit tests instead:
//! - structure-aware mutations where they matter (GGUF headers mutated field by field, slice
//!   sizes drawn around the limits, listings built from hostile names) on top of byte-level
//!   ones (flips, interesting integers, inserts, deletes, splices, truncations);
//! - seeds made by the project's own code (the tiny synthetic pair of every version, images
//!   in six formats, cache entries, listings), never downloaded;
//! - oracles beyond "does not panic": errors name the file, decoded images respect the pixel
//!   limit, slice plans tile their refined image, cache entries re-encode to their bytes,
//!   listings never accept an unsafe file name;
//! - every input is a pure function of (seed, target, iteration), so a failure is replayed from
//!   its number (`--start N --iterations 1`), and a failing input is saved as a file.
//!
//! The price is no coverage feedback. `scripts/fuzz` runs the long run; the unit tests run a
//! short one in CI and replay every saved regression in `regressions/`.

#![forbid(unsafe_code)]

pub mod mutate;
pub mod targets;

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

pub use targets::{target, Target, Verdict, TARGETS};

/// An input slower than this is a failure (a near-hang on a small input).
pub const SLOW_INPUT: Duration = Duration::from_secs(2);

/// How a run goes.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Seed of the run: with the target's name and the iteration it fixes each input.
    pub seed: u64,
    /// First iteration.
    pub start: u64,
    /// Iterations to run (`None`: until `seconds`).
    pub iterations: Option<u64>,
    /// Time budget (`None`: until `iterations`).
    pub seconds: Option<f64>,
    /// Where failing inputs are saved (`None`: not saved).
    pub crashes: Option<PathBuf>,
    /// Stop at the first failure.
    pub stop_on_failure: bool,
}

/// One failing input.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The iteration that made it.
    pub iteration: u64,
    /// What went wrong (a panic's message, or the oracle's).
    pub message: String,
    /// Where it was saved.
    pub saved: Option<PathBuf>,
}

/// What a run of one target did.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The target's name.
    pub target: &'static str,
    /// Inputs run.
    pub iterations: u64,
    /// Inputs the code under test accepted (parsed, decoded, planned): how deep the run went.
    pub accepted: u64,
    /// Failing inputs.
    pub failures: Vec<Failure>,
    /// Wall time.
    pub elapsed: Duration,
}

/// Runs `input` through `target`, turning a panic into an error.
pub fn run_one(target: &Target, input: &[u8]) -> Result<Verdict, String> {
    let t0 = Instant::now();
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| (target.run)(input)));
    let result = match outcome {
        Ok(r) => r,
        Err(payload) => Err(format!(
            "panic: {}",
            payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)")
        )),
    };
    let took = t0.elapsed();
    if result.is_ok() && took > SLOW_INPUT {
        return Err(format!("slow: one input took {took:?}"));
    }
    result
}

/// Runs `target` as `opts` says. Panics inside the target are caught (and their default
/// message silenced while the run lasts); a watchdog ends the process with exit code 3 and
/// the iteration's number when one input runs for more than a minute.
pub fn run(target: &'static Target, opts: &RunOptions) -> RunReport {
    let t0 = Instant::now();
    let current = Arc::new(AtomicU64::new(u64::MAX));
    let started_ms = Arc::new(AtomicU64::new(0));
    spawn_watchdog(
        target.name,
        Arc::clone(&current),
        Arc::clone(&started_ms),
        t0,
    );
    let mut failures = Vec::new();
    let mut i = opts.start;
    let mut done = 0u64;
    let mut accepted = 0u64;
    loop {
        if opts.iterations.is_some_and(|n| done >= n)
            || opts
                .seconds
                .is_some_and(|s| t0.elapsed().as_secs_f64() >= s)
        {
            break;
        }
        let mut rng = mutate::Rng::for_iteration(opts.seed, target.name, i);
        let input = (target.make)(&mut rng);
        current.store(i, Ordering::Relaxed);
        started_ms.store(t0.elapsed().as_millis() as u64, Ordering::Relaxed);
        let result = quietly(|| run_one(target, &input));
        if result == Ok(Verdict::Accepted) {
            accepted += 1;
        }
        if let Err(message) = result {
            let saved = opts
                .crashes
                .as_deref()
                .and_then(|dir| save(dir, target.name, &input).ok());
            failures.push(Failure {
                iteration: i,
                message,
                saved,
            });
            if opts.stop_on_failure {
                done += 1;
                break;
            }
        }
        i += 1;
        done += 1;
    }
    current.store(u64::MAX, Ordering::Relaxed);
    RunReport {
        target: target.name,
        iterations: done,
        accepted,
        failures,
        elapsed: t0.elapsed(),
    }
}

/// Runs `f` with panic messages silenced (the failure is reported by the runner).
fn quietly<T>(f: impl FnOnce() -> T) -> T {
    use std::sync::Mutex;
    static HOOK: Mutex<()> = Mutex::new(());
    let _guard = HOOK.lock().unwrap_or_else(|e| e.into_inner());
    let previous = panic::take_hook();
    panic::set_hook(Box::new(|_| {}));
    let out = f();
    panic::set_hook(previous);
    out
}

fn spawn_watchdog(
    name: &'static str,
    current: Arc<AtomicU64>,
    started_ms: Arc<AtomicU64>,
    t0: Instant,
) {
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(500));
        let i = current.load(Ordering::Relaxed);
        if i == u64::MAX {
            if Arc::strong_count(&current) == 1 {
                return;
            }
            continue;
        }
        let running = t0.elapsed().as_millis() as u64 - started_ms.load(Ordering::Relaxed);
        if running > 60_000 {
            eprintln!("HANG: target {name}, iteration {i} has run for {running} ms");
            std::process::exit(3);
        }
    });
}

/// Saves a failing input as `DIR/TARGET-SHA8.bin`; returns its path.
pub fn save(dir: &Path, target: &str, input: &[u8]) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let digest = Sha256::digest(input);
    let name = format!(
        "{target}-{}.bin",
        digest
            .iter()
            .take(4)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let path = dir.join(name);
    let tmp = dir.join(format!(".{}.tmp", std::process::id()));
    std::fs::write(&tmp, input)?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// The saved inputs of a folder: `(target, path)` for every `TARGET-*.bin`, sorted.
pub fn saved_inputs(dir: &Path) -> Vec<(&'static Target, PathBuf)> {
    let mut found: Vec<(&'static Target, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let stem = name.strip_suffix(".bin")?;
            let t = TARGETS
                .iter()
                .filter(|t| stem.starts_with(&format!("{}-", t.name)))
                .max_by_key(|t| t.name.len())?;
            Some((t, e.path()))
        })
        .collect();
    found.sort_by(|a, b| a.1.cmp(&b.1));
    found
}

/// The folder of saved regressions, `crates/fuzz/regressions`.
pub fn regressions_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The short run: every target for a fixed number of iterations, about 40 s of CPU in all
    /// in a release build (`cargo test --release` runs the targets in parallel). CI runs it;
    /// `scripts/fuzz` runs the long one.
    fn short(name: &str, iterations: u64) {
        let t = target(name).expect("target");
        let report = run(
            t,
            &RunOptions {
                seed: 20261206,
                start: 0,
                iterations: Some(iterations),
                seconds: None,
                crashes: None,
                stop_on_failure: false,
            },
        );
        assert_eq!(report.iterations, iterations);
        assert!(
            report.failures.is_empty(),
            "{name}: {} failures, first at iteration {}: {}",
            report.failures.len(),
            report.failures[0].iteration,
            report.failures[0].message
        );
    }

    #[test]
    fn short_run_gguf() {
        short("gguf", 400_000);
    }

    #[test]
    fn short_run_gguf_fields() {
        short("gguf-fields", 250_000);
    }

    #[test]
    fn short_run_image() {
        short("image", 800_000);
    }

    #[test]
    fn short_run_slice() {
        short("slice", 4_000_000);
    }

    #[test]
    fn short_run_chat_line() {
        short("chat-line", 2_000_000);
    }

    #[test]
    fn short_run_embd_cache() {
        short("embd-cache", 1_500_000);
    }

    #[test]
    fn short_run_hub_listing() {
        short("hub-listing", 800_000);
    }

    /// Every input the fuzzers ever failed on, saved in `regressions/`, passes now.
    #[test]
    fn saved_regressions_pass() {
        let saved = saved_inputs(&regressions_dir());
        for (t, path) in &saved {
            let input = std::fs::read(path).expect("read regression");
            if let Err(e) = run_one(t, &input) {
                panic!("{}: {e}", path.display());
            }
        }
    }

    /// The oracles catch what they are meant to: a run function that panics, errs or is slow
    /// is reported, and saved inputs are found again by their target.
    #[test]
    fn failures_are_caught_saved_and_found() {
        static BAD: Target = Target {
            name: "bad",
            about: "fails on inputs starting with 0",
            make: |rng| vec![rng.below(2) as u8],
            run: |input| match input.first() {
                Some(0) => panic!("boom"),
                _ => Ok(Verdict::Accepted),
            },
        };
        let dir = tempfile::tempdir().unwrap();
        let report = run(
            &BAD,
            &RunOptions {
                seed: 1,
                start: 0,
                iterations: Some(50),
                seconds: None,
                crashes: Some(dir.path().to_path_buf()),
                stop_on_failure: false,
            },
        );
        assert!(!report.failures.is_empty());
        assert!(report.failures[0].message.contains("boom"));
        let saved = report.failures[0].saved.clone().expect("saved");
        assert_eq!(std::fs::read(&saved).unwrap(), vec![0]);
        // The same iteration replays the same input.
        let i = report.failures[0].iteration;
        let mut rng = mutate::Rng::for_iteration(1, "bad", i);
        assert_eq!((BAD.make)(&mut rng), vec![0]);
    }
}
