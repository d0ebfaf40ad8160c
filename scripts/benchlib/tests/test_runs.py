"""The run series, with stand-ins for our binary and llama-mtmd-cli: warm-ups, counterbalanced
A/B pairs, the --max-slices sweep, the --low-mem series, and a failing run."""
import contextlib
import io
import tempfile
import unittest
from argparse import Namespace
from pathlib import Path

from benchlib.config import Config
from benchlib.runs import Runner, run_ab_series, run_lowmem_series, run_slices_sweep
from benchlib.tests import fake_executable
from benchlib.tests.test_ours import RUN_JSON
from benchlib.tests.test_theirs import JSONL

FAKE_OURS = f"""import sys
args = sys.argv[1:]
if "--fail" in " ".join(args):
    print("error: no such model", file=sys.stderr)
    sys.exit(1)
print({RUN_JSON!r})
"""
FAKE_THEIRS = f"print({JSONL!r}, end='')\n"


class Series(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        d = self.dir = Path(self.tmp.name)
        self.a = Namespace(ours_bin=fake_executable(d, "minicpmv", FAKE_OURS), prompt="Describe.",
                           n_predict=4, threads=2, ctx=4096, llama_warmup=False, pairs=2,
                           secondary_pairs=1, series_runs=2)
        self.their_bin = fake_executable(d, "llama-mtmd-cli", FAKE_THEIRS)
        self.runner = Runner(d / "logs", timeout=60, n_predict=8)
        self.cfgs = [Config("2.6", "Q4_K_M", "F16", d / "m.gguf", d / "p.gguf"),
                     Config("2.6", "Q8_0", "Q8_0", d / "m8.gguf", d / "p8.gguf")]
        self.err = io.StringIO()
        self.quiet = contextlib.redirect_stderr(self.err)
        self.quiet.__enter__()

    def tearDown(self):
        self.quiet.__exit__(None, None, None)
        self.tmp.cleanup()

    def test_ab_series_order(self):
        img = self.dir / "img.png"
        run_ab_series(self.runner, self.cfgs, self.cfgs[0], img, self.dir / "warm.png", self.a,
                      self.their_bin)
        self.assertTrue((self.dir / "warm.png").exists())
        got = [(r["order"], r["side"], r["config"], r["series"], r["pair"]) for r in self.runner.runs]
        h, s = "2.6:Q4_K_M:F16", "2.6:Q8_0:Q8_0"
        self.assertEqual(got, [
            (1, "ours", h, "warmup", None), (2, "llama.cpp", h, "warmup", None),
            (3, "ours", h, "ab", 1), (4, "llama.cpp", h, "ab", 1),
            (5, "llama.cpp", h, "ab", 2), (6, "ours", h, "ab", 2),
            (7, "ours", s, "warmup", None), (8, "llama.cpp", s, "warmup", None),
            (9, "ours", s, "ab", 1), (10, "llama.cpp", s, "ab", 1)])
        ours, theirs = self.runner.runs[2], self.runner.runs[3]
        self.assertEqual(Path(ours["stdout"]).name, "003-2.6_Q4_K_M_F16-ab-ours.stdout")
        self.assertEqual(Path(theirs["stdout"]).name, "004-2.6_Q4_K_M_F16-ab-llamacpp.stdout")
        self.assertIn(str(img), ours["argv"])
        self.assertIn(str(self.dir / "warm.png"), self.runner.runs[0]["argv"])
        # Parsed by each side's parser, per_slice_ms derived.
        self.assertEqual((ours["ttft_s"], theirs["ttft_s"]), (0.75, 3.25))
        self.assertEqual(ours["per_slice_ms"], 93.75)
        self.assertEqual(theirs["per_slice_ms"], 750.0)

    def test_sweep_skips_9_and_lowmem(self):
        img = self.dir / "img.png"
        run_slices_sweep(self.runner, self.cfgs[0], img, self.a, [1, 4, 9])
        run_lowmem_series(self.runner, self.cfgs[0], img, self.a)
        got = [(r["side"], r["series"], r["pair"], r.get("max_slices")) for r in self.runner.runs]
        self.assertEqual(got, [("ours", "slices", 1, 1), ("ours", "slices", 2, 1),
                               ("ours", "slices", 1, 4), ("ours", "slices", 2, 4),
                               ("ours --low-mem", "lowmem", 1, None), ("ours --low-mem", "lowmem", 2, None)])
        self.assertEqual(self.runner.runs[2]["argv"][-2:], ["--max-slices", "4"])
        self.assertEqual(self.runner.runs[4]["argv"][-1], "--low-mem")

    def test_failing_run_dies_with_its_log(self):
        cfg = Config("2.6", "Q4_K_M", "F16", Path("/--fail"), Path("/p.gguf"))
        with self.assertRaises(SystemExit):
            self.runner.run("ours", cfg, "ab", 1, [self.a.ours_bin, "run", "-m", cfg.model])
        self.assertIn("ours run failed (exit 1", self.err.getvalue())
        self.assertIn("error: no such model", self.err.getvalue())

    def test_warning_is_logged(self):
        runner = Runner(self.dir / "logs", timeout=60, n_predict=16)
        rec = runner.run("ours", self.cfgs[0], "ab", 1, [self.a.ours_bin, "run"])
        self.assertEqual(rec["warning"], "generated 8 tokens, asked for 16")
        self.assertIn("  warning: generated 8 tokens, asked for 16", self.err.getvalue())

if __name__ == "__main__":
    unittest.main()
