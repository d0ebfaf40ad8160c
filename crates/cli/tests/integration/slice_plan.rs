//! `slice-plan --json` against llama.cpp's own slice geometry: the golden table in
//! src/vision/testdata/slice_golden.tsv was produced by llama.cpp's preprocessor through the
//! shim (see its header), never by our Rust code.

use crate::harness::{image, minicpmv};

const GOLDEN: &str = include_str!("../../../minicpmv/src/vision/testdata/slice_golden.tsv");

struct Row {
    w: u64,
    h: u64,
    overview: [u64; 2],
    grid: [u64; 2],
    refine: [u64; 2],
    n_slices: u64,
}

fn golden() -> Vec<Row> {
    GOLDEN
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("width"))
        .map(|l| {
            let f: Vec<u64> = l.split('\t').take(9).map(|v| v.parse().unwrap()).collect();
            Row {
                w: f[0],
                h: f[1],
                overview: [f[2], f[3]],
                grid: [f[4], f[5]],
                refine: [f[6], f[7]],
                n_slices: f[8],
            }
        })
        .collect()
}

#[test]
fn slice_plan_json_matches_llama_cpp_on_the_golden_sizes() {
    let rows = golden();
    assert!(rows.len() >= 53, "golden table has {} rows", rows.len());
    let mut args = vec!["slice-plan".to_string(), "--json".to_string()];
    args.extend(rows.iter().map(|r| format!("{}x{}", r.w, r.h)));
    let out = minicpmv(&args).ok().json();
    let plans = out.as_array().expect("array");
    assert_eq!(plans.len(), rows.len());
    for (r, p) in rows.iter().zip(plans) {
        let what = format!("{}x{}", r.w, r.h);
        assert_eq!(p["width"], r.w, "{what}");
        assert_eq!(p["overview"], serde_json::json!(r.overview), "{what}");
        assert_eq!(p["n_slices"], r.n_slices, "{what}");
        if r.n_slices == 0 {
            assert!(
                p["grid"].is_null() && p["refine"].is_null() && p["slice"].is_null(),
                "{what}"
            );
        } else {
            assert_eq!(p["grid"], serde_json::json!(r.grid), "{what}");
            assert_eq!(p["refine"], serde_json::json!(r.refine), "{what}");
            let slice = [r.refine[0] / r.grid[0], r.refine[1] / r.grid[1]];
            assert_eq!(p["slice"], serde_json::json!(slice), "{what}");
        }
        // 2.6: 64 embeddings per chunk.
        assert_eq!(p["n_image_tokens"], (1 + r.n_slices) * 64, "{what}");
    }
}

#[test]
fn design_examples() {
    // DESIGN.md §3: 1000x700 -> 532x378, 2x2, 1064x756; 1920x1080 -> 602x336, 4x2, 1680x952;
    // 300x200 -> 448x448, no slices.
    let out = minicpmv(["slice-plan", "--json", "1000x700", "1920x1080", "300x200"])
        .ok()
        .json();
    assert_eq!(out[0]["overview"], serde_json::json!([532, 378]));
    assert_eq!(out[0]["grid"], serde_json::json!([2, 2]));
    assert_eq!(out[0]["refine"], serde_json::json!([1064, 756]));
    assert_eq!(out[1]["overview"], serde_json::json!([602, 336]));
    assert_eq!(out[1]["grid"], serde_json::json!([4, 2]));
    assert_eq!(out[1]["refine"], serde_json::json!([1680, 952]));
    assert_eq!(out[1]["n_layout_tokens"], 19);
    assert_eq!(out[2]["overview"], serde_json::json!([448, 448]));
    assert!(out[2]["grid"].is_null());
    assert_eq!(out[2]["n_slices"], 0);
}

#[test]
fn extreme_sizes_give_a_plan_or_a_clear_error() {
    let out = minicpmv(["slice-plan", "--json", "10000x100", "449x1", "1x46000"])
        .ok()
        .json();
    assert_eq!(out.as_array().unwrap().len(), 3);
    minicpmv(["slice-plan", "46001x10"]).fails_with(&["46001x10", "46000"]);
    minicpmv(["slice-plan", "0x10"]).fails_with(&["0x10"]);
    minicpmv(["slice-plan", "12by5"]).fails_with(&["12by5"]);
    minicpmv(["slice-plan"]).fails_with(&["size"]);
}

#[test]
fn max_slices_and_version_change_the_plan() {
    let one = minicpmv(["slice-plan", "--json", "--max-slices", "1", "1920x1080"])
        .ok()
        .json();
    assert_eq!(one[0]["n_slices"], 0);
    assert_eq!(one[0]["n_image_tokens"], 64);
    let v25 = minicpmv(["slice-plan", "--json", "--version", "2.5", "1920x1080"])
        .ok()
        .json();
    assert_eq!(v25[0]["n_image_tokens"], 9 * 96);
    assert_eq!(v25[0]["n_layout_tokens"], 21);
}

#[test]
fn image_files_are_planned_by_their_size() {
    let img = image(1000, 700);
    let out = minicpmv(["slice-plan", "--json", "--image", img.to_str().unwrap()])
        .ok()
        .json();
    assert_eq!(out[0]["width"], 1000);
    assert_eq!(out[0]["grid"], serde_json::json!([2, 2]));
}
