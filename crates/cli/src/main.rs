//! The `minicpmv` command line. Thin: argument parsing, printing, exit codes, and the wording of
//! errors in terms of flags; the work is in the `minicpmv` library.
//!
//! Exit codes: 0 success, 2 error (clap's usage errors are 2 as well). Results go to stdout,
//! logs and progress to stderr. A closed stdout (broken pipe) ends the program quietly.

#![forbid(unsafe_code)]

mod chat;
mod common;
mod hints;
mod inspect;
mod output;
mod parity;
mod plan;
mod pull;
mod quality;
mod quantize;
mod run;
mod serve;
mod slice_plan;
mod synth;
mod worker;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Run MiniCPM-V vision-language models (GGUF) on small machines.
#[derive(Debug, Parser)]
#[command(name = "minicpmv", version, about, propagate_version = true)]
struct Cli {
    /// Show llama.cpp's own log and debug messages on stderr.
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Answer a prompt about one or more images, streaming the text to stdout.
    Run(run::RunArgs),
    /// Talk about images over several turns (`/image PATH`, `/reset`, `/quit`), reusing the
    /// KV cache between turns and caching image embeddings.
    Chat(chat::ChatArgs),
    /// Write a synthetic MiniCPM-V GGUF pair (language model + mmproj) with random weights.
    Synth(synth::SynthArgs),
    /// Describe a GGUF file: language model or projector, version, sizes, tensor types.
    Inspect(inspect::InspectArgs),
    /// Quantize a GGUF file (language model or mmproj) with llama.cpp, or a MiniCPM-V pair
    /// with a preset (int4, int8, int5).
    Quantize(quantize::QuantizeArgs),
    /// Show how images are cut into an overview and slices and what they cost in tokens.
    SlicePlan(slice_plan::SlicePlanArgs),
    /// Compare our native image pipeline with llama.cpp's own on your files (input sequence,
    /// embeddings, greedy tokens). Exit code 1 when they differ.
    Parity(parity::ParityArgs),
    /// Compare a candidate (quantized) pair with a reference pair on images and prompts: KL
    /// divergence, top-1 agreement, perplexity, projector cosine, for the projector and the
    /// language model separately and together.
    Quality(quality::QualityArgs),
    /// Predict the peak memory of a run (per phase, from llama.cpp's own estimates) against
    /// the memory available now, and the settings that would make it fit. Exit code 1 when it
    /// does not fit.
    Plan(plan::PlanArgs),
    /// Serve the model over HTTP: OpenAI's /v1/chat/completions and Ollama's /api/chat,
    /// /api/generate (images as base64), with /health and Prometheus /metrics.
    Serve(serve::ServeArgs),
    /// Download a language model + mmproj pair from Hugging Face into the cache (default:
    /// MiniCPM-V 2.6 Q4_K_M), resuming partial files and checking sha256.
    Pull(pull::PullArgs),
    /// Serve this machine's CPU to `--rpc` clients over ggml's RPC protocol (as llama.cpp's
    /// rpc-server), so one model's layers can be split over several boxes. Listens on
    /// 127.0.0.1 unless --host says otherwise; the protocol has no authentication or
    /// encryption.
    Worker(worker::WorkerArgs),
}

fn main() -> ExitCode {
    minicpmv::ffi::process::ignore_file_size_signal();
    let cli = Cli::parse();
    output::init_logger(cli.verbose);
    minicpmv::ffi::set_verbose(cli.verbose);
    let result = match cli.command {
        Command::Run(args) => run::main(args),
        Command::Chat(args) => chat::main(args),
        Command::Synth(args) => synth::main(args),
        Command::Inspect(args) => inspect::main(args),
        Command::Quantize(args) => quantize::main(args),
        Command::SlicePlan(args) => match slice_plan::main(args) {
            Ok(false) => return ExitCode::from(1),
            other => other.map(|_| ()),
        },
        Command::Quality(args) => quality::main(args),
        Command::Pull(args) => pull::main(args),
        Command::Worker(args) => worker::main(args),
        Command::Serve(args) => serve::main(args),
        Command::Plan(args) => match plan::main(args) {
            Ok(false) => return ExitCode::from(1),
            other => other.map(|_| ()),
        },
        Command::Parity(args) => match parity::main(args) {
            Ok(false) => return ExitCode::from(1),
            other => other.map(|_| ()),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if output::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            crate::note!("error: {}", output::printable(&hints::with_hint(&err)));
            ExitCode::from(2)
        }
    }
}
