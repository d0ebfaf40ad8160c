"""The run series of a bench: per configuration one untimed warm-up of each side, then A/B pairs
in counterbalanced order; on the headline, our --max-slices sweep and the --low-mem series."""
from pathlib import Path

from .config import Config
from .image import write_png
from .measure import run_measured
from .ours import ours_argv, parse_ours
from .stats import fmt, with_derived
from .theirs import parse_theirs, their_argv
from .util import die, log


class Runner:
    """Runs one measured process after another, numbering them, and keeps their records."""

    def __init__(self, logs: Path, timeout: float, n_predict: int):
        self.logs, self.timeout, self.n_predict = logs, timeout, n_predict
        self.runs: list[dict] = []

    def run(self, side: str, cfg: Config, series: str, pair: int | None, argv: list,
            **extra) -> dict:
        """One measured run of `side` ("ours", "ours --low-mem" or "llama.cpp"); dies if it fails."""
        order = len(self.runs) + 1
        name = f"{order:03d}-{cfg.label.replace(':', '_')}-{series}-{side.replace('.', '')}"
        log(f"run {order}: {side} {cfg.label} {series}"
            f"{'' if pair is None else f' pair {pair}'} {extra or ''}")
        rec = run_measured(argv, self.logs, name, self.timeout)
        rec.update({"side": side, "config": cfg.label, "series": series, "pair": pair,
                    "order": order, **extra})
        if rec["exit_code"] != 0:
            tail = Path(rec["stderr"]).read_text(errors="replace").strip().splitlines()[-5:]
            die(f"{side} run failed (exit {rec['exit_code']}; logs {rec['stderr']}):\n  "
                + "\n  ".join(tail))
        (parse_ours if side.startswith("ours") else parse_theirs)(rec, self.n_predict)
        with_derived(rec)
        if rec.get("warning"):
            log(f"  warning: {rec['warning']}")
        log(f"  wall {fmt(rec.get('wall_s'))} s, TTFT {fmt(rec.get('ttft_s'))} s, "
            f"decode {fmt(rec.get('decode_tok_s'))} tok/s, peak RSS {fmt(rec.get('peak_rss_mib'), '{:.0f}')} MiB")
        self.runs.append(rec)
        return rec


def run_ab_series(runner: Runner, configs: list[Config], headline: Config, img: Path,
                  warm_img: Path, a, their_bin: Path) -> None:
    """Per configuration: the warm-ups, then a.pairs A/B pairs (a.secondary_pairs after the
    headline)."""
    if not warm_img.exists():
        write_png(warm_img, 64, 64)
    for cfg in configs:
        ours_cmd = ours_argv(cfg, img, a)
        their_cmd = their_argv(cfg, img, a, their_bin)
        # Untimed warm-up of each side on a one-chunk image: both then read the model files
        # from the page cache.
        runner.run("ours", cfg, "warmup", None, ours_argv(cfg, warm_img, a))
        runner.run("llama.cpp", cfg, "warmup", None, their_argv(cfg, warm_img, a, their_bin))
        n_pairs = a.pairs if cfg is headline else a.secondary_pairs
        # Counterbalanced order (A B, B A, A B, ...): a machine that drifts during the series
        # (other tenants, memory placement) then favours neither side.
        for p in range(1, n_pairs + 1):
            sides = [("ours", ours_cmd), ("llama.cpp", their_cmd)]
            for side, cmd in (sides if p % 2 else sides[::-1]):
                runner.run(side, cfg, "ab", p, cmd)


def run_slices_sweep(runner: Runner, headline: Config, img: Path, a, slices: list[int]) -> None:
    """Ours on the headline at each --max-slices value, a.series_runs times."""
    for k in slices:
        if k == 9:
            continue  # the A/B runs are the 9-slice point (the default)
        for i in range(1, a.series_runs + 1):
            runner.run("ours", headline, "slices", i, ours_argv(headline, img, a, max_slices=k),
                       max_slices=k)


def run_lowmem_series(runner: Runner, headline: Config, img: Path, a) -> None:
    """Ours --low-mem on the headline, a.series_runs times."""
    for i in range(1, a.series_runs + 1):
        runner.run("ours --low-mem", headline, "lowmem", i, ours_argv(headline, img, a, low_mem=True))
