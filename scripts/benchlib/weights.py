"""Bytes read per generated token, for the decode-speed ceiling, from our binary's own reading of
the language model: `minicpmv inspect --json FILE`.

inspect gives the file size, the hyper-parameters and the bytes per tensor type, but not one
tensor's size: it cannot say whether the model has a separate `output.weight` nor how big
`token_embd.weight` is. That one figure comes from `minicpmv plan --json`, whose
`footprint.text_token_embd_lookup_only` is the token table's bytes when the output matrix is
separate and 0 when the embeddings are tied: the very rule of weights_per_token.
Once `inspect --json` tells those two facts (e.g. per-tensor sizes), the `plan` call can go.
"""
import json
import subprocess
from pathlib import Path

from .util import die


def weights_per_token(inspect: dict, token_embd_lookup_bytes: int) -> dict:
    """Bytes of language-model weights read for one generated token: every tensor, except the
    token embedding table when the model has a separate output matrix (then one row of it is
    read per token, not counted); with tied embeddings the table is the output matrix and is read
    whole. Plus the KV cache per position (f16 K and V), to add at the positions used.

    `inspect` is the output of `minicpmv inspect --json`; `token_embd_lookup_bytes` the size of
    the token table when it is only looked up (0 when the embeddings are tied)."""
    types = {name.upper(): stats["bytes"] for name, stats in inspect["tensor_types"].items()}
    total = sum(types.values())
    tied = token_embd_lookup_bytes == 0
    arch = inspect.get("architecture") or ""
    n_layer = int(hparam(inspect, arch, "block_count", 0))
    return {"file_bytes": inspect["file_size"], "tensor_bytes": total,
            # Unknown with tied embeddings: inspect --json has no per-tensor sizes.
            "token_embd_bytes": None if tied else token_embd_lookup_bytes,
            "tied_embeddings": tied, "weights_per_token_bytes": total - token_embd_lookup_bytes,
            "kv_bytes_per_position": kv_bytes_per_position(inspect, arch),
            "architecture": arch, "n_layer": n_layer, "bytes_by_type": types}


def hparam(inspect: dict, arch: str, key: str, default):
    """The hyper-parameter `ARCH.KEY` (inspect prints the ones that are single values)."""
    return inspect.get("hparams", {}).get(f"{arch}.{key}", default)


def kv_bytes_per_position(inspect: dict, arch: str) -> int:
    """f16 K and V of every layer for one position."""
    n_layer = int(hparam(inspect, arch, "block_count", 0))
    n_embd = int(hparam(inspect, arch, "embedding_length", 0))
    n_head = int(hparam(inspect, arch, "attention.head_count", 1) or 1)
    n_head_kv = int(hparam(inspect, arch, "attention.head_count_kv", n_head) or n_head)
    k_len = int(hparam(inspect, arch, "attention.key_length", n_embd // n_head if n_head else 0))
    v_len = int(hparam(inspect, arch, "attention.value_length", k_len))
    return n_layer * n_head_kv * (k_len + v_len) * 2


def read_weights_per_token(ours_bin: Path, model: Path, mmproj: Path) -> dict:
    """weights_per_token of a language model, asking our binary about it."""
    inspect = ours_json([ours_bin, "inspect", "--json", model], f"inspect {model.name}")
    # `plan` exits 1 when the run would not fit in the memory available now; its JSON is there.
    plan = ours_json([ours_bin, "plan", "-m", model, "--mmproj", mmproj, "--json"],
                     f"plan {model.name}", ok_codes=(0, 1))
    return weights_per_token(inspect, int(plan["footprint"]["text_token_embd_lookup_only"]))


def ours_json(argv: list, what: str, ok_codes=(0,)) -> dict:
    """The JSON that a command of our binary prints on stdout; dies if there is none."""
    r = subprocess.run([str(a) for a in argv], capture_output=True, text=True)
    if r.returncode in ok_codes:
        try:
            return json.loads(r.stdout)
        except ValueError:
            pass
    die(f"{what} failed (exit {r.returncode}): {r.stderr.strip() or 'no JSON on stdout'}")
