//! `synth --scale tiny` then `run` for every MiniCPM-V version: text comes out, greedy decoding
//! is deterministic, and the image takes the number of positions DESIGN.md §3 predicts.

use crate::harness::{image, minicpmv, tiny_pair};

/// (version, tokens per slice, uses the 2.5 layout)
const VERSIONS: &[(&str, u64, bool)] = &[
    ("2.5", 96, true),
    ("2.6", 64, false),
    ("o2.6", 64, false),
    ("4.0", 64, false),
    ("4.5", 64, false),
    ("o4.5", 64, false),
];

/// Layout tokens llama.cpp's mtmd puts around the embeddings of one image (DESIGN.md §3):
/// overview `<image>..</image>`; per slice `<slice>..</slice>` (2.6+) or `<image>..</image>`
/// inside one `<slice>..</slice>` (2.5); `\n` between rows.
fn layout_tokens(cols: u64, rows: u64, v25: bool) -> u64 {
    let n_slices = cols * rows;
    if n_slices == 0 {
        return 2;
    }
    let between_rows = rows - 1;
    if v25 {
        2 + 2 + 2 * n_slices + between_rows
    } else {
        2 + 2 * n_slices + between_rows
    }
}

fn run_json(model: &str, mmproj: &str, img: &str) -> serde_json::Value {
    minicpmv([
        "run",
        "-m",
        model,
        "--mmproj",
        mmproj,
        "--image",
        img,
        "-p",
        "What is in the image?",
        "-n",
        "12",
        "--temp",
        "0",
        "-t",
        "2",
        "--json",
    ])
    .ok()
    .json()
}

#[test]
fn every_version_runs_on_a_large_and_a_small_image() {
    // Known slice grids (DESIGN.md §3): 1920x1080 -> 4x2 slices; 300x200 -> overview only.
    let images = [(1920u32, 1080u32, 4u64, 2u64), (300, 200, 0, 0)];
    for &(version, q, v25) in VERSIONS {
        let (model, mmproj) = tiny_pair(version);
        let (model, mmproj) = (model.to_str().unwrap(), mmproj.to_str().unwrap());
        for &(w, h, cols, rows) in &images {
            let img = image(w, h);
            let img = img.to_str().unwrap();
            let a = run_json(model, mmproj, img);
            let b = run_json(model, mmproj, img);
            let ids = a["token_ids"].as_array().expect("token_ids");
            assert!(
                !ids.is_empty(),
                "{version} {w}x{h}: no tokens generated: {a}"
            );
            assert!(a["text"].is_string(), "{version} {w}x{h}: no text");
            assert_eq!(
                a["token_ids"], b["token_ids"],
                "{version} {w}x{h}: greedy runs differ"
            );
            let n_chunks = 1 + cols * rows;
            assert_eq!(a["n_image_chunks"], n_chunks, "{version} {w}x{h}: {a}");
            assert_eq!(
                a["n_image_tokens"],
                n_chunks * q,
                "{version} {w}x{h}: image embeddings"
            );
            assert_eq!(
                a["n_image_layout_tokens"],
                layout_tokens(cols, rows, v25),
                "{version} {w}x{h}: layout tokens"
            );
        }
    }
}

#[test]
fn streamed_text_equals_json_text() {
    let (model, mmproj) = tiny_pair("2.6");
    let img = image(1000, 700);
    let args = |json: bool| {
        let mut a = vec![
            "run".to_string(),
            "-m".into(),
            model.display().to_string(),
            "--mmproj".into(),
            mmproj.display().to_string(),
            "--image".into(),
            img.display().to_string(),
            "-n".into(),
            "10".into(),
            "--temp".into(),
            "0".into(),
        ];
        if json {
            a.push("--json".into());
        }
        a
    };
    let streamed = minicpmv(args(false)).ok();
    let json = minicpmv(args(true)).ok().json();
    assert_eq!(
        streamed.stdout.trim_end_matches('\n'),
        json["text"].as_str().unwrap()
    );
    assert!(
        streamed.stderr.contains("tok/s"),
        "no timing summary: {}",
        streamed.stderr
    );
}

#[test]
fn run_with_demo_uses_the_synthetic_pair_and_says_so() {
    let img = image(300, 200);
    let r = minicpmv([
        "run",
        "--demo",
        "--image",
        img.to_str().unwrap(),
        "-n",
        "4",
        "--temp",
        "0",
    ])
    .ok();
    assert!(r.stderr.contains("synthetic MiniCPM-V 4.6"), "{}", r.stderr);
}
