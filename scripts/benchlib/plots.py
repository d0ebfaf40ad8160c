"""The four plots of a result (results.json), written as SVG files beside results.md."""
from pathlib import Path

from .config import Config
from .stats import fmt, median, n_pairs, pairs_text
from .util import write_text_atomic
from .svg import COLORS, bar_panel, stacked_panel, svg_doc


def write_svgs(out: Path, res: dict, configs: list[Config], headline: Config) -> None:
    s = res["settings"]
    setup = f"{s['image_size']} image, {s['threads']} threads, -n {s['n_predict']}, -c {s['ctx']}"
    sub_all = f"{setup}; medians of " + ", ".join(
        f"{pairs_text(n_pairs(res, c.label))} ({c.label})" for c in configs)
    quick = ["QUICK MODE: tiny synthetic model, the figures are not a measurement"] if s["quick"] else []
    write_text_atomic(out / "ttft-vs-slices.svg", ttft_vs_slices_svg(res, headline, setup, quick))
    write_text_atomic(out / "peak-rss.svg", peak_rss_svg(res, configs, headline, sub_all, quick))
    write_text_atomic(out / "decode-vs-ceiling.svg",
                      decode_vs_ceiling_svg(res, configs, headline, sub_all, quick))
    write_text_atomic(out / "ab-pairs.svg", ab_pairs_svg(res, configs, setup, quick))


def ttft_vs_slices_svg(res: dict, headline: Config, setup: str, quick: list[str]) -> str:
    """Time to first token vs --max-slices: stacked parts, llama.cpp (always 9 slices) beside."""
    bars = ttft_bars(res, headline)
    comps = [("load", "#718096"), ("image encode", "#805ad5"), ("language-model prefill", "#3182ce"),
             ("other (image decode, preprocessing, context setup)", "#cbd5e0")]
    w = max(760, 200 * len(bars) + 100)
    svg = stacked_panel(0, 0, w, 460, "Time to first token vs --max-slices", bars, comps, "seconds",
                        subtitles=[f"{headline.title}; bar label = time to first token",
                                   f"{setup}; --max-slices 9 and llama.cpp: medians of "
                                   f"{pairs_text(n_pairs(res, headline.label))}{sweep_runs_text(res)}",
                                   *quick])
    return svg_doc(w, 460, svg, "Time to first token vs --max-slices")


def ttft_bars(res: dict, headline: Config) -> list:
    """(label, [load, encode, prefill], TTFT) per sweep point, then llama.cpp's."""
    bars = []
    for p in res["slices_sweep"]:
        bars.append((f"ours, --max-slices {p['max_slices']}\n{fmt(p['n_chunks'], '{:.0f}')} projector calls, "
                     f"{fmt(p['prompt_tokens'], '{:.0f}')} tokens",
                     [p["load_s"], p["encode_s"], p["prefill_s"]], p["ttft_s"]))
    hs = res["summaries"][headline.label]
    theirs_runs = [r for r in res["runs"] if r["config"] == headline.label and r["series"] == "ab"
                   and r["side"] == "llama.cpp"]
    if theirs_runs:
        bars.append((f"llama.cpp (always 9)\n{fmt(median(r.get('n_chunks') for r in theirs_runs), '{:.0f}')} "
                     f"projector calls, {fmt(hs['prompt_tokens']['llama.cpp'], '{:.0f}')} tokens",
                     [hs["load_s"]["llama.cpp"], hs["encode_s"]["llama.cpp"], hs["prefill_s"]["llama.cpp"]],
                     hs["ttft_s"]["llama.cpp"]))
    return bars


def sweep_runs_text(res: dict) -> str:
    """How many runs the sweep points other than 9 (the A/B runs) have, for the subtitle."""
    others = [p for p in res["slices_sweep"] if p["max_slices"] != 9]
    if not others:
        return ""
    counts = sorted({p["n_runs"] for p in others})
    return ("; --max-slices " + " and ".join(str(p["max_slices"]) for p in others) + ": "
            + (f"{counts[0]} run{'s' if counts[0] != 1 else ''} each" if len(counts) == 1
               else "/".join(str(p["n_runs"]) for p in others) + " runs"))


def panel_width(configs: list[Config]) -> int:
    return max(760, 240 * len(configs) + 100)


def config_groups(configs: list[Config]) -> list[str]:
    return [c.label.replace(":", " ") for c in configs]


def peak_rss_svg(res: dict, configs: list[Config], headline: Config, sub_all: str,
                 quick: list[str]) -> str:
    """Peak RSS: llama.cpp vs ours default vs ours --low-mem, per configuration."""
    lm = res["lowmem"]
    rss = [(res["summaries"][c.label]["peak_rss_mib"], lm["peak_rss_mib"] if lm and c == headline else None)
           for c in configs]
    big = max([v for r, low in rss for v in (r["ours"], r["llama.cpp"], low) if v] + [0]) >= 2048
    conv = (lambda v: None if v is None else v / 1024) if big else (lambda v: v)
    series = [("llama.cpp", COLORS["llama.cpp"], [conv(r["llama.cpp"]) for r, _ in rss]),
              ("ours", COLORS["ours"], [conv(r["ours"]) for r, _ in rss])]
    if lm:
        series.append(("ours --low-mem", COLORS["ours --low-mem"], [conv(low) for _, low in rss]))
    w = panel_width(configs)
    svg = bar_panel(0, 0, w, 420, "Peak resident memory (RSS)", config_groups(configs), series,
                    "GiB" if big else "MiB", "{:.2f}" if big else "{:.0f}",
                    subtitles=["/usr/bin/time -v maximum resident set size; memory-mapped model pages "
                               "that were touched count", sub_all, *quick])
    return svg_doc(w, 420, svg, "Peak RSS")


def decode_vs_ceiling_svg(res: dict, configs: list[Config], headline: Config, sub_all: str,
                          quick: list[str]) -> str:
    """Decode speed of both sides vs the bandwidth ceiling, per configuration."""
    s = res["settings"]
    vo = [res["summaries"][c.label]["decode_tok_s"]["ours"] for c in configs]
    vt = [res["summaries"][c.label]["decode_tok_s"]["llama.cpp"] for c in configs]
    vc = [res["decode_ceiling"][c.label]["ceiling_tok_s"] for c in configs]
    bwv = res["decode_ceiling"][headline.label]["bandwidth_gbs"]
    w = panel_width(configs)
    svg = bar_panel(0, 0, w, 420, "Decode speed vs memory-bandwidth ceiling", config_groups(configs),
                    [("ours", COLORS["ours"], vo), ("llama.cpp", COLORS["llama.cpp"], vt),
                     ("ceiling", COLORS["ceiling"], vc)], "tokens / second", "{:.2f}", outline={"ceiling"},
                    subtitles=[f"ceiling = read bandwidth ({bwv:.1f} GB/s, {s['threads']} threads) / bytes "
                               "read per generated token", sub_all, *quick])
    return svg_doc(w, 420, svg, "Decode speed vs ceiling")


RATIO_KEYS = [("wall_s", "wall"), ("ttft_s", "TTFT"), ("encode_s", "image encode"),
              ("prefill_s", "LM prefill"), ("decode_tok_s", "decode tok/s"), ("peak_rss_mib", "peak RSS")]
PAIR_PALETTE = ["#2b6cb0", "#63b3ed", "#2c5282", "#90cdf4", "#4299e1", "#bee3f8"]


def ab_pairs_svg(res: dict, configs: list[Config], setup: str, quick: list[str]) -> str:
    """Per-pair ratios ours / llama.cpp: one panel per configuration, one bar per pair."""
    panels, y, ph = "", 0, 420
    for c in configs:
        sm = res["summaries"][c.label]
        n = max(len(sm[k]["ratios"]) for k, _ in RATIO_KEYS)
        series = [(f"pair {i + 1}", PAIR_PALETTE[i % len(PAIR_PALETTE)],
                   [sm[k]["ratios"][i] if i < len(sm[k]["ratios"]) else None for k, _ in RATIO_KEYS])
                  for i in range(n)]
        panels += bar_panel(0, y, 860, ph, f"ours / llama.cpp per A/B pair: {c.title}",
                            [f"{lab}\n({'higher' if k == 'decode_tok_s' else 'lower'} is better)"
                             for k, lab in RATIO_KEYS], series, "ratio ours / llama.cpp", "{:.2f}", ref=1.0,
                            ref_label="1 = same as llama.cpp",
                            subtitles=["times and RSS: below 1 = ours faster / smaller; decode tok/s: "
                                       "above 1 = ours faster", f"{setup}; one bar per A/B pair", *quick])
        y += ph + 10
    return svg_doc(860, y, panels, "A/B ratios")
