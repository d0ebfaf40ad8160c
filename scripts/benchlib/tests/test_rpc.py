"""The RPC section (benchlib/rpc.py): its summary on made-up runs, and one live pass with our
binary, two loopback workers and a tiny synthetic pair (seconds)."""
import os
import subprocess
import tempfile
import unittest
from pathlib import Path

from benchlib.image import write_png
from benchlib.rpc import render, run_rpc_bench, summarize
from benchlib.util import ROOT


def fake(round_, side, ms, tokens=(1, 2)):
    return {"round": round_, "side": side, "ms_per_token": ms, "prefill_s": 1.0, "ttft_s": 2.0,
            "load_s": 1.0, "peak_rss_mib": 100.0, "token_ids": list(tokens), "devices": [],
            "decode_tok_s": 1000.0 / ms,
            "rpc_traffic": {"total_bytes": 5e9, "bytes_per_token": 7e5} if side == "rpc" else None}


class Summary(unittest.TestCase):
    def test_ratios_are_rpc_over_local_per_round(self):
        runs = [fake(0, "local", 100), fake(0, "rpc", 110), fake(1, "rpc", 120), fake(1, "local", 100)]
        res = summarize(runs, [1, 2], {"commit": "x"})
        m = res["metrics"]["ms_per_token"]
        self.assertEqual(m["ratios"], [1.1, 1.2])
        self.assertAlmostEqual(m["ratio_interval"][0], (1.1 * 1.2) ** 0.5)
        self.assertTrue(res["same_tokens"])
        self.assertEqual(res["rpc_bytes_per_token"], 7e5)
        res = summarize(runs[:1] + [fake(0, "rpc", 110, tokens=(1, 3))], [], {})
        self.assertFalse(res["same_tokens"])


class Live(unittest.TestCase):
    def test_two_loopback_workers_on_a_tiny_pair(self):
        ours = Path(os.environ.get("MINICPMV_BIN") or ROOT / "target/release/minicpmv")
        self.assertTrue(ours.is_file(), f"{ours} is missing: build it or set MINICPMV_BIN")
        with tempfile.TemporaryDirectory() as d:
            d = Path(d)
            env = {**os.environ, "MINICPMV_HOME": str(d), "MINICPMV_OFFLINE": "1"}
            subprocess.run([ours, "synth", "--version", "2.6", "--out-dir", d], check=True,
                           capture_output=True, env=env)
            img = d / "img.png"
            write_png(img, 64, 48)
            res = run_rpc_bench(ours, d / "model.gguf", d / "mmproj.gguf", img, d / "out",
                                d / "logs", rounds=2, threads=1, ctx=512, n_predict=4,
                                timeout=120, commit="test", scale="tiny")
            self.assertTrue(res["same_tokens"])
            self.assertGreater(res["rpc_bytes_per_token"], 0)
            self.assertGreater(res["rpc_total_bytes"], res["rpc_bytes_per_token"])
            self.assertEqual([x["name"] for x in res["devices"]], ["CPU", "RPC0", "RPC1"])
            self.assertEqual(len(res["metrics"]["ms_per_token"]["ratios"]), 2)
            md = (d / "out" / "results.md").read_text()
            self.assertIn("| time per generated token (ms) |", md)
            self.assertEqual(md, render(res))


if __name__ == "__main__":
    unittest.main()
