"""The video section of the bench (`scripts/bench --video`): `minicpmv run --video` on a generated
60 s 1280x720 clip against llama.cpp's llama-mtmd-cli fed the same frames as images.

Per configuration (version), three runs a round, in alternating order from round to round:
- ours, the version's reference settings (`--video CLIP --max-frames F`: 2.6 takes 2 slices per
  frame, 4.6 one);
- ours with `--frame-slices 9`, the slicing llama.cpp always applies: the same work as theirs;
- theirs: llama-mtmd-cli with the F frames ours took, extracted beforehand by the ffmpeg program
  to PNG files (not timed), laid out as the reference does (markers joined by the version's
  separator, then the question).

Figures: time to first token (ours: from the start of the process's run, video decoding
included; theirs: from its log's first timestamp to the first generated piece, PNG decoding
included), seconds per frame encoded (projector time / frames), frames per second of the whole
encode stage, and peak RSS (time -v). Ratios are ours / theirs per round, geometric mean and 95%
interval (benchlib.stats.ratio_interval). The frame count is capped (--video-frames) because on 2
cores each 720p chunk of a real-shape projector costs seconds: the whole 60-frame default run is
timed once, ours only, when --video-full is given."""
import json
import subprocess
from pathlib import Path

from .measure import run_measured
from .ours import figures_of_run_json
from .stats import fmt, human_bytes, median, ratio_interval
from .theirs import parse_theirs
from .util import log, write_json_atomic, write_text_atomic

QUESTION = "What happens in this video?"
SEPARATOR = {"2.6": "\n", "o2.6": "\n", "2.5": "\n", "4.0": "\n", "4.5": "\n", "o4.5": "\n",
             "4.6": "", "4.6-thinking": ""}


def make_clip(path: Path, seconds: int = 60, size: str = "1280x720", fps: int = 30) -> Path:
    """A generated H.264 clip (ffmpeg's testsrc2: moving patterns and a running clock)."""
    if path.exists():
        return path
    tmp = path.with_suffix(".partial.mp4")
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc2=size={size}:rate={fps}", "-t", str(seconds), "-pix_fmt", "yuv420p",
                    "-c:v", "libx264", "-preset", "veryfast", str(tmp)], check=True)
    tmp.rename(path)
    return path


def mtmd_prompt(n_frames: int, separator: str, question: str = QUESTION) -> str:
    """The reference layout as a llama-mtmd-cli prompt: one marker per frame, each followed by the
    separator, then the question."""
    return "".join("<__media__>" + separator for _ in range(n_frames)) + question


def extract_frames(clip: Path, indices: list[int], width: int, height: int, out: Path) -> list[Path]:
    """The frames at `indices` as PNG files, with the same ffmpeg conversion ours reads them by."""
    out.mkdir(parents=True, exist_ok=True)
    select = "+".join(f"eq(n\\,{i})" for i in indices)
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(clip), "-vf",
                    f"select='{select}',scale={width}:{height}", "-fps_mode", "passthrough",
                    "-pix_fmt", "rgb24", str(out / "f%03d.png")], check=True)
    return [out / f"f{i + 1:03d}.png" for i in range(len(indices))]


def ours_argv(bin_path, cfg, clip, a, frame_slices=None) -> list:
    argv = [bin_path, "run", "-m", cfg.model, "--mmproj", cfg.mmproj, "--video", clip,
            "--max-frames", a.video_frames, "-p", QUESTION, "-n", a.n_predict, "--temp", "0",
            "--ignore-eos", "-t", a.threads, "-c", a.ctx, "--json"]
    if frame_slices:
        argv += ["--frame-slices", frame_slices]
    return argv


def theirs_argv(bin_path, cfg, frames: list[Path], a) -> list:
    argv = [bin_path, "-m", cfg.model, "--mmproj", cfg.mmproj, "-p",
            mtmd_prompt(len(frames), SEPARATOR.get(cfg.version, "\n")), "-n", a.n_predict,
            "--temp", "0", "--ignore-eos", "-t", a.threads, "-c", a.ctx, "--perf", "-lv", "4",
            "--log-jsonl", "--log-timestamps", "--log-prefix", "--no-warmup", "-fa", "on"]
    for f in frames:
        argv += ["--image", f]
    return argv


def figures(rec: dict, frames: int) -> dict:
    """The section's figures of one run record."""
    enc = rec.get("encode_s")
    return {"ttft_s": rec.get("ttft_s"),
            "encode_s": enc,
            "s_per_frame": enc / frames if enc and frames else None,
            "frames_per_s": frames / enc if enc else None,
            "n_chunks": rec.get("n_chunks"),
            "prompt_tokens": rec.get("prompt_tokens"),
            "peak_rss_mib": rec.get("peak_rss_mib")}


def run_ours(bin_path, cfg, clip, a, logs, name, frame_slices=None) -> dict:
    rec = run_measured(ours_argv(bin_path, cfg, clip, a, frame_slices), logs, name, a.timeout)
    if rec["exit_code"] != 0:
        raise RuntimeError(f"{name} failed: {Path(rec['stderr']).read_text(errors='replace')[-400:]}")
    j = json.loads(Path(rec["stdout"]).read_text())
    rec.update(figures_of_run_json(j))
    rec["video"] = j.get("video")
    return rec


def run_theirs(bin_path, cfg, frames, a, logs, name) -> dict:
    rec = run_measured(theirs_argv(bin_path, cfg, frames, a), logs, name, a.timeout)
    if rec["exit_code"] != 0:
        raise RuntimeError(f"{name} failed: {Path(rec['stderr']).read_text(errors='replace')[-400:]}")
    parse_theirs(rec, int(a.n_predict))
    return rec


SIDES = ("ours", "ours 9 slices", "llama.cpp")


def run_video_bench(a, configs, their_bin: Path, clip: Path, out: Path, logs: Path, commit: str) -> dict:
    """Runs every configuration for a.rounds rounds; writes results.json and results.md to out."""
    result = {"settings": {"clip": str(clip), "seconds": a.video_seconds,
                           "frames": int(a.video_frames), "threads": a.threads,
                           "ctx": a.ctx, "n_predict": a.n_predict, "rounds": a.rounds,
                           "commit": commit, "question": QUESTION},
              "configs": {}}
    for cfg in configs:
        first = run_ours(a.ours_bin, cfg, clip, a, logs, f"video-{cfg.version}-probe")
        v = first["video"]
        frames = extract_frames(clip, v["frame_indices"], v["width"], v["height"],
                                logs / f"frames-{cfg.version}")
        runs = []
        for rnd in range(int(a.rounds)):
            order = list(SIDES) if rnd % 2 == 0 else list(reversed(SIDES))
            for side in order:
                name = f"video-{cfg.version}-r{rnd}-{side.replace(' ', '-')}"
                log(f"video bench: {cfg.label} round {rnd + 1}/{a.rounds}: {side}")
                if side == "ours":
                    rec = run_ours(a.ours_bin, cfg, clip, a, logs, name)
                elif side == "ours 9 slices":
                    rec = run_ours(a.ours_bin, cfg, clip, a, logs, name, frame_slices=9)
                else:
                    rec = run_theirs(their_bin, cfg, frames, a, logs, name)
                runs.append({"round": rnd, "side": side, **figures(rec, len(frames)),
                             "text": rec.get("text")})
        result["configs"][cfg.label] = {"video": v, "runs": runs, "summary": summarize(runs)}
        write_json_atomic(out / "results.json", result)
    write_text_atomic(out / "results.md", render(result))
    return result


METRICS = (("ttft_s", "time to first token", "{:.1f} s"),
           ("s_per_frame", "encode per frame", "{:.2f} s"),
           ("frames_per_s", "frames encoded per second", "{:.3f}"),
           ("n_chunks", "projector calls", "{:.0f}"),
           ("prompt_tokens", "prompt positions", "{:.0f}"),
           ("peak_rss_mib", "peak RSS", "{:.0f} MiB"))


def summarize(runs: list[dict]) -> dict:
    """Per metric: each side's median, and per round the ratio of each of our sides to theirs."""
    out = {}
    for key, *_ in METRICS:
        row = {side: median(r[key] for r in runs if r["side"] == side) for side in SIDES}
        for side in SIDES[:2]:
            ratios = []
            for rnd in sorted({r["round"] for r in runs}):
                by = {r["side"]: r.get(key) for r in runs if r["round"] == rnd}
                x, y = by.get(side), by.get("llama.cpp")
                ratios.append(x / y if isinstance(x, (int, float)) and isinstance(y, (int, float)) and y else None)
            row[f"{side} ratio"] = median(ratios)
            row[f"{side} interval"] = ratio_interval(ratios)
        out[key] = row
    return out


def render(result: dict) -> str:
    s = result["settings"]
    lines = [f"# Video: `minicpmv run --video` against llama-mtmd-cli fed the same frames",
             "",
             f"Clip: generated by ffmpeg's testsrc2, {s['seconds']} s, 1280x720, 30 fps, H.264 (`{Path(s['clip']).name}`). "
             f"Frames taken: {s['frames']} (`--max-frames {s['frames']}`), question {s['question']!r}, "
             f"-t {s['threads']}, -c {s['ctx']}, -n {s['n_predict']} greedy, {s['rounds']} rounds "
             f"in alternating order, commit {s['commit']}. Ratios: ours / llama.cpp per round, "
             "geometric mean (95% interval; – below two rounds).", ""]
    for label, c in result["configs"].items():
        v = c["video"]
        lines += [f"## {label}", "",
                  f"Frames {v['frame_indices']} of {v['source_frames']}; ours: {v['chunks_per_frame']} "
                  f"projector calls and {v['tokens_per_frame']} embeddings per frame at the reference "
                  f"{v['frame_slices']} slice(s); llama.cpp slices each frame up to 9 times.", "",
                  "| metric | ours (reference slices) | ours (9 slices) | llama.cpp (9 slices) | ours 9 / llama.cpp | ours ref / llama.cpp |",
                  "|---|---|---|---|---|---|"]
        for key, name, f in METRICS:
            row = c["summary"][key]

            def ratio(side):
                iv = row[f"{side} interval"]
                r = row[f"{side} ratio"]
                return "–" if r is None else (f"{r:.2f}" + (f" ({iv[1]:.2f}–{iv[2]:.2f})" if iv else ""))
            vals = [fmt(row[side], f) if key != "peak_rss_mib" else
                    (human_bytes(row[side] * 1048576) if row[side] else "–") for side in SIDES]
            lines.append(f"| {name} | {vals[0]} | {vals[1]} | {vals[2]} | {ratio('ours 9 slices')} | {ratio('ours')} |")
        lines += [""]
    return "\n".join(lines) + "\n"
