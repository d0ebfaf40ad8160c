//! Hostile requests: each gets a 4xx with an error object naming what is wrong, and the server
//! keeps serving (a good request still gets its answer afterwards).

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{answer_text, chat_body, connect, data_uri, head, post, read_response, send, Server};
use crate::harness::{image, tiny_pair};

/// One hostile request and what must come back.
struct Case {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    body: Vec<u8>,
    status: u16,
    /// In the error message (OpenAI: `error.message`; Ollama: `error`).
    needle: &'static str,
    /// OpenAI's `error.param`, when the case names one.
    param: Option<&'static str>,
}

fn case(
    name: &'static str,
    body: Value,
    status: u16,
    needle: &'static str,
    param: Option<&'static str>,
) -> Case {
    Case {
        name,
        method: "POST",
        path: "/v1/chat/completions",
        body: body.to_string().into_bytes(),
        status,
        needle,
        param,
    }
}

fn user(content: Value) -> Value {
    json!({"messages": [{"role": "user", "content": content}], "max_tokens": 4})
}

fn image_part(url: &str) -> Value {
    json!([{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "?"}])
}

fn cases() -> Vec<Case> {
    let img = data_uri(&image(64, 64));
    let small = data_uri(&image(8, 8));
    let many: Vec<Value> = (0..1000)
        .map(|_| json!({"type": "image_url", "image_url": {"url": small}}))
        .collect();
    let long_text = "lorem ipsum ".repeat(3000);
    let raw = |name, body: &str, status, needle, param| Case {
        name,
        method: "POST",
        path: "/v1/chat/completions",
        body: body.as_bytes().to_vec(),
        status,
        needle,
        param,
    };
    let ollama = |name, path, body: Value, needle| Case {
        name,
        method: "POST",
        path,
        body: body.to_string().into_bytes(),
        status: 400,
        needle,
        param: None,
    };
    vec![
        raw(
            "malformed JSON",
            "{\"messages\": [",
            400,
            "not valid JSON: EOF while parsing",
            Some("body"),
        ),
        raw(
            "a trailing comma",
            "{\"messages\": [],}",
            400,
            "not valid JSON",
            Some("body"),
        ),
        raw("an empty body", "", 400, "empty", Some("body")),
        raw(
            "not an object",
            "[1, 2, 3]",
            400,
            "must be a JSON object",
            Some("body"),
        ),
        raw(
            "bytes that are not JSON",
            "\u{0}\u{1}\u{ff}",
            400,
            "must be a JSON object",
            Some("body"),
        ),
        case(
            "no messages field",
            json!({"max_tokens": 3}),
            400,
            "missing field `messages`",
            Some("body"),
        ),
        case(
            "messages of the wrong type",
            json!({"messages": "hi"}),
            400,
            "invalid type",
            Some("messages"),
        ),
        case(
            "empty messages",
            json!({"messages": []}),
            400,
            "messages is empty",
            Some("messages"),
        ),
        case(
            "an unknown role",
            json!({"messages": [{"role": "robot", "content": "hi"}]}),
            400,
            "unknown variant `robot`",
            Some("messages[0].role"),
        ),
        case(
            "a role of the wrong type",
            json!({"messages": [{"role": 7, "content": "hi"}]}),
            400,
            "messages[0].role: expected value",
            Some("messages[0].role"),
        ),
        case(
            "content that is a number",
            user(json!(42)),
            400,
            "must be a string or an array",
            Some("messages[0].content"),
        ),
        case(
            "a user message without content",
            json!({"messages": [{"role": "user"}]}),
            400,
            "is missing",
            Some("messages[0].content"),
        ),
        case(
            "an unknown content part",
            user(json!([{"type": "input_audio", "input_audio": {}}])),
            400,
            "\"input_audio\"",
            Some("messages[0].content[0].type"),
        ),
        case(
            "an image part without its URL",
            user(json!([{"type": "image_url", "image_url": {}}])),
            400,
            "is missing",
            Some("messages[0].content[0].image_url.url"),
        ),
        case(
            "an image that is not base64",
            user(image_part("%%% not base64 %%%")),
            400,
            "neither valid base64",
            Some("messages[0].content[0].image_url"),
        ),
        case(
            "bytes that are no image",
            user(image_part("aGVsbG8gd29ybGQsIG5vdCBhbiBpbWFnZQ==")),
            400,
            "not an image in a supported format",
            Some("messages"),
        ),
        case(
            "a data URI without base64",
            user(image_part("data:image/png,rawbytes")),
            400,
            "without ;base64",
            Some("messages[0].content[0].image_url"),
        ),
        case(
            "a remote image URL",
            user(image_part("http://127.0.0.1:9/x.png")),
            400,
            "--allow-remote-images",
            Some("messages[0].content[0].image_url"),
        ),
        case(
            "a file URL without --media-dir",
            user(image_part("file:///etc/passwd")),
            400,
            "--media-dir",
            Some("messages[0].content[0].image_url"),
        ),
        case(
            "1,000 images",
            user(json!(many)),
            400,
            "1000 images",
            Some("messages"),
        ),
        case(
            "an image in an assistant message",
            json!({"messages": [{"role": "assistant", "content": image_part(&img)}, {"role": "user", "content": "?"}]}),
            400,
            "only user messages",
            Some("messages[0].content[0].image_url"),
        ),
        case(
            "the last message is not the user's",
            json!({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}),
            400,
            "must end with a user message",
            Some("messages"),
        ),
        case(
            "negative max_tokens",
            json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": -5}),
            400,
            "max_tokens is -5",
            Some("max_tokens"),
        ),
        case(
            "huge max_tokens",
            json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1_000_000_000u64}),
            400,
            "max_tokens is 1000000000",
            Some("max_tokens"),
        ),
        case(
            "max_tokens as text",
            json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": "ten"}),
            400,
            "invalid type",
            Some("max_tokens"),
        ),
        case(
            "a negative temperature",
            json!({"messages": [{"role": "user", "content": "hi"}], "temperature": -1}),
            400,
            "temperature is -1",
            Some("temperature"),
        ),
        case(
            "top_p above 1",
            json!({"messages": [{"role": "user", "content": "hi"}], "top_p": 2}),
            400,
            "top_p is 2",
            Some("top_p"),
        ),
        case(
            "max_slices 0",
            json!({"messages": [{"role": "user", "content": "hi"}], "max_slices": 0}),
            400,
            "max_slices is 0",
            Some("max_slices"),
        ),
        case(
            "several choices",
            json!({"messages": [{"role": "user", "content": "hi"}], "n": 3}),
            400,
            "n is 3",
            Some("n"),
        ),
        case(
            "tools",
            json!({"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]}),
            400,
            "tools are not supported",
            Some("tools"),
        ),
        case(
            "a prompt longer than the context",
            user(json!(long_text)),
            400,
            "but the context holds 2048",
            Some("messages"),
        ),
        case(
            "a body over --max-body-mb",
            user(image_part(&format!(
                "data:image/png;base64,{}",
                "A".repeat(3 << 20)
            ))),
            413,
            "--max-body-mb",
            None,
        ),
        Case {
            name: "an unknown route",
            method: "POST",
            path: "/v1/completions/nope",
            body: b"{}".to_vec(),
            status: 404,
            needle: "no route",
            param: None,
        },
        Case {
            name: "a wrong method",
            method: "GET",
            path: "/v1/chat/completions",
            body: Vec::new(),
            status: 405,
            needle: "not allowed",
            param: None,
        },
        ollama(
            "Ollama: not an object",
            "/api/chat",
            json!("a string"),
            "must be a JSON object",
        ),
        ollama(
            "Ollama: an image that is not base64",
            "/api/chat",
            json!({"messages": [{"role": "user", "content": "?", "images": ["%%%"]}]}),
            "messages[0].images[0]",
        ),
        ollama(
            "Ollama: negative num_predict",
            "/api/chat",
            json!({"messages": [{"role": "user", "content": "?"}], "options": {"num_predict": -7}}),
            "options.num_predict is -7",
        ),
        ollama(
            "Ollama: stream of the wrong type",
            "/api/generate",
            json!({"prompt": "?", "stream": "yes"}),
            "stream: invalid type",
        ),
        ollama(
            "Ollama: structured output",
            "/api/generate",
            json!({"prompt": "?", "format": "json"}),
            "format",
        ),
    ]
}

#[test]
fn hostile_requests_get_a_4xx_naming_the_field_and_the_server_keeps_serving() {
    let pair = tiny_pair("2.6");
    let server = Server::start(
        &pair,
        &["-c", "2048", "--max-body-mb", "2", "--max-images", "16"],
    );
    let cases = cases();
    assert!(cases.len() >= 25);
    for c in &cases {
        let r = send(server.addr, c.method, c.path, &[], &c.body);
        assert_eq!(r.status, c.status, "{}: {}", c.name, r.text());
        let body = r.json();
        let message = if c.path.starts_with("/api/") {
            body["error"]
                .as_str()
                .unwrap_or_else(|| panic!("{}: Ollama error is a string: {body}", c.name))
                .to_string()
        } else {
            assert_eq!(
                body["error"]["type"]
                    .as_str()
                    .map(|t| t.ends_with("_error")),
                Some(true),
                "{}: {body}",
                c.name
            );
            body["error"]["message"].as_str().unwrap().to_string()
        };
        assert!(
            message.contains(c.needle),
            "{}: {message:?} lacks {:?}",
            c.name,
            c.needle
        );
        if let Some(p) = c.param {
            assert_eq!(body["error"]["param"], p, "{}: {body}", c.name);
        }
    }
    // Still serving, and every refusal was counted.
    let ok = post(
        server.addr,
        "/v1/chat/completions",
        &chat_body("Hello", &[], 4),
    );
    assert!(!answer_text(&ok).is_empty());
    let m = server.metrics();
    let refused: f64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("minicpmv_requests_total") && !k.contains("status=\"200\""))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(refused as usize, cases.len(), "{m:?}");
}

#[test]
fn a_slow_body_is_cut_off_at_the_body_timeout() {
    let pair = tiny_pair("2.6");
    let server = Server::start(&pair, &["--body-timeout", "1"]);
    let mut s = connect(server.addr);
    let t = Instant::now();
    // Announce 1000 bytes, send 10, then trickle nothing: a slow-loris client.
    s.write_all(head("POST", "/v1/chat/completions", &[], 1000).as_bytes())
        .unwrap();
    s.write_all(b"{\"messages").unwrap();
    let r = read_response(&mut s);
    assert_eq!(r.status, 408, "{}", r.text());
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("--body-timeout"));
    assert!(t.elapsed() < Duration::from_secs(30));
    // Another client is served meanwhile and after.
    assert_eq!(
        post(
            server.addr,
            "/v1/chat/completions",
            &chat_body("Hi", &[], 2)
        )
        .status,
        200
    );
}

#[test]
fn an_api_key_is_required_on_every_route_but_health() {
    let pair = tiny_pair("2.6");
    let key = std::ffi::OsStr::new("s3cret-key");
    let args: Vec<String> = [
        "serve",
        "--port",
        "0",
        "-t",
        "2",
        "-m",
        pair.0.to_str().unwrap(),
        "--mmproj",
        pair.1.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // The key from the environment, as a service manager would pass it.
    let server = Server::start_args(&args, &[("MINICPMV_API_KEY", key)]);
    let body = chat_body("Hi", &[], 2).to_string();
    let call = |path: &str, auth: Option<&str>| {
        let h = auth.map(|v| ("Authorization", v));
        let headers: Vec<(&str, &str)> = h.into_iter().collect();
        if path.contains("chat") {
            send(server.addr, "POST", path, &headers, body.as_bytes())
        } else {
            send(server.addr, "GET", path, &headers, b"")
        }
    };
    for path in [
        "/v1/chat/completions",
        "/v1/models",
        "/metrics",
        "/api/tags",
    ] {
        let r = call(path, None);
        assert_eq!(r.status, 401, "{path}: {}", r.text());
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        let r = call(path, Some("Bearer wrong-key"));
        assert_eq!(r.status, 401, "{path}: {}", r.text());
        let r = call(path, Some("Bearer s3cret-key"));
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
    let r = call("/api/chat", None);
    assert_eq!(
        r.json()["error"].as_str().map(|e| e.contains("API key")),
        Some(true),
        "{}",
        r.text()
    );
    assert_eq!(call("/health", None).status, 200);
}
