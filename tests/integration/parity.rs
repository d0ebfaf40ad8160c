//! Native pipeline vs llama.cpp's mtmd pipeline on the same tiny synthetic files: identical
//! input sequence (text tokens and image chunks), identical embeddings, identical greedy tokens.
//! (Pixel-level parity of the preprocessing is tested in the library, src/vision.)

use crate::harness::{image, minicpmv, tiny_pair};

/// Six image sizes: overview only, square slices, landscape, panorama, tall, odd sizes.
const SIZES: &[(u32, u32)] = &[
    (300, 200),
    (448, 448),
    (1000, 700),
    (1920, 1080),
    (2400, 500),
    (501, 1333),
];

#[test]
fn native_pipeline_matches_llama_cpp_for_four_versions_on_six_sizes() {
    let mut worst = 0.0f64;
    for version in ["2.5", "2.6", "4.0", "4.5"] {
        let (model, mmproj) = tiny_pair(version);
        for &(w, h) in SIZES {
            let img = image(w, h);
            let r = minicpmv([
                "parity",
                "-m",
                model.to_str().unwrap(),
                "--mmproj",
                mmproj.to_str().unwrap(),
                "--image",
                img.to_str().unwrap(),
                "-n",
                "32",
                "-t",
                "2",
                "--json",
            ]);
            let j = r.json();
            let what = format!("version {version}, {w}x{h}");
            assert_eq!(j["sequence_native"], j["sequence_llama_cpp"], "{what}: sequence");
            assert_eq!(j["tokens_native"], j["tokens_llama_cpp"], "{what}: greedy tokens");
            assert_eq!(j["tokens_native"].as_array().map(Vec::len), Some(32), "{what}");
            let diff = j["max_abs_diff"].as_f64().expect("max_abs_diff");
            // Same clip graph on the same pixels: the embeddings are bit-identical.
            assert_eq!(diff, 0.0, "{what}: embeddings differ by {diff}");
            worst = worst.max(diff);
            assert_eq!(r.code, Some(0), "{what}: {r:?}");
        }
    }
    assert_eq!(worst, 0.0);
}

#[test]
fn max_slices_one_makes_exactly_one_projector_call() {
    let (model, mmproj) = tiny_pair("2.6");
    let img = image(1920, 1080);
    let j = minicpmv([
        "run",
        "-m",
        model.to_str().unwrap(),
        "--mmproj",
        mmproj.to_str().unwrap(),
        "--image",
        img.to_str().unwrap(),
        "--max-slices",
        "1",
        "-n",
        "4",
        "--temp",
        "0",
        "--json",
    ])
    .ok()
    .json();
    assert_eq!(j["n_projector_calls"], 1, "{j}");
    assert_eq!(j["n_image_chunks"], 1);
    assert_eq!(j["n_image_tokens"], 64);
    // `<image>` and `</image>` around the overview, nothing else.
    assert_eq!(j["n_image_layout_tokens"], 2);
}

#[test]
fn max_slices_caps_the_grid() {
    let (model, mmproj) = tiny_pair("2.6");
    let img = image(1920, 1080);
    for (k, max_chunks) in [(2u64, 3u64), (4, 5), (9, 9)] {
        let j = minicpmv([
            "run",
            "-m",
            model.to_str().unwrap(),
            "--mmproj",
            mmproj.to_str().unwrap(),
            "--image",
            img.to_str().unwrap(),
            "--max-slices",
            &k.to_string(),
            "-n",
            "2",
            "--temp",
            "0",
            "--json",
        ])
        .ok()
        .json();
        let calls = j["n_projector_calls"].as_u64().unwrap();
        assert!(calls <= max_chunks && calls >= 2, "--max-slices {k}: {calls} calls");
        assert_eq!(j["n_image_tokens"].as_u64().unwrap(), calls * 64);
    }
}

#[test]
fn llama_cpp_pipeline_refuses_fewer_slices() {
    let (model, mmproj) = tiny_pair("2.6");
    let img = image(300, 200);
    minicpmv([
        "run",
        "-m",
        model.to_str().unwrap(),
        "--mmproj",
        mmproj.to_str().unwrap(),
        "--image",
        img.to_str().unwrap(),
        "--pipeline",
        "llama.cpp",
        "--max-slices",
        "4",
    ])
    .fails_with(&["--max-slices 4", "native"]);
}

#[test]
fn two_images_enter_in_order_in_both_pipelines() {
    let (model, mmproj) = tiny_pair("2.6");
    let a = image(1000, 700);
    let b = image(300, 200);
    let r = minicpmv([
        "parity",
        "-m",
        model.to_str().unwrap(),
        "--mmproj",
        mmproj.to_str().unwrap(),
        "--image",
        a.to_str().unwrap(),
        "--image",
        b.to_str().unwrap(),
        "-p",
        "Compare <__media__> with <__media__>.",
        "-n",
        "16",
        "--json",
    ]);
    let j = r.json();
    assert_eq!(r.code, Some(0), "{r:?}");
    // 5 chunks for 1000x700 (2x2 grid + overview), then 1 for 300x200.
    let images: Vec<u64> = j["sequence_native"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i.get("image").and_then(|n| n.as_u64()))
        .collect();
    assert_eq!(images, vec![64; 6]);
    assert_eq!(j["sequence_native"], j["sequence_llama_cpp"]);
}

#[test]
fn placeholder_count_must_match_the_images() {
    let (model, mmproj) = tiny_pair("2.6");
    let a = image(300, 200);
    minicpmv([
        "run",
        "-m",
        model.to_str().unwrap(),
        "--mmproj",
        mmproj.to_str().unwrap(),
        "--image",
        a.to_str().unwrap(),
        "-p",
        "<__media__> and <__media__>",
    ])
    .fails_with(&["2 image placeholders", "1 images"]);
}
