//! `minicpmv pull` and the default model of `run`, against a small HTTP/1.1 server on
//! 127.0.0.1 that serves the Hugging Face URL layout (`HF_ENDPOINT` points at it): the tree
//! listing with sha256s, `resolve` URLs that redirect to the file bytes, byte ranges, and
//! failure modes (a connection cut after N bytes, wrong bytes). The default "repository"
//! (4.6's) holds a tiny synthetic 4.6 pair, and 2.6's a tiny 2.6 pair, under the usual file
//! names. Nothing here leaves the machine.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::harness::{image, minicpmv_env, tiny_pair, work_dir, Run};

/// The default model's repository (`minicpmv pull` with no argument, `pull 4.6`).
const REPO: &str = "openbmb/MiniCPM-V-4.6-gguf";
/// Another version's repository (`pull 2.6`).
const REPO_2_6: &str = "openbmb/MiniCPM-V-2_6-gguf";
const MODEL: &str = "ggml-model-Q4_K_M.gguf";
const MMPROJ: &str = "mmproj-model-f16.gguf";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Normal,
    /// File responses send their headers, then only this many body bytes, then close.
    CutAfter(usize),
    /// File responses carry other bytes than the listing's sha256 says (same length).
    WrongBytes,
}

#[derive(Debug, Clone)]
struct Request {
    path: String,
    range: Option<String>,
    authorization: Option<String>,
}

struct State {
    /// Files by `REPOSITORY/NAME`.
    files: BTreeMap<String, Vec<u8>>,
    mode: Mode,
    requests: Vec<Request>,
}

/// The test server: one thread, one connection at a time, `Connection: close`.
struct Hub {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Hub {
    /// Serves `REPO` with the tiny 4.6 pair as the Q4_K_M model and its mmproj, plus a Q8_0
    /// model and non-GGUF files; and `REPO_2_6` with the tiny 2.6 pair.
    fn start() -> Hub {
        let mut files = BTreeMap::new();
        for (repo, version) in [(REPO, "4.6"), (REPO_2_6, "2.6")] {
            let (model, mmproj) = tiny_pair(version);
            let model = std::fs::read(model).expect("read tiny model");
            let mmproj = std::fs::read(mmproj).expect("read tiny mmproj");
            let mut q8 = model.clone();
            q8.reverse();
            files.insert(format!("{repo}/ggml-model-Q8_0.gguf"), q8);
            files.insert(format!("{repo}/{MODEL}"), model);
            files.insert(format!("{repo}/{MMPROJ}"), mmproj);
        }
        let state = Arc::new(Mutex::new(State {
            files,
            mode: Mode::Normal,
            requests: Vec::new(),
        }));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("local addr");
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(stream) = conn {
                        let _ = serve(stream, &state);
                    }
                }
            })
        };
        Hub {
            addr,
            state,
            stop,
            thread: Some(thread),
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn set_mode(&self, mode: Mode) {
        self.lock().mode = mode;
    }

    fn requests(&self) -> Vec<Request> {
        self.lock().requests.clone()
    }

    fn file(&self, name: &str) -> Vec<u8> {
        self.lock().files[&format!("{REPO}/{name}")].clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs the binary with MINICPMV_HOME = `home`, online, at this server.
    fn run<I, S>(&self, home: &Path, args: I, extra: &[(&str, &str)]) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let endpoint = self.endpoint();
        let mut env: Vec<(&str, &OsStr)> = vec![
            ("MINICPMV_HOME", home.as_os_str()),
            ("MINICPMV_OFFLINE", OsStr::new("0")),
            ("HF_ENDPOINT", OsStr::new(&endpoint)),
        ];
        env.extend(extra.iter().map(|(k, v)| (*k, OsStr::new(*v))));
        minicpmv_env(args, &env)
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so the thread ends.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Answers one request.
fn serve(stream: TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let (mut range, mut authorization) = (None, None);
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "range" => range = Some(v.trim().to_string()),
                "authorization" => authorization = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    let (files, mode) = {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        s.requests.push(Request {
            path: path.clone(),
            range: range.clone(),
            authorization,
        });
        (s.files.clone(), s.mode)
    };
    let mut out = stream;
    let listed = path
        .strip_prefix("/api/models/")
        .and_then(|p| p.strip_suffix("/tree/main"))
        .map(|repo| format!("{repo}/"))
        .filter(|prefix| files.keys().any(|k| k.starts_with(prefix)));
    if let Some(prefix) = listed {
        let mut entries = vec![
            r#"{"type":"file","oid":"0123","size":1519,"path":".gitattributes"}"#.to_string(),
            r#"{"type":"file","oid":"4567","size":12,"path":"README.md"}"#.to_string(),
        ];
        for (name, bytes) in files
            .iter()
            .filter_map(|(k, b)| Some((k.strip_prefix(&prefix)?, b)))
        {
            entries.push(format!(
                r#"{{"type":"file","oid":"89ab","size":{n},"path":"{name}","lfs":{{"oid":"{sha}","size":{n},"pointerSize":135}}}}"#,
                n = bytes.len(),
                sha = sha256_hex(bytes)
            ));
        }
        let body = format!("[{}]", entries.join(","));
        return respond(
            &mut out,
            "200 OK",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        );
    }
    if let Some((repo, name)) = path
        .strip_prefix('/')
        .and_then(|p| p.split_once("/resolve/main/"))
    {
        let key = format!("{repo}/{name}");
        if files.contains_key(&key) {
            // As the hub does: resolve redirects to where the bytes are.
            let location = format!("/lfs-store/{key}");
            return respond(&mut out, "302 Found", &[("Location", &location)], b"");
        }
    }
    if let Some(bytes) = path.strip_prefix("/lfs-store/").and_then(|n| files.get(n)) {
        let mut bytes = bytes.clone();
        if mode == Mode::WrongBytes {
            for b in bytes.iter_mut().step_by(97) {
                *b ^= 0x5a;
            }
        }
        let len = bytes.len();
        let start = range
            .as_deref()
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|n| n.parse::<usize>().ok());
        let (status, body, content_range) = match start {
            Some(s) if s >= len => {
                let cr = format!("bytes */{len}");
                return respond(
                    &mut out,
                    "416 Range Not Satisfiable",
                    &[("Content-Range", &cr)],
                    b"",
                );
            }
            Some(s) => (
                "206 Partial Content",
                &bytes[s..],
                Some(format!("bytes {s}-{}/{len}", len - 1)),
            ),
            None => ("200 OK", &bytes[..], None),
        };
        let mut headers = vec![("Accept-Ranges", "bytes")];
        if let Some(cr) = &content_range {
            headers.push(("Content-Range", cr));
        }
        return match mode {
            Mode::CutAfter(n) if n < body.len() => {
                write_head(&mut out, status, &headers, body.len())?;
                out.write_all(&body[..n])?;
                out.flush()
            }
            _ => respond(&mut out, status, &headers, body),
        };
    }
    respond(&mut out, "404 Not Found", &[], b"not found")
}

fn write_head(
    out: &mut TcpStream,
    status: &str,
    headers: &[(&str, &str)],
    len: usize,
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status}\r\nContent-Length: {len}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())
}

fn respond(
    out: &mut TcpStream,
    status: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<()> {
    write_head(out, status, headers, body.len())?;
    out.write_all(body)?;
    out.flush()
}

/// A fresh MINICPMV_HOME for one test.
fn home(name: &str) -> PathBuf {
    let d = work_dir().join(format!("pull-home-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn repo_dir(home: &Path) -> PathBuf {
    home.join("models/openbmb--MiniCPM-V-4.6-gguf")
}

/// Every file under `dir`, recursively (none when it does not exist).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn file_requests(hub: &Hub, name: &str) -> Vec<Request> {
    hub.requests()
        .into_iter()
        .filter(|r| r.path == format!("/lfs-store/{REPO}/{name}"))
        .collect()
}

#[test]
fn pull_downloads_verifies_and_places_the_pair() {
    let hub = Hub::start();
    let home = home("clean");
    let dir = repo_dir(&home);
    let r = hub
        .run(&home, ["pull"], &[("HF_TOKEN", "hf_test_token")])
        .ok();
    // stdout: one line per file; stderr without a TTY: plain lines, no bar drawing
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", r.stdout);
    assert!(lines[0].starts_with(&format!("{}\t", dir.join(MODEL).display())));
    assert!(lines[1].starts_with(&format!("{}\t", dir.join(MMPROJ).display())));
    assert!(r.stdout.contains("downloaded"), "{}", r.stdout);
    assert!(
        !r.stderr.contains('\r') && !r.stderr.contains('\x1b'),
        "{:?}",
        r.stderr
    );
    assert!(
        r.stderr.contains(&format!("downloading {MODEL}")),
        "{}",
        r.stderr
    );
    for name in [MODEL, MMPROJ] {
        let got = std::fs::read(dir.join(name)).expect("downloaded file");
        let want = hub.file(name);
        assert!(got == want, "{name} differs from the served bytes");
        // The sidecar records the hash with the size and mtime the file had when it was hashed.
        let sidecar = std::fs::read_to_string(dir.join(format!("{name}.sha256"))).unwrap();
        let fields: Vec<&str> = sidecar.split_whitespace().collect();
        assert_eq!(fields.len(), 3, "{sidecar:?}");
        assert_eq!(fields[0], sha256_hex(&want));
        assert_eq!(fields[1], want.len().to_string());
        // one plain request per file, through the resolve redirect
        let reqs = file_requests(&hub, name);
        assert_eq!(reqs.len(), 1, "{reqs:?}");
        assert_eq!(reqs[0].range, None);
    }
    assert!(dir.join("listing.json").is_file());
    assert!(
        !files_under(&dir).iter().any(|p| {
            let s = p.to_string_lossy();
            s.ends_with(".part") || s.ends_with(".tmp")
        }),
        "{:?}",
        files_under(&dir)
    );
    // the other quant was not fetched; the token went to the hub
    assert!(file_requests(&hub, "ggml-model-Q8_0.gguf").is_empty());
    let tree = &hub.requests()[0];
    assert!(tree.path.starts_with("/api/models/"), "{tree:?}");
    assert_eq!(tree.authorization.as_deref(), Some("Bearer hf_test_token"));

    // pulling again downloads nothing
    let before = hub.requests().len();
    let again = hub.run(&home, ["pull"], &[]).ok();
    assert!(
        again.stdout.contains("already in the cache"),
        "{}",
        again.stdout
    );
    let new: Vec<Request> = hub.requests()[before..].to_vec();
    assert_eq!(new.len(), 1, "only the listing: {new:?}");

    // offline, the cache answers alone (JSON)
    let before = hub.requests().len();
    let j: serde_json::Value = hub
        .run(&home, ["pull", "--offline", "--json"], &[])
        .ok()
        .json();
    assert_eq!(hub.requests().len(), before, "offline opened a connection");
    assert_eq!(j["repo"], REPO);
    assert_eq!(j["model"]["name"], MODEL);
    assert_eq!(j["mmproj"]["path"], dir.join(MMPROJ).to_str().unwrap());
    assert_eq!(j["model"]["sha256"], sha256_hex(&hub.file(MODEL)).as_str());

    // another quant from the same listing, with forced progress output
    let r = hub
        .run(&home, ["pull", "--quant", "q8_0", "--progress"], &[])
        .ok();
    assert_eq!(r.stdout.lines().count(), 2, "{}", r.stdout);
    assert_eq!(
        std::fs::read(dir.join("ggml-model-Q8_0.gguf")).unwrap(),
        hub.file("ggml-model-Q8_0.gguf")
    );
    assert_eq!(file_requests(&hub, MMPROJ).len(), 1, "mmproj fetched twice");
}

#[test]
fn an_interrupted_download_resumes_from_the_partial_file() {
    let hub = Hub::start();
    let home = home("resume");
    let dir = repo_dir(&home);
    let size = hub.file(MODEL).len();
    let cut = size * 2 / 5;
    hub.set_mode(Mode::CutAfter(cut));
    hub.run(&home, ["pull"], &[]).fails_with(&[
        MODEL,
        &format!("stopped at {cut} of {size} bytes"),
        "pull again to resume",
    ]);
    let part = dir.join(format!("{MODEL}.part"));
    assert_eq!(
        std::fs::metadata(&part).expect(".part kept").len(),
        cut as u64
    );
    assert!(!dir.join(MODEL).exists());

    hub.set_mode(Mode::Normal);
    let r = hub.run(&home, ["pull"], &[]).ok();
    assert!(
        r.stderr.contains(&format!("from byte {cut}")),
        "{}",
        r.stderr
    );
    let reqs = file_requests(&hub, MODEL);
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(reqs[0].range, None);
    assert_eq!(reqs[1].range.as_deref(), Some(&*format!("bytes={cut}-")));
    assert!(std::fs::read(dir.join(MODEL)).unwrap() == hub.file(MODEL));
    assert!(std::fs::read(dir.join(MMPROJ)).unwrap() == hub.file(MMPROJ));
    assert!(!part.exists());
}

#[test]
fn a_checksum_mismatch_is_rejected_and_leaves_nothing_in_the_cache() {
    let hub = Hub::start();
    let home = home("checksum");
    hub.set_mode(Mode::WrongBytes);
    let expected = sha256_hex(&hub.file(MODEL));
    hub.run(&home, ["pull"], &[])
        .fails_with(&[MODEL, "sha256 mismatch", &expected, "deleted"]);
    let left = files_under(&home.join("models"));
    assert!(left.is_empty(), "left in the cache: {left:?}");
    assert_eq!(file_requests(&hub, MODEL).len(), 1);
    assert!(file_requests(&hub, MMPROJ).is_empty());
}

#[test]
fn an_unreachable_endpoint_fails_fast_with_a_clear_error() {
    // Port 1 on the loopback interface: nothing listens there.
    let home = home("unreachable");
    let t0 = Instant::now();
    let r = minicpmv_env(
        ["pull"],
        &[
            ("MINICPMV_HOME", home.as_os_str()),
            ("MINICPMV_OFFLINE", OsStr::new("0")),
            ("HF_ENDPOINT", OsStr::new("http://127.0.0.1:1")),
        ],
    )
    .fails_with(&[
        "cannot reach http://127.0.0.1:1/api/models/openbmb/MiniCPM-V-4.6-gguf/tree/main",
        "HF_ENDPOINT",
    ]);
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
    assert!(files_under(&home).is_empty(), "{r:?}");
    // and a malformed endpoint is named
    minicpmv_env(
        ["pull"],
        &[
            ("MINICPMV_HOME", home.as_os_str()),
            ("MINICPMV_OFFLINE", OsStr::new("0")),
            ("HF_ENDPOINT", OsStr::new("huggingface.co")),
        ],
    )
    .fails_with(&["\"huggingface.co\"", "HF_ENDPOINT"]);
}

#[test]
fn missing_quants_and_repositories_are_named() {
    let hub = Hub::start();
    let home = home("quants");
    hub.run(&home, ["pull", "--quant", "Q7_Z"], &[])
        .fails_with(&["Q7_Z", REPO, "available: Q4_K_M, Q8_0"]);
    hub.run(&home, ["pull", "nobody/nothing"], &[])
        .fails_with(&["/api/models/nobody/nothing/tree/main", "HTTP 404"]);
    hub.run(&home, ["pull", "not a repo"], &[])
        .fails_with(&["\"not a repo\"", "OWNER/NAME"]);
    assert!(files_under(&home).is_empty());
}

#[test]
fn offline_mode_never_opens_a_connection() {
    let hub = Hub::start();
    let home = home("offline");
    let img = image(300, 200);
    let img = img.to_str().unwrap();
    for (flag, env) in [
        (true, ("MINICPMV_OFFLINE", "0")),
        (false, ("MINICPMV_OFFLINE", "1")),
        (false, ("HF_HUB_OFFLINE", "1")),
    ] {
        let mut args = vec!["pull"];
        if flag {
            args.push("--offline");
        }
        hub.run(&home, &args, &[env])
            .fails_with(&["not in the cache", "run `minicpmv pull` while online"]);
        let mut args = vec!["run", "--image", img, "-n", "2"];
        if flag {
            args.push("--offline");
        }
        hub.run(&home, &args, &[env])
            .fails_with(&["not in the cache", "minicpmv pull", "--demo"]);
    }
    assert!(hub.requests().is_empty(), "{:?}", hub.requests());
    assert!(files_under(&home).is_empty());
}

#[test]
fn run_without_a_model_pulls_the_default_pair_once_then_works_offline() {
    let hub = Hub::start();
    let home = home("default-run");
    let img = image(300, 200);
    let args = [
        "run",
        "--image",
        img.to_str().unwrap(),
        "-n",
        "4",
        "--temp",
        "0",
        "-t",
        "2",
        "--json",
    ];
    // stdin is not a terminal: no question, a note, then the download and the run
    let first = hub.run(&home, args, &[]).ok();
    assert!(
        first.stderr.contains("downloading the default model"),
        "{}",
        first.stderr
    );
    let j = first.json();
    assert_eq!(j["model"], repo_dir(&home).join(MODEL).to_str().unwrap());
    assert_eq!(j["mmproj"], repo_dir(&home).join(MMPROJ).to_str().unwrap());
    assert_eq!(j["synthetic_model"], false);
    assert_eq!(file_requests(&hub, MODEL).len(), 1);

    // offline afterwards: the cache alone, the same answer
    let before = hub.requests().len();
    let second = hub.run(&home, args, &[("MINICPMV_OFFLINE", "1")]).ok();
    assert_eq!(hub.requests().len(), before, "{:?}", hub.requests());
    assert!(
        second.stderr.contains("using the default model"),
        "{}",
        second.stderr
    );
    assert_eq!(second.json()["token_ids"], j["token_ids"]);
    // online with the pair in the cache: no request either
    hub.run(&home, args, &[]).ok();
    assert_eq!(hub.requests().len(), before);
}

#[test]
fn versions_have_short_names_that_pull_their_own_repository() {
    let hub = Hub::start();
    let home = home("short-names");
    // `pull 2.6` reads 2.6's listing and selects from it, as for any repository
    let j = hub.run(&home, ["pull", "2.6", "--json"], &[]).ok().json();
    assert_eq!(j["repo"], REPO_2_6, "{j}");
    let dir = home.join("models/openbmb--MiniCPM-V-2_6-gguf");
    assert!(dir.join(MODEL).is_file() && dir.join(MMPROJ).is_file());
    // `pull 4.6` is the default pair
    let j = hub.run(&home, ["pull", "4.6", "--json"], &[]).ok().json();
    assert_eq!(j["repo"], REPO, "{j}");
    assert!(repo_dir(&home).join(MODEL).is_file());
    // a version whose repository the hub lacks: the mapped name is in the error
    hub.run(&home, ["pull", "4.6-thinking"], &[]).fails_with(&[
        "/api/models/openbmb/MiniCPM-V-4.6-Thinking-gguf/tree/main",
        "HTTP 404",
    ]);
    // neither a version nor OWNER/NAME: the versions are listed
    hub.run(&home, ["pull", "9.9"], &[])
        .fails_with(&["\"9.9\"", "4.6-thinking", "OWNER/NAME"]);
}
