"""The bench against our real binary: `minicpmv inspect --json` and `plan --json` on a synthetic
pair made by `minicpmv synth`, read the way the bench reads them (the other tests use saved
outputs in fixtures/; this one fails when the binary's JSON drifts from them)."""
import os
import subprocess
import tempfile
import unittest
from pathlib import Path

from benchlib.util import ROOT
from benchlib.weights import read_weights_per_token


class Live(unittest.TestCase):
    def test_from_our_binary_on_a_synthetic_pair(self):
        """`minicpmv inspect --json` and `plan --json`, as the bench calls them."""
        ours = Path(os.environ.get("MINICPMV_BIN") or ROOT / "target/release/minicpmv")
        self.assertTrue(ours.is_file(), f"{ours} is missing: build it (cargo build --release) "
                        "or set MINICPMV_BIN")
        with tempfile.TemporaryDirectory() as d:
            env = {**os.environ, "MINICPMV_HOME": d, "MINICPMV_OFFLINE": "1"}
            subprocess.run([ours, "synth", "--version", "2.6", "--out-dir", d], check=True,
                           capture_output=True, env=env)
            model = Path(d) / "model.gguf"
            w = read_weights_per_token(ours, model, Path(d) / "mmproj.gguf")
            self.assertEqual(w["file_bytes"], model.stat().st_size)
            self.assertEqual(w["architecture"], "qwen2")
            self.assertGreater(w["n_layer"], 0)
            self.assertGreater(w["kv_bytes_per_position"], 0)
            self.assertLessEqual(w["weights_per_token_bytes"], w["tensor_bytes"])
            self.assertLess(w["tensor_bytes"], w["file_bytes"])



if __name__ == "__main__":
    unittest.main()
