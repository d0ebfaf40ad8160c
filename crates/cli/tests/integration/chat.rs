//! `minicpmv chat`: KV-cache reuse between turns, the image embedding cache (memory and disk),
//! `/image`, `/reset`, and answers identical to a fresh single-turn run of the same
//! conversation. Projector calls are counted by the binary, never timed.

use std::path::{Path, PathBuf};

use serde_json::Value;

use minicpmv::ffi::{SamplerParams, Token};
use minicpmv::prompt::template::Role;
use minicpmv::session::run::{run_with_history, HistoryMessage, RunConfig};
use minicpmv::{Pair, RunRequest, SessionOptions};

use crate::harness::{image, minicpmv, minicpmv_with_stdin, tiny_pair, work_dir, Run};

const N_PREDICT: &str = "12";

/// `minicpmv chat` on the tiny 2.6 pair, greedy, with `extra` arguments and a script on stdin;
/// returns the JSON object of each turn.
fn chat(extra: &[&str], script: &str) -> (Vec<Value>, Run) {
    let (model, mmproj) = tiny_pair("2.6");
    let mut args: Vec<String> = [
        "chat",
        "-m",
        model.to_str().unwrap(),
        "--mmproj",
        mmproj.to_str().unwrap(),
        "-n",
        N_PREDICT,
        "--temp",
        "0",
        "-t",
        "2",
        "--json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    let r = minicpmv_with_stdin(&args, script).ok();
    let turns = r
        .stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    (turns, r)
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn ids(v: &Value) -> Vec<Token> {
    v["token_ids"]
        .as_array()
        .expect("token_ids")
        .iter()
        .map(|t| t.as_i64().expect("token id") as Token)
        .collect()
}

fn count(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

/// A fresh single-turn run (the library's, in this process) of `history` followed by `prompt`
/// with `images`: same settings as `chat()`.
fn fresh_run(history: &[HistoryMessage], prompt: &str, images: &[PathBuf]) -> Vec<Token> {
    let (model, mmproj) = tiny_pair("2.6");
    let greedy = SamplerParams {
        temperature: 0.0,
        ..SamplerParams::default()
    };
    let request = RunRequest::new(prompt)
        .images(images)
        .max_tokens(N_PREDICT.parse().unwrap())
        .sampling(greedy);
    let options = SessionOptions::default().threads(2).context(4096);
    let cfg = RunConfig::new(Pair::new(model, mmproj), options, request);
    run_with_history(&cfg, history, &mut |_| {})
        .unwrap_or_else(|e| panic!("fresh run: {e}"))
        .token_ids
}

fn user(text: &str, images: &[&Path]) -> HistoryMessage {
    HistoryMessage {
        role: Role::User,
        text: text.into(),
        images: images.iter().map(|p| p.to_path_buf()).collect(),
    }
}

fn assistant(turn: &Value) -> HistoryMessage {
    HistoryMessage {
        role: Role::Assistant,
        text: turn["text"].as_str().expect("text").into(),
        images: Vec::new(),
    }
}

#[test]
fn second_question_reuses_the_kv_cache_and_equals_a_fresh_run() {
    let img = image(1000, 700);
    let img2 = image(300, 200);
    let (t, _) = chat(
        &["--image", s(&img)],
        &format!(
            "What is in this picture?\nWhat colour is the top left corner?\n/image {}\nAnd in this one?\n",
            s(&img2)
        ),
    );
    assert_eq!(t.len(), 3, "{t:?}");
    // 1000x700: overview + 2x2 slices = 5 projector calls, then none for the same image
    assert_eq!(count(&t[0], "n_projector_calls"), 5, "{}", t[0]);
    assert_eq!(count(&t[0], "n_reused_positions"), 0);
    assert_eq!(count(&t[1], "n_projector_calls"), 0, "{}", t[1]);
    assert_eq!(
        count(&t[1], "cache_hits"),
        0,
        "image already in the KV cache"
    );
    // the whole first prompt (5 x 64 embeddings and its text) stays in the KV cache
    assert!(count(&t[1], "n_reused_positions") >= count(&t[0], "n_prompt_positions"));
    assert_eq!(
        count(&t[1], "n_reused_positions") + count(&t[1], "n_new_positions"),
        count(&t[1], "n_prompt_positions")
    );
    // a new 300x200 image: its overview only
    assert_eq!(count(&t[2], "n_projector_calls"), 1, "{}", t[2]);
    assert_eq!(count(&t[2], "n_images"), 2);

    // Turn 1 equals a plain single-turn run; turns 2 and 3 equal fresh runs of the history.
    let q1 = "What is in this picture?";
    assert_eq!(
        ids(&t[0]),
        fresh_run(&[], q1, std::slice::from_ref(&img)),
        "turn 1"
    );
    let mut history = vec![user(q1, &[&img]), assistant(&t[0])];
    assert_eq!(
        ids(&t[1]),
        fresh_run(&history, "What colour is the top left corner?", &[]),
        "turn 2"
    );
    history.push(user("What colour is the top left corner?", &[]));
    history.push(assistant(&t[1]));
    assert_eq!(
        ids(&t[2]),
        fresh_run(&history, "And in this one?", std::slice::from_ref(&img2)),
        "turn 3"
    );
    // and the CLI's single-turn run agrees for turn 1
    let (model, mmproj) = tiny_pair("2.6");
    let j = minicpmv([
        "run",
        "-m",
        s(&model),
        "--mmproj",
        s(&mmproj),
        "--image",
        s(&img),
        "-p",
        q1,
        "-n",
        N_PREDICT,
        "--temp",
        "0",
        "-t",
        "2",
        "--json",
    ])
    .ok()
    .json();
    assert_eq!(ids(&j), ids(&t[0]));
}

#[test]
fn an_image_attached_again_comes_from_the_embedding_cache() {
    let img = image(1000, 700);
    let (t, _) = chat(
        &["--image", s(&img)],
        &format!(
            "Describe it.\n/image {}\nIs it the same picture?\n",
            s(&img)
        ),
    );
    assert_eq!(t.len(), 2);
    assert_eq!(count(&t[0], "n_projector_calls"), 5);
    assert_eq!(count(&t[1], "n_projector_calls"), 0, "{}", t[1]);
    assert_eq!(count(&t[1], "cache_hits"), 1);
    assert_eq!(count(&t[1], "n_images"), 2);
    // the second copy is new input (5 x 64 embeddings at least), the first is reused
    assert!(count(&t[1], "n_new_positions") >= 5 * 64);
    assert!(count(&t[1], "n_reused_positions") >= 5 * 64);
}

#[test]
fn reset_forgets_the_conversation_but_not_the_embeddings() {
    let img = image(1000, 700);
    let (t, r) = chat(
        &["--image", s(&img)],
        &format!(
            "First question?\nSecond question?\n/reset\nFirst question?\n/image {}\nFirst question?\n",
            s(&img)
        ),
    );
    assert_eq!(t.len(), 4, "{}", r.stderr);
    assert_eq!(count(&t[1], "turn"), 2);
    // after /reset: a new conversation, nothing reused
    assert_eq!(count(&t[2], "turn"), 1);
    assert_eq!(count(&t[2], "n_reused_positions"), 0, "{}", t[2]);
    assert_eq!(count(&t[2], "n_images"), 0);
    assert!(count(&t[2], "n_prompt_positions") < 64);
    // the image again in the same conversation
    assert_eq!(count(&t[3], "n_images"), 1);
    assert_eq!(count(&t[3], "n_projector_calls"), 0, "{}", t[3]);
    assert_eq!(count(&t[3], "cache_hits"), 1);
    // the fresh conversation after /reset answers like the first one did: the first turn's
    // positions are the same input, so its answer is too (greedy).
    let (t2, _) = chat(&["--image", s(&img)], "First question?\n");
    assert_eq!(ids(&t2[0]), ids(&t[0]));
    // within the new conversation the KV cache is reused again
    assert!(count(&t[3], "n_reused_positions") >= count(&t[2], "n_prompt_positions"));
}

fn embd_files(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut v: Vec<(PathBuf, u64)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.expect("dir entry").path())
                .filter(|p| p.extension().is_some_and(|x| x == "embd"))
                .map(|p| {
                    let len = std::fs::metadata(&p).expect("metadata").len();
                    (p, len)
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn disk_cache_serves_a_second_process_and_survives_a_corrupt_file() {
    let img = image(1000, 700);
    let dir = work_dir().join("embd-cache-disk");
    let _ = std::fs::remove_dir_all(&dir);
    let args = ["--image", s(&img), "--embd-cache", s(&dir)];
    let (a, _) = chat(&args, "Describe it.\n");
    assert_eq!(count(&a[0], "n_projector_calls"), 5);
    let files = embd_files(&dir);
    assert_eq!(files.len(), 1, "{files:?}");
    let (path, len) = files[0].clone();

    // a second process: no projector call, same answer
    let (b, _) = chat(&args, "Describe it.\n");
    assert_eq!(count(&b[0], "n_projector_calls"), 0, "{}", b[0]);
    assert_eq!(count(&b[0], "cache_hits"), 1);
    assert_eq!(b[0]["cache_totals"]["disk_hits"], 1);
    assert_eq!(ids(&b[0]), ids(&a[0]));

    // one flipped bit in the floats: ignored with a warning, recomputed, rewritten
    let mut bytes = std::fs::read(&path).expect("read cache file");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(&path, &bytes).expect("corrupt cache file");
    let (c, r) = chat(&args, "Describe it.\n");
    assert_eq!(count(&c[0], "n_projector_calls"), 5, "{}", c[0]);
    assert_eq!(c[0]["cache_totals"]["corrupt_files"], 1);
    assert!(r.stderr.contains("ignoring and deleting"), "{}", r.stderr);
    assert_eq!(ids(&c[0]), ids(&a[0]), "a corrupt file must not be trusted");
    assert_eq!(embd_files(&dir), vec![(path.clone(), len)], "rewritten");

    // a truncated file: the same
    let bytes = std::fs::read(&path).expect("read cache file");
    std::fs::write(&path, &bytes[..bytes.len() / 3]).expect("truncate cache file");
    let (d, _) = chat(&args, "Describe it.\n");
    assert_eq!(count(&d[0], "n_projector_calls"), 5);
    assert_eq!(ids(&d[0]), ids(&a[0]));
    let (e, _) = chat(&args, "Describe it.\n");
    assert_eq!(
        count(&e[0], "n_projector_calls"),
        0,
        "the rewritten file is used"
    );

    // another --max-slices is another key: projector called, a second file
    let mut more = args.to_vec();
    more.extend(["--max-slices", "1"]);
    let (f, _) = chat(&more, "Describe it.\n");
    assert_eq!(count(&f[0], "n_projector_calls"), 1);
    assert_eq!(embd_files(&dir).len(), 2);
}

#[test]
fn disk_cache_size_bound_evicts_least_recently_used_files() {
    let imgs = [image(1000, 701), image(1000, 702), image(1000, 703)];
    let dir = work_dir().join("embd-cache-bound");
    let _ = std::fs::remove_dir_all(&dir);
    // one 1000x70x image: 5 chunks x 64 x 128 floats = 160 KiB; the bound holds two
    let bound = ["--embd-cache", s(&dir), "--embd-cache-max-mb", "0.4"];
    let mut args = bound.to_vec();
    args.extend(["--image", s(&imgs[0])]);
    let script = format!(
        "One.\n/image {}\nTwo.\n/image {}\nThree.\n",
        s(&imgs[1]),
        s(&imgs[2])
    );
    let (t, _) = chat(&args, &script);
    assert_eq!(t.len(), 3);
    for turn in &t {
        assert_eq!(count(turn, "n_projector_calls"), 5, "{turn}");
    }
    assert_eq!(t[2]["cache_totals"]["disk_evictions"], 1, "{}", t[2]);
    let files = embd_files(&dir);
    assert_eq!(files.len(), 2, "{files:?}");
    let total: u64 = files.iter().map(|f| f.1).sum();
    assert!(total <= (0.4 * 1024.0 * 1024.0) as u64, "{total}");
    // the oldest (first) image was evicted, the newest kept
    let first_again = |img: &Path| {
        let mut a = bound.to_vec();
        a.extend(["--image", s(img)]);
        let (t, _) = chat(&a, "Again.\n");
        count(&t[0], "n_projector_calls")
    };
    assert_eq!(first_again(&imgs[2]), 0);
    assert_eq!(first_again(&imgs[0]), 5);
    assert_eq!(embd_files(&dir).len(), 2);
}

#[test]
fn chat_commands_and_errors() {
    let (model, mmproj) = tiny_pair("2.6");
    let base = [
        "chat",
        "-m",
        s(&model),
        "--mmproj",
        s(&mmproj),
        "-n",
        "4",
        "--temp",
        "0",
        "-t",
        "2",
    ];
    // /quit stops reading; streamed text and the per-turn statistics line
    let r = minicpmv_with_stdin(base, "Hello\n/quit\nNot asked\n").ok();
    assert_eq!(
        r.stderr
            .matches("projector calls: 0, reused positions: 0")
            .count(),
        1,
        "{}",
        r.stderr
    );
    // a missing image in a script is an error naming the file (exit 2), not a crash
    minicpmv_with_stdin(base, "/image /nonexistent/x.png\nHello\n")
        .fails_with(&["/nonexistent/x.png"]);
    minicpmv_with_stdin(base, "/frobnicate\n").fails_with(&["unknown command /frobnicate"]);
    let mut bad = base.to_vec();
    bad.extend(["--image", "/nonexistent/y.png"]);
    minicpmv_with_stdin(bad, "Hello\n").fails_with(&["/nonexistent/y.png"]);
    // a conversation that outgrows the context is an error, not an abort
    let mut small = base.to_vec();
    small.extend(["-c", "64"]);
    let img = image(1000, 700);
    small.extend(["--image", s(&img)]);
    minicpmv_with_stdin(small, "Hello\n").fails_with(&["context holds 64"]);
    // empty input: nothing happens
    minicpmv_with_stdin(base, "").ok();
}
