//! `minicpmv-fuzz`: runs the fuzz targets (see the crate docs and `scripts/fuzz`).
//!
//! ```text
//! minicpmv-fuzz [--target NAME|all] [--iterations N | --seconds S] [--seed N] [--start N]
//!               [--crashes DIR] [--replay FILE...] [--list]
//! ```
//! Exit codes: 0 no failure, 1 failures (saved in --crashes), 2 usage, 3 a hang.

use std::path::PathBuf;
use std::process::ExitCode;

use minicpmv_fuzz::{run, run_one, saved_inputs, RunOptions, Target, TARGETS};

struct Args {
    targets: Vec<&'static Target>,
    opts: RunOptions,
    replay: Vec<PathBuf>,
    list: bool,
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("minicpmv-fuzz: {msg}");
    eprintln!(
        "usage: minicpmv-fuzz [--target NAME|all] [--iterations N | --seconds S] [--seed N] \
         [--start N] [--crashes DIR] [--replay FILE...] [--list]"
    );
    ExitCode::from(2)
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        targets: TARGETS.iter().collect(),
        opts: RunOptions {
            seed: 1,
            start: 0,
            iterations: None,
            seconds: None,
            crashes: Some(PathBuf::from("fuzz/crashes")),
            stop_on_failure: false,
        },
        replay: Vec::new(),
        list: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |what: &str| it.next().ok_or(format!("{arg} needs {what}"));
        match arg.as_str() {
            "--target" => {
                let name = value("a target name")?;
                a.targets = if name == "all" {
                    TARGETS.iter().collect()
                } else {
                    vec![minicpmv_fuzz::target(&name)
                        .ok_or(format!("no target {name:?}; --list shows them"))?]
                };
            }
            "--iterations" => {
                let v = value("a number")?;
                a.opts.iterations = Some(v.parse().map_err(|_| format!("bad --iterations {v}"))?);
            }
            "--seconds" => {
                let v = value("a number")?;
                let s: f64 = v.parse().map_err(|_| format!("bad --seconds {v}"))?;
                if !(s.is_finite() && s > 0.0) {
                    return Err(format!("bad --seconds {v}"));
                }
                a.opts.seconds = Some(s);
            }
            "--seed" => {
                let v = value("a number")?;
                a.opts.seed = v.parse().map_err(|_| format!("bad --seed {v}"))?;
            }
            "--start" => {
                let v = value("a number")?;
                a.opts.start = v.parse().map_err(|_| format!("bad --start {v}"))?;
            }
            "--crashes" => a.opts.crashes = Some(PathBuf::from(value("a folder")?)),
            "--replay" => a.replay.push(PathBuf::from(value("a file or folder")?)),
            "--stop" => a.opts.stop_on_failure = true,
            "--list" => a.list = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if a.opts.iterations.is_none() && a.opts.seconds.is_none() {
        a.opts.iterations = Some(100_000);
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => return usage(&e),
    };
    if args.list {
        for t in TARGETS {
            println!("{:12} {}", t.name, t.about);
        }
        return ExitCode::SUCCESS;
    }
    if !args.replay.is_empty() {
        return replay(&args.replay);
    }
    let mut failed = false;
    for t in &args.targets {
        let report = run(t, &args.opts);
        let rate = report.iterations as f64 / report.elapsed.as_secs_f64().max(1e-9);
        println!(
            "{:12} {:>12} iterations in {:>8.1} s ({:>9.0}/s), {:>5.1}% accepted, {} failures",
            report.target,
            report.iterations,
            report.elapsed.as_secs_f64(),
            rate,
            100.0 * report.accepted as f64 / report.iterations.max(1) as f64,
            report.failures.len()
        );
        for f in report.failures.iter().take(10) {
            failed = true;
            println!(
                "  iteration {}: {}{}",
                f.iteration,
                f.message,
                f.saved
                    .as_ref()
                    .map(|p| format!(" (saved as {})", p.display()))
                    .unwrap_or_default()
            );
        }
        failed |= !report.failures.is_empty();
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Runs saved inputs (files, or folders of `TARGET-*.bin`) through their targets.
fn replay(paths: &[PathBuf]) -> ExitCode {
    let mut inputs = Vec::new();
    for p in paths {
        if p.is_dir() {
            inputs.extend(saved_inputs(p));
        } else {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            match TARGETS
                .iter()
                .find(|t| name.starts_with(&format!("{}-", t.name)))
            {
                Some(t) => inputs.push((t, p.clone())),
                None => {
                    return usage(&format!(
                        "{}: no target named in the file name",
                        p.display()
                    ))
                }
            }
        }
    }
    let mut failed = false;
    for (t, path) in inputs {
        let input = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => return usage(&format!("{}: {e}", path.display())),
        };
        match run_one(t, &input) {
            Ok(v) => println!("ok    {} ({v:?})", path.display()),
            Err(e) => {
                failed = true;
                println!("FAIL  {}: {e}", path.display());
            }
        }
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
