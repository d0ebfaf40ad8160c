//! The library's [`minicpmv::Session`]: N runs on one session load the language model once,
//! give the same greedy tokens as the `minicpmv run` executable on the same pair, a chat on the
//! session reuses its model, its projector and its KV cache, and bad files are refused before
//! anything is loaded.
//!
//! Its own test binary: the model-load counter is process-wide, and the main integration
//! binary loads models in-process in other tests at the same time.

#[allow(dead_code)]
#[path = "integration/harness.rs"]
mod harness;

use std::sync::Mutex;

use minicpmv::ffi::{model_load_count, SamplerParams};
use minicpmv::{ChatConfig, Event, Generation, Pair, RunError, RunRequest, SessionOptions};

use harness::{file_with, image, minicpmv, tiny_pair};

/// The tests of this file read the process-wide load counter one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn greedy() -> SamplerParams {
    SamplerParams {
        temperature: 0.0,
        ..SamplerParams::default()
    }
}

/// The generated token ids of `minicpmv run --json` with the same settings.
fn cli_tokens(model: &str, mmproj: &str, img: &str, prompt: &str) -> Vec<i64> {
    let r = minicpmv([
        "run",
        "-m",
        model,
        "--mmproj",
        mmproj,
        "--image",
        img,
        "-p",
        prompt,
        "-n",
        "8",
        "--ignore-eos",
        "--temp",
        "0",
        "-t",
        "2",
        "--json",
    ])
    .ok();
    r.json()["token_ids"]
        .as_array()
        .expect("token_ids in run --json")
        .iter()
        .map(|t| t.as_i64().expect("token id"))
        .collect()
}

#[test]
fn two_runs_on_one_session_load_the_model_once_and_match_the_cli() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (model, mmproj) = tiny_pair("2.6");
    let img = image(640, 480);
    let before = model_load_count();
    let mut session =
        Pair::open(&model, &mmproj, SessionOptions::default().threads(2)).expect("open the pair");
    assert_eq!(model_load_count(), before + 1, "Pair::open loads the model");

    let prompts = ["Describe the image.", "What colour is it?"];
    let mut outputs = Vec::new();
    for prompt in prompts {
        let request = RunRequest::new(prompt)
            .image(&img)
            .max_tokens(8)
            .ignore_eos(true)
            .sampling(greedy());
        let mut streamed = String::new();
        let out = session
            .run(&request, &mut |e| {
                if let Event::Text(t) = e {
                    streamed.push_str(t)
                }
            })
            .expect("session run");
        assert_eq!(out.token_ids.len(), 8);
        assert_eq!(streamed, out.text, "the streamed text is the output text");
        assert!(out.n_projector_calls > 0, "each run encodes its image");
        outputs.push(out);
    }
    assert_eq!(
        model_load_count(),
        before + 1,
        "two runs on one session must not load the model again"
    );
    assert!(outputs[1].timings.load_secs < outputs[0].timings.load_secs);

    // Same tokens as the executable, which loads the pair afresh for each run.
    for (prompt, out) in prompts.iter().zip(&outputs) {
        let ours: Vec<i64> = out.token_ids.iter().map(|&t| i64::from(t)).collect();
        let cli = cli_tokens(
            model.to_str().unwrap(),
            mmproj.to_str().unwrap(),
            img.to_str().unwrap(),
            prompt,
        );
        assert_eq!(ours, cli, "prompt {prompt:?}: session vs minicpmv run");
    }
}

/// A chat on a session: its first turn is the session's single run of the same question (same
/// tokens), the second question about the same image costs no projector call and reuses the
/// first turn's positions, and nothing loads the model again.
#[test]
fn a_chat_on_a_session_reuses_the_model_the_kv_cache_and_the_embeddings() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (model, mmproj) = tiny_pair("2.6");
    let img = image(500, 700);
    let before = model_load_count();
    let mut session =
        Pair::open(&model, &mmproj, SessionOptions::default().threads(2)).expect("open the pair");
    let generation = Generation::default()
        .max_tokens(6)
        .ignore_eos(true)
        .sampling(greedy());
    let single = session
        .run(
            &RunRequest::new("What is it?")
                .image(&img)
                .generation(generation),
            &mut |_| {},
        )
        .expect("session run");

    let mut chat = session
        .chat(ChatConfig::default().generation(generation))
        .expect("start a chat");
    chat.attach_image(&img).expect("attach");
    let mut streamed = String::new();
    let first = chat
        .ask("What is it?", &mut |e| {
            if let Event::Text(t) = e {
                streamed.push_str(t)
            }
        })
        .expect("first turn");
    assert_eq!(first.token_ids, single.token_ids, "turn 1 = a single run");
    assert_eq!(streamed, first.text);
    assert_eq!(first.n_projector_calls, single.n_projector_calls);
    assert_eq!(first.n_reused_positions, 0);

    let second = chat
        .ask("And its colour?", &mut |_| {})
        .expect("second turn");
    assert_eq!(second.n_projector_calls, 0, "the image is in the KV cache");
    assert!(
        second.n_reused_positions >= first.n_prompt_positions,
        "turn 2 keeps turn 1's prompt: {} < {}",
        second.n_reused_positions,
        first.n_prompt_positions
    );
    assert_eq!(chat.history().len(), 4);
    drop(chat);
    assert_eq!(model_load_count(), before + 1, "one model load in all");

    // The session is usable again after the chat ends.
    let again = session
        .run(
            &RunRequest::new("What is it?")
                .image(&img)
                .generation(generation),
            &mut |_| {},
        )
        .expect("run after the chat");
    assert_eq!(again.token_ids, single.token_ids);
}

#[test]
fn a_bad_file_is_refused_before_anything_loads() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (model, _) = tiny_pair("2.6");
    let junk = file_with("session-junk.gguf", b"not a gguf file at all");
    let before = model_load_count();
    let err = match Pair::open(&model, &junk, SessionOptions::default()) {
        Ok(_) => panic!("a junk mmproj must be refused"),
        Err(e) => e,
    };
    assert!(matches!(err, RunError::Input(_)), "{err:?}");
    assert!(
        err.to_string().contains("session-junk.gguf"),
        "the error names the file: {err}"
    );
    assert_eq!(model_load_count(), before, "nothing was loaded");
}

/// `examples/describe.rs`, which `cargo test` builds beside this test binary, describes an image
/// on the tiny pair: the library entry point as a user first meets it.
#[test]
fn the_describe_example_runs_on_a_tiny_pair() {
    let exe = std::env::current_exe().expect("test binary path");
    let examples = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps")
        .join("examples");
    let describe = examples.join(format!("describe{}", std::env::consts::EXE_SUFFIX));
    assert!(
        describe.is_file(),
        "{} is missing: cargo test builds the examples",
        describe.display()
    );
    let (model, mmproj) = tiny_pair("2.6");
    let out = std::process::Command::new(&describe)
        .args([&model, &mmproj, &image(320, 240)])
        .output()
        .expect("start the describe example");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "describe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(" tokens]"), "{stdout}");
    let bad = std::process::Command::new(&describe)
        .args([&model, &model, &image(320, 240)])
        .output()
        .expect("start the describe example");
    assert!(
        !bad.status.success(),
        "a language model given as mmproj must fail"
    );
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("model.gguf"),
        "the error names the file"
    );
}
