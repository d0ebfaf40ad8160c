//! `minicpmv quality`: a candidate pair against a reference pair. Identical files give exactly
//! zero divergence and unit cosine in every combination; q8_0 loses less than q4_0 (language
//! model: KL; projector: cosine); incompatible pairs are refused before llama.cpp runs.

use std::path::{Path, PathBuf};

use crate::harness::{image, minicpmv, tiny_pair, work_dir};

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `quality --reference-model RM --reference-mmproj RP -m M --mmproj P EXTRA...`.
fn quality_args(
    reference: &(PathBuf, PathBuf),
    candidate: (&Path, &Path),
    extra: &[&str],
) -> Vec<String> {
    let mut args: Vec<String> = [
        "quality",
        "--reference-model",
        s(&reference.0),
        "--reference-mmproj",
        s(&reference.1),
        "-m",
        s(candidate.0),
        "--mmproj",
        s(candidate.1),
        "-t",
        "2",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

const COMBOS: [&str; 4] = ["baseline", "text_model", "projector", "total"];

/// The metrics of `combo` in a list of combination metrics.
fn combo<'a>(list: &'a serde_json::Value, combo: &str) -> &'a serde_json::Value {
    list.as_array()
        .expect("combination list")
        .iter()
        .find(|m| m["combination"] == combo)
        .unwrap_or_else(|| panic!("no {combo} in {list}"))
}

fn f(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn identical_files_give_zero_divergence_and_unit_cosine() {
    let pair = tiny_pair("2.6");
    // 1000x700: overview + 2x2 slices; two prompts -> two cases.
    let img = image(1000, 700);
    let j = minicpmv(quality_args(
        &pair,
        (&pair.0, &pair.1),
        &[
            "--image",
            s(&img),
            "-p",
            "Describe this image.",
            "-p",
            "What colour is it?",
            "-n",
            "8",
            "--json",
        ],
    ))
    .ok()
    .json();
    let cases = j["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 2);
    let mut lists: Vec<&serde_json::Value> = cases.iter().map(|c| &c["combinations"]).collect();
    lists.push(&j["summary"]);
    for case in cases {
        assert_eq!(case["continuation"].as_array().map(Vec::len), Some(8));
        let chunks = case["chunks"].as_array().expect("chunks");
        assert_eq!(chunks.len(), 5, "{case}");
        // Exactly 1: the same embeddings give the same dot product and squared norms, and the
        // cosine is computed as dot / sqrt(|a|^2 |b|^2), with IEEE sqrt(x*x) == x.
        for c in chunks {
            assert_eq!(f(&c["cosine"]), 1.0, "{c}");
        }
        assert_eq!(f(&case["min_cosine"]), 1.0);
    }
    for list in lists {
        let ppl = f(&combo(list, "baseline")["perplexity"]);
        assert!(ppl.is_finite() && ppl >= 1.0, "{list}");
        for name in COMBOS {
            let m = combo(list, name);
            // Same files, same code path for every combination: bit-identical logits.
            assert_eq!(f(&m["mean_kl"]), 0.0, "{m}");
            assert_eq!(f(&m["max_kl"]), 0.0, "{m}");
            assert_eq!(f(&m["top1_agreement"]), 1.0, "{m}");
            assert_eq!(f(&m["perplexity"]), ppl, "{m}");
            assert_eq!(f(&m["min_cosine"]), 1.0, "{m}");
        }
    }
    assert_eq!(j["summary"][0]["n_positions"], 16);

    // The text table: one row per combination.
    let text = minicpmv(quality_args(
        &pair,
        (&pair.0, &pair.1),
        &["--image", s(&img), "-n", "2"],
    ))
    .ok()
    .stdout;
    for name in COMBOS {
        assert_eq!(
            text.lines()
                .filter(|l| l.split_whitespace().next() == Some(name))
                .count(),
            1,
            "{name}:\n{text}"
        );
    }
}

/// The tiny 2.6 pair quantized to `ty` (both files).
fn quantized(ty: &str) -> (PathBuf, PathBuf) {
    let (model, mmproj) = tiny_pair("2.6");
    let dir = work_dir().join(format!("quality-{ty}"));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let (qm, qp) = (dir.join("model.gguf"), dir.join("mmproj.gguf"));
    for (input, output) in [(&model, &qm), (&mmproj, &qp)] {
        minicpmv([
            "quantize",
            s(input),
            s(output),
            "--type",
            ty,
            "-t",
            "2",
            "--force",
        ])
        .ok();
    }
    (qm, qp)
}

#[test]
fn q8_0_loses_less_than_q4_0_in_both_files() {
    let pair = tiny_pair("2.6");
    let (a, b) = (image(1000, 700), image(300, 200));
    let summary = |ty: &str| {
        let (m, p) = quantized(ty);
        let j = minicpmv(quality_args(
            &pair,
            (&m, &p),
            &["--image", s(&a), "--image", s(&b), "-n", "16", "--json"],
        ))
        .ok()
        .json();
        assert_eq!(j["cases"].as_array().map(Vec::len), Some(2));
        j["summary"].clone()
    };
    let (q8, q4) = (summary("q8_0"), summary("q4_0"));
    let get = |s: &serde_json::Value, c: &str, k: &str| f(&combo(s, c)[k]);

    // Language model alone (reference projector): KL.
    let (kl8, kl4) = (
        get(&q8, "text_model", "mean_kl"),
        get(&q4, "text_model", "mean_kl"),
    );
    assert!(
        kl8 > 0.0 && kl8 < kl4,
        "text model KL: q8_0 {kl8}, q4_0 {kl4}"
    );
    assert_eq!(get(&q8, "text_model", "min_cosine"), 1.0);

    // Projector alone (reference language model): cosine, and the KL it causes. The tiny
    // projector's rows (32, 64, 128 wide) divide into 32-element blocks, so both types apply.
    let (cos8, cos4) = (
        get(&q8, "projector", "min_cosine"),
        get(&q4, "projector", "min_cosine"),
    );
    assert!(
        cos8 < 1.0 && cos8 > cos4,
        "projector cosine: q8_0 {cos8}, q4_0 {cos4}"
    );
    let (pkl8, pkl4) = (
        get(&q8, "projector", "mean_kl"),
        get(&q4, "projector", "mean_kl"),
    );
    assert!(pkl8 < pkl4, "projector KL: q8_0 {pkl8}, q4_0 {pkl4}");

    // Both together.
    assert!(get(&q8, "total", "mean_kl") < get(&q4, "total", "mean_kl"));
    for s in [&q8, &q4] {
        assert_eq!(get(s, "baseline", "mean_kl"), 0.0);
        assert_eq!(get(s, "baseline", "top1_agreement"), 1.0);
    }
}

#[test]
fn different_vocabularies_are_refused_naming_both_models() {
    let reference = tiny_pair("2.6");
    let (m25, p25) = tiny_pair("2.5");
    let img = image(300, 200);
    minicpmv(quality_args(
        &reference,
        (&m25, &p25),
        &["--image", s(&img)],
    ))
    .fails_with(&[s(&reference.0), s(&m25), "vocabulary"]);
}

#[test]
fn a_candidate_projector_of_another_version_is_refused() {
    // o2.6's tiny projector has the 2.6 width but another clip.minicpmv_version: the candidate
    // pair's own check refuses it, naming both versions.
    let reference = tiny_pair("2.6");
    let (_, po26) = tiny_pair("o2.6");
    let img = image(300, 200);
    minicpmv(quality_args(
        &reference,
        (&reference.0, &po26),
        &["--image", s(&img)],
    ))
    .fails_with(&[
        "candidate pair",
        s(&po26),
        "is MiniCPM-V 2.6",
        "is for MiniCPM-o 2.6",
    ]);
}

#[test]
fn a_bad_candidate_pair_is_named() {
    // Candidate projector given as its language model: the candidate pair's own check.
    let reference = tiny_pair("2.6");
    let img = image(300, 200);
    minicpmv(quality_args(
        &reference,
        (&reference.1, &reference.1),
        &["--image", s(&img)],
    ))
    .fails_with(&["candidate pair", s(&reference.1), "not a language model"]);
}
