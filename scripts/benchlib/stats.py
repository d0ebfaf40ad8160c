"""Statistics of the runs: medians, per-pair ratios ours / llama.cpp with their 95% intervals,
the A/B pairs of a result, and the number formatting of the tables."""
import math
import statistics

METRICS = [  # key, label, unit, scale, format, better
    ("wall_s", "end-to-end wall time", "s", 1, "{:.2f}", "lower"),
    ("ttft_s", "time to first token", "s", 1, "{:.2f}", "lower"),
    ("load_s", "load (model + projector)", "s", 1, "{:.2f}", "lower"),
    ("encode_s", "image encode, total", "s", 1, "{:.2f}", "lower"),
    ("per_slice_ms", "image encode, per projector call", "ms", 1, "{:.0f}", "lower"),
    ("prefill_s", "language-model prefill", "s", 1, "{:.2f}", "lower"),
    ("prompt_tok_s", "prefill speed", "tok/s", 1, "{:.1f}", "higher"),
    ("decode_tok_s", "decode speed", "tok/s", 1, "{:.2f}", "higher"),
    ("peak_rss_mib", "peak RSS", "MiB", 1, "{:.0f}", "lower"),
    ("prompt_tokens", "prompt tokens", "", 1, "{:.0f}", None),
]


def with_derived(r: dict) -> dict:
    """Adds per_slice_ms (the median projector call) to a run record."""
    ch = r.get("chunk_encode_s") or []
    if ch:
        r["per_slice_ms"] = 1000 * statistics.median(ch)
    return r


def median(vals) -> float | None:
    """The median of the numbers among vals (None and the like left out); None if none."""
    v = [x for x in vals if isinstance(x, (int, float))]
    return statistics.median(v) if v else None


def human_bytes(n: float | None) -> str:
    if n is None:
        return "–"
    for unit, k in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= k:
            return f"{n / k:.2f} {unit}"
    return f"{n:.0f} B"


def fmt(v, f="{:.2f}") -> str:
    return "–" if v is None else f.format(v)


# Two-sided 95% quantiles of Student's t distribution, by degrees of freedom (1..30).
T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
       2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
       2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def ratio_interval(ratios) -> tuple[float, float, float] | None:
    """Geometric mean of the per-pair ratios and its 95% confidence interval (t interval on the
    mean of the log ratios; pairs taken as independent). None below two pairs."""
    logs = [math.log(r) for r in ratios if isinstance(r, (int, float)) and r > 0]
    n = len(logs)
    if n < 2:
        return None
    m = statistics.fmean(logs)
    h = (T95[n - 2] if n - 1 <= len(T95) else 1.96) * statistics.stdev(logs) / math.sqrt(n)
    return math.exp(m), math.exp(m - h), math.exp(m + h)


def interval_text(x: dict) -> str:
    iv = x.get("ratio_interval")
    return "–" if not iv else f"{iv[1]:.2f}–{iv[2]:.2f}"


def ab_summary(runs: list[dict], label: str) -> dict:
    """Per metric of a configuration's A/B runs: the median of each side, the per-pair ratios
    ours / llama.cpp (None where a side lacks the figure), their median and interval."""
    ours = [r for r in runs if r["config"] == label and r["series"] == "ab" and r["side"] == "ours"]
    theirs = [r for r in runs
              if r["config"] == label and r["series"] == "ab" and r["side"] == "llama.cpp"]
    pairs = {}
    for r in ours + theirs:
        pairs.setdefault(r["pair"], {})[r["side"]] = r
    out = {}
    for key, *_ in METRICS:
        ratios = []
        for p in sorted(pairs):
            a, b = pairs[p].get("ours", {}).get(key), pairs[p].get("llama.cpp", {}).get(key)
            ratios.append(a / b if isinstance(a, (int, float)) and isinstance(b, (int, float))
                          and b else None)
        out[key] = {"ours": median(r.get(key) for r in ours),
                    "llama.cpp": median(r.get(key) for r in theirs),
                    "ratios": ratios,
                    "ratio_median": median(ratios),
                    "ratio_interval": ratio_interval(ratios)}
    return out


def n_pairs(res: dict, label: str) -> int:
    """A/B pairs that were run for a configuration."""
    return len({r["pair"] for r in res["runs"] if r["config"] == label and r["series"] == "ab"})


def pairs_text(n: int) -> str:
    return f"{n} A/B pair{'s' if n != 1 else ''}"


def pair_order_text(res: dict, label: str) -> str:
    """Which side ran first in the A/B pairs of a configuration, from the runs' order."""
    first: dict = {}
    for r in sorted(res["runs"], key=lambda r: r["order"]):
        if r["config"] == label and r["series"] == "ab":
            first.setdefault(r["pair"], r["side"])
    n_ours = sum(1 for side in first.values() if side == "ours")
    n_theirs = len(first) - n_ours
    if n_theirs == 0:
        return "ours first in every pair"
    if n_ours == 0:
        return "llama.cpp first in every pair"
    return f"counterbalanced: ours first in {n_ours}, llama.cpp first in {n_theirs}"
