//! Times the projector alone: loads an mmproj, slices an image, encodes every slice, prints the
//! seconds per projector call. No language model is loaded. Used for the projector-type,
//! attention-kernel and thread-count table of docs/BENCHMARKS.md.
//!
//! ```sh
//! cargo run --release --example encode_speed -- MMPROJ.gguf IMAGE [flash|plain] [THREADS] [MAX_SLICES] [REPEATS]
//! ```
//! Prints one JSON line: the settings and the per-call seconds of each repeat.

use std::path::PathBuf;
use std::process::ExitCode;

use minicpmv::encode::encode_image;
use minicpmv::ffi::{ClipProjector, ProjectorAttention};
use minicpmv::model::inputs::check_projector;
use minicpmv::vision::{load_image, ImageFormat, DEFAULT_MAX_PIXELS};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        eprintln!(
            "usage: encode_speed MMPROJ.gguf IMAGE [flash|plain] [THREADS] [MAX_SLICES] [REPEATS]"
        );
        return ExitCode::from(2);
    }
    let attention = match args.get(2).map(String::as_str) {
        None | Some("flash") => ProjectorAttention::Flash,
        Some("plain") => ProjectorAttention::Plain,
        Some(other) => {
            eprintln!("error: attention must be flash or plain, not {other:?}");
            return ExitCode::from(2);
        }
    };
    let number = |i: usize, default: u32| -> Result<u32, String> {
        args.get(i).map_or(Ok(default), |s| {
            s.parse()
                .map_err(|_| format!("argument {}: {s:?} is not a number", i + 1))
        })
    };
    let parsed = (number(3, 2), number(4, 9), number(5, 2));
    let (Ok(threads), Ok(max_slices), Ok(repeats)) = parsed else {
        eprintln!("error: THREADS, MAX_SLICES and REPEATS are whole numbers");
        return ExitCode::from(2);
    };
    let mmproj = PathBuf::from(&args[0]);
    let image = match load_image(args[1].as_ref(), DEFAULT_MAX_PIXELS) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let format = match check_projector(&mmproj) {
        Ok((_, facts)) => ImageFormat::of_projector(&facts, max_slices),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut projector = match ClipProjector::load(&mmproj, false, attention) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut runs = Vec::new();
    for _ in 0..repeats.max(1) {
        match encode_image(
            &mut projector,
            &image,
            &format,
            threads as i32,
            &mut |_, _| {},
        ) {
            Ok(emb) => runs.push(emb.encode_secs),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    }
    println!(
        "{}",
        serde_json::json!({
            "mmproj": mmproj,
            "attention": attention,
            "threads": threads,
            "max_slices": max_slices,
            "secs_per_call": runs,
        })
    );
    ExitCode::SUCCESS
}
