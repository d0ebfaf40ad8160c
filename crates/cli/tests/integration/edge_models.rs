//! MiniCPM-V 4.6 and 4.6-Thinking (Qwen3.5 with the window-attention merger): runs at both
//! scale factors, embeddings per chunk following the pixels, and the thinking switches.

use crate::harness::{image, minicpmv, tiny_pair, work_dir};

/// `run` on a pair with a fixed prompt, greedy, 8 tokens, 2 threads, then `extra`.
fn run_args<'a>(model: &'a str, mmproj: &'a str, img: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "run",
        "-m",
        model,
        "--mmproj",
        mmproj,
        "--image",
        img,
        "-p",
        "What is it?",
        "-n",
        "8",
        "--temp",
        "0",
        "-t",
        "2",
    ];
    args.extend_from_slice(extra);
    args
}

fn run_json(model: &str, mmproj: &str, img: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = run_args(model, mmproj, img, extra);
    args.push("--json");
    minicpmv(args).ok().json()
}

/// The image figures `slice-plan` gives for `version` at `scale_factor`.
fn slice_plan(version: &str, scale_factor: &str, w: u32, h: u32) -> serde_json::Value {
    let size = format!("{w}x{h}");
    let plans = minicpmv([
        "slice-plan",
        "--version",
        version,
        "--scale-factor",
        scale_factor,
        "--json",
        size.as_str(),
    ])
    .ok()
    .json();
    plans[0].clone()
}

/// A 4.6 pair with the 4x projector (scale factor 2), written once.
fn pair_4x() -> (String, String) {
    let dir = work_dir().join("tiny-4.6-x4");
    if !dir.join("mmproj.gguf").is_file() {
        minicpmv([
            "synth",
            "--version",
            "4.6",
            "--scale-factor",
            "2",
            "--out-dir",
            dir.to_str().unwrap(),
        ])
        .ok();
    }
    (
        dir.join("model.gguf").display().to_string(),
        dir.join("mmproj.gguf").display().to_string(),
    )
}

#[test]
fn both_projector_scales_run_with_the_tokens_slice_plan_predicts() {
    let (m16, p16) = tiny_pair("4.6");
    let m16 = m16.display().to_string();
    let p16 = p16.display().to_string();
    let (m4, p4) = pair_4x();
    for (model, mmproj, factor) in [(&m16, &p16, "4"), (&m4, &p4, "2")] {
        for (w, h) in [(1920u32, 1080u32), (300, 200)] {
            let img = image(w, h);
            let a = run_json(model, mmproj, img.to_str().unwrap(), &[]);
            let b = run_json(model, mmproj, img.to_str().unwrap(), &[]);
            assert_eq!(
                a["token_ids"], b["token_ids"],
                "x{factor} {w}x{h}: greedy differs"
            );
            assert!(!a["token_ids"].as_array().unwrap().is_empty());
            let plan = slice_plan("4.6", factor, w, h);
            assert_eq!(
                a["n_image_tokens"], plan["n_image_tokens"],
                "x{factor} {w}x{h}"
            );
            assert_eq!(
                a["n_image_layout_tokens"], plan["n_layout_tokens"],
                "x{factor} {w}x{h}"
            );
            assert_eq!(
                a["n_image_chunks"].as_u64().unwrap(),
                1 + plan["n_slices"].as_u64().unwrap()
            );
        }
    }
    // 16x: a 1920x1080 image is 8 slices of 448x448 (64 each) and a 616x336 overview (66)
    let plan = slice_plan("4.6", "4", 1920, 1080);
    assert_eq!(plan["n_image_tokens"], 8 * 64 + 11 * 6);
    // 4x keeps a small image whole, in its aspect ratio: 560x364 -> 20 x 13 embeddings
    let plan = slice_plan("4.6", "2", 300, 200);
    assert_eq!(
        (plan["overview"].clone(), plan["n_image_tokens"].clone()),
        (serde_json::json!([560, 364]), serde_json::json!(260))
    );
}

#[test]
fn thinking_is_split_off_and_switched_as_each_model_allows() {
    let img = image(300, 200);
    let img = img.to_str().unwrap();
    let pair = |v: &str| {
        let (m, p) = tiny_pair(v);
        (m.display().to_string(), p.display().to_string())
    };
    let (m46, p46) = pair("4.6");
    let (mt, pt) = pair("4.6-thinking");
    let (m26, p26) = pair("2.6");

    // 4.6-Thinking thinks by default: its prompt opens the block, so the output starts in it
    let think = run_json(&mt, &pt, img, &[]);
    assert!(think["thinking"].is_string(), "{think}");
    // switched off: an empty block closes the prompt (`<think>\n\n</think>\n\n` instead of
    // `<think>\n`), no reasoning is reported
    let off = run_json(&mt, &pt, img, &["--no-think"]);
    assert!(off.get("thinking").is_none(), "{off}");
    assert!(
        off["n_prompt_tokens"].as_u64() > think["n_prompt_tokens"].as_u64(),
        "{off} {think}"
    );
    // the Instruct checkpoint answers directly, with the same empty block
    let instruct = run_json(&m46, &p46, img, &[]);
    assert!(instruct.get("thinking").is_none(), "{instruct}");
    assert_eq!(instruct["n_prompt_tokens"], off["n_prompt_tokens"]);

    // what a model cannot do is refused, naming it
    let args = |m: &str, p: &str, flag: &str| {
        vec![
            "run".to_string(),
            "-m".into(),
            m.into(),
            "--mmproj".into(),
            p.into(),
            "--image".into(),
            img.into(),
            "-n".into(),
            "2".into(),
            flag.into(),
        ]
    };
    minicpmv(args(&m46, &p46, "--think")).fails_with(&["MiniCPM-V 4.6", "cannot think"]);
    minicpmv(args(&m26, &p26, "--think")).fails_with(&["MiniCPM-V 2.6", "no thinking mode"]);
    // switching off a model without thinking is no change
    let plain = run_json(&m26, &p26, img, &[]);
    let off26 = run_json(&m26, &p26, img, &["--no-think"]);
    assert_eq!(plain["token_ids"], off26["token_ids"]);

    // streamed: the reasoning goes to stderr between markers, stdout holds the answer alone
    let mut a = run_args(&mt, &pt, img, &[]);
    let streamed = minicpmv(&a).ok();
    assert_eq!(
        streamed.stdout.trim_end_matches('\n'),
        think["text"].as_str().unwrap()
    );
    let reasoning = think["thinking"].as_str().unwrap();
    if !reasoning.is_empty() {
        assert!(
            streamed.stderr.contains("[thinking]"),
            "{}",
            streamed.stderr
        );
    }
    a.push("--hide-thinking");
    let hidden = minicpmv(&a).ok();
    assert!(!hidden.stderr.contains("[thinking]"), "{}", hidden.stderr);
    assert_eq!(hidden.stdout, streamed.stdout);
}

#[test]
fn the_4x_projector_matches_llama_cpp() {
    let (model, mmproj) = pair_4x();
    for (w, h) in [(300u32, 200u32), (1920, 1080), (501, 1333)] {
        let img = image(w, h);
        let j = minicpmv([
            "parity",
            "-m",
            &model,
            "--mmproj",
            &mmproj,
            "--image",
            img.to_str().unwrap(),
            "-n",
            "16",
            "-t",
            "2",
            "--json",
        ])
        .ok()
        .json();
        let what = format!("4.6 x4 {w}x{h}");
        assert_eq!(j["sequence_native"], j["sequence_llama_cpp"], "{what}");
        assert_eq!(j["tokens_native"], j["tokens_llama_cpp"], "{what}");
        assert_eq!(j["max_abs_diff"], 0.0, "{what}");
        crate::parity::check_packed_prefill(&j, &what);
    }
}

#[test]
fn chat_turns_of_a_thinking_model_carry_their_reasoning_apart() {
    let (model, mmproj) = tiny_pair("4.6-thinking");
    let img = image(300, 200);
    let turns = |extra: &[&str]| -> Vec<serde_json::Value> {
        let mut args = vec![
            "chat".to_string(),
            "-m".into(),
            model.display().to_string(),
            "--mmproj".into(),
            mmproj.display().to_string(),
            "-n".into(),
            "8".into(),
            "--temp".into(),
            "0".into(),
            "-t".into(),
            "2".into(),
            "--json".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let script = format!("/image {}\nWhat is it?\nAnd now?\n", img.display());
        let r = crate::harness::minicpmv_with_stdin(&args, &script).ok();
        r.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("JSON turn"))
            .collect()
    };
    let on = turns(&[]);
    assert_eq!(on.len(), 2);
    for t in &on {
        assert!(t["thinking"].is_string(), "{t}");
        assert!(t["text"].is_string(), "{t}");
    }
    let off = turns(&["--no-think"]);
    assert_eq!(off.len(), 2);
    for t in &off {
        assert!(t.get("thinking").is_none(), "{t}");
    }
    // the empty block makes every turn's prompt longer than with the block opened
    assert!(off[0]["n_prompt_positions"].as_u64() > on[0]["n_prompt_positions"].as_u64());
}
