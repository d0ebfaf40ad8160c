//! Test harness: run the real binary, and make fixtures (synthetic models, images) once per
//! test process in a shared temporary folder.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// Path of the `minicpmv` binary that Cargo built for this test run.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_minicpmv"))
}

/// A `Command` for the binary. When `MINICPMV_TEST_RUNNER` is set (a whitespace-separated
/// prefix, e.g. `qemu-aarch64 -L /usr/aarch64-linux-gnu`), the binary runs through it: this is
/// how scripts/aarch64-test runs a cross-compiled binary under an emulator.
pub fn bin_command() -> Command {
    let runner = std::env::var("MINICPMV_TEST_RUNNER").unwrap_or_default();
    let mut prefix = runner.split_whitespace();
    match prefix.next() {
        Some(program) => {
            let mut cmd = Command::new(program);
            cmd.args(prefix).arg(bin());
            cmd
        }
        None => Command::new(bin()),
    }
}

/// The result of one run of the binary.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The result of a finished process.
    pub fn from_output(o: Output) -> Run {
        Run {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Asserts success and returns self.
    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(self.code, Some(0), "expected success, got {self:#?}");
        self
    }

    /// Asserts exit code 2 with an `error:` message containing every `needle`, and no panic or
    /// crash signature.
    #[track_caller]
    pub fn fails_with(self, needles: &[&str]) -> Run {
        assert_eq!(self.code, Some(2), "expected exit code 2, got {self:#?}");
        assert!(
            !self.stderr.contains("panicked") && !self.stderr.contains("RUST_BACKTRACE"),
            "panic: {self:#?}"
        );
        for n in needles {
            assert!(
                self.stderr.contains(n),
                "stderr lacks {n:?}:\n{}",
                self.stderr
            );
        }
        self
    }

    /// Parses stdout as JSON.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }
}

/// Runs `minicpmv ARGS...` with no standard input, an isolated MINICPMV_HOME, offline
/// (`MINICPMV_OFFLINE=1`: no test reaches the network), and returns its output.
pub fn minicpmv<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    minicpmv_env(args, &[])
}

/// [`minicpmv`] with extra environment variables, set after the defaults so they override
/// them (e.g. `("MINICPMV_OFFLINE", "0")` with `HF_ENDPOINT` at a local test server).
pub fn minicpmv_env<I, S>(args: I, env: &[(&str, &std::ffi::OsStr)]) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut cmd = command(args, env);
    cmd.stdin(std::process::Stdio::null());
    let out = cmd.output().expect("cannot start the minicpmv binary");
    Run::from_output(out)
}

/// Runs `minicpmv ARGS...` like [`minicpmv`], with `stdin` as its standard input.
pub fn minicpmv_with_stdin<I, S>(args: I, stdin: &str) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    use std::io::Write as _;
    use std::process::Stdio;
    let mut child = command(args, &[])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start the minicpmv binary");
    {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        pipe.write_all(stdin.as_bytes()).expect("write stdin");
    }
    Run::from_output(child.wait_with_output().expect("wait for minicpmv"))
}

/// The `Command` every test runs the binary with: [`bin_command`], `ARGS`, an isolated
/// MINICPMV_HOME, offline (`MINICPMV_OFFLINE=1`), nothing from the caller's environment that
/// could send it elsewhere, then `env`. Standard streams are the caller's to set.
pub fn command<I, S>(args: I, env: &[(&str, &std::ffi::OsStr)]) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    isolated(bin_command(), args, env)
}

/// [`command`] through a shell `script` that ends in `exec "$0" "$@"` with the binary as `$0`
/// (e.g. to set a resource limit first: `ulimit -f 1024 && exec "$0" "$@"`).
pub fn command_in_shell<I, S>(script: &str, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut sh = Command::new("sh");
    sh.arg("-c").arg(script).arg(bin());
    isolated(sh, args, &[])
}

/// `cmd` with `args` and the test environment of [`command`].
fn isolated<I, S>(mut cmd: Command, args: I, env: &[(&str, &std::ffi::OsStr)]) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    cmd.args(args)
        .env("MINICPMV_HOME", work_dir().join("home"))
        .env("MINICPMV_OFFLINE", "1");
    // Nothing from the caller's environment may send a test elsewhere.
    for var in [
        "HF_ENDPOINT",
        "HF_TOKEN",
        "HF_HUB_OFFLINE",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "MINICPMV_API_KEY",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// A temporary folder shared by all tests of this process. It is kept after the process ends,
/// for post-mortem reading when a test fails, and removed by the next test process (which
/// removes the folders of test processes that are no longer running).
pub fn work_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        remove_stale_work_dirs();
        let d = std::env::temp_dir().join(format!("minicpmv-tests-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("create test work dir");
        d
    })
}

/// Removes the `minicpmv-tests-PID` folders of processes that no longer run (Linux: no
/// `/proc/PID`; elsewhere nothing is removed).
fn remove_stale_work_dirs() {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("minicpmv-tests-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A tiny synthetic pair for `version` (e.g. "2.6"), generated once per process with the real
/// binary: `(model.gguf, mmproj.gguf)`.
pub fn tiny_pair(version: &str) -> (PathBuf, PathBuf) {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static PAIRS: OnceLock<Mutex<HashMap<String, (PathBuf, PathBuf)>>> = OnceLock::new();
    let map = PAIRS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    map.entry(version.to_string())
        .or_insert_with(|| {
            let dir = work_dir().join(format!("tiny-{version}"));
            let d = dir.to_str().expect("utf-8 temp path");
            minicpmv([
                "synth",
                "--version",
                version,
                "--scale",
                "tiny",
                "--out-dir",
                d,
            ])
            .ok();
            (dir.join("model.gguf"), dir.join("mmproj.gguf"))
        })
        .clone()
}

/// A MiniCPM-V 2.6 pair whose language model is about 240 MB (F16, 1024 wide, 8 layers, 8
/// heads, 2 KV heads, feed-forward 4096; the tiny vocabulary and a tiny vision tower with a
/// 1024-wide resampler), written once per process by the library's synth: big enough that
/// weights, not the runtime's fixed cost, make most of a run's memory.
pub fn medium_pair() -> (PathBuf, PathBuf) {
    use minicpmv::model::family::{self, Scale, Version};
    use minicpmv::tools::synth::{self, SynthOptions, WeightType};
    static PAIR: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    PAIR.get_or_init(|| {
        let spec = family::spec(Version::V2_6);
        let mut text = *spec.text.get(Scale::Tiny);
        let mut vision = *spec.vision.get(Scale::Tiny);
        text.n_embd = 1024;
        text.n_layer = 8;
        text.n_head = 8;
        text.n_head_kv = 2;
        text.n_ff = 4096;
        vision.projector_dim = text.n_embd;
        let opts = SynthOptions {
            version: Version::V2_6,
            scale: Scale::Tiny,
            out_dir: work_dir().join("medium-2.6"),
            dtype: WeightType::F16,
            seed: 7,
            scale_factor: None,
        };
        let out = synth::synth_with_dims(&opts, (text, vision))
            .unwrap_or_else(|e| panic!("cannot write the medium pair: {e}"));
        (out.model, out.mmproj)
    })
    .clone()
}

/// A PNG test image of `w` x `h` (a deterministic colour gradient), made once per process.
pub fn image(w: u32, h: u32) -> PathBuf {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let path = work_dir().join(format!("img-{w}x{h}.png"));
    if !path.exists() {
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([
                (x * 255 / w.max(1)) as u8,
                (y * 255 / h.max(1)) as u8,
                ((x + y) % 256) as u8,
            ])
        });
        let tmp = path.with_extension("png.tmp");
        img.save_with_format(&tmp, image::ImageFormat::Png)
            .expect("write test image");
        std::fs::rename(&tmp, &path).expect("rename test image");
    }
    path
}

/// Writes `bytes` to a file named `name` in the work dir and returns its path.
pub fn file_with(name: &str, bytes: &[u8]) -> PathBuf {
    let path = work_dir().join(name);
    std::fs::write(&path, bytes).expect("write fixture");
    path
}
