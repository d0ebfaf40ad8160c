"""Their side: llama-mtmd-cli with --perf, -lv 4, --log-jsonl --log-timestamps; its argv, and the
figures read from its log."""
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from .config import Config


def their_argv(cfg: Config, img: Path, a, bin_path: Path) -> list:
    """`a`: the bench's options (prompt, n_predict, threads, ctx, llama_warmup)."""
    argv = [bin_path, "-m", cfg.model, "--mmproj", cfg.mmproj, "--image", img, "-p", a.prompt,
            "-n", a.n_predict, "--temp", "0", "--ignore-eos", "-t", a.threads, "-c", a.ctx,
            "--perf", "-lv", "4", "--log-jsonl", "--log-timestamps", "--log-prefix"]
    if not a.llama_warmup:
        # Without its warm-up, llama.cpp's "auto" flash attention never resolves and the
        # projector falls back to plain attention; `-fa on` gives it the flash-attention kernel
        # it runs by default (with the warm-up), and that ours runs (--projector-attn flash),
        # without the warm-up's cost. The language model's "auto" resolves to on for the CPU
        # either way.
        argv += ["--no-warmup", "-fa", "on"]
    return argv


def cmake_cache_value(cache: Path, key: str) -> str | None:
    """The value of KEY in a CMakeCache.txt (`KEY:TYPE=value`), or None."""
    try:
        for line in cache.read_text(errors="replace").splitlines():
            if line.startswith(key + ":"):
                return line.split("=", 1)[1].strip()
    except OSError:
        return None
    return None


def log_entries(path_out: str, path_err: str) -> list[tuple[float | None, str, str]]:
    """(seconds since the log started or None, level, message) of every log entry: JSONL lines
    ({"type":"log","time":us,"level":..,"msg":..}) or, failing that, plain text lines."""
    entries = []
    for p in (path_out, path_err):
        try:
            text = Path(p).read_text(errors="replace")
        except OSError:
            continue
        entries += [log_entry(line) for line in text.splitlines()]
    return entries


def log_entry(line: str) -> tuple[float | None, str, str]:
    """One line of log_entries."""
    if line.startswith("{"):
        try:
            o = json.loads(line)
        except ValueError:
            o = None
        if isinstance(o, dict) and o.get("type") == "log":
            t = o.get("time")
            return (t / 1e6 if isinstance(t, (int, float)) and t else None,
                    str(o.get("level", "")), str(o.get("msg", "")))
    return None, "text", line + "\n"


PERF = {
    "load": re.compile(r"llama_perf_context_print:\s+load time =\s*([\d.]+) ms"),
    "prompt": re.compile(r"llama_perf_context_print:\s+prompt eval time =\s*([\d.]+) ms /\s*(\d+) tokens"),
    "eval": re.compile(r"llama_perf_context_print:\s+eval time =\s*([\d.]+) ms /\s*(\d+) runs"),
    "total": re.compile(r"llama_perf_context_print:\s+total time =\s*([\d.]+) ms /\s*(\d+) tokens"),
}
RE_LOADED = re.compile(r"^main: loading model:")
RE_BATCH_START = re.compile(r"encoding mtmd batch, n_chunks = (\d+)")
RE_BATCH_DONE = re.compile(r"mtmd batch encoding done in (\d+) ms")
RE_SLICE_DONE = re.compile(r"image slice encoded in (\d+) ms")  # older mtmd-cli path
RE_IMG_DECODE = re.compile(r"decoding image batch \d+/\d+, n_tokens_batch = (\d+)")
RE_IMG_DECODED = re.compile(r"image decoded \(batch \d+/\d+\) in (\d+) ms")


@dataclass
class LogScan:
    """What scan_log finds in a llama-mtmd-cli log."""
    perf: dict = field(default_factory=dict)  # PERF key -> the numbers of its line
    t_loaded: float | None = None
    batches: list = field(default_factory=list)  # (n_chunks, secs) per projector batch
    image_tokens: int = 0
    img_decode_ms: int = 0
    last_image_idx: int = -1  # index of the last entry of the image work
    first_perf_idx: int | None = None


def scan_log(entries: list) -> LogScan:
    s = LogScan()
    pending = None  # (n_chunks, t_start) of the batch being encoded
    for i, (t, _lvl, msg) in enumerate(entries):
        for k, rx in PERF.items():
            m = rx.search(msg)
            if m:
                s.perf[k] = [float(x) for x in m.groups()]
                if s.first_perf_idx is None:
                    s.first_perf_idx = i
        if s.t_loaded is None and RE_LOADED.search(msg):
            s.t_loaded = t
        m = RE_BATCH_START.search(msg)
        if m:
            pending = (int(m.group(1)), t)
        m = RE_BATCH_DONE.search(msg)
        if m:
            n, t0 = pending if pending else (1, None)
            secs = (t - t0) if (t is not None and t0 is not None) else int(m.group(1)) / 1000
            s.batches.append((n, secs))
            pending = None
            s.last_image_idx = i
        m = RE_SLICE_DONE.search(msg)
        if m:
            s.batches.append((1, int(m.group(1)) / 1000))
            s.last_image_idx = i
        m = RE_IMG_DECODE.search(msg)
        if m:
            s.image_tokens += int(m.group(1))
        m = RE_IMG_DECODED.search(msg)
        if m:
            s.img_decode_ms += int(m.group(1))
            s.last_image_idx = i
    return s


def generated_pieces(entries: list, s: LogScan, n_predict: int):
    """(time the prompt was done or None, [(time, piece)] of the generated text).

    The generated text: entries of level "none" (plain output) after the image work and before
    the perf print: a "\\n" that ends the prompt, n_predict pieces, a final "\\n\\n"."""
    end = s.first_perf_idx if s.first_perf_idx is not None else len(entries)
    outs = [(t, m) for t, lvl, m in entries[s.last_image_idx + 1:end] if lvl == "none"]
    t_prompt_done = None
    if outs and outs[0][1] == "\n":
        t_prompt_done = outs[0][0]
        outs = outs[1:]
    if len(outs) == n_predict + 1 and outs[-1][1].strip() == "":
        outs = outs[:-1]
    return t_prompt_done, outs[:n_predict]


def parse_theirs(rec: dict, n_predict: int) -> None:
    """Fills the common fields from llama-mtmd-cli's log (the record's stdout and stderr)."""
    entries = log_entries(rec["stdout"], rec["stderr"])
    stamped = any(t is not None for t, _, _ in entries)
    s = scan_log(entries)
    t_prompt_done, pieces = generated_pieces(entries, s, n_predict)
    chunk_secs = [secs / n for n, secs in s.batches for _ in range(n)]
    encode_s = sum(secs for _, secs in s.batches)
    rec["text"] = "".join(m for _, m in pieces)
    rec["n_generated"] = len(pieces) if stamped else None
    rec["log_timestamps"] = stamped
    prompt_n = s.perf.get("prompt", [None, None])[1]
    rec.update({
        "load_s": s.t_loaded,
        "encode_s": encode_s,
        "chunk_encode_s": chunk_secs,
        "n_chunks": len(chunk_secs),
        "image_tokens": s.image_tokens,
        "prompt_tokens": int(prompt_n) if prompt_n is not None else None,
        "perf": s.perf,
        "image_embd_decode_s": s.img_decode_ms / 1000,
    })
    add_prompt_timings(rec, s, encode_s, t_prompt_done)
    add_generation_timings(rec, s, pieces, stamped)
    if rec.get("n_generated") not in (None, n_predict):
        rec["warning"] = f"found {rec.get('n_generated')} generated pieces, expected {n_predict}"
    if "prompt" not in s.perf:
        # Seen once on a busy machine: the log ends after the generated text, without the perf
        # lines (llama.cpp's logger runs on its own thread). Timestamps still give TTFT and
        # decode; the prefill and prompt token count of this run are missing.
        rec["warning"] = "llama.cpp's perf lines are missing from its log: no prefill figure for this run"


def add_prompt_timings(rec: dict, s: LogScan, encode_s: float, t_prompt_done) -> None:
    """preprocess_s, prefill_s and the prompt speed, from the perf lines."""
    prompt_ms, prompt_n = s.perf.get("prompt", [None, None])
    # llama.cpp's "prompt eval time" runs from the first prompt decode call to the next
    # synchronisation; the projector's encodes happen in between, so it holds them: the
    # language-model prefill is prompt eval minus encode.
    if prompt_ms is not None and t_prompt_done is not None and s.t_loaded is not None:
        # Between the end of loading and the first prompt decode call: image file decode and
        # mtmd's preprocessing (slicing, resizing, normalising).
        rec["preprocess_s"] = max(0.0, t_prompt_done - prompt_ms / 1000 - s.t_loaded)
    if prompt_ms is not None:
        prefill = max(0.0, prompt_ms / 1000 - encode_s)
        rec["prefill_s"] = prefill
        rec["prompt_eval_s_incl_encode"] = prompt_ms / 1000
        rec["prompt_tok_s"] = prompt_n / prefill if prefill > 0 else None


def add_generation_timings(rec: dict, s: LogScan, pieces: list, stamped: bool) -> None:
    """decode speeds and the time to first token: from the timestamps of the generated pieces,
    or without timestamps from the perf lines."""
    eval_ms, eval_n = s.perf.get("eval", [None, None])
    total_ms = s.perf.get("total", [None])[0]
    if eval_ms is not None and eval_n:
        rec["decode_tok_s_own"] = eval_n * 1000 / eval_ms
    if stamped and pieces and pieces[0][0] is not None:
        rec["ttft_s"] = pieces[0][0]
        if len(pieces) > 1 and pieces[-1][0] is not None and pieces[-1][0] > pieces[0][0]:
            rec["decode_tok_s"] = (len(pieces) - 1) / (pieces[-1][0] - pieces[0][0])
    elif total_ms is not None and eval_ms is not None:
        # No timestamps: from the model load start to the perf print, minus the decode calls.
        rec["ttft_s"] = (total_ms - eval_ms) / 1000
        rec["decode_tok_s"] = rec.get("decode_tok_s_own")
        rec["warning"] = "no log timestamps: TTFT from perf total - eval"
