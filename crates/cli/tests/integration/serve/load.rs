//! Many clients, clients that leave, a full queue and a shutdown: nothing is lost, nothing
//! hangs, and every answer equals the same request answered alone.

use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

use serde_json::{json, Value};

use super::{answer_text, chat_body, connect, get, head, post, read_response, Server};
use crate::harness::{image, tiny_pair};

/// The body of client `i` of the concurrency test: a different question each, every third
/// about one of two images.
fn client_body(i: usize) -> Value {
    let a = image(448, 448);
    let b = image(640, 320);
    let text = format!("Question {i}: what do you see?");
    match i % 3 {
        0 => chat_body(&text, &[&a], 8),
        1 => chat_body(&text, &[], 8),
        _ => chat_body(&text, &[&b], 8),
    }
}

#[test]
fn sixteen_concurrent_clients_all_complete_and_each_answer_equals_the_request_alone() {
    let pair = tiny_pair("2.6");
    let server = Server::start(&pair, &["--max-queue", "16"]);
    let addr = server.addr;
    let together: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|i| {
                s.spawn(move || answer_text(&post(addr, "/v1/chat/completions", &client_body(i))))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client thread"))
            .collect()
    });
    let m = server.metrics();
    assert_eq!(
        m["minicpmv_requests_total{route=\"/v1/chat/completions\",status=\"200\"}"],
        16.0
    );
    assert_eq!(m["minicpmv_requests_rejected_total"], 0.0);
    assert_eq!(m["minicpmv_queue_depth"], 0.0);
    drop(server);
    // Each request alone, on a server of its own: the same answer.
    for (i, answer) in together.iter().enumerate().step_by(5) {
        let alone = Server::start(&pair, &[]);
        let solo = answer_text(&post(alone.addr, "/v1/chat/completions", &client_body(i)));
        assert_eq!(&solo, answer, "client {i}");
    }
}

/// Starts a long streamed answer and returns the reader once its first chunk has arrived.
fn long_stream(server: &Server, tokens: u32) -> BufReader<std::net::TcpStream> {
    let mut body = chat_body("Tell me everything.", &[], tokens);
    body["stream"] = json!(true);
    let body = body.to_string();
    let mut s = connect(server.addr);
    s.write_all(head("POST", "/v1/chat/completions", &[], body.len()).as_bytes())
        .unwrap();
    s.write_all(body.as_bytes()).unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    for _ in 0..200 {
        line.clear();
        r.read_line(&mut line).expect("read the stream");
        if line.contains("\"content\"") && !line.contains("\"content\":\"\"") {
            return r;
        }
    }
    panic!("no content chunk in the stream");
}

#[test]
fn a_client_that_disconnects_mid_stream_stops_its_answer_and_frees_the_engine() {
    let pair = tiny_pair("2.6");
    let server = Server::start(&pair, &[]);
    let stream = long_stream(&server, 4000);
    drop(stream);
    server.wait_metric("minicpmv_requests_cancelled_total", |v| v == 1.0);
    server.wait_metric("minicpmv_requests_running", |v| v == 0.0);
    let generated = server.metrics()["minicpmv_generated_tokens_total"];
    assert!(
        generated < 4000.0,
        "the answer ran on after the client left: {generated} tokens"
    );
    assert!(
        server.log().contains("answer stopped after"),
        "{}",
        server.log()
    );
    // The engine is free: the next request is answered.
    let ok = post(
        server.addr,
        "/v1/chat/completions",
        &chat_body("Hi", &[], 3),
    );
    assert_eq!(ok.status, 200);
}

#[test]
fn a_full_queue_is_refused_with_429_and_the_queued_request_is_answered() {
    let pair = tiny_pair("2.6");
    let server = Server::start(&pair, &["--max-queue", "1"]);
    let addr = server.addr;
    let running = long_stream(&server, 4000);
    std::thread::scope(|s| {
        // One request waits in the queue...
        let queued =
            s.spawn(move || post(addr, "/v1/chat/completions", &chat_body("Queued", &[], 3)));
        server.wait_metric("minicpmv_queue_depth", |v| v == 1.0);
        // ...and the next finds it full.
        let refused = post(addr, "/v1/chat/completions", &chat_body("Refused", &[], 3));
        assert_eq!(refused.status, 429, "{}", refused.text());
        assert_eq!(refused.header("retry-after"), Some("1"));
        assert_eq!(refused.json()["error"]["type"], "rate_limit_error");
        let ollama = post(
            addr,
            "/api/chat",
            &json!({"messages": [{"role": "user", "content": "x"}]}),
        );
        assert_eq!(ollama.status, 429);
        assert!(ollama.json()["error"]
            .as_str()
            .unwrap()
            .contains("--max-queue"));
        // The running client leaves; the queued request is answered, not lost.
        drop(running);
        let queued = queued.join().unwrap();
        assert_eq!(queued.status, 200, "{}", queued.text());
    });
    assert_eq!(server.metrics()["minicpmv_requests_rejected_total"], 2.0);
}

#[test]
fn sigterm_lets_requests_in_flight_finish_then_exits_0() {
    let pair = tiny_pair("2.6");
    // A grace period far longer than the answers take, however loaded the machine: this test is
    // about draining, not about time (the next test covers the grace period running out).
    let mut server = Server::start(&pair, &["--max-queue", "4", "--shutdown-grace", "3600"]);
    let addr = server.addr;
    let answers: Vec<_> = std::thread::scope(|s| {
        let clients: Vec<_> = (0..3)
            .map(|i| {
                s.spawn(move || {
                    post(
                        addr,
                        "/v1/chat/completions",
                        &chat_body(&format!("Q{i}"), &[], 200),
                    )
                })
            })
            .collect();
        // All three accepted (answered, running or queued) before the signal, however fast
        // or slow this machine answers them.
        server.wait_until("all three requests in flight or answered", |m| {
            let get = |k: &str| m.get(k).copied().unwrap_or(0.0);
            get("minicpmv_requests_total{route=\"/v1/chat/completions\",status=\"200\"}")
                + get("minicpmv_queue_depth")
                + get("minicpmv_requests_running")
                == 3.0
        });
        server.terminate();
        clients.into_iter().map(|c| c.join().unwrap()).collect()
    });
    for a in &answers {
        assert_eq!(a.status, 200, "{}", a.text());
        assert_eq!(a.json()["usage"]["completion_tokens"], 200, "{}", a.text());
        assert_eq!(a.json()["choices"][0]["finish_reason"], "length");
    }
    let status = server.wait();
    assert_eq!(status.code(), Some(0), "{}", server.log());
    assert!(std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).is_err());
}

#[test]
fn after_the_shutdown_grace_period_running_answers_are_stopped_and_the_server_exits_0() {
    let pair = tiny_pair("2.6");
    let mut server = Server::start(&pair, &["--shutdown-grace", "0.2", "-c", "4096"]);
    let running = long_stream(&server, 4000);
    server.terminate();
    let status = server.wait();
    assert_eq!(status.code(), Some(0), "{}", server.log());
    assert!(server.log().contains("grace period"), "{}", server.log());
    drop(running);
}

#[test]
fn health_is_ok_once_loaded_and_models_lists_the_model() {
    let pair = tiny_pair("2.6");
    let server = Server::start(&pair, &[]);
    let h = get(server.addr, "/health", &[]);
    assert_eq!(h.status, 200);
    assert_eq!(h.json()["status"], "ok");
    let m = get(server.addr, "/v1/models", &[]).json();
    assert_eq!(m["data"][0]["id"], "model", "{m}");
    assert_eq!(m["data"][0]["meta"]["version"], "2.6", "{m}");
    let mut s = connect(server.addr);
    s.write_all(head("GET", "/metrics", &[], 0).as_bytes())
        .unwrap();
    let r = read_response(&mut s);
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    for name in [
        "minicpmv_queue_depth",
        "minicpmv_image_cache_hits_total",
        "minicpmv_time_to_first_token_seconds_bucket{le=\"+Inf\"}",
        "minicpmv_image_encode_seconds_count",
    ] {
        assert!(r.text().contains(name), "{name} missing from /metrics");
    }
}
