"""Facts about the machine and the code under test, and the memory read bandwidth (measured
with scripts/membw.c, compiled into target/membw)."""
import datetime
import json
import os
import platform
import re
import subprocess
from pathlib import Path

from .util import ROOT, die, log

MEMBW_SRC = ROOT / "scripts/membw.c"
MEMBW_BIN = ROOT / "target/membw"


def machine_facts() -> dict:
    cpu_line = proc_line("/proc/cpuinfo", "model name")
    mem_line = proc_line("/proc/meminfo", "MemTotal:")
    mem_kib = int(mem_line.split()[1]) if mem_line else None
    pin = re.search(r'^llama-cpp-sys-2 = \{ version = "=([0-9.]+)"',
                    (ROOT / "Cargo.toml").read_text(), re.M)
    return {
        "cpu": (cpu_line.split(":", 1)[1].strip() if cpu_line else "") or platform.processor(),
        "cores": os.cpu_count(),
        "ram_gib": mem_kib / 1048576 if mem_kib else None,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "commit": git("rev-parse", "HEAD"),
        "commit_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "llama_cpp_sys_2": pin.group(1) if pin else None,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "loadavg_at_start": os.getloadavg(),
    }


def proc_line(path: str, prefix: str) -> str | None:
    """The first line of a /proc file that starts with prefix, or None."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return line
    except OSError:
        pass
    return None


def git(*args) -> str:
    r = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else ""


def measure_bandwidth(threads: int, mib: int) -> dict:
    """Best-of-5 read bandwidth with 1 thread and with `threads`, keyed by the thread count."""
    build_membw()
    out = {}
    for t in sorted({1, threads}):
        r = subprocess.run([str(MEMBW_BIN), str(mib), str(t), "5"], capture_output=True, text=True)
        if r.returncode != 0:
            die(f"membw failed: {r.stderr.strip()}")
        out[str(t)] = json.loads(r.stdout)
        log(f"memory read bandwidth, {t} thread(s): {out[str(t)]['best_gbs']:.1f} GB/s (best of 5)")
    return out


def build_membw() -> None:
    """Compiles scripts/membw.c into target/membw when the binary is missing or older."""
    if MEMBW_BIN.exists() and MEMBW_BIN.stat().st_mtime >= MEMBW_SRC.stat().st_mtime:
        return
    MEMBW_BIN.parent.mkdir(parents=True, exist_ok=True)
    march = ["-march=x86-64-v3"] if platform.machine() == "x86_64" else []
    r = subprocess.run(["gcc", "-O3", *march, "-pthread", "-o", str(MEMBW_BIN), str(MEMBW_SRC)])
    if r.returncode != 0:
        die("cannot compile scripts/membw.c with gcc")
