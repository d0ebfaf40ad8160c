"""Unit tests of benchlib (offline, deterministic, standard library only). Run from the
repository root:

    python3 -m unittest discover -s scripts/benchlib/tests -t scripts

fixtures/: outputs of `minicpmv inspect --json` and `minicpmv plan --json` on tiny synthetic
models, a small fixed result (results.json), and golden/: what the bench renders from it (made
with the script before it was split into modules, so they pin its behaviour).
"""
import json
import os
import sys
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def fixture_json(name: str):
    return json.loads((FIXTURES / name).read_text())


def fake_executable(folder: Path, name: str, body: str) -> Path:
    """A Python script `folder/name` standing in for a program (our binary, llama-mtmd-cli)."""
    path = folder / name
    path.write_text(f"#!{sys.executable}\n{body}")
    os.chmod(path, 0o755)
    return path
