"""The server section of the bench (`scripts/bench --server`): `minicpmv serve` against the
OpenAI-compatible server of PyPI's llama-cpp-python (llama.cpp built from source with native flags,
its MiniCPM-V 2.6 chat handler), on the same real-shape 2.6 pair, over the same HTTP requests:

- load: from start to answering (`/health` 200 for ours, `/v1/models` 200 for theirs);
- the cache effect: time to first token of a first and a second question about one image;
- 1, 2 and 4 concurrent clients, each with an image of its own: time to first token per client
  (queue wait included) and the tokens per second of the whole burst;
- peak RSS of the server process.

The two servers never run at the same time (2 cores). Rounds alternate which side goes first
(ours, theirs; theirs, ours; ...); each round starts its server afresh, so caches start empty. All
requests are greedy and streamed; time to first token is measured by the client, at the first
content chunk. Images are 448 pixels or less on each side, one projector call each (no slices),
and each is used in one round of one side only once per scenario."""
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from .image import write_png
from .stats import fmt, median, ratio_interval
from .util import log, write_json_atomic, write_text_atomic

LEVELS = (1, 2, 4)
QUESTIONS = ("Describe this image.", "What colours are in it?")


def ours_server_argv(bin_path: Path, model: Path, mmproj: Path, port: int, threads: int, ctx: int) -> list[str]:
    return [str(bin_path), "serve", "-m", str(model), "--mmproj", str(mmproj), "--host", "127.0.0.1",
            "--port", str(port), "-t", str(threads), "-c", str(ctx), "--max-queue", "8"]


def theirs_server_argv(model: Path, mmproj: Path, port: int, threads: int, ctx: int) -> list[str]:
    return [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--clip_model_path", str(mmproj),
            "--chat_format", "minicpm-v-2.6", "--host", "127.0.0.1", "--port", str(port),
            "--n_threads", str(threads), "--n_threads_batch", str(threads), "--n_ctx", str(ctx),
            # Its default (True) ends a streamed answer after its first chunk as soon as another
            # request waits: under concurrency most answers would be lost, not served.
            "--interrupt_requests", "False"]


def image_sizes(n: int) -> list[tuple[int, int]]:
    """n distinct sizes of at most 448x448 (one projector call each for MiniCPM-V 2.6)."""
    return [(448 - k, 448) for k in range(n)]


def request_body(image_b64: str, question: str, n_predict: int, ours: bool) -> dict:
    body = {"model": "minicpmv", "stream": True, "temperature": 0, "max_tokens": n_predict,
            "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64," + image_b64}},
                {"type": "text", "text": question}]}]}
    if ours:
        body["ignore_eos"] = True  # the same token count every time (theirs has no such field)
    return body


def content_of(line: bytes) -> str | None:
    """The delta content of one SSE line of a streamed chat completion (None if there is none)."""
    line = line.strip()
    if not line.startswith(b"data:"):
        return None
    data = line[5:].strip()
    if data == b"[DONE]":
        return None
    try:
        chunk = json.loads(data)
    except ValueError:
        return None
    for c in chunk.get("choices") or []:
        content = (c.get("delta") or {}).get("content")
        if content:
            return content
    return None


def ask(port: int, body: dict, timeout: float) -> dict:
    """One streamed request: seconds to the first content chunk, to the end, and content chunks."""
    t0 = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:300]!r}")
    ttft, chunks = None, 0
    for line in resp:
        if content_of(line) is not None:
            chunks += 1
            if ttft is None:
                ttft = time.monotonic() - t0
    conn.close()
    return {"ttft_s": ttft, "total_s": time.monotonic() - t0, "tokens": chunks}


def burst(port: int, bodies: list[dict], timeout: float) -> dict:
    """The bodies sent at once by one client thread each."""
    out: list = [None] * len(bodies)
    errors: list = []

    def client(i: int) -> None:
        try:
            out[i] = ask(port, bodies[i], timeout)
        except Exception as e:  # noqa: BLE001 - reported below, with the client's number
            errors.append(f"client {i}: {e}")
    t0 = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    wall = time.monotonic() - t0
    if errors or any(r is None for r in out):
        raise RuntimeError("; ".join(errors) or "a client did not finish")
    tokens = sum(r["tokens"] for r in out)
    return {"clients": out, "wall_s": wall, "ttft_median_s": median(r["ttft_s"] for r in out),
            "ttft_max_s": max((r["ttft_s"] for r in out if r["ttft_s"] is not None), default=None), "tokens": tokens, "throughput_tok_s": tokens / wall}


def wait_ready(proc: subprocess.Popen, port: int, path: str, timeout: float) -> float:
    """Seconds until GET path answers 200; dies with the log if the process ends first."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} before it was ready")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return time.monotonic() - t0
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"not ready after {timeout} s")


def peak_rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_round(side: str, argv: list[str], port: int, ready_path: str, images: list[str], n_predict: int,
              log_path: Path, timeout: float) -> dict:
    """One server start and every scenario on it; images[0] is the cache pair's, then one per
    client of each level."""
    with open(log_path, "ab") as logf:
        proc = subprocess.Popen(argv, stdout=logf, stderr=logf, start_new_session=True)
        try:
            load_s = wait_ready(proc, port, ready_path, timeout)
            ours = side == "ours"
            first = ask(port, request_body(images[0], QUESTIONS[0], n_predict, ours), timeout)
            second = ask(port, request_body(images[0], QUESTIONS[1], n_predict, ours), timeout)
            levels, k = {}, 1
            for n in LEVELS:
                bodies = [request_body(images[k + i], QUESTIONS[0], n_predict, ours) for i in range(n)]
                k += n
                levels[str(n)] = burst(port, bodies, timeout)
            rss = peak_rss_mib(proc.pid)
        finally:
            stop(proc)
    return {"side": side, "load_s": load_s, "first_ttft_s": first["ttft_s"], "second_ttft_s": second["ttft_s"],
            "first": first, "second": second, "levels": levels, "peak_rss_mib": rss}


METRICS = [  # key, label, better
    ("load_s", "load, until the server answers", "lower"),
    ("first_ttft_s", "time to first token, first question about an image", "lower"),
    ("second_ttft_s", "time to first token, second question about the same image", "lower"),
] + [(f"ttft_{n}", f"time to first token, median of {n} concurrent client{'s' if n > 1 else ''}", "lower")
     for n in LEVELS] + [(f"tput_{n}", f"throughput, {n} concurrent client{'s' if n > 1 else ''} (tok/s)", "higher")
                         for n in LEVELS] + [("peak_rss_mib", "peak RSS (MiB)", "lower"), ("tokens", "tokens per answer, median", None),
       ("delivered", "answers with at least one token, share", "higher")]


def flat(r: dict) -> dict:
    """The figures of one round, by METRICS key."""
    out = {k: r.get(k) for k in ("load_s", "first_ttft_s", "second_ttft_s", "peak_rss_mib")}
    answers = [r["first"], r["second"]] + [c for lv in r["levels"].values() for c in lv["clients"]]
    out["tokens"] = median(a["tokens"] for a in answers)
    out["delivered"] = sum(1 for a in answers if a["tokens"] > 0) / len(answers)
    for n in LEVELS:
        lv = r["levels"].get(str(n)) or {}
        out[f"ttft_{n}"] = lv.get("ttft_median_s")
        out[f"tput_{n}"] = lv.get("throughput_tok_s")
    return out


def summarize(rounds: list[dict]) -> dict:
    """Per metric: each side's median over rounds, the per-round ratios ours / theirs, their
    median and 95% interval (rounds as pairs)."""
    by_round: dict = {}
    for r in rounds:
        by_round.setdefault(r["round"], {})[r["side"]] = flat(r)
    out = {}
    for key, _, _ in METRICS:
        ours = [p["ours"][key] for p in by_round.values() if "ours" in p]
        theirs = [p["theirs"][key] for p in by_round.values() if "theirs" in p]
        ratios = [p["ours"][key] / p["theirs"][key] for p in by_round.values()
                  if "ours" in p and "theirs" in p and p["ours"][key] and p["theirs"][key]]
        out[key] = {"ours": median(ours), "theirs": median(theirs), "ratios": ratios,
                    "ratio_median": median(ratios), "ratio_interval": ratio_interval(ratios)}
    return out


def render(result: dict) -> str:
    s = result["settings"]
    summary = result["summary"]
    lines = [
        "# Server benchmark: `minicpmv serve` vs llama-cpp-python's server",
        "",
        f"Written by `scripts/bench --server` on {result['date']}, commit `{result['commit']}`. "
        f"Model: {s['scale']}-shape synthetic MiniCPM-V 2.6 (`{s['model']}` + `{s['mmproj']}`), "
        f"{s['threads']} threads, context {s['ctx']}, {s['n_predict']} tokens per answer, greedy, streamed. "
        f"Theirs: llama-cpp-python {s['theirs_version']} (`python3 -m llama_cpp.server --chat_format minicpm-v-2.6`, "
        "llama.cpp built from source by pip with CMake defaults, GGML_NATIVE on). "
        f"{s['rounds']} rounds, each server started afresh per round, sides alternating first. "
        "Images: 448x448 or smaller (one projector call each), a new one per request but for the "
        "second question, which asks about the first question's image.",
        "",
        "| metric | ours | theirs | ours / theirs (median of rounds) | 95% interval | per round | better |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, label, better in METRICS:
        x = summary[key]
        iv = x["ratio_interval"]
        lines.append(f"| {label} | {fmt(x['ours'])} | {fmt(x['theirs'])} | **{fmt(x['ratio_median'])}** | "
                     f"{'–' if not iv else f'{iv[1]:.2f}–{iv[2]:.2f}'} | "
                     f"{', '.join(f'{r:.2f}' for r in x['ratios'])} | {better or ''} |")
    lines += ["", "Times in seconds unless marked. Every request of every round: [results.json](results.json)."]
    return "\n".join(lines) + "\n"


def images_b64(folder: Path, n: int) -> list[str]:
    import base64
    out = []
    for w, h in image_sizes(n):
        p = folder / f"server-image-{w}x{h}.png"
        if not p.exists():
            write_png(p, w, h)
        out.append(base64.b64encode(p.read_bytes()).decode())
    return out


def llama_cpp_python_version() -> str | None:
    r = subprocess.run([sys.executable, "-c", "import llama_cpp; print(llama_cpp.__version__)"],
                       capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else None


def run_server_bench(ours_bin: Path, model: Path, mmproj: Path, out_dir: Path, logs: Path, rounds: int,
                     threads: int, ctx: int, n_predict: int, timeout: float, commit: str, scale: str) -> dict:
    """The whole section; writes out_dir/results.json and results.md."""
    version = llama_cpp_python_version()
    if version is None:
        raise RuntimeError("llama-cpp-python is not installed: pip install 'llama-cpp-python[server]'")
    logs.mkdir(parents=True, exist_ok=True)
    images = images_b64(logs, 1 + sum(LEVELS))
    port = 18600 + os.getpid() % 1000
    sides = {
        "ours": (ours_server_argv(ours_bin, model, mmproj, port, threads, ctx), "/health"),
        "theirs": (theirs_server_argv(model, mmproj, port, threads, ctx), "/v1/models"),
    }
    results = []
    for rnd in range(rounds):
        order = ["ours", "theirs"] if rnd % 2 == 0 else ["theirs", "ours"]
        for side in order:
            argv, ready = sides[side]
            log(f"server bench: round {rnd + 1}/{rounds}, {side}")
            r = run_round(side, argv, port, ready, images, n_predict, logs / f"server-{side}-{rnd}.log", timeout)
            r["round"] = rnd
            results.append(r)
            log(f"  load {r['load_s']:.1f} s, first TTFT {r['first_ttft_s']:.1f} s, second {r['second_ttft_s']:.1f} s")
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": commit,
        "settings": {"scale": scale, "model": model.name, "mmproj": mmproj.name, "threads": threads, "ctx": ctx,
                     "n_predict": n_predict, "rounds": rounds, "theirs_version": version,
                     "ours_argv": sides["ours"][0], "theirs_argv": sides["theirs"][0]},
        "rounds": results,
        "summary": summarize(results),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / "results.json", result)
    write_text_atomic(out_dir / "results.md", render(result))
    return result
