"""Everything a bench measured, in the one dict written to results.json: A/B summaries, decode
ceilings, the --max-slices sweep, the --low-mem series, the settings and every run."""
from .config import Config
from .stats import ab_summary, median

SWEEP_KEYS = ("n_chunks", "prompt_tokens", "ttft_s", "load_s", "encode_s", "prefill_s", "wall_s",
              "peak_rss_mib", "decode_tok_s")
LOWMEM_KEYS = ("peak_rss_mib", "wall_s", "ttft_s", "decode_tok_s")


def decode_ceilings(runs: list[dict], configs: list[Config], model_facts: dict, bw_best: float,
                    n_predict: int) -> dict:
    """Per configuration: bytes read per generated token (weights, plus the KV cache at the mean
    position during decoding) and the decode speed that the bandwidth allows."""
    ceilings = {}
    for c in configs:
        pt = model_facts[c.label]["per_token"]
        ab_runs = [r for r in runs if r["config"] == c.label and r["series"] == "ab"]
        n_prompt = median(r.get("prompt_tokens") for r in ab_runs) or 0
        mean_pos = n_prompt + n_predict / 2
        per_tok = pt["weights_per_token_bytes"] + pt["kv_bytes_per_position"] * mean_pos
        ceilings[c.label] = {"bytes_per_token": per_tok, "weights_bytes": pt["weights_per_token_bytes"],
                             "kv_bytes": pt["kv_bytes_per_position"] * mean_pos,
                             "bandwidth_gbs": bw_best, "ceiling_tok_s": bw_best * 1e9 / per_tok}
    return ceilings


def slices_sweep(runs: list[dict], headline: Config, slices: list[int]) -> list[dict]:
    """Medians of our headline runs per --max-slices value (9: the A/B runs)."""
    sweep = []
    for k in slices:
        rs = [r for r in runs if r["config"] == headline.label and r["side"] == "ours" and (
            (r["series"] == "slices" and r.get("max_slices") == k) or (k == 9 and r["series"] == "ab"))]
        if rs:
            sweep.append({"max_slices": k, "n_runs": len(rs),
                          **{key: median(r.get(key) for r in rs) for key in SWEEP_KEYS}})
    return sweep


def lowmem_summary(runs: list[dict]) -> dict | None:
    lowmem = [r for r in runs if r["series"] == "lowmem"]
    return {key: median(r.get(key) for r in lowmem) for key in LOWMEM_KEYS} if lowmem else None


def result_dict(facts: dict, bw: dict, settings: dict, model_facts: dict, runs: list[dict],
                configs: list[Config], headline: Config, slices: list[int]) -> dict:
    """The content of results.json."""
    n_predict, threads = settings["n_predict"], settings["threads"]
    return {"machine": facts, "bandwidth": bw, "settings": settings, "models": model_facts,
            "summaries": {c.label: ab_summary(runs, c.label) for c in configs},
            "decode_ceiling": decode_ceilings(runs, configs, model_facts,
                                              bw[str(threads)]["best_gbs"], n_predict),
            "slices_sweep": slices_sweep(runs, headline, slices),
            "lowmem": lowmem_summary(runs), "runs": runs}
