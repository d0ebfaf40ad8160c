//! `--video` on run, plan, slice-plan and parity: test videos made by the project's own code
//! (an animated GIF with the `image` crate, an MP4 with `vision::video::write_mp4`, which runs
//! ffmpeg; `.ci/run` installs it), each version's frame rule, parity with llama.cpp's mtmd fed
//! the same frames as images, the context budget, and bad inputs.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::harness::{minicpmv, minicpmv_env, tiny_pair, work_dir};

/// Every version, with the frames its rule takes from [`gif`] (12 frames at 4 fps, 3 s) and
/// from [`mp4`] (50 frames at 10 fps, 5 s). The rules: docs/video-reference.md.
/// - 2.6 (and 2.5, o2.6, 4.0): every round(fps)-th frame;
/// - 4.5 (o4.5): round(min(5, fps) x duration) frames, mid-bin uniform over all frames;
/// - 4.6: the frame at the start of each second.
const VERSIONS: [(&str, &[usize], &[usize]); 8] = [
    ("2.5", &[0, 4, 8], &[0, 10, 20, 30, 40]),
    ("2.6", &[0, 4, 8], &[0, 10, 20, 30, 40]),
    ("o2.6", &[0, 4, 8], &[0, 10, 20, 30, 40]),
    ("4.0", &[0, 4, 8], &[0, 10, 20, 30, 40]),
    ("4.5", &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], MP4_45),
    ("o4.5", &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], MP4_45),
    ("4.6", &[0, 4, 8], &[0, 10, 20, 30, 40]),
    ("4.6-thinking", &[0, 4, 8], &[0, 10, 20, 30, 40]),
];

/// 4.5 on 50 frames at 10 fps: 25 frames, `int(i * 2 + 1)`.
const MP4_45: &[usize] = &[
    1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31, 33, 35, 37, 39, 41, 43, 45, 47, 49,
];

/// Frame `i` of a test video: a gradient that moves with `i`.
fn frame(w: u32, h: u32, i: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            ((x + 7 * i) * 255 / w) as u8,
            ((y + 5 * i) * 255 / h) as u8,
            ((x + y + 30 * i) % 256) as u8,
        ])
    })
}

/// An animated GIF of 12 frames of 96x64, 250 ms each (4 fps, 3 s), made once.
fn gif() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| write_gif("anim.gif", 12, 250)).clone()
}

fn write_gif(name: &str, n: u32, delay_ms: u32) -> PathBuf {
    use image::codecs::gif::{GifEncoder, Repeat};
    use image::{Delay, Frame};
    let path = work_dir().join(name);
    let tmp = path.with_extension("gif.tmp");
    {
        let file = std::fs::File::create(&tmp).unwrap();
        let mut enc = GifEncoder::new(file);
        enc.set_repeat(Repeat::Infinite).unwrap();
        for i in 0..n {
            let rgba = image::DynamicImage::ImageRgb8(frame(96, 64, i)).to_rgba8();
            let delay = Delay::from_numer_denom_ms(delay_ms, 1);
            enc.encode_frame(Frame::from_parts(rgba, 0, 0, delay))
                .unwrap();
        }
    }
    std::fs::rename(&tmp, &path).unwrap();
    path
}

/// An H.264 MP4 of `n` frames of `w` x `h` at `fps`, written once per name with the library's
/// `write_mp4` (ffmpeg).
fn write_video(name: &str, w: u32, h: u32, fps: u32, n: u32) -> PathBuf {
    let path = work_dir().join(name);
    if !path.exists() {
        let mut frames = (0..n).map(|i| frame(w, h, i).into_raw());
        minicpmv::vision::video::write_mp4(&path, w, h, fps, &mut frames)
            .unwrap_or_else(|e| panic!("cannot write the test video ({e}); install ffmpeg"));
    }
    path
}

/// 50 frames of 320x240 at 10 fps (5 s).
fn mp4() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| write_video("clip.mp4", 320, 240, 10, 50))
        .clone()
}

/// A folder on `PATH` with no ffmpeg in it.
fn no_ffmpeg() -> Vec<(&'static str, std::ffi::OsString)> {
    let empty = work_dir().join("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    vec![
        ("PATH", empty.into_os_string()),
        ("MINICPMV_FFMPEG", "".into()),
        ("MINICPMV_FFPROBE", "".into()),
    ]
}

fn env_refs<'a>(
    env: &'a [(&'static str, std::ffi::OsString)],
) -> Vec<(&'static str, &'a std::ffi::OsStr)> {
    env.iter().map(|(k, v)| (*k, v.as_os_str())).collect()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `run --video` with greedy decoding of 12 tokens (EOS ignored), as JSON.
fn run_video(version: &str, video: &Path, extra: &[&str]) -> serde_json::Value {
    let (m, p) = tiny_pair(version);
    let mut args = vec!["run", "-m", s(&m), "--mmproj", s(&p), "--video", s(video)];
    args.extend([
        "-p",
        "what happens?",
        "-n",
        "12",
        "--ignore-eos",
        "--json",
        "-t",
        "2",
    ]);
    args.extend(extra);
    minicpmv(args).ok().json()
}

fn indices(out: &serde_json::Value) -> Vec<usize> {
    out["video"]["frame_indices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect()
}

#[test]
fn a_gif_runs_on_every_version_without_ffmpeg_and_takes_the_frames_of_its_rule() {
    let env = no_ffmpeg();
    let gif = gif();
    for (version, want, _) in VERSIONS {
        let (m, p) = tiny_pair(version);
        let args = [
            "run",
            "-m",
            s(&m),
            "--mmproj",
            s(&p),
            "--video",
            s(&gif),
            "-p",
            "what happens?",
            "-n",
            "4",
            "--ignore-eos",
            "--json",
        ];
        let out = minicpmv_env(args, &env_refs(&env)).ok().json();
        assert_eq!(indices(&out), want, "{version}");
        let v = &out["video"];
        assert_eq!(v["decoder"], "animation", "{version}");
        assert_eq!(v["source_frames"], 12);
        assert_eq!(v["packing"], 1);
        let per_frame = v["chunks_per_frame"].as_u64().unwrap() as usize;
        assert_eq!(out["n_image_chunks"], want.len() * per_frame, "{version}");
        assert_eq!(out["n_projector_calls"], want.len() * per_frame);
        assert_eq!(
            out["n_image_tokens"],
            want.len() * v["tokens_per_frame"].as_u64().unwrap() as usize
        );
        assert_eq!(out["token_ids"].as_array().unwrap().len(), 4);
    }
}

#[test]
fn an_mp4_runs_on_every_version_through_ffmpeg() {
    let mp4 = mp4();
    for (version, _, want) in VERSIONS {
        let out = run_video(version, &mp4, &[]);
        assert_eq!(indices(&out), want, "{version}");
        assert_eq!(out["video"]["decoder"], "ffmpeg");
        assert_eq!(out["video"]["source_fps"], 10.0);
        let times: Vec<f64> = out["video"]["frame_times"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_f64().unwrap())
            .collect();
        let expect: Vec<f64> = want.iter().map(|&i| i as f64 / 10.0).collect();
        assert_eq!(times, expect, "{version}");
    }
}

#[test]
fn fps_and_max_frames_override_the_reference_rule() {
    let mp4 = mp4();
    // 2.6 at 2 fps: every 5th frame; capped at 4: the middle of 4 equal bins.
    let out = run_video("2.6", &mp4, &["--fps", "2"]);
    assert_eq!(indices(&out), [0, 5, 10, 15, 20, 25, 30, 35, 40, 45]);
    let out = run_video("2.6", &mp4, &["--fps", "2", "--max-frames", "4"]);
    assert_eq!(indices(&out), [5, 15, 30, 40]);
    // 4.6 at 2 fps: the frame at each half second.
    let out = run_video("4.6", &mp4, &["--fps", "2"]);
    assert_eq!(indices(&out), [0, 5, 10, 15, 20, 25, 30, 35, 40, 45]);
}

/// The frames at `indices` of `video`, extracted by the ffmpeg program itself (not our
/// reader) into PNG files, with the same conversion our reader asks for.
fn extract_frames(video: &Path, indices: &[usize], w: u32, h: u32, dir: &str) -> Vec<PathBuf> {
    let out = work_dir().join(dir);
    std::fs::create_dir_all(&out).unwrap();
    let select: Vec<String> = indices.iter().map(|i| format!("eq(n\\,{i})")).collect();
    let status = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-y", "-i"])
        .arg(video)
        .arg("-vf")
        .arg(format!("select='{}',scale={w}:{h}", select.join("+")))
        .args(["-fps_mode", "passthrough", "-pix_fmt", "rgb24"])
        .arg(out.join("f%03d.png"))
        .status()
        .expect("ffmpeg must be installed");
    assert!(status.success());
    (1..=indices.len())
        .map(|i| out.join(format!("f{i:03}.png")))
        .collect()
}

/// docs/video-reference.md: the reference lays the frames out as images before the question,
/// joined by the version's separator ("\n" for 2.6 and 4.5, nothing for 4.6). mtmd is given
/// the frames (extracted by the ffmpeg program) as images with that prompt: its greedy tokens
/// and prompt length must be ours, for both our pipelines.
#[test]
fn video_tokens_equal_llama_cpps_mtmd_fed_the_same_frames_as_images() {
    let mp4 = mp4();
    for (version, sep) in [("2.6", "\n"), ("4.5", "\n"), ("4.6", "")] {
        let ours = run_video(version, &mp4, &[]);
        let idx = indices(&ours);
        let frames = extract_frames(&mp4, &idx, 320, 240, &format!("frames-{version}"));
        let (m, p) = tiny_pair(version);
        let mut prompt = String::new();
        for _ in &frames {
            prompt.push_str("<__media__>");
            prompt.push_str(sep);
        }
        prompt.push_str("what happens?");
        let mut args = vec![
            "run",
            "-m",
            s(&m),
            "--mmproj",
            s(&p),
            "-p",
            &prompt,
            "-n",
            "12",
            "--json",
            "-t",
            "2",
            "--pipeline",
            "llama.cpp",
        ];
        for f in &frames {
            args.extend(["--image", s(f)]);
        }
        let theirs = minicpmv(args).ok().json();
        assert_eq!(ours["token_ids"], theirs["token_ids"], "{version}");
        assert_eq!(
            ours["n_prompt_tokens"], theirs["n_prompt_tokens"],
            "{version}"
        );
        assert_eq!(
            ours["n_image_chunks"], theirs["n_image_chunks"],
            "{version}"
        );
        // The video through llama.cpp's pipeline: the same again.
        let via = run_video(version, &mp4, &["--pipeline", "llama.cpp"]);
        assert_eq!(via["token_ids"], ours["token_ids"], "{version}");
    }
}

/// Frames large enough to be sliced: the embeddings of every chunk of every frame are
/// identical to mtmd's, and so are the sequences and greedy tokens (`parity --video`).
#[test]
fn parity_holds_on_sliced_video_frames() {
    let big = write_video("big.mp4", 1000, 560, 4, 8);
    let (m, p) = tiny_pair("2.6");
    let out = minicpmv([
        "parity",
        "-m",
        s(&m),
        "--mmproj",
        s(&p),
        "--video",
        s(&big),
        "-n",
        "8",
        "--json",
    ])
    .ok()
    .json();
    assert_eq!(out["holds"], true, "{out:#}");
    assert_eq!(out["sequence_equal"], true);
    // 2 frames (1 per second), each an overview and slices.
    let chunks = out["chunks"].as_array().unwrap();
    assert!(chunks.len() > 2 && chunks.len() % 2 == 0, "{chunks:?}");
    assert!(
        chunks.iter().all(|c| c["max_abs_diff"] == 0.0),
        "{chunks:?}"
    );
}

#[test]
fn a_video_that_does_not_fit_names_the_max_frames_that_would_and_that_value_runs() {
    let mp4 = mp4();
    let (m, p) = tiny_pair("2.6");
    let base = [
        "run",
        "-m",
        s(&m),
        "--mmproj",
        s(&p),
        "--video",
        s(&mp4),
        "-c",
        "256",
    ];
    let err = minicpmv(base.iter().copied().chain(["-n", "2"]))
        .fails_with(&["the video's 5 frames take", "--max-frames", "--ctx-size"])
        .stderr;
    let n: String = err
        .split("--max-frames ")
        .nth(1)
        .unwrap()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    assert!(!n.is_empty() && n != "0", "{err}");
    minicpmv(base.iter().copied().chain(["-n", "2", "--max-frames", &n])).ok();
    // plan and slice-plan say the same before any frame is decoded (exit 1: does not fit).
    let plan = minicpmv([
        "plan",
        "-m",
        s(&m),
        "--mmproj",
        s(&p),
        "--video",
        s(&mp4),
        "-c",
        "256",
    ]);
    assert_eq!(plan.code, Some(1), "{plan:#?}");
    assert!(plan.stdout.contains("frames taken: 5") && plan.stdout.contains("does NOT fit"));
    let json = minicpmv([
        "plan",
        "-m",
        s(&m),
        "--mmproj",
        s(&p),
        "--video",
        s(&mp4),
        "--json",
    ])
    .ok()
    .json();
    assert_eq!(json["video"]["frames"], 5);
    assert_eq!(json["video"]["fits"], true);
    let sp = minicpmv([
        "slice-plan",
        "--version",
        "4.6",
        "--video",
        s(&mp4),
        "--json",
    ])
    .ok()
    .json();
    assert_eq!(sp["frame_indices"], serde_json::json!([0, 10, 20, 30, 40]));
    assert_eq!(sp["frame_slices"], 1);
}

/// A script standing in for ffmpeg: writes one frame of the real ffmpeg's output, then kills
/// itself with SIGKILL, as an OOM killer would.
fn killed_ffmpeg() -> PathBuf {
    let path = work_dir().join("ffmpeg-killed.sh");
    let frame_bytes = 320 * 240 * 3;
    std::fs::write(
        &path,
        format!("#!/bin/sh\nffmpeg \"$@\" | head -c {frame_bytes}\nkill -KILL $$\n"),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn bad_videos_get_exit_2_and_a_message_naming_the_file() {
    let (m, p) = tiny_pair("2.6");
    let run = |video: &Path| {
        minicpmv([
            "run",
            "-m",
            s(&m),
            "--mmproj",
            s(&p),
            "--video",
            s(video),
            "-n",
            "2",
        ])
    };
    // Corrupt: bytes that are no container.
    let junk = crate::harness::file_with("junk.mp4", &[0x5a; 4096]);
    run(&junk).fails_with(&["cannot read video", "junk.mp4", "ffprobe"]);
    // Truncated: the header (moved to the front) announces 50 frames, the data stops early.
    let whole = std::fs::read(mp4()).unwrap();
    let cut = crate::harness::file_with("cut.mp4", &whole[..whole.len() / 3]);
    run(&cut).fails_with(&["cut.mp4", "before frame"]);
    // Zero frames: an empty file, an empty folder, an audio-only file.
    let empty = crate::harness::file_with("empty.mp4", b"");
    run(&empty).fails_with(&["empty.mp4", "has no frames"]);
    let dir = work_dir().join("no-frames");
    std::fs::create_dir_all(&dir).unwrap();
    run(&dir).fails_with(&["no-frames", "has no frames"]);
    let audio = work_dir().join("audio.m4a");
    let ok = std::process::Command::new("ffmpeg")
        .args([
            "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "sine=d=1",
        ])
        .arg(&audio)
        .status()
        .expect("ffmpeg must be installed");
    assert!(ok.success());
    run(&audio).fails_with(&["audio.m4a", "has no frames"]);
    // A 10-hour header: an animation of 60 frames shown 10 minutes each, and an MP4 whose
    // 60 frames are 10 minutes apart.
    let long_gif = write_gif("ten-hours.gif", 60, 600_000);
    run(&long_gif).fails_with(&["ten-hours.gif", "lasts 36000 s", "limit"]);
    let long_mp4 = work_dir().join("ten-hours.mp4");
    let ok = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-y", "-f", "lavfi"])
        .args([
            "-i",
            "color=c=red:s=32x32:r=1/600",
            "-t",
            "36000",
            "-pix_fmt",
            "yuv420p",
        ])
        .arg(&long_mp4)
        .status()
        .expect("ffmpeg must be installed");
    assert!(ok.success());
    run(&long_mp4).fails_with(&["ten-hours.mp4", "lasts 36000 s"]);
    // A video as --image, and an image as --video.
    minicpmv([
        "run",
        "-m",
        s(&m),
        "--mmproj",
        s(&p),
        "--image",
        s(&mp4()),
        "-n",
        "2",
    ])
    .fails_with(&["clip.mp4", "is a video (MP4)", "--video"]);
    run(&crate::harness::image(64, 64)).fails_with(&["still image", "--image"]);
    // A video with images.
    minicpmv([
        "run",
        "-m",
        s(&m),
        "--mmproj",
        s(&p),
        "--video",
        s(&gif()),
        "--image",
        s(&crate::harness::image(64, 64)),
    ])
    .fails_with(&["a video and images"]);
    // Out-of-range settings are refused by the parser.
    for bad in [
        ["--max-frames", "0"],
        ["--frame-slices", "10"],
        ["--fps", "0"],
    ] {
        let r = minicpmv(
            ["run", "-m", s(&m), "--mmproj", s(&p), "--video", s(&gif())]
                .into_iter()
                .chain(bad),
        );
        assert_eq!(r.code, Some(2), "{bad:?}: {r:#?}");
        let name = bad[0].trim_start_matches("--").replace('-', " ");
        assert!(
            r.stderr.contains(bad[0]) || r.stderr.contains(&name),
            "{bad:?}: {}",
            r.stderr
        );
    }
}

#[test]
fn without_ffmpeg_or_with_ffmpeg_killed_the_error_says_so_and_no_process_is_left() {
    let (m, p) = tiny_pair("2.6");
    let args = |video: &Path| {
        [
            "run".to_string(),
            "-m".into(),
            s(&m).into(),
            "--mmproj".into(),
            s(&p).into(),
            "--video".into(),
            s(video).into(),
            "-n".into(),
            "2".into(),
        ]
    };
    let env = no_ffmpeg();
    minicpmv_env(args(&mp4()), &env_refs(&env)).fails_with(&[
        "ffprobe is needed to read video",
        "clip.mp4",
        "apt-get install ffmpeg",
    ]);
    // A copy that only this test reads, to look for processes left on it.
    let own = work_dir().join("killed-run.mp4");
    std::fs::copy(mp4(), &own).unwrap();
    let killer = killed_ffmpeg();
    minicpmv_env(args(&own), &[("MINICPMV_FFMPEG", killer.as_os_str())])
        .fails_with(&["killed-run.mp4", "killed by signal 9"]);
    // Nothing of ours or ffmpeg's still runs on it.
    let left = std::process::Command::new("pgrep")
        .args(["-f", s(&own)])
        .output()
        .unwrap();
    assert!(left.stdout.is_empty(), "left running: {:?}", left);
}

/// `run --video` greedy, as the chat and the server answer (temperature 0, EOS ignored).
fn run_text_and_tokens(video: &Path, prompt: &str, n: u32) -> (String, serde_json::Value) {
    let (m, p) = tiny_pair("2.6");
    let n = n.to_string();
    let out = minicpmv([
        "run",
        "-m",
        s(&m),
        "--mmproj",
        s(&p),
        "--video",
        s(video),
        "-p",
        prompt,
        "-n",
        &n,
        "--temp",
        "0",
        "--ignore-eos",
        "--json",
        "-t",
        "2",
    ])
    .ok()
    .json();
    (
        out["text"].as_str().unwrap().to_string(),
        out["token_ids"].clone(),
    )
}

#[test]
fn chat_about_a_video_answers_as_run_does_and_asking_again_costs_no_projector_call() {
    let (m, p) = tiny_pair("2.6");
    let mp4 = mp4();
    let script = format!(
        "what happens?\nand then?\n/reset\n/video {}\nwhat happens?\n",
        s(&mp4)
    );
    let out = crate::harness::minicpmv_with_stdin(
        [
            "chat",
            "-m",
            s(&m),
            "--mmproj",
            s(&p),
            "--video",
            s(&mp4),
            "-n",
            "8",
            "--temp",
            "0",
            "--ignore-eos",
            "--json",
            "-t",
            "2",
        ],
        &script,
    )
    .ok();
    let turns: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(turns.len(), 3, "{}", out.stdout);
    let (_, tokens) = run_text_and_tokens(&mp4, "what happens?", 8);
    assert_eq!(turns[0]["token_ids"], tokens, "turn 1 = run --video");
    assert_eq!(turns[0]["n_images"], 5);
    assert_eq!(turns[0]["cache_misses"], 5);
    assert_eq!(turns[0]["n_projector_calls"], 5);
    // A follow-up: the frames are in the KV cache.
    assert_eq!(turns[1]["n_projector_calls"], 0);
    assert!(turns[1]["n_reused_positions"].as_u64().unwrap() > 5 * 64);
    // After /reset, the same video again: every frame from the embedding cache.
    assert_eq!(turns[2]["n_projector_calls"], 0);
    assert_eq!(turns[2]["cache_hits"], 5);
    assert_eq!(turns[2]["token_ids"], tokens);
}

fn video_body(text: &str, input_video: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "messages": [{"role": "user", "content": [
            {"type": "input_video", "input_video": input_video},
            {"type": "text", "text": text},
        ]}],
        "max_tokens": 8,
        "temperature": 0,
        "ignore_eos": true,
    })
}

#[test]
fn serve_takes_input_video_answers_as_run_and_refuses_bad_video_parts() {
    use crate::serve::{answer_text, base64_of, post, Server};
    let pair = tiny_pair("2.6");
    let mp4 = mp4();
    let server = Server::start(&pair, &[]);
    let ask = |text: &str, part: serde_json::Value| {
        post(server.addr, "/v1/chat/completions", &video_body(text, part))
    };
    let data = base64_of(&mp4);
    let first = ask("what happens?", serde_json::json!({ "data": data }));
    assert_eq!(
        answer_text(&first),
        run_text_and_tokens(&mp4, "what happens?", 8).0
    );
    assert_eq!(first.json()["timings"]["projector_calls"], 5);
    // Another question about the same video, as a data URI: no projector call.
    let second = ask(
        "and the colours?",
        serde_json::json!({ "url": format!("data:video/mp4;base64,{data}") }),
    );
    assert_eq!(
        answer_text(&second),
        run_text_and_tokens(&mp4, "and the colours?", 8).0
    );
    assert_eq!(second.json()["timings"]["projector_calls"], 0);
    // Frame settings of the part.
    let capped = ask(
        "what happens?",
        serde_json::json!({ "data": data, "max_frames": 2 }),
    );
    assert_eq!(capped.status, 200, "{}", capped.text());
    assert_eq!(
        capped.json()["timings"]["projector_calls"],
        0,
        "frames 10 and 30: cached"
    );
    // Bad parts: 400 naming the field.
    let junk = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [0x5a; 512]);
    let gif_uri = crate::serve::data_uri(&gif());
    let cases = [
        (
            serde_json::json!({}),
            "messages[0].content[0].input_video",
            "\"data\"",
        ),
        (
            serde_json::json!({ "data": data, "fps": 0 }),
            "messages[0].content[0].input_video.fps",
            "out of range",
        ),
        (
            serde_json::json!({ "data": data, "max_frames": "x" }),
            "messages[0].content[0].input_video.max_frames",
            "must be a number",
        ),
        (
            serde_json::json!({ "data": junk }),
            "messages",
            "cannot read video",
        ),
    ];
    for (part, param, needle) in cases {
        let r = ask("q", part.clone());
        assert_eq!(r.status, 400, "{part}: {}", r.text());
        let e = &r.json()["error"];
        assert_eq!(e["param"], param, "{part}: {e}");
        assert!(
            e["message"].as_str().unwrap().contains(needle),
            "{part}: {e}"
        );
    }
    let both = serde_json::json!({
        "messages": [{"role": "user", "content": [
            {"type": "input_video", "input_video": {"data": data}},
            {"type": "image_url", "image_url": {"url": gif_uri}},
            {"type": "text", "text": "q"},
        ]}],
    });
    let r = post(server.addr, "/v1/chat/completions", &both);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("a video and images"), "{}", r.text());
    // Still serving.
    let again = ask("what happens?", serde_json::json!({ "data": data }));
    assert_eq!(answer_text(&again), answer_text(&first));
}

/// Matroska states no frame count: it is estimated from the duration, which an audio track
/// longer than the video stretches. Frames past the real end take the last frame.
#[test]
fn an_mkv_whose_audio_outlasts_the_video_runs_on_the_frames_it_has() {
    let mkv = work_dir().join("longer-audio.mkv");
    if !mkv.exists() {
        let tmp = work_dir().join("longer-audio.partial.mkv");
        let ok = std::process::Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error", "-y", "-f", "lavfi"])
            .args(["-i", "testsrc=size=64x48:rate=10:duration=2", "-f", "lavfi"])
            .args([
                "-i",
                "sine=duration=3",
                "-c:v",
                "libx264",
                "-pix_fmt",
                "yuv420p",
            ])
            .args(["-c:a", "aac"])
            .arg(&tmp)
            .status()
            .expect("ffmpeg must be installed");
        assert!(ok.success());
        std::fs::rename(&tmp, &mkv).unwrap();
    }
    // 4.5: 5 per second over the 3 s the container states: frames up to 29 of the 20 there are.
    let out = run_video("4.5", &mkv, &[]);
    let idx = indices(&out);
    assert_eq!(out["video"]["source_frames"], 30, "estimated: 3 s x 10 fps");
    assert_eq!(idx.len(), 15);
    assert!(idx.iter().any(|&i| i >= 20), "{idx:?}");
    assert_eq!(out["n_image_chunks"], 15);
}

#[test]
fn frame_settings_need_a_video_except_in_chat_where_video_uses_them() {
    let (m, p) = tiny_pair("2.6");
    minicpmv([
        "run",
        "-m",
        s(&m),
        "--mmproj",
        s(&p),
        "--image",
        s(&crate::harness::image(64, 64)),
        "--max-frames",
        "2",
    ])
    .fails_with(&["--max-frames", "needs --video"]);
    let script = format!("/video {}\nwhat happens?\n", s(&mp4()));
    let out = crate::harness::minicpmv_with_stdin(
        [
            "chat",
            "-m",
            s(&m),
            "--mmproj",
            s(&p),
            "--max-frames",
            "2",
            "-n",
            "2",
            "--json",
        ],
        &script,
    )
    .ok();
    let turn: serde_json::Value = serde_json::from_str(out.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(turn["n_images"], 2, "{turn}");
}
