"""Finding or making model files, with a stand-in for `minicpmv synth` and `minicpmv quantize`."""
import contextlib
import os
import tempfile
import unittest
from pathlib import Path

from benchlib.config import made_files, parse_config
from benchlib.models import prepare_models
from benchlib.tests import fake_executable

# synth --version V --scale S --out-dir D: writes D/model.gguf and D/mmproj.gguf;
# quantize SRC DST --type T -t N: writes DST. Every call is logged.
FAKE = """import sys
from pathlib import Path
args = sys.argv[1:]
with open(LOG, "a") as f:
    f.write(" ".join(args) + "\\n")
if args[0] == "synth":
    out = Path(args[args.index("--out-dir") + 1])
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.gguf").write_text("f16 model")
    (out / "mmproj.gguf").write_text("f16 mmproj")
elif args[0] == "quantize":
    Path(args[2]).write_text(Path(args[1]).read_text() + " as " + args[4])
"""


class PrepareModels(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self.tmp.name)
        self.log = self.dir / "calls"
        self.bin = fake_executable(self.dir, "minicpmv", f"LOG = {str(self.log)!r}\n" + FAKE)
        self.folder = self.dir / "v2.6"

    def tearDown(self):
        self.tmp.cleanup()

    def prepare(self, labels, keep_f16=False):
        configs = [parse_config(x) for x in labels]
        # A real file: run_checked hands our stderr to the commands.
        with open(os.devnull, "w") as quiet, contextlib.redirect_stderr(quiet):
            prepare_models(self.bin, configs, {"2.6": self.folder}, "tiny", 2, keep_f16)
        return configs

    def calls(self):
        return [" ".join(line.split()[:2]) for line in self.log.read_text().splitlines()]

    def test_synth_once_quantize_then_delete_the_f16_text_model(self):
        c1, c2 = self.prepare(["2.6:Q4_K_M:F16", "2.6:Q8_0:Q8_0"])
        self.assertEqual(self.calls(), ["synth --version", f"quantize {self.folder}/model.gguf",
                                        f"quantize {self.folder}/model.gguf",
                                        f"quantize {self.folder}/mmproj.gguf"])
        self.assertEqual((c1.model, c1.mmproj), (self.folder / "model-Q4_K_M.gguf", self.folder / "mmproj.gguf"))
        self.assertEqual((c2.model, c2.mmproj), (self.folder / "model-Q8_0.gguf", self.folder / "mmproj-Q8_0.gguf"))
        self.assertEqual(c2.model.read_text(), "f16 model as q8_0")
        self.assertFalse((self.folder / "model.gguf").exists())
        self.assertEqual(made_files(self.folder), {"mmproj.gguf", "model-Q4_K_M.gguf",
                                                   "model-Q8_0.gguf", "mmproj-Q8_0.gguf"})
        self.assertEqual([p.name for p in self.folder.glob(".synth-tmp-*")], [])

    def test_existing_files_are_used(self):
        self.prepare(["2.6:Q4_K_M:F16"])
        self.log.unlink()
        (c,) = self.prepare(["2.6:Q4_K_M:F16"])
        self.assertFalse(self.log.exists())
        self.assertEqual(c.model, self.folder / "model-Q4_K_M.gguf")

    def test_keep_f16_and_files_not_made_here(self):
        self.prepare(["2.6:Q4_K_M:F16"], keep_f16=True)
        self.assertTrue((self.folder / "model.gguf").exists())
        other = self.dir / "v2.6-user"
        other.mkdir()
        (other / "model-F16.gguf").write_text("user's f16 model")
        (other / "mmproj-F16.gguf").write_text("user's f16 mmproj")
        self.folder = other
        (c,) = self.prepare(["2.6:Q4_K_M:F16"])
        self.assertEqual(c.model.read_text(), "user's f16 model as q4_k_m")
        self.assertEqual(c.mmproj, other / "mmproj-F16.gguf")
        self.assertTrue((other / "model-F16.gguf").exists())  # not made by the bench: kept

    def test_configurations_with_files_are_left_alone(self):
        c = parse_config("2.6:Q4_K_M:F16")
        c.model, c.mmproj = self.dir / "m.gguf", self.dir / "p.gguf"
        prepare_models(self.bin, [c], {}, "tiny", 2, False)
        self.assertFalse(self.log.exists())


if __name__ == "__main__":
    unittest.main()
