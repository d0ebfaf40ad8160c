"""Running one process: wall time, peak RSS (from /usr/bin/time -v when present)."""
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

TIME_BIN = "/usr/bin/time"


def parse_time_v(text: str) -> dict:
    """The figures we use from the report of `/usr/bin/time -v`."""
    out = {}
    for line in text.splitlines():
        k, _, v = line.strip().rpartition(": ")
        if k == "Maximum resident set size (kbytes)":
            out["peak_rss_kib"] = int(v)
        elif k == "User time (seconds)":
            out["user_s"] = float(v)
        elif k == "System time (seconds)":
            out["sys_s"] = float(v)
        elif k == "Major (requiring I/O) page faults":
            out["major_faults"] = int(v)
        elif k == "Minor (reclaiming a frame) page faults":
            out["minor_faults"] = int(v)
        elif k.startswith("Elapsed (wall clock) time"):
            out["time_v_wall_s"] = clock_seconds(v)
        elif k == "Exit status":
            out["exit_status"] = int(v)
    return out


def clock_seconds(v: str) -> float:
    """`h:mm:ss` or `m:ss.ss` -> seconds."""
    secs = 0.0
    for part in v.split(":"):
        secs = secs * 60 + float(part)
    return secs


def run_measured(argv: list, logs: Path, name: str, timeout: float) -> dict:
    """Runs argv under /usr/bin/time -v (when present); stdout and stderr to files in logs/.
    Peak RSS from time -v, else from wait4's rusage; wall time from Python's monotonic clock."""
    logs.mkdir(parents=True, exist_ok=True)
    out_p, err_p, time_p = (logs / f"{name}.stdout", logs / f"{name}.stderr", logs / f"{name}.time")
    argv = [str(a) for a in argv]
    timed = os.access(TIME_BIN, os.X_OK)
    full = ([TIME_BIN, "-v", "-o", str(time_p)] + argv) if timed else argv
    with open(out_p, "wb") as fo, open(err_p, "wb") as fe:
        exit_code, wall, rusage, timed_out = wait_with_timeout(full, fo, fe, timeout)
    rec = {"argv": argv, "exit_code": exit_code, "wall_s": wall,
           "peak_rss_kib": rusage.ru_maxrss, "user_s": rusage.ru_utime, "sys_s": rusage.ru_stime,
           "stdout": str(out_p), "stderr": str(err_p), "timed_out": timed_out}
    if timed and time_p.exists():
        tv = parse_time_v(time_p.read_text(errors="replace"))
        rec.update({k: v for k, v in tv.items() if k != "exit_status"})
        if tv.get("exit_status") is not None and exit_code == 0:
            rec["exit_code"] = tv["exit_status"]
    rec["peak_rss_mib"] = rec["peak_rss_kib"] / 1024
    return rec


def wait_with_timeout(argv: list[str], stdout, stderr, timeout: float):
    """Runs argv in its own session, killing its process group after `timeout` seconds.
    Returns (exit code, wall seconds, rusage of the children, whether it timed out)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL,
                         start_new_session=True)
    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    timer = threading.Timer(timeout, kill)
    timer.start()
    try:
        _, status, rusage = os.wait4(p.pid, 0)
    finally:
        timer.cancel()
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    return p.returncode, wall, rusage, timed_out.is_set()
