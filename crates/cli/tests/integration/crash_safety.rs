//! Crash safety: SIGKILL at many points of every command that writes files (quantize, pull,
//! the chat's embedding cache). After each kill no file at a target path is partial (a target
//! is either absent or complete and valid), and the next run recovers: it finishes the work and
//! leaves no stale temporary file of its own behind.
//!
//! The kill points are set by progress, not by time: the child is watched (every millisecond)
//! and killed once its output reaches a given fraction (quantize, pull) or a given number of
//! cache entries (chat), so the kills land midway on a fast or a slow machine alike. Where
//! exactly within a write a kill lands still varies, which is the point: every landing must be
//! safe.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use minicpmv::encode::cache::{decode_file, EmbdKey};
use minicpmv::gguf::GgufFile;

use crate::harness::{command, image, medium_pair, minicpmv_env, tiny_pair, work_dir};
use crate::hostile::{listing, sha_hex, Reply, Stub};

/// Fractions of an operation's measured duration at which it is killed.
const KILL_POINTS: [f64; 6] = [0.05, 0.2, 0.35, 0.5, 0.7, 0.9];

fn fresh(name: &str) -> PathBuf {
    let d = work_dir().join("crash").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create dir");
    d
}

fn s(p: &Path) -> String {
    p.to_str().expect("utf-8 path").to_string()
}

fn spawn(args: &[String], env: &[(&str, &std::ffi::OsStr)]) -> Child {
    command(args, env)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn minicpmv")
}

/// Runs `args` to the end and returns how long it took; it must succeed.
fn timed(args: &[String], env: &[(&str, &std::ffi::OsStr)]) -> Duration {
    let t0 = Instant::now();
    let status = spawn(args, env).wait().expect("wait");
    assert!(status.success(), "minicpmv {} failed", args.join(" "));
    t0.elapsed()
}

/// Starts `args`, kills it with SIGKILL after `after`, waits for it.
fn kill_after(args: &[String], env: &[(&str, &std::ffi::OsStr)], after: Duration) {
    let mut child = spawn(args, env);
    std::thread::sleep(after);
    let _ = child.kill();
    let _ = child.wait();
}

/// Kills `child` with SIGKILL as soon as `reached()` holds (checked every millisecond, for at
/// most a minute); returns whether it was still running then.
fn kill_when(mut child: Child, reached: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    let running = loop {
        if matches!(child.try_wait(), Ok(Some(_))) {
            break false;
        }
        if reached() || Instant::now() > deadline {
            break true;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let _ = child.kill();
    let _ = child.wait();
    running
}

/// Bytes of the largest file in `dir` whose name passes `pick`.
fn largest(dir: &Path, pick: impl Fn(&str) -> bool) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| pick(&e.file_name().to_string_lossy()))
        .filter_map(|e| e.metadata().ok().map(|m| m.len()))
        .max()
        .unwrap_or(0)
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn quantize_killed_anywhere_leaves_no_partial_output_and_the_next_run_recovers() {
    let (model, _) = medium_pair();
    let dir = fresh("quantize");
    let out = dir.join("out.gguf");
    let args = |out: &Path| -> Vec<String> {
        ["quantize", &s(&model), &s(out), "--type", "q8_0", "-t", "1"]
            .map(String::from)
            .to_vec()
    };
    // How long a whole run takes here.
    let reference = dir.join("reference.gguf");
    timed(&args(&reference), &[]);
    let want = std::fs::read(&reference).expect("reference output");
    std::fs::remove_file(&reference).expect("remove reference");
    let mut midway = 0;
    for (i, f) in KILL_POINTS.iter().enumerate() {
        // Killed once llama.cpp has written this fraction of the output.
        let target = (want.len() as f64 * f) as u64;
        let running = kill_when(spawn(&args(&out), &[]), || {
            largest(&dir, |n| n.contains(".quantize-tmp.")) > target
        });
        midway += usize::from(running && names(&dir).iter().any(|n| n.contains(".quantize-tmp.")));
        if out.exists() {
            // Killed after the rename: then the file is whole.
            assert_eq!(
                std::fs::read(&out).expect("read"),
                want,
                "kill {i}: a partial output"
            );
            std::fs::remove_file(&out).expect("remove");
        }
        for name in names(&dir) {
            assert!(
                name.contains(".quantize-tmp."),
                "kill {i}: unexpected file {name} (only temporary files may be left)"
            );
        }
        // The next run finishes, removes the stale temporary file and writes the same bytes.
        timed(&args(&out), &[]);
        assert_eq!(
            std::fs::read(&out).expect("read"),
            want,
            "kill {i}: recovery differs"
        );
        assert_eq!(
            names(&dir),
            ["out.gguf"],
            "kill {i}: leftovers after recovery"
        );
        std::fs::remove_file(&out).expect("remove");
    }
    assert!(
        midway >= 2,
        "only {midway} kills landed while llama.cpp was writing"
    );
}

#[test]
fn pull_killed_anywhere_leaves_no_partial_file_in_place_and_the_next_pull_completes() {
    const REPO: &str = "acme/crash-gguf";
    const MODEL: &str = "crash-Q4_K_M.gguf";
    const MMPROJ: &str = "mmproj-crash-f16.gguf";
    let model: Vec<u8> = (0..400_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mmproj: Vec<u8> = (0..50_000u32).map(|i| (i * 3 % 241) as u8).collect();
    let tree = format!("/api/models/{REPO}/tree/main");
    let json = listing(&[
        (MODEL, model.len(), &sha_hex(&model)),
        (MMPROJ, mmproj.len(), &sha_hex(&mmproj)),
    ]);
    let resolve = |f: &str| format!("/{REPO}/resolve/main/{f}");
    let slow = Stub::start(vec![
        (tree.clone(), Reply::Json(json.clone())),
        (
            resolve(MODEL),
            Reply::Slow {
                bytes: model.clone(),
                chunk: 4096,
                delay: Duration::from_millis(4),
            },
        ),
        (
            resolve(MMPROJ),
            Reply::Slow {
                bytes: mmproj.clone(),
                chunk: 4096,
                delay: Duration::from_millis(4),
            },
        ),
    ]);
    let fast = Stub::start(vec![
        (tree, Reply::Json(json)),
        (
            resolve(MODEL),
            Reply::Body {
                declared: model.len(),
                bytes: model.clone(),
            },
        ),
        (
            resolve(MMPROJ),
            Reply::Body {
                declared: mmproj.len(),
                bytes: mmproj.clone(),
            },
        ),
    ]);
    let args: Vec<String> = ["pull", REPO, "--quant", "Q4_K_M"]
        .map(String::from)
        .to_vec();
    let mut midway = 0;
    for (i, f) in KILL_POINTS.iter().enumerate() {
        let home = fresh(&format!("pull-{i}"));
        let repo_dir = home.join("models").join(REPO.replace('/', "--"));
        let env = |endpoint: &str| {
            vec![
                ("HF_ENDPOINT".to_string(), endpoint.to_string()),
                ("MINICPMV_OFFLINE".to_string(), "0".to_string()),
                ("MINICPMV_HOME".to_string(), s(&home)),
            ]
        };
        let slow_env = env(&slow.endpoint());
        let slow_env: Vec<(&str, &std::ffi::OsStr)> = slow_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_ref()))
            .collect();
        // Killed once this fraction of the model file has arrived.
        let target = (model.len() as f64 * f) as u64;
        let running = kill_when(spawn(&args, &slow_env), || {
            largest(&repo_dir, |n| n.ends_with(".part")) > target
        });
        midway += usize::from(running && names(&repo_dir).iter().any(|n| n.ends_with(".part")));
        for (name, bytes) in [(MODEL, &model), (MMPROJ, &mmproj)] {
            let placed = repo_dir.join(name);
            if placed.exists() {
                assert_eq!(
                    &std::fs::read(&placed).expect("read"),
                    bytes,
                    "kill {i}: partial {name}"
                );
            }
        }
        // The next pull completes (resuming or restarting the partial files).
        let fast_env = env(&fast.endpoint());
        let fast_env: Vec<(&str, &std::ffi::OsStr)> = fast_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_ref()))
            .collect();
        minicpmv_env(&args, &fast_env).ok();
        assert_eq!(
            std::fs::read(repo_dir.join(MODEL)).expect("model"),
            model,
            "kill {i}"
        );
        assert_eq!(
            std::fs::read(repo_dir.join(MMPROJ)).expect("mmproj"),
            mmproj,
            "kill {i}"
        );
        for name in names(&repo_dir) {
            assert!(
                !name.ends_with(".part") && !name.ends_with(".tmp"),
                "kill {i}: {name} left after a complete pull"
            );
        }
    }
    assert!(midway >= 2, "only {midway} kills landed during a download");
}

#[test]
fn chat_killed_anywhere_leaves_only_whole_cache_entries_and_the_next_chat_uses_them() {
    let (model, mmproj) = tiny_pair("2.6");
    let images: Vec<PathBuf> = [(1920, 1080), (1000, 700), (640, 480), (300, 200)]
        .iter()
        .map(|&(w, h)| image(w, h))
        .collect();
    let script: String = images
        .iter()
        .map(|p| format!("/image {}\nWhat is it?\n", s(p)))
        .collect();
    let args = |cache: &Path| -> Vec<String> {
        let mut a: Vec<String> = [
            "chat",
            "-m",
            &s(&model),
            "--mmproj",
            &s(&mmproj),
            "-n",
            "2",
            "-t",
            "2",
            "-q",
            "--embd-cache",
            &s(cache),
        ]
        .map(String::from)
        .to_vec();
        a.push("--json".into());
        a
    };
    let run_script = |cache: &Path| -> (std::process::ExitStatus, Duration) {
        let t0 = Instant::now();
        let mut child = command(args(cache), &[])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chat");
        use std::io::Write as _;
        let mut stdin = child.stdin.take().expect("stdin");
        let _ = stdin.write_all(script.as_bytes());
        drop(stdin);
        (child.wait().expect("wait"), t0.elapsed())
    };
    let (status, _) = run_script(&fresh("chat-reference"));
    assert!(status.success());
    let mut partial = 0;
    // Killed once 0, 1, 2 or 3 of the 4 entries are in place: while or right after an entry is
    // written (its temporary file, then the rename).
    for (i, k) in [0usize, 1, 1, 2, 3, 3].into_iter().enumerate() {
        let cache = fresh(&format!("chat-{i}"));
        let mut child = command(args(&cache), &[])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chat");
        {
            use std::io::Write as _;
            let mut stdin = child.stdin.take().expect("stdin");
            let _ = stdin.write_all(script.as_bytes());
        }
        let extra = Duration::from_millis(3 * (i as u64 % 2));
        kill_when(child, || {
            let done = names(&cache)
                .iter()
                .filter(|n| n.ends_with(".embd"))
                .count()
                >= k;
            if done {
                std::thread::sleep(extra);
            }
            done
        });
        // Every entry in place is whole: it decodes under the key its name gives.
        let entries = names(&cache)
            .iter()
            .filter(|n| n.ends_with(".embd"))
            .count();
        partial += usize::from(entries < images.len());
        for name in names(&cache) {
            if let Some(hex) = name.strip_suffix(".embd") {
                let mut key = [0u8; 32];
                for (j, b) in key.iter_mut().enumerate() {
                    *b = u8::from_str_radix(&hex[2 * j..2 * j + 2], 16).expect("hex name");
                }
                let bytes = std::fs::read(cache.join(&name)).expect("read entry");
                decode_file(&bytes, &EmbdKey(key))
                    .unwrap_or_else(|e| panic!("kill {i}: entry {name} is not whole: {e}"));
            } else {
                assert!(name.ends_with(".tmp"), "kill {i}: unexpected {name}");
            }
        }
        // The next chat runs the whole script on the same cache.
        let (status, _) = run_script(&cache);
        assert!(status.success(), "kill {i}: the next chat failed");
        let entries = names(&cache)
            .iter()
            .filter(|n| n.ends_with(".embd"))
            .count();
        assert_eq!(
            entries,
            images.len(),
            "kill {i}: the next chat cached every image"
        );
    }
    assert!(
        partial >= 2,
        "only {partial} kills landed before the cache was complete"
    );
}

/// A recovered quantize output is a valid GGUF (not only equal bytes), wherever the kill
/// landed (before the output appeared, or after: then it is whole too).
#[test]
fn a_recovered_quantize_output_is_a_valid_gguf() {
    let (model, _) = tiny_pair("2.6");
    let dir = fresh("quantize-valid");
    let out = dir.join("out.gguf");
    let args: Vec<String> = [
        "quantize",
        &s(&model),
        &s(&out),
        "--type",
        "q8_0",
        "--force",
    ]
    .map(String::from)
    .to_vec();
    for delay_ms in [0, 5, 30] {
        kill_after(&args, &[], Duration::from_millis(delay_ms));
        if out.exists() {
            GgufFile::open(&out).expect("an output in place after a kill is whole");
        }
        timed(&args, &[]);
        GgufFile::open(&out).expect("the output reads as GGUF");
    }
}
