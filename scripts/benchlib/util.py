"""Small helpers shared by every module: the repository root, logging, errors, atomic writes."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent  # scripts/benchlib/util.py -> the repository


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def die(msg: str, code: int = 2) -> None:
    print(f"bench: error: {msg}", file=sys.stderr)
    sys.exit(code)


def write_json_atomic(path: Path, value) -> None:
    """Writes JSON to a temporary name beside `path`, then renames it over `path`."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(value, indent=1, default=str) + "\n")
    tmp.replace(path)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Writes bytes to a temporary name beside `path` (its folder made if missing), then renames it
    over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    tmp.replace(path)


def write_text_atomic(path: Path, text: str) -> None:
    """write_bytes_atomic of UTF-8 text."""
    write_bytes_atomic(path, text.encode())


def run_checked(argv: list, what: str) -> None:
    """Runs argv with its output on our stderr; dies if it fails."""
    log(f"{what}: {' '.join(map(str, argv))}")
    t0 = time.time()
    r = subprocess.run([str(a) for a in argv], stdout=sys.stderr)
    if r.returncode != 0:
        die(f"{what} failed (exit {r.returncode})")
    log(f"{what}: done in {time.time() - t0:.0f} s")
