//! `minicpmv worker` and `--rpc`: a model split over this machine and two loopback workers
//! gives the same greedy tokens as a local run, `plan --rpc` predicts each box's share, and a
//! worker that is missing, wrong or killed mid-run is a clean error naming it.

use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use super::harness::{command, image, minicpmv, tiny_pair};

/// A `minicpmv worker` on a free loopback port, killed when dropped.
struct Worker {
    child: Child,
    port: u16,
    log: Arc<Mutex<String>>,
}

impl Worker {
    /// Starts a worker; a port taken between choosing and binding it (by a parallel test) is
    /// retried with another, at most 3 times.
    fn start(extra: &[&str]) -> Worker {
        for _ in 0..2 {
            if let Some(w) = Worker::try_start(extra) {
                return w;
            }
        }
        Worker::try_start(extra).expect("the worker could not listen on 3 free ports")
    }

    fn try_start(extra: &[&str]) -> Option<Worker> {
        let port = free_port();
        let mut args = vec!["worker".to_string(), "--port".into(), port.to_string()];
        args.extend(["-t".into(), "1".into()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut child = command(&args, &[])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start minicpmv worker");
        let stderr = child.stderr.take().expect("stderr pipe");
        let log = Arc::new(Mutex::new(String::new()));
        {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    log.lock().unwrap().push_str(&format!("{line}\n"));
                }
            });
        }
        // Ready when the port takes connections (bounded: 20 s). The test connection is a
        // client that closes at once; the worker goes back to accepting.
        for _ in 0..400 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(Worker { child, port, log });
            }
            if let Ok(Some(status)) = child.try_wait() {
                // Give the stderr reader a moment to collect the reason.
                std::thread::sleep(Duration::from_millis(100));
                let said = log.lock().unwrap().clone();
                if said.contains("cannot listen") {
                    return None;
                }
                panic!("the worker exited ({status}): {said}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        panic!("the worker did not listen: {}", log.lock().unwrap());
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback port nothing listens on (bound once, then released).
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().unwrap().port()
}

fn run_args(extra: &[&str]) -> Vec<String> {
    let (model, mmproj) = tiny_pair("2.6");
    let img = image(448, 336);
    let mut args: Vec<String> = ["run", "-t", "1", "--temp", "0", "-n", "24", "--json", "-q"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(["-m".into(), model.display().to_string()]);
    args.extend(["--mmproj".into(), mmproj.display().to_string()]);
    args.extend(["--image".into(), img.display().to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

#[test]
fn two_workers_give_the_local_tokens() {
    let local = minicpmv(run_args(&[])).ok().json();
    let (w1, w2) = (Worker::start(&[]), Worker::start(&[]));
    let workers = format!("{},{}", w1.addr(), w2.addr());
    // 1,1,1: layer 0 here, layer 1 on the first worker, the output layer on the second.
    // 0,1,1: nothing here but the token embeddings.
    for split in ["1,1,1", "0,1,1"] {
        let run = minicpmv(run_args(&["--rpc", &workers, "--rpc-split", split])).ok();
        let remote = run.json();
        assert_eq!(
            remote["token_ids"], local["token_ids"],
            "split {split}: greedy tokens differ from the local run"
        );
        assert!(!local["token_ids"].as_array().unwrap().is_empty());
        let devices = remote["devices"].as_array().expect("devices in --json");
        let names: Vec<&str> = devices
            .iter()
            .map(|d| d["name"].as_str().unwrap())
            .collect();
        assert!(
            names.contains(&"RPC0") && names.contains(&"RPC1"),
            "{names:?}"
        );
        for d in devices.iter().filter(|d| d["name"] != "CPU") {
            assert!(d["weights"].as_u64().unwrap() > 0, "split {split}: {d}");
        }
        assert!(run.stderr.contains("rpc: "), "{}", run.stderr);
        // The weights went over the network, then a little per token.
        let traffic = &remote["rpc_traffic"];
        let (total, per_token) = (
            traffic["total_bytes"].as_u64().unwrap(),
            traffic["bytes_per_token"].as_u64().unwrap(),
        );
        assert!(per_token > 0 && total > 20 * per_token, "{traffic}");
        assert!(local.get("rpc_traffic").is_none());
    }
    // Both workers served, and are still up for the next client.
    assert!(w1
        .log
        .lock()
        .unwrap()
        .contains("serving this machine's CPU"));
    assert!(TcpStream::connect(("127.0.0.1", w2.port)).is_ok());
}

/// `plan --rpc` predicts each box's layers, weights and KV cache; the run's own memory
/// breakdown (llama.cpp's, per device) has exactly those bytes. Without mmap, so that the
/// local CPU's weights are its own tensors and not the mapped span of the file.
#[test]
fn plan_rpc_predicts_each_box_share() {
    let (model, mmproj) = tiny_pair("2.6");
    let img = image(448, 336);
    let (w1, w2) = (Worker::start(&[]), Worker::start(&["--mem", "2048"]));
    let workers = format!("{},{}", w1.addr(), w2.addr());
    let plan = minicpmv([
        "plan",
        "-m",
        model.to_str().unwrap(),
        "--mmproj",
        mmproj.to_str().unwrap(),
        "--image",
        img.to_str().unwrap(),
        "--no-mmap",
        "--rpc",
        &workers,
        "--rpc-split",
        "1,1,1",
        "--json",
    ])
    .ok()
    .json();
    let rpc = &plan["rpc"];
    let boxes = rpc["boxes"].as_array().unwrap();
    assert_eq!(boxes.len(), 3);
    assert_eq!(boxes[0]["name"], "local");
    assert_eq!(boxes[1]["name"], w1.addr().as_str());
    // The tiny 2.6 model has 2 layers: 3 items, one per box.
    assert_eq!(boxes[0]["layers"], serde_json::json!([0, 0]));
    assert_eq!(boxes[1]["layers"], serde_json::json!([1, 1]));
    assert_eq!(boxes[2]["layers"], serde_json::Value::Null);
    assert_eq!(boxes[2]["output"], true);
    // --mem 2048 is what the second worker reports.
    assert_eq!(boxes[2]["memory"], 2048u64 << 20);
    assert_eq!(rpc["fits"], true);

    let run = minicpmv(run_args(&[
        "--no-mmap",
        "--rpc",
        &workers,
        "--rpc-split",
        "1,1,1",
    ]))
    .ok()
    .json();
    let devices = run["devices"].as_array().unwrap();
    for b in boxes {
        let d = devices
            .iter()
            .find(|d| d["name"] == b["device"])
            .unwrap_or_else(|| panic!("no device {} in the run: {devices:?}", b["device"]));
        assert_eq!(d["weights"], b["weights"], "weights of {}", b["device"]);
        assert_eq!(d["kv_cache"], b["kv_cache"], "KV cache of {}", b["device"]);
        // Compute buffers: llama.cpp's estimate of this split, within 10% of what it allocates.
        let (got, planned) = (
            d["compute"].as_f64().unwrap(),
            b["compute"].as_f64().unwrap(),
        );
        assert!(
            planned > 0.0 && (got - planned).abs() <= 0.1 * planned,
            "compute of {}: planned {planned}, allocated {got}",
            b["device"]
        );
    }

    // A box that cannot hold its share fails the plan (exit 1) and says which.
    let small = Worker::start(&["--mem", "1"]);
    let out = minicpmv([
        "plan",
        "-m",
        model.to_str().unwrap(),
        "--mmproj",
        mmproj.to_str().unwrap(),
        "--rpc",
        &format!("{},{}", w1.addr(), small.addr()),
        "--rpc-split",
        "1,1,1",
    ]);
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    assert!(out.stdout.contains("does NOT fit"), "{}", out.stdout);
}

#[test]
fn a_wrong_port_is_a_clean_error_naming_it() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    minicpmv(run_args(&["--rpc", &addr])).fails_with(&[
        &format!("RPC worker {addr}: cannot connect"),
        "minicpmv worker",
    ]);
    // Something that listens but is not a worker: it closes at once.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let other = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
    let closer = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 8];
        let _ = s.read(&mut buf);
    });
    minicpmv(run_args(&["--rpc", &other])).fails_with(&[
        &format!("RPC worker {other}"),
        "not a compatible RPC worker",
    ]);
    closer.join().unwrap();
    // Bad syntax and share counts are refused before anything connects.
    minicpmv(run_args(&["--rpc", "localhost"])).fails_with(&["--rpc", "not host:port"]);
    let w = Worker::start(&[]);
    minicpmv(run_args(&["--rpc", &w.addr(), "--rpc-split", "1,1,1"]))
        .fails_with(&["--rpc-split", "3 shares given; 2 needed"]);
}

/// A worker killed while the client generates: the client stops with exit code 3 and a
/// message naming the worker, not an abort and not a hang.
#[test]
fn a_worker_killed_mid_generation_is_a_clean_error() {
    let (w1, mut w2) = (Worker::start(&[]), Worker::start(&[]));
    let workers = format!("{},{}", w1.addr(), w2.addr());
    let mut args = run_args(&["--rpc", &workers, "--rpc-split", "1,1,1"]);
    // Stream text (no --json) for long enough to kill a worker in the middle.
    args.retain(|a| a != "--json");
    let n = args.iter().position(|a| a == "-n").unwrap();
    args[n + 1] = "3000".into();
    args.extend(["--ignore-eos".into(), "-c".into(), "4096".into()]);
    let mut child = command(&args, &[])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the run");
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut first = [0u8; 1];
        let got = stdout.read(&mut first).unwrap_or(0);
        let _ = tx.send(got);
        let mut rest = Vec::new();
        let _ = stdout.read_to_end(&mut rest);
    });
    let mut stderr = child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let first = rx.recv_timeout(Duration::from_secs(120));
    assert_eq!(first, Ok(1), "the run streamed no text");
    w2.kill();
    // Bounded wait for the client to stop.
    let mut status = None;
    for _ in 0..1200 {
        if let Some(s) = child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let Some(status) = status else {
        let _ = child.kill();
        panic!("the run did not stop within 60 s of its worker's death");
    };
    let stderr = err_reader.join().unwrap();
    assert_eq!(status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "error: RPC worker {} no longer answers",
            w2.addr()
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("backtrace"), "{stderr}");
}

/// `serve --rpc`: answers with its layers on the workers; once a worker is gone, requests and
/// /health get a 503 naming it (using the lost layers would end the process), and the server
/// itself stays up to say so.
#[test]
fn serve_refuses_requests_once_a_worker_is_gone() {
    use super::serve::{get, post, Server};
    let pair = tiny_pair("2.6");
    let (w1, mut w2) = (Worker::start(&[]), Worker::start(&[]));
    let workers = format!("{},{}", w1.addr(), w2.addr());
    let server = Server::start(&pair, &["--rpc", &workers, "--rpc-split", "1,1,1"]);
    let body = serde_json::json!({
        "model": "m",
        "messages": [{"role": "user", "content": "Hello"}],
        "max_tokens": 4,
        "temperature": 0
    });
    let ok = post(server.addr, "/v1/chat/completions", &body);
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(get(server.addr, "/health", &[]).status, 200);

    w2.kill();
    // The kernel sees the worker's connection close at once; bounded wait all the same.
    let mut health = get(server.addr, "/health", &[]);
    for _ in 0..100 {
        if health.status == 503 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        health = get(server.addr, "/health", &[]);
    }
    assert_eq!(health.status, 503, "{}", health.text());
    assert_eq!(health.json()["status"], "worker_lost");
    let refused = post(server.addr, "/v1/chat/completions", &body);
    assert_eq!(refused.status, 503, "{}", refused.text());
    let message = refused.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains(&format!("RPC worker {} is gone", w2.addr())),
        "{message}"
    );
    // Still serving (refusing) after that.
    assert_eq!(get(server.addr, "/health", &[]).status, 503);
}

/// `chat --rpc`: two turns (the second reuses the KV cache on the workers) with the local
/// chat's tokens.
#[test]
fn chat_over_workers_gives_the_local_turns() {
    use super::harness::minicpmv_with_stdin;
    let (model, mmproj) = tiny_pair("2.6");
    let img = image(448, 336);
    let script = format!(
        "/image {}\nWhat is it?\nAnd the colour?\n/quit\n",
        img.display()
    );
    let chat = |extra: &[&str]| {
        let mut args: Vec<String> = ["chat", "-t", "1", "--temp", "0", "-n", "8", "--json"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(["-m".into(), model.display().to_string()]);
        args.extend(["--mmproj".into(), mmproj.display().to_string()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let run = minicpmv_with_stdin(&args, &script).ok();
        let turns: Vec<serde_json::Value> = run
            .stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        turns
            .iter()
            .map(|t| t["token_ids"].clone())
            .collect::<Vec<_>>()
    };
    let local = chat(&[]);
    assert_eq!(local.len(), 2, "{local:?}");
    let (w1, w2) = (Worker::start(&[]), Worker::start(&[]));
    let workers = format!("{},{}", w1.addr(), w2.addr());
    assert_eq!(chat(&["--rpc", &workers, "--rpc-split", "1,1,1"]), local);
}

/// A worker serves one client at a time: while a server holds it, another client's `--rpc`
/// gets a clear error after the handshake times out, not a hang and not ggml's abort.
#[test]
fn a_worker_busy_with_another_client_is_a_clean_error() {
    use super::serve::Server;
    let pair = tiny_pair("2.6");
    let w = Worker::start(&[]);
    let _holder = Server::start(&pair, &["--rpc", &w.addr(), "--rpc-split", "1,1"]);
    minicpmv(run_args(&["--rpc", &w.addr()])).fails_with(&[
        &format!("RPC worker {}", w.addr()),
        "busy with another client",
    ]);
}

/// `worker` refuses what it cannot serve, with the reason.
#[test]
fn worker_bad_settings_are_clean_errors() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    minicpmv(["worker", "--port", &port]).fails_with(&[
        &format!("cannot listen on 127.0.0.1:{port}"),
        "Address already in use",
    ]);
    minicpmv(["worker", "--host", "::1"]).fails_with(&["--host ::1", "IPv4 only"]);
    minicpmv(["worker", "--port", "0"]).fails_with(&["--port"]);
    minicpmv(["worker", "--mem", "0"]).fails_with(&["--mem"]);
}
