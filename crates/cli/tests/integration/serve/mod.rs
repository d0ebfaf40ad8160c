//! `minicpmv serve`, run as a real process on 127.0.0.1 and spoken to by real clients: a raw
//! HTTP/1.1 client here (every byte on the wire under the test's control) and the `openai`
//! Python package (tests/clients/openai_client.py). Every wait and every read is bounded.

mod api;
mod hostile;
mod load;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;

use crate::harness::command;

/// Longest wait for anything a test waits for (a server to start, a response, an exit).
pub const PATIENCE: Duration = Duration::from_secs(120);

/// A `minicpmv serve` process on a free loopback port, killed when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Server {
    /// Starts `serve` on `pair` with `extra` flags and waits until the model is loaded.
    pub fn start(pair: &(PathBuf, PathBuf), extra: &[&str]) -> Server {
        let mut args: Vec<String> = ["serve", "--port", "0", "-t", "2", "-m"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.push(pair.0.display().to_string());
        args.push("--mmproj".into());
        args.push(pair.1.display().to_string());
        args.extend(extra.iter().map(|s| s.to_string()));
        Server::start_args(&args, &[])
    }

    /// Starts `minicpmv ARGS` (a `serve` command line) and waits until it is ready.
    pub fn start_args(args: &[String], env: &[(&str, &std::ffi::OsStr)]) -> Server {
        let mut child = command(args, env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start minicpmv serve");
        let stderr = child.stderr.take().expect("stderr pipe");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut addr = None;
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    log.lock().unwrap().push_str(&format!("{line}\n"));
                    if let Some(a) = line.strip_prefix("listening on http://") {
                        addr = a.parse::<SocketAddr>().ok();
                    }
                    if line.starts_with("ready:") {
                        let _ = tx.send(addr);
                    }
                }
            });
        }
        let addr = match rx.recv_timeout(PATIENCE) {
            Ok(Some(addr)) => addr,
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the server did not become ready: {}", log.lock().unwrap());
            }
        };
        assert!(
            addr.ip().is_loopback(),
            "tests bind to loopback only: {addr}"
        );
        Server { child, addr, log }
    }

    /// What the server printed on stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Sends SIGTERM (through kill(1): the tests have no `unsafe`).
    pub fn terminate(&self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait(&mut self) -> ExitStatus {
        let t = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the server") {
                return status;
            }
            assert!(
                t.elapsed() < PATIENCE,
                "the server did not exit: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `GET /metrics`, parsed into `name{labels} -> value`.
    pub fn metrics(&self) -> std::collections::HashMap<String, f64> {
        let r = get(self.addr, "/metrics", &[]);
        assert_eq!(r.status, 200, "{}", r.text());
        r.text()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' '))
            .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
            .collect()
    }

    /// Polls the metric `name` until `ok(value)` (bounded).
    pub fn wait_metric(&self, name: &str, ok: impl Fn(f64) -> bool) -> f64 {
        let mut last = f64::NAN;
        self.wait_until(name, |m| {
            last = m.get(name).copied().unwrap_or(f64::NAN);
            ok(last)
        });
        last
    }

    /// Polls `/metrics` until `ok(metrics)` (bounded); `what` names the wait in a failure.
    pub fn wait_until(
        &self,
        what: &str,
        mut ok: impl FnMut(&std::collections::HashMap<String, f64>) -> bool,
    ) {
        let t = Instant::now();
        loop {
            let m = self.metrics();
            if ok(&m) {
                return;
            }
            assert!(
                t.elapsed() < PATIENCE,
                "waited for {what}: {m:?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP response as read off the wire (chunked bodies decoded).
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `data:` payloads of a server-sent-events body.
    pub fn sse_data(&self) -> Vec<String> {
        self.text()
            .lines()
            .filter_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
            .map(|s| s.to_string())
            .collect()
    }

    /// The objects of a newline-delimited JSON body.
    pub fn ndjson(&self) -> Vec<Value> {
        self.text()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("bad NDJSON line {l:?}: {e}"))
            })
            .collect()
    }
}

/// A connection with bounded reads and writes.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, PATIENCE).expect("connect to the server");
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.set_write_timeout(Some(PATIENCE)).unwrap();
    s
}

/// The request head of `method path` with a body of `len` bytes.
pub fn head(method: &str, path: &str, headers: &[(&str, &str)], len: usize) -> String {
    let mut h = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if method != "GET" || len > 0 {
        h.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {len}\r\n"
        ));
    }
    for (k, v) in headers {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    h.push_str("\r\n");
    h
}

/// Sends one request and reads the whole response (the server closes: `Connection: close`).
pub fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let mut s = connect(addr);
    // A server may answer before the whole body is sent (a body over the limit) and close:
    // what matters is its response, so a failed write is not the test's failure.
    let _ = s
        .write_all(head(method, path, headers, body.len()).as_bytes())
        .and_then(|()| s.write_all(body));
    read_response(&mut s)
}

pub fn post(addr: SocketAddr, path: &str, body: &Value) -> Resp {
    send(addr, "POST", path, &[], body.to_string().as_bytes())
}

pub fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Resp {
    send(addr, "GET", path, headers, b"")
}

/// Reads a response to its end. A reset after the response (the server closed with part of
/// our body unread) ends it like a close.
pub fn read_response(s: &mut TcpStream) -> Resp {
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && !raw.is_empty() => break,
            Err(e) => panic!("reading the response failed: {e}"),
        }
    }
    parse_response(&raw)
}

/// Parses a whole response.
pub fn parse_response(raw: &[u8]) -> Resp {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Resp {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 || b.len() < eol + 2 + size {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[(eol + 4 + size).min(b.len())..];
    }
    out
}

/// `data:image/png;base64,...` of a file.
pub fn data_uri(path: &Path) -> String {
    format!("data:image/png;base64,{}", base64_of(path))
}

/// The base64 of a file.
pub fn base64_of(path: &Path) -> String {
    base64::engine::general_purpose::STANDARD.encode(std::fs::read(path).expect("read image"))
}

/// A chat request body: one user message with `images` (data URIs) before `text`, greedy.
pub fn chat_body(text: &str, images: &[&Path], max_tokens: u32) -> Value {
    let mut content: Vec<Value> = images
        .iter()
        .map(|p| serde_json::json!({"type": "image_url", "image_url": {"url": data_uri(p)}}))
        .collect();
    content.push(serde_json::json!({"type": "text", "text": text}));
    serde_json::json!({
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": true,
    })
}

/// The answer text of a chat completion.
#[track_caller]
pub fn answer_text(r: &Resp) -> String {
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["choices"][0]["message"]["content"]
        .as_str()
        .expect("content")
        .to_string()
}
