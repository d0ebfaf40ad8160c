"""Bytes read per generated token from `minicpmv inspect --json` (+ `plan --json` for the token
table). The expected values are what the bench's former GGUF reader found in the same files."""
import contextlib
import copy
import io
import os
import sys
import tempfile
import unittest
from pathlib import Path

from benchlib.tests import FIXTURES, fixture_json
from benchlib.weights import kv_bytes_per_position, read_weights_per_token, weights_per_token

EXPECTED = fixture_json("weights-per-token-expected.json")


def lookup_bytes(name: str) -> int:
    return fixture_json(f"plan-{name}.json")["footprint"]["text_token_embd_lookup_only"]


class WeightsPerToken(unittest.TestCase):
    def test_same_as_the_gguf_reader(self):
        for name in ("2.6-Q4_K_M", "4.5-F16"):
            with self.subTest(name):
                got = weights_per_token(fixture_json(f"inspect-{name}.json"), lookup_bytes(name))
                self.assertEqual(got, EXPECTED[name])

    def test_figures(self):
        got = weights_per_token(fixture_json("inspect-2.6-Q4_K_M.json"), 34320)
        self.assertEqual(got["tensor_bytes"], 4608 + 18432 + 186384 + 26880 + 61744)
        self.assertEqual(got["weights_per_token_bytes"], 298048 - 34320)
        self.assertEqual(got["bytes_by_type"],
                         {"F32": 4608, "Q4_K": 18432, "Q5_0": 186384, "Q6_K": 26880, "Q8_0": 61744})
        # 2 layers x 1 KV head x (64 + 64) x 2 bytes: head size n_embd 128 / 2 heads.
        self.assertEqual(got["kv_bytes_per_position"], 512)

    def test_tied_embeddings(self):
        got = weights_per_token(fixture_json("inspect-2.6-Q4_K_M.json"), 0)
        self.assertIs(got["tied_embeddings"], True)
        self.assertIsNone(got["token_embd_bytes"])
        self.assertEqual(got["weights_per_token_bytes"], got["tensor_bytes"])

    def test_kv_head_sizes(self):
        j = copy.deepcopy(fixture_json("inspect-4.5-F16.json"))
        hp = j["hparams"]
        hp["qwen3.attention.key_length"], hp["qwen3.attention.value_length"] = 96, 64
        self.assertEqual(kv_bytes_per_position(j, "qwen3"), 2 * 1 * (96 + 64) * 2)
        del hp["qwen3.attention.value_length"]  # V as long as K
        self.assertEqual(kv_bytes_per_position(j, "qwen3"), 2 * 1 * (96 + 96) * 2)
        del hp["qwen3.attention.head_count_kv"]  # as many KV heads as heads
        self.assertEqual(kv_bytes_per_position(j, "qwen3"), 2 * 2 * (96 + 96) * 2)
        self.assertEqual(kv_bytes_per_position({"hparams": {}}, ""), 0)


FAKE_MINICPMV = """#!{python}
import sys
args = sys.argv[1:]
with open({log!r}, "a") as f:
    f.write(" ".join(args) + "\\n")
fixtures = {fixtures!r}
if args[0] == "inspect":
    print(open(fixtures + "/inspect-2.6-Q4_K_M.json").read())
elif args[0] == "plan":
    print(open(fixtures + "/plan-2.6-Q4_K_M.json").read())
    sys.exit({plan_exit})
"""


class ReadWeightsPerToken(unittest.TestCase):
    """With a stand-in for our binary that prints the fixtures."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self.tmp.name)

    def tearDown(self):
        self.tmp.cleanup()

    def fake_binary(self, plan_exit: int) -> Path:
        b = self.dir / "minicpmv"
        b.write_text(FAKE_MINICPMV.format(python=sys.executable, log=str(self.dir / "calls"),
                                          fixtures=str(FIXTURES), plan_exit=plan_exit))
        os.chmod(b, 0o755)
        return b

    def test_asks_inspect_and_plan(self):
        got = read_weights_per_token(self.fake_binary(0), Path("/m/model.gguf"), Path("/m/mmproj.gguf"))
        self.assertEqual(got, EXPECTED["2.6-Q4_K_M"])
        self.assertEqual((self.dir / "calls").read_text().splitlines(), [
            "inspect --json /m/model.gguf", "plan -m /m/model.gguf --mmproj /m/mmproj.gguf --json"])

    def test_a_plan_that_does_not_fit_still_counts(self):
        got = read_weights_per_token(self.fake_binary(1), Path("/m/model.gguf"), Path("/m/mmproj.gguf"))
        self.assertEqual(got["weights_per_token_bytes"], 263728)

    def test_failure_dies(self):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), self.assertRaises(SystemExit):
            read_weights_per_token(self.fake_binary(2), Path("/m/model.gguf"), Path("/m/mmproj.gguf"))
        self.assertIn("plan model.gguf failed (exit 2)", err.getvalue())


if __name__ == "__main__":
    unittest.main()
