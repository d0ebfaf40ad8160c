"""The RPC section of the bench (`scripts/bench --rpc`): what the network hop of `--rpc` costs.

Two `minicpmv worker` processes on this machine (loopback), and `minicpmv run` on the headline pair
(default 2.6 real shape, Q4_K_M) two ways, in alternating order from round to round:
- local: the whole model in this process;
- rpc: `--rpc W1,W2 --rpc-split 0,1,1`, every layer on the workers, half each (the token
  embeddings stay in the client, as llama.cpp always keeps the input layer on the CPU).

One machine cannot show a speed-up (the boxes share its cores and memory bandwidth, and one box
computes at a time); what it shows is the cost of the hop: time per generated token, prefill and
load, rpc / local per round, geometric mean and 95% interval. The bytes between the client and the
workers come from the run's own `--json` (`rpc_traffic`: the kernel's TCP counters of ggml's
connections, payload only): in all (weights, prompt, answer) and per decode step of the answer. docs/SCALE.md reads the figures."""
import json
import os
import socket
import subprocess
import time
from pathlib import Path

from .measure import run_measured
from .ours import figures_of_run_json
from .stats import fmt, human_bytes, median, ratio_interval
from .util import log, write_json_atomic, write_text_atomic

SPLIT = "0,1,1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Worker:
    """A `minicpmv worker` on a free loopback port."""

    def __init__(self, ours_bin: Path, threads: int, logs: Path, name: str):
        self.port = free_port()
        logs.mkdir(parents=True, exist_ok=True)
        self.log = open(logs / f"{name}.log", "wb")
        self.proc = subprocess.Popen([str(ours_bin), "worker", "--port", str(self.port), "-t",
                                      str(threads)], stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        for _ in range(400):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"worker exited with {self.proc.returncode} (see {self.log.name})")
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"worker on port {self.port} did not listen")

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def peak_rss(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.log.close()


def run_argv(ours_bin: Path, model: Path, mmproj: Path, image: Path, threads: int, ctx: int,
             n: int, workers: list | None) -> list:
    argv = [ours_bin, "run", "-m", model, "--mmproj", mmproj, "--image", image, "-t", threads,
            "-c", ctx, "-n", n, "--ignore-eos", "--temp", "0", "--json", "-q"]
    if workers:
        argv += ["--rpc", ",".join(w.addr for w in workers), "--rpc-split", SPLIT]
    return argv


def one_run(argv: list, logs: Path, name: str, timeout: float) -> dict:
    rec = run_measured(argv, logs, name, timeout)
    if rec["exit_code"] != 0:
        raise RuntimeError(f"{name} failed (exit {rec['exit_code']}); see {rec['stderr']}")
    j = json.loads(Path(rec["stdout"]).read_text())
    rec.update(figures_of_run_json(j))
    rec["devices"] = j.get("devices", [])
    rec["token_ids"] = j.get("token_ids")
    rec["rpc_traffic"] = j.get("rpc_traffic")
    rec["ms_per_token"] = 1000.0 / rec["decode_tok_s"] if rec.get("decode_tok_s") else None
    return rec


def run_rpc_bench(ours_bin: Path, model: Path, mmproj: Path, image: Path, out: Path, logs: Path,
                  rounds: int, threads: int, ctx: int, n_predict: int, timeout: float,
                  commit: str, scale: str) -> dict:
    workers = [Worker(ours_bin, threads, logs, f"rpc-worker{i}") for i in (1, 2)]
    runs = []
    try:
        for r in range(rounds):
            order = ["local", "rpc"] if r % 2 == 0 else ["rpc", "local"]
            for side in order:
                argv = run_argv(ours_bin, model, mmproj, image, threads, ctx, n_predict,
                                workers if side == "rpc" else None)
                rec = one_run(argv, logs, f"rpc-r{r}-{side}", timeout)
                rec.update(side=side, round=r)
                log(f"round {r} {side}: {fmt(rec['ms_per_token'], '{:.1f}')} ms/token, prefill "
                    f"{fmt(rec['prefill_s'], '{:.2f}')} s, load {fmt(rec['load_s'], '{:.2f}')} s")
                runs.append(rec)
        worker_rss = [w.peak_rss() for w in workers]
    finally:
        for w in workers:
            w.stop()
    result = summarize(runs, worker_rss, dict(
        model=str(model), mmproj=str(mmproj), image=str(image), threads=threads, ctx=ctx,
        n_predict=n_predict, rounds=rounds, split=SPLIT, commit=commit, scale=scale))
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "results.json", result)
    write_text_atomic(out / "results.md", render(result))
    return result


def summarize(runs: list, worker_rss: list, settings: dict) -> dict:
    by = {(r["round"], r["side"]): r for r in runs}
    rounds = sorted({r["round"] for r in runs})
    metrics = {}
    for key in ("ms_per_token", "prefill_s", "ttft_s", "load_s", "peak_rss_mib"):
        ratios = [by[(i, "rpc")][key] / by[(i, "local")][key] for i in rounds
                  if by[(i, "rpc")].get(key) and by[(i, "local")].get(key)]
        metrics[key] = {
            "local_median": median([by[(i, "local")][key] for i in rounds]),
            "rpc_median": median([by[(i, "rpc")][key] for i in rounds]),
            "ratios": ratios,
            "ratio_interval": ratio_interval(ratios),
        }
    same_tokens = all(by[(i, "rpc")]["token_ids"] == by[(i, "local")]["token_ids"] for i in rounds)
    traffic = [r["rpc_traffic"] for r in runs if r["side"] == "rpc" and r.get("rpc_traffic")]
    return {"settings": settings, "metrics": metrics, "same_tokens": same_tokens,
            "rpc_bytes_per_token": median([t.get("bytes_per_token") for t in traffic]),
            "rpc_total_bytes": median([t.get("total_bytes") for t in traffic]),
            "worker_peak_rss_bytes": worker_rss,
            "devices": by[(rounds[0], "rpc")]["devices"], "runs": runs}


def render(res: dict) -> str:
    s = res["settings"]
    lines = [
        "# `--rpc` over loopback: what the network hop costs",
        "",
        f"`scripts/bench --rpc` at {s['commit']}: {Path(s['model']).name} + {Path(s['mmproj']).name} "
        f"({s['scale']}), {s['rounds']} rounds in alternating order, -t {s['threads']}, -c {s['ctx']}, "
        f"-n {s['n_predict']} (--ignore-eos, greedy). rpc: two `minicpmv worker` on this machine, "
        f"`--rpc-split {s['split']}` (every layer on the workers, half each).",
        "",
        "One machine cannot show a speed-up: the boxes share its cores, and one box computes at a "
        "time. These figures are the cost of the hop.",
        "",
        "| figure | local (median) | rpc (median) | rpc / local | 95% interval |",
        "|---|---|---|---|---|",
    ]
    names = {"ms_per_token": "time per generated token (ms)", "prefill_s": "prefill (s)",
             "ttft_s": "time to first token (s)", "load_s": "load (s)",
             "peak_rss_mib": "client peak RSS (MiB)"}
    for key, m in res["metrics"].items():
        iv = m["ratio_interval"]
        ratio = f"{iv[0]:.2f}" if iv else (f"{m['ratios'][0]:.2f}" if m["ratios"] else "–")
        interval = f"{iv[1]:.2f}–{iv[2]:.2f}" if iv else "–"
        lines.append(f"| {names[key]} | {fmt(m['local_median'], '{:.2f}')} | {fmt(m['rpc_median'], '{:.2f}')} | "
                     f"{ratio} | {interval} |")
    lines += [
        "",
        f"- Same greedy tokens in every round: {'yes' if res['same_tokens'] else 'NO'}.",
        f"- Traffic per decode step of the answer between the client and the workers (payload, "
        f"both directions, `rpc_traffic.bytes_per_token`, median): {human_bytes(res['rpc_bytes_per_token'])}. "
        f"The first step after the prompt sends the one-token graph whole; later ones reuse it.",
        f"- Traffic of one rpc run of -n {s['n_predict']} (weights sent at load, prompt, answer): "
        f"{human_bytes(res['rpc_total_bytes'])}.",
        f"- Worker peak RSS: {', '.join(human_bytes(b) for b in res['worker_peak_rss_bytes'])}.",
        "- Memory per device in the rpc run (llama.cpp's breakdown; the client's CPU weights are "
        "the token embeddings, which llama.cpp always keeps local):",
        "",
        "| device | where | weights | KV cache | compute |",
        "|---|---|---|---|---|",
    ]
    for d in res["devices"]:
        lines.append(f"| {d['name']} | {d['description'] or 'this process'} | {human_bytes(d['weights'])} | "
                     f"{human_bytes(d['kv_cache'])} | {human_bytes(d['compute'])} |")
    lines += ["", "Per round:", "", "| round | side | ms/token | prefill s | load s | peak RSS MiB |",
              "|---|---|---|---|---|---|"]
    for r in res["runs"]:
        lines.append(f"| {r['round']} | {r['side']} | {fmt(r['ms_per_token'], '{:.1f}')} | {fmt(r['prefill_s'], '{:.2f}')} | "
                     f"{fmt(r['load_s'], '{:.2f}')} | {fmt(r['peak_rss_mib'], '{:.0f}')} |")
    return "\n".join(lines) + "\n"
