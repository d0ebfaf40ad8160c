//! One quantization: the checks before llama.cpp sees anything ([`prepare`]), then the run into
//! a temporary file that is renamed into place only on success ([`Prepared::run`]).

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::error::QuantizeError;
use crate::facts::{GgufFacts, TensorFacts};
use crate::ffi::{self, RawParams, SignalCleanup};
use crate::plan::{self, Plan, ProgressProbe};
use crate::report::Summary;
use crate::types::QuantType;

/// Test-only: when set to a number, the free-space check uses it instead of `statvfs`, so that
/// the "disk full" refusal can be tested without filling a disk.
pub const FAKE_FREE_BYTES_ENV: &str = "MINICPMV_FAKE_FREE_BYTES";

/// The part of a temporary output's name between the output's file name and the process id:
/// `.OUTPUT.quantize-tmp.PID`, in OUTPUT's folder.
pub const TEMP_MARKER: &str = ".quantize-tmp.";

/// What to quantize, into what.
#[derive(Debug, Clone)]
pub struct Request {
    /// The input, as a checking GGUF reader saw it.
    pub input: GgufFacts,
    pub output: PathBuf,
    pub qtype: QuantType,
    /// Threads for llama.cpp; `None`: all cores.
    pub threads: Option<u32>,
    /// Allow converting tensors that are already block-quantized.
    pub allow_requantize: bool,
    /// Replace an existing output file.
    pub force: bool,
}

/// A checked request with llama.cpp's plan, ready to run.
#[derive(Debug)]
pub struct Prepared {
    pub request: Request,
    pub plan: Plan,
    /// The output's folder.
    pub output_dir: PathBuf,
    /// Where llama.cpp writes (`OUTPUT_DIR/.NAME.quantize-tmp.PID`).
    pub temp: PathBuf,
    /// Temporary files of earlier runs whose process is gone, removed from the output folder.
    pub stale_removed: Vec<PathBuf>,
    /// Free bytes in the output folder at check time.
    pub free_bytes: u64,
    dev: u64,
    probe: ProgressProbe,
}

/// A finished quantization.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub input: GgufFacts,
    pub output: PathBuf,
    pub qtype: QuantType,
    pub plan: Plan,
    pub seconds: f64,
    pub threads: usize,
    pub output_bytes: u64,
    /// Tensors llama.cpp reported as done through its log (the progress source).
    pub tensors_seen: usize,
    pub stale_removed: Vec<PathBuf>,
}

/// Checks everything that can be checked before llama.cpp writes anything, and asks llama.cpp
/// for its plan (a dry run):
///
/// - the input's metadata will not make llama.cpp abort ([`GgufFacts::check_loadable`]);
/// - the output is not the input (same path after resolving `..` and symlinks, or the same
///   inode: a hard link), is not a directory, does not exist unless `force`, and its folder
///   exists;
/// - no tensor would be requantized unless `allow_requantize`;
/// - the output's file system has room for the planned output (after removing stale temporary
///   files of dead processes from the folder).
pub fn prepare(request: Request) -> Result<Prepared, QuantizeError> {
    request.input.check_loadable()?;
    let output_dir = check_output(&request.input.path, &request.output, request.force)?;
    let plan = plan::dry_run(&request.input, request.qtype)?;
    if !request.allow_requantize {
        if let Some(t) = plan
            .tensors
            .iter()
            .find(|t| t.from.is_quantized() && t.to != t.from)
        {
            return Err(QuantizeError::Requantize {
                path: request.input.path.clone(),
                tensor: t.name.clone(),
                ty: t.from.to_string(),
            });
        }
    }
    let stale_removed = remove_stale_temps(&output_dir);
    let free_bytes = free_space(&output_dir)?;
    let dev = fs::metadata(&output_dir)
        .map_err(|e| QuantizeError::io(&output_dir, e))?
        .dev();
    let temp = temp_path(&request.output, std::process::id());
    let probe = plan::progress_probe(&request.input);
    let prepared = Prepared {
        request,
        plan,
        output_dir,
        temp,
        stale_removed,
        free_bytes,
        dev,
        probe,
    };
    check_space(&[&prepared])?;
    Ok(prepared)
}

/// Only asks llama.cpp for its plan (a dry run: no tensor data is read, nothing is written) and
/// summarises it as if the file had been written: planned types, sizes and reasons. No output
/// path is involved.
pub fn dry_run(input: GgufFacts, qtype: QuantType) -> Result<Summary, QuantizeError> {
    input.check_loadable()?;
    let plan = plan::dry_run(&input, qtype)?;
    let planned = GgufFacts {
        path: PathBuf::new(),
        kind: input.kind.clone(),
        file_size: plan.expected_output_bytes,
        data_offset: input.data_offset,
        metadata: Default::default(),
        tensors: plan
            .tensors
            .iter()
            .map(|t| TensorFacts {
                name: t.name.clone(),
                dims: t.dims.clone(),
                ggml_type: t.to.id(),
                n_bytes: t.out_bytes,
            })
            .collect(),
    };
    let outcome = Outcome {
        input,
        output: PathBuf::new(),
        qtype,
        output_bytes: plan.expected_output_bytes,
        plan,
        seconds: 0.0,
        threads: 0,
        tensors_seen: 0,
        stale_removed: Vec::new(),
    };
    let mut summary = outcome.summary(&planned);
    summary.dry_run = true;
    Ok(summary)
}

/// Checks that outputs written together fit: the planned sizes of those on the same file
/// system must add up to no more than its free space.
pub fn check_space(jobs: &[&Prepared]) -> Result<(), QuantizeError> {
    for j in jobs {
        let need: u64 = jobs
            .iter()
            .filter(|o| o.dev == j.dev)
            .map(|o| o.plan.expected_output_bytes)
            .sum();
        if need > j.free_bytes {
            return Err(QuantizeError::NoSpace {
                dir: j.output_dir.clone(),
                need,
                free: j.free_bytes,
            });
        }
    }
    Ok(())
}

impl Prepared {
    /// A handle to follow the run's progress from another thread.
    pub fn progress(&self) -> ProgressProbe {
        self.probe.clone()
    }

    /// Runs llama.cpp into the temporary file, then renames it to the output. On failure, and on
    /// SIGINT/SIGTERM/SIGHUP (a handler removes the temporary file, then the process ends with
    /// the signal), the output is left untouched and no temporary file remains. After a SIGKILL
    /// the temporary file stays (nothing can run), but the output is untouched; the next
    /// [`prepare`] in that folder removes it.
    pub fn run(self) -> Result<Outcome, QuantizeError> {
        let Prepared {
            request,
            plan,
            temp,
            stale_removed,
            probe,
            output_dir,
            ..
        } = self;
        let sink = probe.sink();
        let message = format!(
            "\nminicpmv quantize: interrupted; removed the unfinished {}\n",
            temp.display()
        );
        let signals =
            SignalCleanup::install(&temp, &message).map_err(|e| QuantizeError::io(&temp, e))?;
        // Created here (exclusively) so that an unwritable folder is our error, not llama.cpp's;
        // llama.cpp then truncates and writes it.
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|e| QuantizeError::io(&temp, e))?;
        let mut guard = TempGuard(Some(temp.clone()));
        let threads = request.threads.map_or_else(
            || std::thread::available_parallelism().map_or(1, |n| n.get()),
            |t| t as usize,
        );
        let params = RawParams {
            nthread: i32::try_from(threads).unwrap_or(i32::MAX),
            ftype: request.qtype.ftype(),
            allow_requantize: request.allow_requantize,
            dry_run: false,
            tensor_types: plan::tensor_type_overrides(&request.input.kind, request.qtype),
        };
        let start = Instant::now();
        let rc = ffi::model_quantize(&request.input.path, &temp, params, sink)
            .map_err(|e| QuantizeError::io(&request.input.path, e))?;
        let seconds = start.elapsed().as_secs_f64();
        let (tensors_seen, error) = {
            let mut p = probe.0.lock().unwrap_or_else(|e| e.into_inner());
            p.finished = true;
            (
                p.tensors.iter().filter(|t| t.done).count(),
                p.error_message(),
            )
        };
        if rc != 0 {
            let message = error.unwrap_or_else(|| {
                format!("llama_model_quantize returned {rc} (run with -v for its log)")
            });
            // llama.cpp writes with an std::ofstream that throws on failure; the exception text
            // ("basic_ios::clear: iostream error") does not say why, the free space does.
            if message.contains("iostream") || message.contains("basic_ios") {
                drop(guard); // frees the partial file before measuring
                let need = plan.expected_output_bytes;
                // The real free space (not the test override), now that the partial file is gone.
                let reason = match ffi::free_bytes(&output_dir) {
                    Ok(free) if free < need => format!(
                        "the file system is full ({} free in {}; the output needs about {})",
                        minicpmv_gguf::human_bytes(free),
                        output_dir.display(),
                        minicpmv_gguf::human_bytes(need)
                    ),
                    _ => format!(
                        "llama.cpp's write failed ({message}): a file-size limit, a full disk \
                         or an I/O error"
                    ),
                };
                return Err(QuantizeError::WriteFailed {
                    output: request.output.clone(),
                    reason,
                });
            }
            return Err(QuantizeError::Llama {
                input: request.input.path.clone(),
                output: request.output.clone(),
                message,
            });
        }
        fs::File::open(&temp)
            .and_then(|f| f.sync_all())
            .map_err(|e| QuantizeError::io(&temp, e))?;
        let output_bytes = fs::metadata(&temp)
            .map_err(|e| QuantizeError::io(&temp, e))?
            .len();
        fs::rename(&temp, &request.output).map_err(|e| QuantizeError::io(&request.output, e))?;
        guard.0 = None;
        drop(signals);
        Ok(Outcome {
            input: request.input,
            output: request.output,
            qtype: request.qtype,
            plan,
            seconds,
            threads,
            output_bytes,
            tensors_seen,
            stale_removed,
        })
    }
}

/// Removes the temporary file when dropped (unless taken).
struct TempGuard(Option<PathBuf>);

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

/// `DIR/.NAME.quantize-tmp.PID` for `DIR/NAME`.
pub fn temp_path(output: &Path, pid: u32) -> PathBuf {
    let mut name = OsString::from(".");
    name.push(output.file_name().unwrap_or_default());
    name.push(format!("{TEMP_MARKER}{pid}"));
    output.with_file_name(name)
}

/// The process id in a temporary output's file name, if it is one.
fn temp_pid(file_name: &str) -> Option<u32> {
    if !file_name.starts_with('.') {
        return None;
    }
    let (_, pid) = file_name.rsplit_once(TEMP_MARKER)?;
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Removes `.*.quantize-tmp.PID` regular files in `dir` whose process no longer exists (left by
/// a run that was killed with SIGKILL or crashed). Errors are ignored: this is housekeeping.
fn remove_stale_temps(dir: &Path) -> Vec<PathBuf> {
    let own = std::process::id();
    let mut removed = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return removed;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(temp_pid) else {
            continue;
        };
        if pid == own || ffi::pid_alive(pid) {
            continue;
        }
        if e.file_type().is_ok_and(|t| t.is_file()) && fs::remove_file(e.path()).is_ok() {
            removed.push(e.path());
        }
    }
    removed
}

fn free_space(dir: &Path) -> Result<u64, QuantizeError> {
    if let Some(n) = std::env::var(FAKE_FREE_BYTES_ENV)
        .ok()
        .and_then(|v| v.trim().parse().ok())
    {
        return Ok(n);
    }
    ffi::free_bytes(dir).map_err(|e| QuantizeError::io(dir, e))
}

/// Checks the output path against the input; returns the output's folder.
fn check_output(input: &Path, output: &Path, force: bool) -> Result<PathBuf, QuantizeError> {
    let Some(file_name) = output.file_name() else {
        return Err(QuantizeError::OutputIsDirectory {
            path: output.to_path_buf(),
        });
    };
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(QuantizeError::NoOutputDir {
            path: output.to_path_buf(),
            dir,
        });
    }
    let same = || QuantizeError::SameFile {
        input: input.to_path_buf(),
        output: output.to_path_buf(),
    };
    let in_meta = fs::metadata(input).map_err(|e| QuantizeError::io(input, e))?;
    let in_canon = fs::canonicalize(input).map_err(|e| QuantizeError::io(input, e))?;
    let dir_canon = fs::canonicalize(&dir).map_err(|e| QuantizeError::io(&dir, e))?;
    if dir_canon.join(file_name) == in_canon {
        return Err(same());
    }
    match fs::symlink_metadata(output) {
        Ok(_) => {
            if let Ok(target) = fs::metadata(output) {
                if target.is_dir() {
                    return Err(QuantizeError::OutputIsDirectory {
                        path: output.to_path_buf(),
                    });
                }
                if target.dev() == in_meta.dev() && target.ino() == in_meta.ino() {
                    return Err(same());
                }
            }
            if !force {
                return Err(QuantizeError::OutputExists {
                    path: output.to_path_buf(),
                });
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(QuantizeError::io(output, e)),
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names() {
        let t = temp_path(Path::new("/d/model-Q4_K_M.gguf"), 42);
        assert_eq!(t, Path::new("/d/.model-Q4_K_M.gguf.quantize-tmp.42"));
        assert_eq!(temp_pid(".model-Q4_K_M.gguf.quantize-tmp.42"), Some(42));
        assert_eq!(temp_pid("model.gguf.quantize-tmp.42"), None);
        assert_eq!(temp_pid(".model.gguf.quantize-tmp."), None);
        assert_eq!(temp_pid(".model.gguf.quantize-tmp.4x"), None);
        assert_eq!(
            temp_path(Path::new("m.gguf"), 7),
            Path::new(".m.gguf.quantize-tmp.7")
        );
    }

    #[test]
    fn output_checks() {
        let d = tempfile::tempdir().expect("tempdir");
        let input = d.path().join("in.gguf");
        fs::write(&input, b"GGUF").expect("write");
        let out = d.path().join("out.gguf");
        assert_eq!(
            check_output(&input, &out, false).ok(),
            Some(d.path().to_path_buf())
        );
        let err = |p: &Path, force| check_output(&input, p, force).unwrap_err().to_string();
        assert!(err(&input, true).contains("is the input file"));
        let sub = d.path().join("sub");
        fs::create_dir(&sub).expect("mkdir");
        assert!(err(&sub.join("../in.gguf"), true).contains("is the input file"));
        assert!(err(&sub, true).contains("is a directory"));
        let link = d.path().join("hard.gguf");
        fs::hard_link(&input, &link).expect("link");
        assert!(err(&link, true).contains("is the input file"));
        let sym = d.path().join("sym.gguf");
        std::os::unix::fs::symlink(&input, &sym).expect("symlink");
        assert!(err(&sym, true).contains("is the input file"));
        fs::write(&out, b"x").expect("write");
        assert!(err(&out, false).contains("already exists"));
        assert!(check_output(&input, &out, true).is_ok());
        assert!(err(&d.path().join("nope/out.gguf"), false).contains("does not exist"));
    }

    #[test]
    fn stale_temps_of_dead_processes_are_removed() {
        let d = tempfile::tempdir().expect("tempdir");
        // A pid above the kernel's maximum (4194304) cannot be alive.
        let dead = d.path().join(".out.gguf.quantize-tmp.999999999");
        let mine = temp_path(&d.path().join("out.gguf"), std::process::id());
        let other = d.path().join(".notes.txt");
        for p in [&dead, &mine, &other] {
            fs::write(p, b"x").expect("write");
        }
        assert_eq!(remove_stale_temps(d.path()), vec![dead.clone()]);
        assert!(!dead.exists() && mine.exists() && other.exists());
    }
}
