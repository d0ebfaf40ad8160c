"""Our side: the argv of `minicpmv run` and parsing its `--json` output."""
import json
import tempfile
import unittest
from argparse import Namespace
from pathlib import Path

from benchlib.config import Config
from benchlib.ours import ours_argv, parse_ours, weight_repack

# `minicpmv run --json` on a tiny synthetic pair, -n 8 (cpu_backend and the paths shortened).
RUN_JSON = """{
  "model": "/m/model-Q4_K_M.gguf",
  "mmproj": "/m/mmproj.gguf",
  "images": ["/m/image-640x360.png"],
  "synthetic_model": false,
  "pipeline": "native",
  "text": " you- re gr des",
  "token_ids": [350, 12, 324, 176, 251, 183, 331, 301],
  "n_prompt_tokens": 227,
  "n_image_tokens": 192,
  "n_image_layout_tokens": 6,
  "n_image_chunks": 3,
  "n_projector_calls": 3,
  "prompt_decode_calls": 1,
  "stop": "max_tokens",
  "timings": {
    "load_secs": 0.025,
    "image_encode_secs": 0.6125,
    "chunk_encode_secs": [0.4375, 0.09375, 0.08125],
    "prompt_secs": 0.078125,
    "prompt_tokens_per_sec": 2905.6,
    "time_to_first_token_secs": 0.75,
    "generate_secs": 0.0009765625,
    "generate_tokens_per_sec": 8192.0,
    "total_secs": 0.875
  },
  "low_mem": false,
  "peak_rss_bytes": 44711936,
  "cpu_backend": {"variant": "native", "features": ["AVX2", "REPACK"]},
  "weight_repack": false
}
"""


class ParseOurs(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self.tmp.name)

    def tearDown(self):
        self.tmp.cleanup()

    def record(self, stdout: str, stderr: str = "", side: str = "ours") -> dict:
        (self.dir / "run.stdout").write_text(stdout)
        (self.dir / "run.stderr").write_text(stderr)
        return {"side": side, "stdout": str(self.dir / "run.stdout"),
                "stderr": str(self.dir / "run.stderr")}

    def test_fields(self):
        rec = self.record(RUN_JSON)
        parse_ours(rec, 8)
        self.assertEqual(rec["load_s"], 0.025)
        self.assertEqual(rec["encode_s"], 0.6125)
        self.assertEqual(rec["chunk_encode_s"], [0.4375, 0.09375, 0.08125])
        self.assertEqual(rec["n_chunks"], 3)
        self.assertEqual(rec["prefill_s"], 0.078125)
        self.assertEqual(rec["prompt_tokens"], 227)
        self.assertEqual(rec["image_tokens"], 192)
        self.assertEqual(rec["prompt_decode_calls"], 1)
        self.assertIs(rec["weight_repack"], False)
        self.assertEqual(rec["prompt_tok_s"], 2905.6)
        self.assertEqual(rec["ttft_s"], 0.75)
        self.assertEqual(rec["n_generated"], 8)
        # 7 decode steps from the first token (0.75 s) to the end (0.875 s).
        self.assertEqual(rec["decode_tok_s"], 56.0)
        self.assertEqual(rec["decode_tok_s_own"], 8192.0)
        self.assertEqual(rec["internal_total_s"], 0.875)
        self.assertEqual(rec["text"], " you- re gr des")
        self.assertEqual(rec["stop"], "max_tokens")
        self.assertIs(rec["auto_low_mem"], False)
        self.assertNotIn("warning", rec)
        self.assertNotIn("error", rec)

    def test_fewer_tokens_than_asked(self):
        rec = self.record(RUN_JSON)
        parse_ours(rec, 16)
        self.assertEqual(rec["warning"], "generated 8 tokens, asked for 16")

    def test_switched_to_low_mem_by_itself(self):
        rec = self.record(RUN_JSON, "note: not enough memory for the default mode: using --low-mem\n")
        parse_ours(rec, 8)
        self.assertIs(rec["auto_low_mem"], True)
        self.assertEqual(rec["warning"],
                         "ours switched to --low-mem by itself (not enough available memory)")
        rec = self.record(RUN_JSON, "using --low-mem\n", side="ours --low-mem")
        parse_ours(rec, 8)
        self.assertIs(rec["auto_low_mem"], True)
        self.assertNotIn("warning", rec)

    def test_one_token_has_no_decode_speed(self):
        j = json.loads(RUN_JSON)
        j["token_ids"] = [350]
        rec = self.record(json.dumps(j))
        parse_ours(rec, 1)
        self.assertIsNone(rec["decode_tok_s"])

    def test_not_json(self):
        rec = self.record("error: cannot open model\n")
        parse_ours(rec, 8)
        self.assertTrue(rec["error"].startswith("cannot read our JSON output: "))
        self.assertNotIn("ttft_s", rec)

    def test_weight_repack_from_the_record_or_its_stdout(self):
        self.assertIs(weight_repack({"weight_repack": True}), True)
        self.assertIs(weight_repack(self.record(RUN_JSON)), False)
        self.assertIsNone(weight_repack({"stdout": str(self.dir / "missing")}))
        self.assertIsNone(weight_repack({}))


class OursArgv(unittest.TestCase):
    def test_argv(self):
        cfg = Config("2.6", "Q4_K_M", "F16", Path("/m/model.gguf"), Path("/m/mmproj.gguf"))
        a = Namespace(ours_bin=Path("/bin/minicpmv"), prompt="Describe.", n_predict=32, threads=2,
                      ctx=4096)
        base = ["/bin/minicpmv", "run", "-m", "/m/model.gguf", "--mmproj", "/m/mmproj.gguf",
                "--image", "/i.png", "-p", "Describe.", "-n", "32", "--temp", "0", "--ignore-eos",
                "-t", "2", "-c", "4096", "--json"]
        self.assertEqual([str(x) for x in ours_argv(cfg, Path("/i.png"), a)], base)
        self.assertEqual([str(x) for x in ours_argv(cfg, Path("/i.png"), a, max_slices=4)],
                         base + ["--max-slices", "4"])
        self.assertEqual([str(x) for x in ours_argv(cfg, Path("/i.png"), a, low_mem=True)],
                         base + ["--low-mem"])


if __name__ == "__main__":
    unittest.main()
