"""Our side: the argv of `minicpmv run --json` and the figures of its JSON output."""
import json
from pathlib import Path

from .config import Config


def ours_argv(cfg: Config, img: Path, a, max_slices: int | None = None,
              low_mem: bool = False) -> list:
    """`a`: the bench's options (ours_bin, prompt, n_predict, threads, ctx)."""
    argv = [a.ours_bin, "run", "-m", cfg.model, "--mmproj", cfg.mmproj, "--image", img,
            "-p", a.prompt, "-n", a.n_predict, "--temp", "0", "--ignore-eos", "-t", a.threads,
            "-c", a.ctx, "--json"]
    if max_slices is not None:
        argv += ["--max-slices", max_slices]
    if low_mem:
        argv.append("--low-mem")
    return argv


def parse_ours(rec: dict, n_predict: int) -> None:
    """Fills the common fields from `minicpmv run --json`."""
    try:
        j = json.loads(Path(rec["stdout"]).read_text())
    except (OSError, ValueError) as e:
        rec["error"] = f"cannot read our JSON output: {e}"
        return
    rec.update(figures_of_run_json(j))
    n_gen = rec["n_generated"]
    if n_gen != n_predict:
        rec["warning"] = f"generated {n_gen} tokens, asked for {n_predict}"
    # `minicpmv run` switches to --low-mem by itself when its memory planner predicts that the
    # default mode does not fit; a default-mode run that did so is not what it claims to be.
    try:
        err = Path(rec["stderr"]).read_text(errors="replace")
    except OSError:
        err = ""
    rec["auto_low_mem"] = "using --low-mem" in err
    if rec["auto_low_mem"] and rec.get("side") == "ours":
        rec["warning"] = "ours switched to --low-mem by itself (not enough available memory)"


def figures_of_run_json(j: dict) -> dict:
    """The record's fields from the JSON that `minicpmv run --json` prints."""
    t = j.get("timings", {})
    n_gen = len(j.get("token_ids", []))
    ttft = t.get("time_to_first_token_secs")
    total = t.get("total_secs")
    chunks = t.get("chunk_encode_secs") or []
    return {
        "load_s": t.get("load_secs"),
        "encode_s": t.get("image_encode_secs"),
        "chunk_encode_s": chunks,
        "n_chunks": j.get("n_image_chunks", len(chunks)),
        "prefill_s": t.get("prompt_secs"),
        "prompt_tokens": j.get("n_prompt_tokens"),
        "image_tokens": j.get("n_image_tokens"),
        "prompt_decode_calls": j.get("prompt_decode_calls"),
        "weight_repack": j.get("weight_repack"),
        "prompt_tok_s": t.get("prompt_tokens_per_sec"),
        "ttft_s": ttft,
        "n_generated": n_gen,
        # From the first generated token to the last: n-1 decode steps (each a decode call and
        # a sample), the same span as on their side.
        "decode_tok_s": ((n_gen - 1) / (total - ttft)
                         if n_gen > 1 and total and ttft is not None and total > ttft else None),
        "decode_tok_s_own": t.get("generate_tokens_per_sec"),
        "internal_total_s": total,
        "text": j.get("text", ""),
        "token_ids": j.get("token_ids", []),
        "stop": j.get("stop"),
        "raw_timings": t,
    }


def weight_repack(rec: dict):
    """Ours' `weight_repack` from `run --json`: the record's field, or its saved stdout file
    (runs recorded before the field was copied); None if neither says."""
    if rec.get("weight_repack") is not None:
        return rec["weight_repack"]
    try:
        return json.loads(Path(rec.get("stdout") or "").read_text()).get("weight_repack")
    except (OSError, ValueError, AttributeError):
        return None
