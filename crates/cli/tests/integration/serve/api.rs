//! The APIs as clients use them: the `openai` Python package, Ollama's routes, answers equal
//! to `minicpmv run`, and the caches at work across requests.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::{json, Value};

use super::{answer_text, base64_of, chat_body, get, post, Server, PATIENCE};
use crate::harness::{image, minicpmv, tiny_pair};

/// `minicpmv run --json` of the same greedy question: the answer a request must equal.
fn cli_answer(pair: &(PathBuf, PathBuf), prompt: &str, images: &[&Path], n: u32) -> String {
    let mut args: Vec<String> = vec!["run".into(), "--json".into(), "-t".into(), "2".into()];
    args.extend(["-m".into(), pair.0.display().to_string()]);
    args.extend(["--mmproj".into(), pair.1.display().to_string()]);
    for im in images {
        args.extend(["--image".into(), im.display().to_string()]);
    }
    args.extend(["-p".into(), prompt.into(), "-n".into(), n.to_string()]);
    args.extend(["--temp".into(), "0".into(), "--ignore-eos".into()]);
    let run = minicpmv(&args).ok();
    run.json()["text"].as_str().expect("text").to_string()
}

/// Runs a Python client script with a bounded wait; its stdout is one JSON object.
fn python(script: &str, args: &[&str]) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(script);
    let mut child = Command::new("python3")
        .arg(&path)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 must be installed (.ci/run installs it with the openai package)");
    let t = Instant::now();
    while child.try_wait().expect("wait for python").is_none() {
        if t.elapsed() > PATIENCE {
            let _ = child.kill();
            panic!("{script} did not finish");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("python output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script} failed (is the openai package installed? .ci/run installs it):\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{script} printed no JSON ({e}): {stdout}"))
}

#[test]
fn the_openai_python_client_chats_streams_and_sends_images() {
    let pair = tiny_pair("2.6");
    let img = image(448, 448);
    let server = Server::start(&pair, &["--name", "minicpmv"]);
    let base = format!("http://{}", server.addr);
    let out = python("openai_client.py", &[&base, img.to_str().unwrap()]);

    let plain = out["plain"].as_str().unwrap();
    assert_eq!(plain, cli_answer(&pair, "Hello", &[], 8), "{out}");
    assert_eq!(out["plain_finish"], "length");
    let usage = &out["plain_usage"];
    assert_eq!(usage[1], 8);
    assert_eq!(usage[2].as_u64(), Some(usage[0].as_u64().unwrap() + 8));
    // Streamed: the same text, in pieces, one finish reason, and usage at the end.
    assert_eq!(out["stream"], out["plain"], "{out}");
    assert!(out["stream_pieces"].as_u64().unwrap() >= 2, "{out}");
    assert_eq!(out["stream_finish"], json!(["length"]));
    assert_eq!(out["stream_usage"], out["plain_usage"]);
    // An image: the answer run alone on the command line, as a data URI or raw base64.
    let question = "What is in the image?";
    let expected = cli_answer(&pair, question, &[&img], 8);
    assert_eq!(out["image"], expected.as_str(), "{out}");
    assert_eq!(out["image_raw_base64"], expected.as_str(), "{out}");
    let image_prompt = out["image_usage"][0].as_u64().unwrap();
    assert!(image_prompt > usage[0].as_u64().unwrap() + 64, "{out}");
    // A refused request is the client's BadRequestError, naming the field.
    assert_eq!(out["error"]["status"], 400, "{out}");
    assert_eq!(out["error"]["param"], "messages", "{out}");
    assert_eq!(out["error"]["type"], "invalid_request_error", "{out}");
    assert_eq!(out["models"], json!(["minicpmv"]));
}

#[test]
fn a_second_question_about_an_image_costs_no_projector_call_and_a_follow_up_reuses_the_kv_cache() {
    let pair = tiny_pair("2.6");
    let img = image(700, 500);
    let server = Server::start(&pair, &[]);

    let first = post(
        server.addr,
        "/v1/chat/completions",
        &chat_body("Describe it.", &[&img], 10),
    );
    assert_eq!(
        answer_text(&first),
        cli_answer(&pair, "Describe it.", &[&img], 10)
    );
    let t = &first.json()["timings"];
    assert!(t["projector_calls"].as_u64().unwrap() >= 2, "{t}");
    assert_eq!(t["image_cache_hits"], 0);

    // Another question about the same image (another request, as another client would send):
    // the image's embeddings are still in the KV cache, right after the shared system prompt.
    let second = post(
        server.addr,
        "/v1/chat/completions",
        &chat_body("What colour?", &[&img], 10),
    );
    assert_eq!(
        answer_text(&second),
        cli_answer(&pair, "What colour?", &[&img], 10)
    );
    let j = second.json();
    assert_eq!(j["timings"]["projector_calls"], 0, "{j}");
    let image_positions = first.json()["usage"]["prompt_tokens"].as_u64().unwrap() - 20;
    assert!(
        j["timings"]["cache_n"].as_u64().unwrap() > image_positions,
        "{j}"
    );

    // After a request without the image, the KV cache no longer has it: its embeddings come
    // from the embedding cache.
    let other = post(
        server.addr,
        "/v1/chat/completions",
        &chat_body("No image here.", &[], 4),
    );
    assert_eq!(other.status, 200);
    let again = post(
        server.addr,
        "/v1/chat/completions",
        &chat_body("What shape?", &[&img], 10),
    );
    assert_eq!(
        answer_text(&again),
        cli_answer(&pair, "What shape?", &[&img], 10)
    );
    let t = &again.json()["timings"];
    assert_eq!(t["projector_calls"], 0, "{t}");
    assert_eq!(t["image_cache_hits"], 1, "{t}");

    // The conversation continued: its whole earlier prompt is in the KV cache.
    let mut body = chat_body("What shape?", &[&img], 10);
    let answer = answer_text(&again);
    body["messages"].as_array_mut().unwrap().extend([
        json!({"role": "assistant", "content": answer}),
        json!({"role": "user", "content": "And the size?"}),
    ]);
    let follow_up = post(server.addr, "/v1/chat/completions", &body);
    assert_eq!(follow_up.status, 200, "{}", follow_up.text());
    let j = follow_up.json();
    let cached = j["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    let before = again.json()["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(
        cached >= before,
        "cached {cached} of the {before} earlier prompt positions: {j}"
    );
    assert_eq!(j["timings"]["projector_calls"], 0);

    let m = server.metrics();
    assert_eq!(m["minicpmv_image_cache_hits_total"], 1.0);
    assert_eq!(m["minicpmv_image_cache_misses_total"], 1.0);
    assert_eq!(
        m["minicpmv_projector_calls_total"],
        first.json()["timings"]["projector_calls"].as_f64().unwrap()
    );
    assert_eq!(
        m["minicpmv_requests_total{route=\"/v1/chat/completions\",status=\"200\"}"],
        5.0
    );
    assert_eq!(m["minicpmv_time_to_first_token_seconds_count"], 5.0);
}

#[test]
fn ollama_routes_answer_as_ollama_does() {
    let pair = tiny_pair("2.6");
    let img = image(448, 448);
    let server = Server::start(&pair, &["--name", "minicpm-v"]);
    let a = server.addr;

    let tags = get(a, "/api/tags", &[]).json();
    assert_eq!(tags["models"][0]["name"], "minicpm-v:latest", "{tags}");
    assert_eq!(tags["models"][0]["details"]["format"], "gguf");
    assert!(tags["models"][0]["size"].as_u64().unwrap() > 0);
    let show = post(a, "/api/show", &json!({"model": "minicpm-v:latest"})).json();
    assert_eq!(
        show["capabilities"],
        json!(["completion", "vision"]),
        "{show}"
    );
    assert_eq!(show["model_info"]["general.architecture"], "qwen2");
    assert!(get(a, "/api/version", &[]).json()["version"].is_string());
    assert_eq!(
        get(a, "/api/ps", &[]).json()["models"][0]["name"],
        "minicpm-v:latest"
    );

    let expected = cli_answer(&pair, "What is this?", &[&img], 6);
    let msg = json!([{"role": "user", "content": "What is this?", "images": [base64_of(&img)]}]);
    let options = json!({"temperature": 0, "num_predict": 6});
    // Streamed by default: NDJSON pieces, then a done object with Ollama's counters.
    let r = post(
        a,
        "/api/chat",
        &json!({"model": "minicpm-v", "messages": msg, "options": options}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
    let lines = r.ndjson();
    let (last, pieces) = lines.split_last().unwrap();
    assert!(pieces
        .iter()
        .all(|l| l["done"] == false && l["message"]["role"] == "assistant"));
    let text: String = pieces
        .iter()
        .map(|l| l["message"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(last["done"], true, "{last}");
    assert_eq!(last["eval_count"], 6);
    assert!(last["prompt_eval_count"].as_u64().unwrap() > 64);
    assert!(last["total_duration"].as_u64().unwrap() > 0);
    // The model ends on its own unless the tokens run out first.
    if text != expected {
        assert_eq!(last["done_reason"], "stop", "{text:?} vs {expected:?}");
        assert!(expected.starts_with(&text));
    }
    // Not streamed: one object with the whole answer.
    let one = post(
        a,
        "/api/chat",
        &json!({"messages": msg, "options": options, "stream": false}),
    )
    .json();
    assert_eq!(one["done"], true);
    assert_eq!(one["message"]["content"], text.as_str());

    // /api/generate: prompt, images, system; and the empty prompt that loads the model.
    let gen = post(a, "/api/generate", &json!({"prompt": "What is this?", "images": [base64_of(&img)], "options": options, "stream": false})).json();
    assert_eq!(gen["response"], text.as_str(), "{gen}");
    let streamed = post(
        a,
        "/api/generate",
        &json!({"prompt": "What is this?", "images": [base64_of(&img)], "options": options}),
    )
    .ndjson();
    let joined: String = streamed
        .iter()
        .map(|l| l["response"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(joined, text);
    let load = post(a, "/api/generate", &json!({"model": "minicpm-v"})).json();
    assert_eq!(load["done_reason"], "load");
    assert_eq!(load["done"], true);
}

#[test]
fn stop_strings_end_the_answer_before_them() {
    let pair = tiny_pair("2.6");
    let server = Server::start(&pair, &[]);
    let mut body = chat_body("Hello", &[], 24);
    let full = answer_text(&post(server.addr, "/v1/chat/completions", &body));
    // A stop string taken from the middle of the greedy answer: the answer ends before it.
    let chars: Vec<char> = full.chars().collect();
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 2].iter().collect();
    let cut = &full[..full.find(&stop).unwrap()];
    body["stop"] = json!([stop]);
    let r = post(server.addr, "/v1/chat/completions", &body).json();
    assert_eq!(
        r["choices"][0]["message"]["content"], cut,
        "stop {stop:?} in {full:?}"
    );
    assert_eq!(r["choices"][0]["finish_reason"], "stop");
    body["stream"] = json!(true);
    let streamed = post(server.addr, "/v1/chat/completions", &body);
    let text: String = streamed
        .sse_data()
        .iter()
        .filter(|d| d.as_str() != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(String::from)
        })
        .collect();
    assert_eq!(text, cut);
}

#[test]
fn low_mem_serving_and_interleaved_images_give_the_answers_run_gives() {
    let pair = tiny_pair("2.6");
    let (a, b) = (image(448, 448), image(640, 320));
    let server = Server::start(&pair, &["--low-mem"]);
    // --low-mem: the projector is loaded for each encode and freed; the answers do not change.
    let r = post(
        server.addr,
        "/v1/chat/completions",
        &chat_body("Describe it.", &[&a], 8),
    );
    assert_eq!(answer_text(&r), cli_answer(&pair, "Describe it.", &[&a], 8));
    // Images between texts stand where they were sent: as markers in the prompt, which
    // `minicpmv run` takes the same way.
    let mut body = chat_body("", &[], 8);
    body["messages"][0]["content"] = json!([
        {"type": "text", "text": "Compare"},
        {"type": "image_url", "image_url": {"url": super::data_uri(&a)}},
        {"type": "text", "text": "with"},
        {"type": "image_url", "image_url": {"url": super::data_uri(&b)}},
    ]);
    let r = post(server.addr, "/v1/chat/completions", &body);
    let m = minicpmv::ffi::mtmd::default_marker();
    let prompt = format!("Compare\n{m}\nwith\n{m}");
    assert_eq!(answer_text(&r), cli_answer(&pair, &prompt, &[&a, &b], 8));
    assert_eq!(r.json()["timings"]["image_cache_hits"], 1, "{}", r.text());
}
