//! Memory: the sequential `--low-mem` mode, the `plan` command's predictions against the peak
//! memory runs report, and the memory flags.

use crate::harness::{image, medium_pair, minicpmv, minicpmv_env, tiny_pair};

/// `minicpmv COMMAND` on the tiny 2.6 pair and a 1920x1080 image, with `--json`, then the
/// command-specific `fixed` flags and the test's `extra` ones; the parsed JSON output.
fn tiny_json(command: &str, fixed: &[&str], extra: &[&str]) -> serde_json::Value {
    let (model, mmproj) = tiny_pair("2.6");
    let img = image(1920, 1080);
    let mut args: Vec<std::ffi::OsString> = vec![
        command.into(),
        "-m".into(),
        model.into(),
        "--mmproj".into(),
        mmproj.into(),
        "--image".into(),
        img.into(),
        "--json".into(),
    ];
    args.extend(fixed.iter().chain(extra).map(Into::into));
    minicpmv(args).ok().json()
}

fn run_json(extra: &[&str]) -> serde_json::Value {
    let greedy_16 = ["-n", "16", "--temp", "0", "--ignore-eos", "-t", "2"];
    tiny_json("run", &greedy_16, extra)
}

fn plan_json(extra: &[&str]) -> serde_json::Value {
    tiny_json("plan", &[], extra)
}

#[test]
fn low_mem_mode_generates_the_same_tokens_as_the_default_mode() {
    for version in ["2.6", "2.5"] {
        let (model, mmproj) = tiny_pair(version);
        let img = image(1920, 1080);
        let run = |low: bool| {
            let mut args = vec![
                "run".into(),
                "-m".into(),
                model.clone().into_os_string(),
                "--mmproj".into(),
                mmproj.clone().into_os_string(),
                "--image".into(),
                img.clone().into_os_string(),
                "-n".into(),
                "24".into(),
                "--temp".into(),
                "0".into(),
                "--ignore-eos".into(),
                "--json".into(),
            ];
            if low {
                args.push("--low-mem".into());
            }
            minicpmv(args).ok().json()
        };
        let (default, low) = (run(false), run(true));
        assert_eq!(default["low_mem"], false, "{version}");
        assert_eq!(low["low_mem"], true, "{version}");
        assert_eq!(default["token_ids"], low["token_ids"], "{version}");
        assert_eq!(default["token_ids"].as_array().unwrap().len(), 24);
        assert_eq!(default["n_projector_calls"], 9);
        assert_eq!(low["n_projector_calls"], 9);
        assert_eq!(default["n_prompt_tokens"], low["n_prompt_tokens"]);
    }
}

#[test]
fn plan_predicts_the_peak_memory_of_runs_within_15_percent() {
    // Two context sizes x default and low-memory mode, on the tiny pair. (The real-shape
    // figures are measured by scripts/bench and written in docs/benchmarks.)
    for ctx in ["1024", "4096"] {
        for low in [false, true] {
            let mut extra = vec!["-c", ctx];
            if low {
                extra.push("--low-mem");
            }
            let plan = plan_json(&extra);
            let predicted = plan["prediction"]["peak"].as_u64().unwrap() as f64;
            let measured = run_json(&extra)["peak_rss_bytes"].as_u64().unwrap() as f64;
            let ratio = predicted / measured;
            assert!(
                (0.85..=1.15).contains(&ratio),
                "-c {ctx} low_mem {low}: predicted {predicted} measured {measured} ({ratio:.3})"
            );
        }
    }
}

/// The same check on a pair whose language model is 240 MB (2.6's layout at 1024 wide, 8
/// layers): there the weights, KV cache and compute buffers make most of the peak, so the
/// prediction is tested on the estimate and not on the runtime's constant, as on the tiny pair.
#[test]
fn plan_predicts_a_pair_whose_weights_dominate_within_15_percent() {
    let (model, mmproj) = medium_pair();
    // 9 projector calls and about 600 prompt positions: the compute buffers are used in full
    // (with a one-chunk prompt the planner's allocation-based figure is about 12% above the
    // pages a run touches).
    let img = image(1920, 1080);
    for low in [false, true] {
        let mut args: Vec<std::ffi::OsString> = vec![
            "-m".into(),
            model.clone().into(),
            "--mmproj".into(),
            mmproj.clone().into(),
            "--image".into(),
            img.clone().into(),
            "-c".into(),
            "2048".into(),
            "--json".into(),
        ];
        if low {
            args.push("--low-mem".into());
        }
        let plan = minicpmv([&["plan".into()], args.as_slice()].concat())
            .ok()
            .json();
        let greedy = ["-n", "8", "--temp", "0", "--ignore-eos", "-t", "2"];
        let run_args = [
            &["run".into()],
            args.as_slice(),
            &greedy.map(std::ffi::OsString::from),
        ]
        .concat();
        let run = minicpmv(run_args).ok().json();
        let predicted = plan["prediction"]["peak"].as_u64().unwrap() as f64;
        let measured = run["peak_rss_bytes"].as_u64().unwrap() as f64;
        let runtime = plan["footprint"]["runtime"].as_u64().unwrap() as f64;
        assert!(
            runtime < 0.25 * predicted,
            "the runtime constant ({runtime}) must not dominate the prediction ({predicted})"
        );
        let ratio = predicted / measured;
        eprintln!(
            "medium pair, low_mem {low}: predicted {predicted} B, measured {measured} B, \
             ratio {ratio:.3}, runtime constant {:.0}% of the prediction",
            100.0 * runtime / predicted
        );
        assert!(
            (0.85..=1.15).contains(&ratio),
            "low_mem {low}: predicted {predicted} measured {measured} ({ratio:.3})"
        );
    }
}

#[test]
fn plan_breaks_the_peak_down_by_phase() {
    let plan = plan_json(&[]);
    let phases = plan["prediction"]["phases"].as_array().unwrap();
    assert_eq!(phases.len(), 2);
    for ph in phases {
        let sum: u64 = ph["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["bytes"].as_u64().unwrap())
            .sum();
        assert_eq!(sum, ph["total"].as_u64().unwrap());
    }
    let peak = plan["prediction"]["peak"].as_u64().unwrap();
    assert_eq!(
        peak,
        phases
            .iter()
            .map(|p| p["total"].as_u64().unwrap())
            .max()
            .unwrap()
    );
    let fp = &plan["footprint"];
    assert_eq!(fp["n_image_chunks"], 9);
    // 9 chunks x 64 queries x the tiny model's width x 4 bytes.
    let (model, _) = tiny_pair("2.6");
    let info = minicpmv(["inspect".as_ref(), model.as_os_str(), "--json".as_ref()])
        .ok()
        .json();
    let n_embd = info["hparams"]["qwen2.embedding_length"]
        .as_u64()
        .unwrap_or_else(|| panic!("no qwen2.embedding_length in inspect --json: {info}"));
    assert_eq!(
        fp["image_embeddings"].as_u64().unwrap(),
        9 * 64 * n_embd * 4
    );
    assert!(fp["kv_cache"].as_u64().unwrap() > 0);
    assert!(fp["projector_weights"].as_u64().unwrap() > 0);
}

#[test]
fn a_quantized_kv_cache_is_planned_smaller_and_runs() {
    let kv = |t: &str| {
        plan_json(&["--kv-type", t])["footprint"]["kv_cache"]
            .as_u64()
            .unwrap() as f64
    };
    let (f16, q8, q4) = (kv("f16"), kv("q8_0"), kv("q4_0"));
    assert!(
        (q8 / f16 - 34.0 / 64.0).abs() < 0.02,
        "q8_0/f16 = {}",
        q8 / f16
    );
    assert!(
        (q4 / f16 - 18.0 / 64.0).abs() < 0.02,
        "q4_0/f16 = {}",
        q4 / f16
    );
    for t in ["q8_0", "q4_0"] {
        let out = run_json(&["--kv-type", t]);
        assert_eq!(out["token_ids"].as_array().unwrap().len(), 16, "{t}");
    }
}

#[test]
fn plan_says_when_a_run_does_not_fit_and_what_would() {
    let (model, mmproj) = tiny_pair("2.6");
    let img = image(1920, 1080);
    let args = [
        "plan".as_ref(),
        "-m".as_ref(),
        model.as_os_str(),
        "--mmproj".as_ref(),
        mmproj.as_os_str(),
        "--image".as_ref(),
        img.as_os_str(),
        "-c".as_ref(),
        "4096".as_ref(),
    ];
    let fits = minicpmv_env(
        args,
        &[("MINICPMV_FAKE_AVAILABLE_BYTES", "100000000000".as_ref())],
    );
    assert_eq!(fits.code, Some(0), "{fits:#?}");
    assert!(fits.stdout.contains("verdict: fits"), "{}", fits.stdout);
    let tight = minicpmv_env(
        args,
        &[("MINICPMV_FAKE_AVAILABLE_BYTES", "1000000".as_ref())],
    );
    assert_eq!(tight.code, Some(1), "{tight:#?}");
    assert!(tight.stdout.contains("does NOT fit"), "{}", tight.stdout);
    assert!(tight.stdout.contains("--low-mem"), "{}", tight.stdout);
    assert!(tight.stdout.contains("--kv-type q8_0"), "{}", tight.stdout);
}

#[test]
fn memory_flags_are_checked() {
    let (model, mmproj) = tiny_pair("2.6");
    minicpmv([
        "run".as_ref(),
        "-m".as_ref(),
        model.as_os_str(),
        "--mmproj".as_ref(),
        mmproj.as_os_str(),
        "--pipeline".as_ref(),
        "llama.cpp".as_ref(),
        "--low-mem".as_ref(),
        "-p".as_ref(),
        "hi".as_ref(),
    ])
    .fails_with(&["--low-mem needs the native pipeline"]);
    let r = minicpmv([
        "plan".as_ref(),
        "-m".as_ref(),
        mmproj.as_os_str(),
        "--mmproj".as_ref(),
        model.as_os_str(),
    ]);
    r.fails_with(&["mmproj.gguf"]);
    let r = minicpmv(["run", "--kv-type", "q5_1", "--demo"]);
    assert_eq!(r.code, Some(2), "{r:#?}");
    // --no-mmap and --repack change how weights are held, not what is computed.
    let base = run_json(&[]);
    for flags in [&["--no-mmap"][..], &["--no-repack"], &["--repack", "on"]] {
        let out = run_json(flags);
        assert_eq!(out["token_ids"].as_array().unwrap().len(), 16, "{flags:?}");
        assert!(out["peak_rss_bytes"].as_u64().unwrap() > 0, "{flags:?}");
    }
    assert!(base["peak_rss_bytes"].as_u64().unwrap() > 0);
    let r = minicpmv(["run", "--demo", "--repack", "maybe"]);
    assert_eq!(r.code, Some(2), "{r:#?}");
    assert!(
        r.stderr.contains("\"maybe\"") && r.stderr.contains("auto, on or off"),
        "{r:#?}"
    );
}

/// `--repack auto` (the default) decides from the CPU and the tensor types; `on`, `off` and
/// `--no-repack` are obeyed; `run --json` and `plan` report what was decided.
#[test]
fn repack_setting_reaches_the_loader_and_is_reported() {
    let auto = run_json(&[]);
    let features: Vec<&str> = auto["cpu_backend"]["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    // The tiny pair is F16: no type that keeps the repack, so only the CPU decides.
    let expect_auto = !features.contains(&"AVX512_VNNI");
    assert_eq!(auto["weight_repack"], expect_auto, "{features:?}");
    assert_eq!(run_json(&["--repack", "on"])["weight_repack"], true);
    assert_eq!(run_json(&["--repack", "off"])["weight_repack"], false);
    assert_eq!(run_json(&["--no-repack"])["weight_repack"], false);
    for (flags, want) in [(&[][..], expect_auto), (&["--repack", "on"], true)] {
        let plan = plan_json(flags);
        assert_eq!(
            plan["footprint"]["repack"]["repack"], want,
            "{flags:?}: {plan}"
        );
        assert!(
            plan["footprint"]["repack"]["reason"]
                .as_str()
                .unwrap()
                .len()
                > 10
        );
    }
    let (model, mmproj) = tiny_pair("2.6");
    let r = minicpmv([
        "run".as_ref(),
        "-m".as_ref(),
        model.as_os_str(),
        "--mmproj".as_ref(),
        mmproj.as_os_str(),
        "-p".as_ref(),
        "hi".as_ref(),
        "--repack".as_ref(),
        "on".as_ref(),
        "--no-repack".as_ref(),
    ]);
    assert_eq!(r.code, Some(2), "--repack and --no-repack together: {r:#?}");
}
