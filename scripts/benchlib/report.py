"""results.md (every table of a result), and the headline section of docs/BENCHMARKS.md."""
from pathlib import Path

from .config import Config
from .ours import weight_repack
from .stats import (METRICS, fmt, human_bytes, interval_text, median, n_pairs, pair_order_text,
                    pairs_text)
from .util import log, write_text_atomic

HEADLINE_START = "<!-- bench:headline:start (written by scripts/bench; do not edit by hand) -->"
HEADLINE_END = "<!-- bench:headline:end -->"


def fill_headline(doc: Path, res: dict, headline: Config) -> None:
    """Replaces the marked headline section of docs/BENCHMARKS.md with this run's figures."""
    try:
        text = doc.read_text()
    except OSError:
        return
    i, j = text.find(HEADLINE_START), text.find(HEADLINE_END)
    if i < 0 or j < i:
        log(f"note: {doc} has no headline markers; not updated")
        return
    write_text_atomic(doc, text[:i] + "\n".join(headline_lines(res, headline)) + text[j + len(HEADLINE_END):])
    log(f"updated the headline section of {doc}")


def headline_lines(res: dict, headline: Config) -> list[str]:
    """The headline section, markers included."""
    f, s = res["machine"], res["settings"]
    sm = res["summaries"][headline.label]
    bw = res["bandwidth"][str(s["threads"])]["best_gbs"]
    ce = res["decode_ceiling"][headline.label]
    L = [HEADLINE_START, "",
         f"{headline.title} (real shapes, random weights), against llama-mtmd-cli {their_build_text(s)}; "
         f"{s['image_size']} image, {s['threads']} threads, "
         f"-n {s['n_predict']}, -c {s['ctx']}; medians of {pairs_text(n_pairs(res, headline.label))}. Measured {f['date']} on "
         f"{f['cpu']} ({f['cores']} cores, {fmt(f['ram_gib'], '{:.0f}')} GiB, {bw:.1f} GB/s read bandwidth), "
         f"commit `{f['commit'][:12]}`{' + uncommitted changes' if f['commit_dirty'] else ''}.", "",
         "| | ours | llama.cpp | ours / llama.cpp | 95% interval |", "|---|---|---|---|---|"]
    for key, name, unit, _, vf, _b in METRICS:
        if key in ("wall_s", "ttft_s", "decode_tok_s", "peak_rss_mib", "encode_s", "prefill_s"):
            x = sm[key]
            L.append(f"| {name} | {fmt(x['ours'], vf)} {unit} | {fmt(x['llama.cpp'], vf)} {unit} | "
                     f"**{fmt(x['ratio_median'])}** | {interval_text(x)} |")
    L += ["", f"Decode ceiling {ce['ceiling_tok_s']:.2f} tok/s ({bw:.1f} GB/s / "
          f"{human_bytes(ce['bytes_per_token'])} per token). Everything else: "
          "[benchmarks/results.md](benchmarks/results.md).", "", HEADLINE_END]
    return L


def their_build_text(s: dict) -> str:
    """How llama-mtmd-cli was built, in words (results from before --their-build: same flags, x86-64-v3)."""
    b = s.get("their_build")
    if b == "stock":
        extra = s.get("their_cxx_flags")
        extra = (f" plus `{extra}` (AMX off: with GCC 12 a native build segfaults on this AMX CPU, "
                 "llama.cpp #20824; ours is built the same way)") if extra and "amx" in extra else ""
        return f"stock: llama.cpp's CMake defaults, GGML_NATIVE=ON{extra}, vs our default native build"
    if b == "same-flags":
        return "with our build's exact compiler flags"
    return "with the same flags as ours: both -march=x86-64-v3 (results from before the native default)"


def render_markdown(res: dict, configs: list[Config], headline: Config) -> str:
    """The whole of results.md, section by section."""
    L = []
    intro_lines(L, res)
    machine_lines(L, res)
    setup_lines(L, res, configs)
    L.append("## Headline\n")
    s = res["settings"]
    L.append(f"**{headline.title}** ({s['image_size']} image, {s['threads']} threads, -n {s['n_predict']}), "
             "medians; ratio = ours / llama.cpp:\n")
    metrics_table(L, res["summaries"][headline.label])
    per_call_lines(L, res, headline)
    for c in configs[1:]:
        L.append(f"## {c.title}\n")
        metrics_table(L, res["summaries"][c.label])
    ceiling_lines(L, res, configs)
    sweep_lines(L, res, headline)
    lowmem_lines(L, res, headline)
    plot_lines(L)
    check_lines(L, res, configs)
    L.append("")
    return "\n".join(L)


def intro_lines(L: list[str], res: dict) -> None:
    f, s = res["machine"], res["settings"]
    L.append("# Benchmark results: minicpmv vs llama.cpp's llama-mtmd-cli\n")
    if s["quick"]:
        L.append("> **Quick mode**: tiny synthetic models; these figures only show that the script "
                 "works, they say nothing about speed.\n")
    L.append(f"Written by `{s['bench_command'].strip()}` on {f['date']}, commit "
             f"`{f['commit'][:12]}`{' (with uncommitted changes)' if f['commit_dirty'] else ''}, "
             f"llama-cpp-sys-2 {f['llama_cpp_sys_2']} (llama-mtmd-cli built from its bundled llama.cpp, "
             f"{their_build_text(s)}). "
             "How each figure is measured: [docs/BENCHMARKS.md](../BENCHMARKS.md). "
             "Every run: [results.json](results.json).\n")


def machine_lines(L: list[str], res: dict) -> None:
    f, bw = res["machine"], res["bandwidth"]
    L.append("## Machine\n")
    bw_t = " / ".join(f"{v['best_gbs']:.1f} GB/s ({k} thread{'s' if k != '1' else ''})" for k, v in bw.items())
    L.append("| CPU | cores | RAM | memory read bandwidth | kernel | load average at start |")
    L.append("|---|---|---|---|---|---|")
    L.append(f"| {f['cpu']} | {f['cores']} | {fmt(f['ram_gib'], '{:.1f}')} GiB | {bw_t} | {f['kernel']} | "
             f"{f['loadavg_at_start'][0]:.2f} |\n")


def setup_lines(L: list[str], res: dict, configs: list[Config]) -> None:
    s = res["settings"]
    L.append("## Setup\n")
    L.append(f"- image: {s['image_size']} PNG (`{Path(s['image']).name}`), prompt: \"{s['prompt']}\"")
    L.append(f"- both sides: {s['threads']} threads, context {s['ctx']}, {s['n_predict']} tokens generated, "
             "greedy (`--temp 0`), end-of-text ignored (`--ignore-eos`), no warm-up"
             f"{' on our side (llama.cpp with its warm-ups, --llama-warmup)' if s['llama_warmup'] else ''}"
             + ("; flash attention in the projector on both sides" if s.get("their_build") else ""))
    L.append("- A/B pairs, the two runs of a pair back to back: "
             + ", ".join(f"{n_pairs(res, c.label)} for {c.label} ({pair_order_text(res, c.label)})"
                         for c in configs)
             + "; each configuration after one untimed "
             "warm-up run of each side (the model files are then in the page cache for both)")
    L.append(f"- ours: `{s['ours_command']}`")
    L.append(f"- llama.cpp: `{s['their_command']}`\n")
    L.append("Models (synthetic, random weights with the real shapes"
             f"{'; tiny shapes in quick mode' if s['quick'] else ''}):\n")
    L.append("| configuration | language model | size | projector | size |")
    L.append("|---|---|---|---|---|")
    for c in configs:
        m = res["models"][c.label]
        L.append(f"| {c.label} | `{Path(m['model']).name}` | {human_bytes(m['model_bytes'])} | "
                 f"`{Path(m['mmproj']).name}` | {human_bytes(m['mmproj_bytes'])} |")
    L.append("")


def metrics_table(L: list[str], sm: dict) -> None:
    """Every metric of one configuration's A/B summary."""
    L.append("| metric | ours | llama.cpp | ours / llama.cpp (median of pairs) | 95% interval | "
             "per pair | better |")
    L.append("|---|---|---|---|---|---|---|")
    for key, name, unit, _, vf, better in METRICS:
        x = sm[key]
        u = f" {unit}" if unit else ""
        ratios = ", ".join(fmt(r) for r in x["ratios"])
        L.append(f"| {name} | {fmt(x['ours'], vf)}{u} | {fmt(x['llama.cpp'], vf)}{u} | "
                 f"**{fmt(x['ratio_median'])}** | {interval_text(x)} | {ratios} | {better or ''} |")
    L.append("")


def per_call_lines(L: list[str], res: dict, headline: Config) -> None:
    """The headline's image encode per projector call, both sides."""
    rs = [r for r in res["runs"] if r["config"] == headline.label and r["series"] == "ab"]
    n_calls = max([len(r.get("chunk_encode_s") or []) for r in rs] + [0])
    if not n_calls:
        return
    L.append("Image encode per projector call (ms, median over the A/B runs; call 1 is the overview):\n")
    L.append("| | " + " | ".join(str(i + 1) for i in range(n_calls)) + " | total |")
    L.append("|---|" + "---|" * (n_calls + 1))
    for side in ("ours", "llama.cpp"):
        per = [median(1000 * r["chunk_encode_s"][i] for r in rs
                      if r["side"] == side and len(r.get("chunk_encode_s") or []) > i)
               for i in range(n_calls)]
        tot = median(1000 * r["encode_s"] for r in rs if r["side"] == side and r.get("encode_s") is not None)
        L.append(f"| {side} | " + " | ".join(fmt(v, "{:.0f}") for v in per) + f" | {fmt(tot, '{:.0f}')} |")
    L.append("")


def ceiling_lines(L: list[str], res: dict, configs: list[Config]) -> None:
    L.append("## Decode speed vs the memory-bandwidth ceiling\n")
    L.append("Ceiling = bandwidth / bytes read per generated token (language-model weights without the "
             "token-embedding table when the output matrix is separate, plus the f16 KV cache at the mean "
             "position during decoding).\n")
    L.append("| configuration | bytes / token | bandwidth | ceiling | ours | % of ceiling | llama.cpp | % of ceiling |")
    L.append("|---|---|---|---|---|---|---|---|")
    for c in configs:
        ce, sm = res["decode_ceiling"][c.label], res["summaries"][c.label]
        o, t = sm["decode_tok_s"]["ours"], sm["decode_tok_s"]["llama.cpp"]
        pct = lambda v: fmt(100 * v / ce["ceiling_tok_s"] if v else None, "{:.0f}%")  # noqa: E731
        L.append(f"| {c.label} | {human_bytes(ce['bytes_per_token'])} | {ce['bandwidth_gbs']:.1f} GB/s | "
                 f"{ce['ceiling_tok_s']:.2f} tok/s | {fmt(o)} tok/s | {pct(o)} | {fmt(t)} tok/s | {pct(t)} |")
    L.append("")


def sweep_lines(L: list[str], res: dict, headline: Config) -> None:
    if not res["slices_sweep"]:
        return
    L.append(f"## Time to first token vs --max-slices (ours, {headline.label})\n")
    L.append("| --max-slices | projector calls | prompt tokens | TTFT | load | encode | LM prefill | wall | peak RSS |")
    L.append("|---|---|---|---|---|---|---|---|---|")
    for p in res["slices_sweep"]:
        L.append(f"| {p['max_slices']} | {fmt(p['n_chunks'], '{:.0f}')} | {fmt(p['prompt_tokens'], '{:.0f}')} | "
                 f"{fmt(p['ttft_s'])} s | {fmt(p['load_s'])} s | {fmt(p['encode_s'])} s | "
                 f"{fmt(p['prefill_s'])} s | {fmt(p['wall_s'])} s | {fmt(p['peak_rss_mib'], '{:.0f}')} MiB |")
    hs = res["summaries"][headline.label]
    L.append(f"| llama.cpp (9) | | {fmt(hs['prompt_tokens']['llama.cpp'], '{:.0f}')} | "
             f"{fmt(hs['ttft_s']['llama.cpp'])} s | {fmt(hs['load_s']['llama.cpp'])} s | "
             f"{fmt(hs['encode_s']['llama.cpp'])} s | {fmt(hs['prefill_s']['llama.cpp'])} s | "
             f"{fmt(hs['wall_s']['llama.cpp'])} s | {fmt(hs['peak_rss_mib']['llama.cpp'], '{:.0f}')} MiB |")
    L.append("")


def lowmem_lines(L: list[str], res: dict, headline: Config) -> None:
    L.append(f"## Peak RSS: default vs --low-mem ({headline.label})\n")
    hs = res["summaries"][headline.label]
    lm = res["lowmem"]
    L.append("| | llama.cpp | ours | ours --low-mem |")
    L.append("|---|---|---|---|")
    for key, name, vf in (("peak_rss_mib", "peak RSS (MiB)", "{:.0f}"), ("wall_s", "wall (s)", "{:.2f}"),
                          ("ttft_s", "TTFT (s)", "{:.2f}"), ("decode_tok_s", "decode (tok/s)", "{:.2f}")):
        L.append(f"| {name} | {fmt(hs[key]['llama.cpp'], vf)} | {fmt(hs[key]['ours'], vf)} | "
                 f"{fmt(lm[key], vf) if lm else 'not run'} |")
    L.append("")


def plot_lines(L: list[str]) -> None:
    L.append("## Plots\n")
    for fn, alt in (("ttft-vs-slices.svg", "time to first token vs --max-slices"),
                    ("peak-rss.svg", "peak RSS"), ("decode-vs-ceiling.svg", "decode speed vs ceiling"),
                    ("ab-pairs.svg", "per-pair ratios")):
        L.append(f"![{alt}]({fn})\n")


def check_lines(L: list[str], res: dict, configs: list[Config]) -> None:
    """Did both sides do the same work: per configuration, then the warnings of every run."""
    f = res["machine"]
    L.append("## Checks\n")
    for c in configs:
        L.append(config_check_line(res, c))
    warn = [f"run {r['order']} ({r['side']} {r['config']} {r['series']}): {r['warning']}"
            for r in res["runs"] if r.get("warning")]
    L.append("- warnings: " + ("; ".join(warn) if warn else "none"))
    if f["loadavg_at_start"][0] > 0.5:
        L.append(f"- **the machine was not idle** (load average {f['loadavg_at_start'][0]:.2f} at start): "
                 "figures are noisy")


def config_check_line(res: dict, c: Config) -> str:
    n_predict = res["settings"]["n_predict"]
    rs = [r for r in res["runs"] if r["config"] == c.label and r["series"] == "ab"]
    o = {r["pair"]: r for r in rs if r["side"] == "ours"}
    t = {r["pair"]: r for r in rs if r["side"] == "llama.cpp"}
    ps = sorted(set(o) & set(t))
    same_prompt = sum(1 for p in ps if o[p].get("prompt_tokens") == t[p].get("prompt_tokens"))
    same_calls = sum(1 for p in ps if o[p].get("n_chunks") == t[p].get("n_chunks"))
    n_ok = sum(1 for p in ps for r in (o[p], t[p]) if r.get("n_generated") == n_predict)
    same_text = sum(1 for p in ps if o[p].get("text") == t[p].get("text"))
    calls = sorted({o[p].get("prompt_decode_calls") for p in ps} - {None})
    repack = sorted({str(weight_repack(o[p])).lower() for p in ps} - {"none"})
    return (f"- {c.label}: same prompt token count in {same_prompt}/{len(ps)} pairs, same number of "
            f"projector calls in {same_calls}/{len(ps)}, {n_ok}/{2 * len(ps)} runs generated "
            f"exactly {n_predict} tokens; identical generated text in {same_text}/{len(ps)} "
            "(informational: random weights give near-flat logits, so rounding differences can "
            "change a greedy pick)"
            + (f"; ours decoded the prompt in {'/'.join(map(str, calls))} llama_decode calls "
               "(packed batches), llama.cpp's mtmd takes one per text run and image chunk"
               if calls else "")
            + (f"; ours' weight repack: {'/'.join(repack)} (`run --json` `weight_repack`; "
               "llama.cpp repacks, its default)" if repack else ""))
