//! `minicpmv quantize`: one GGUF file (language model or mmproj) to a quantization type, or a
//! MiniCPM-V pair with a preset. The work is in the `minicpmv-quantize` crate; this reads the
//! files with our GGUF reader, shows progress and prints the summary.

use std::collections::BTreeMap;
use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::Args;
use serde::Serialize;

use minicpmv_quantize::{
    self as mq, KeepReason, Prepared, Preset, ProgressProbe, QuantType, Request, Summary,
};

use super::output::{human_bytes, Stdout};

const AFTER_HELP: &str = "\
Types (llama.cpp file types; a type sets the default tensor type, llama.cpp's per-tensor rules
keep 1-D tensors, norms and position/patch embeddings unquantized, give some tensors more bits,
and fall back to another type where rows do not divide into the type's blocks):
  f32 f16 bf16 q8_0 q6_k q5_k_m q5_k_s q5_1 q5_0 q4_k_m q4_k_s q4_1 q4_0 iq4_nl iq4_xs
  q3_k_l q3_k_m q3_k_s q2_k
Types that need an importance matrix (iq1_*, iq2_*, iq3_xxs, iq3_xs, q2_k_s) are refused.

Presets for a MiniCPM-V pair (--model M --mmproj P --preset NAME --out-dir D):
  int4  language model q4_k_m + projector q8_0 (the usual choice)
  int8  language model q8_0   + projector q8_0 (near-lossless)
  int5  language model q5_k_m + projector q8_0 (between the two)
The projector stays q8_0: it is small next to the language model, its errors reach every
image token, and SigLIP's 4304-wide ffn_down rows fit no 32/256 block, so 4-bit types save
little on it.

The output is written to OUTPUT_DIR/.NAME.quantize-tmp.PID and renamed on success; Ctrl-C
removes it. A temporary file left by a killed run is removed by the next run in that folder.";

/// Quantize a GGUF file (language model or mmproj), or a MiniCPM-V pair with a preset.
#[derive(Debug, Args)]
#[command(after_long_help = AFTER_HELP)]
pub struct QuantizeArgs {
    /// The GGUF file to quantize: a language model or a projector (mmproj, whose
    /// general.architecture is "clip").
    #[arg(
        value_name = "INPUT",
        required_unless_present = "preset",
        conflicts_with_all = ["model", "mmproj", "preset", "out_dir"]
    )]
    pub input: Option<PathBuf>,
    /// The file to write (its folder must exist).
    #[arg(value_name = "OUTPUT", required_unless_present_any = ["preset", "dry_run"])]
    pub output: Option<PathBuf>,
    /// Quantization type (q4_k_m, q8_0, q5_k_m, q4_0, iq4_nl, f16, ...; all of them in --help).
    #[arg(
        long = "type",
        value_name = "TYPE",
        value_parser = parse_type,
        required_unless_present = "preset",
        conflicts_with = "preset"
    )]
    pub qtype: Option<QuantType>,
    /// Quantize a MiniCPM-V pair: int4 (q4_k_m + q8_0 projector), int8 (q8_0 + q8_0) or int5
    /// (q5_k_m + q8_0). Needs --model, --mmproj and --out-dir.
    #[arg(long, value_name = "PRESET", value_parser = parse_preset, requires_all = ["model", "mmproj", "out_dir"])]
    pub preset: Option<Preset>,
    /// With --preset: the language model GGUF.
    #[arg(short = 'm', long, value_name = "FILE", requires = "preset")]
    pub model: Option<PathBuf>,
    /// With --preset: the projector (mmproj) GGUF.
    #[arg(long, value_name = "FILE", requires = "preset")]
    pub mmproj: Option<PathBuf>,
    /// With --preset: folder for the two outputs (created if missing), named after the inputs
    /// with the type: model-Q4_K_M.gguf, mmproj-Q8_0.gguf.
    #[arg(long, value_name = "DIR", requires = "preset")]
    pub out_dir: Option<PathBuf>,
    /// Threads for llama.cpp (default: all cores).
    #[arg(short = 't', long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub threads: Option<u32>,
    /// Allow quantizing tensors that are already quantized (adds a second rounding error).
    #[arg(long)]
    pub allow_requantize: bool,
    /// Replace existing output files.
    #[arg(long)]
    pub force: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Show progress on stderr even when it is not a terminal (one line per 10%).
    #[arg(long)]
    pub progress: bool,
    /// Only show what llama.cpp would do (per-tensor types, output size): reads no tensor data
    /// and writes nothing.
    #[arg(long)]
    pub dry_run: bool,
}

fn parse_type(s: &str) -> Result<QuantType, String> {
    QuantType::parse(s).map_err(|e| e.to_string())
}

fn parse_preset(s: &str) -> Result<Preset, String> {
    Preset::by_name(s).ok_or_else(|| {
        format!(
            "unknown preset {s:?}; one of: {}",
            Preset::names().join(", ")
        )
    })
}

pub fn main(args: QuantizeArgs) -> Result<()> {
    match (&args.preset, &args.input, &args.output, args.qtype) {
        (Some(preset), _, _, _) => run_preset(&args, *preset),
        (None, Some(input), _, Some(qtype)) if args.dry_run => {
            let summary = mq::dry_run(
                mq::GgufFacts::read(input).context("cannot quantize")?,
                qtype,
            )
            .context("cannot quantize")?;
            print_summaries(args.json, &[&summary])
        }
        (None, Some(input), Some(output), Some(qtype)) => run_single(&args, input, output, qtype),
        // clap's `required_unless_present` rules make this unreachable.
        _ => bail!("give INPUT OUTPUT --type TYPE, or --model --mmproj --preset --out-dir"),
    }
}

// ---------------------------------------------------------------------------------------------
// One file

fn run_single(args: &QuantizeArgs, input: &Path, output: &Path, qtype: QuantType) -> Result<()> {
    let facts = mq::GgufFacts::read(input).context("cannot quantize")?;
    minicpmv::model::inputs::check_quantizable(input).context("cannot quantize")?;
    let prepared = mq::prepare(Request {
        input: facts,
        output: output.to_path_buf(),
        qtype,
        threads: args.threads,
        allow_requantize: args.allow_requantize,
        force: args.force,
    })
    .context("cannot quantize")?;
    let summary = execute(prepared, args.progress, "")?;
    print_summaries(args.json, &[&summary])
}

/// Prints summaries: JSON (one object, or an array for several) or text.
fn print_summaries(json: bool, summaries: &[&Summary]) -> Result<()> {
    let mut out = Stdout::default();
    if json {
        let text = match summaries {
            [one] => serde_json::to_string_pretty(one)?,
            many => serde_json::to_string_pretty(many)?,
        };
        out.write_str(&(text + "\n"));
    } else {
        for (i, s) in summaries.iter().enumerate() {
            if i > 0 {
                out.write_str("\n");
            }
            out.write_str(&render_summary(s));
        }
    }
    out.finish().context("writing to stdout")?;
    Ok(())
}

/// Runs one prepared quantization with progress on stderr; reads the output back for the
/// summary.
fn execute(prepared: Prepared, force_progress: bool, label: &str) -> Result<Summary> {
    for stale in &prepared.stale_removed {
        crate::note!(
            "removed {}: a temporary file left by an earlier quantize run that was killed",
            stale.display()
        );
    }
    let display = ProgressDisplay::start(prepared.progress(), force_progress, label);
    let result = prepared.run();
    display.finish(result.is_ok());
    let outcome = result?;
    let out_facts = mq::GgufFacts::read(&outcome.output).with_context(|| {
        format!(
            "llama.cpp wrote {}, but it cannot be read back",
            outcome.output.display()
        )
    })?;
    Ok(outcome.summary(&out_facts))
}

// ---------------------------------------------------------------------------------------------
// A pair with a preset

#[derive(Debug, Serialize)]
struct PresetReport {
    preset: &'static str,
    model: Summary,
    mmproj: Summary,
    /// The command that runs the quantized pair (IMAGE to be replaced).
    run_command: String,
    /// The same, as arguments after the program name.
    run_args: Vec<String>,
}

fn run_preset(args: &QuantizeArgs, preset: Preset) -> Result<()> {
    let (Some(model), Some(mmproj), Some(out_dir)) = (&args.model, &args.mmproj, &args.out_dir)
    else {
        bail!("--preset needs --model, --mmproj and --out-dir");
    };
    // The language model and the projector must each be what their flag says (so neither is
    // ever quantized with the other's type), and belong together.
    minicpmv::model::inputs::check_pair(model, mmproj).context("cannot quantize the pair")?;
    if args.dry_run {
        let sm = mq::dry_run(
            mq::GgufFacts::read(model).context("cannot quantize")?,
            preset.model,
        )
        .context("cannot quantize the language model")?;
        let sp = mq::dry_run(
            mq::GgufFacts::read(mmproj).context("cannot quantize")?,
            preset.mmproj,
        )
        .context("cannot quantize the projector")?;
        return print_summaries(args.json, &[&sm, &sp]);
    }
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("cannot create the folder {}", out_dir.display()))?;
    let model_out = out_dir.join(mq::output_file_name(model, preset.model));
    let mmproj_out = out_dir.join(mq::output_file_name(mmproj, preset.mmproj));
    if model_out == mmproj_out {
        bail!(
            "both outputs would be {}: rename one of the inputs",
            model_out.display()
        );
    }
    let request = |input: &Path, output: PathBuf, qtype| -> Result<Request> {
        Ok(Request {
            input: mq::GgufFacts::read(input).context("cannot quantize")?,
            output,
            qtype,
            threads: args.threads,
            allow_requantize: args.allow_requantize,
            force: args.force,
        })
    };
    let pm = mq::prepare(request(model, model_out.clone(), preset.model)?)
        .context("cannot quantize the language model")?;
    let pp = mq::prepare(request(mmproj, mmproj_out.clone(), preset.mmproj)?)
        .context("cannot quantize the projector")?;
    mq::check_space(&[&pm, &pp]).context("cannot quantize the pair")?;
    let model_summary = execute(pm, args.progress, "language model")?;
    let mmproj_summary = execute(pp, args.progress, "projector")?;
    let run_args: Vec<String> = vec![
        "run".into(),
        "-m".into(),
        model_out.display().to_string(),
        "--mmproj".into(),
        mmproj_out.display().to_string(),
        "--image".into(),
        "IMAGE".into(),
        "-p".into(),
        "Describe this image.".into(),
    ];
    let run_command = std::iter::once("minicpmv".to_string())
        .chain(run_args.iter().map(|a| shell_quote(a)))
        .collect::<Vec<_>>()
        .join(" ");
    let mut out = Stdout::default();
    if args.json {
        let report = PresetReport {
            preset: preset.name,
            model: model_summary,
            mmproj: mmproj_summary,
            run_command,
            run_args,
        };
        out.write_str(&(serde_json::to_string_pretty(&report)? + "\n"));
    } else {
        out.write_str(&format!("preset {}: {}\n\n", preset.name, preset.about));
        out.write_str(&render_summary(&model_summary));
        out.write_str("\n");
        out.write_str(&render_summary(&mmproj_summary));
        out.write_str(&format!(
            "\nrun the quantized pair with:\n  {run_command}\n"
        ));
    }
    out.finish().context("writing to stdout")?;
    Ok(())
}

/// Quotes an argument for a POSIX shell when it needs it.
fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=+,@%".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

// ---------------------------------------------------------------------------------------------
// Progress

/// Polls the quantization's progress from a thread: an indicatif bar on a terminal, one line per
/// 10% with `--progress` otherwise, nothing else.
struct ProgressDisplay {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl ProgressDisplay {
    fn start(probe: ProgressProbe, forced: bool, label: &str) -> ProgressDisplay {
        let stop = Arc::new(AtomicBool::new(false));
        let tty = std::io::stderr().is_terminal();
        if !tty && !forced {
            return ProgressDisplay { stop, handle: None };
        }
        let label = if label.is_empty() {
            "quantizing".to_string()
        } else {
            format!("quantizing {label}")
        };
        let stop2 = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            if tty {
                bar_loop(&probe, &stop2, &label);
            } else {
                lines_loop(&probe, &stop2, &label);
            }
        });
        ProgressDisplay {
            stop,
            handle: Some(handle),
        }
    }

    fn finish(mut self, _ok: bool) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn bar_loop(probe: &ProgressProbe, stop: &AtomicBool, label: &str) {
    let first = probe.snapshot();
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(first.bytes_total.max(1)),
        indicatif::ProgressDrawTarget::stderr(),
    );
    let style = indicatif::ProgressStyle::with_template(&format!(
        "{label} {{bar:30}} {{percent:>3}}% {{msg}} [{{elapsed_precise}}, ETA {{eta}}]"
    ))
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    loop {
        let p = probe.snapshot();
        bar.set_position(p.bytes_done);
        bar.set_message(format!(
            "{}/{} tensors {}",
            p.tensors_done,
            p.tensors_total,
            p.current.as_deref().unwrap_or("")
        ));
        if stop.load(Ordering::SeqCst) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bar.finish_and_clear();
}

fn lines_loop(probe: &ProgressProbe, stop: &AtomicBool, label: &str) {
    let start = Instant::now();
    let mut next_step = 0u64;
    let mut last_printed = None;
    let mut stderr = std::io::stderr();
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        let p = probe.snapshot();
        let pct = (p.bytes_done * 100)
            .checked_div(p.bytes_total)
            .unwrap_or(0)
            .min(100);
        if pct >= next_step || (stopping && last_printed != Some(pct)) {
            let elapsed = start.elapsed().as_secs_f64();
            let eta = if p.bytes_done > 0 && p.bytes_done < p.bytes_total {
                let left = (p.bytes_total - p.bytes_done) as f64 / p.bytes_done as f64;
                format!(", ETA {:.0} s", elapsed * left)
            } else {
                String::new()
            };
            let _ = writeln!(
                stderr,
                "{label}: {pct:>3}% ({}/{} tensors, {elapsed:.1} s{eta})",
                p.tensors_done, p.tensors_total
            );
            next_step = (pct / 10 + 1) * 10;
            last_printed = Some(pct);
        }
        if stopping {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------------------
// Text summary

fn render_summary(s: &Summary) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    // Writing into a String cannot fail: the results of writeln! are ignored.
    if s.dry_run {
        let _ = writeln!(
            o,
            "{} (dry run: llama.cpp's plan, nothing written)",
            s.input.display()
        );
    } else {
        let _ = writeln!(o, "{} -> {}", s.input.display(), s.output.display());
    }
    let kind = match s.kind {
        "projector" => "vision projector (mmproj)".to_string(),
        _ => format!("language model ({})", s.architecture),
    };
    let _ = writeln!(o, "  file:          {kind}; llama.cpp rules: {}", s.policy);
    let _ = writeln!(
        o,
        "  type:          {} (default tensor type {})",
        s.qtype, s.base_type
    );
    let _ = writeln!(
        o,
        "  size:          {} -> {} ({:.1}% of the input, {:.2}x smaller)",
        human_bytes(s.input_bytes),
        human_bytes(s.output_bytes),
        s.ratio * 100.0,
        if s.ratio > 0.0 { 1.0 / s.ratio } else { 0.0 }
    );
    if !s.dry_run {
        let _ = writeln!(
            o,
            "  time:          {:.1} s with {} threads",
            s.seconds, s.threads
        );
    }
    let _ = writeln!(o, "  tensor types:  {} tensors", s.n_tensors);
    for (ty, st) in &s.tensor_types {
        let _ = writeln!(
            o,
            "    {ty:<8} {:>5} tensors {:>12}",
            st.tensors,
            human_bytes(st.bytes)
        );
    }
    if s.kept_higher.is_empty() {
        let _ = writeln!(
            o,
            "  no tensor kept in higher precision than {}",
            s.base_type
        );
    } else {
        let _ = writeln!(
            o,
            "  kept in higher precision than {}: {} tensors",
            s.base_type,
            s.kept_higher.len()
        );
        let mut by_reason: BTreeMap<KeepReason, Vec<&mq::KeptTensor>> = BTreeMap::new();
        for k in &s.kept_higher {
            by_reason.entry(k.reason).or_default().push(k);
        }
        for (reason, list) in by_reason {
            let examples: Vec<String> = list
                .iter()
                .take(3)
                .map(|k| format!("{} {}", k.name, k.output_type))
                .collect();
            let more = if list.len() > 3 { ", ..." } else { "" };
            let _ = writeln!(
                o,
                "    {:>4}  {}: {}{more}",
                list.len(),
                reason.describe(),
                examples.join(", ")
            );
        }
    }
    for stale in &s.stale_temp_files_removed {
        let _ = writeln!(o, "  removed stale temporary file {}", stale.display());
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/a/b-c_d.gguf"), "/a/b-c_d.gguf");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
