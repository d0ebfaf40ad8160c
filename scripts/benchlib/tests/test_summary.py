"""The result dict (results.json) from the runs: summaries, decode ceilings, sweep, --low-mem."""
import json
import unittest

from benchlib.config import parse_config
from benchlib.summary import decode_ceilings, lowmem_summary, result_dict, slices_sweep
from benchlib.tests import fixture_json


class Summary(unittest.TestCase):
    maxDiff = None

    def setUp(self):
        self.res = fixture_json("result-small.json")
        self.configs = [parse_config("2.6:Q4_K_M:F16"), parse_config("2.6:Q8_0:Q8_0")]

    def test_result_dict_matches_the_fixture(self):
        r = self.res
        got = result_dict(r["machine"], r["bandwidth"], r["settings"], r["models"], r["runs"],
                          self.configs, self.configs[0], [1, 4, 9])
        self.assertEqual(list(got), ["machine", "bandwidth", "settings", "models", "summaries",
                                     "decode_ceiling", "slices_sweep", "lowmem", "runs"])
        self.assertEqual(json.loads(json.dumps(got)), r)

    def test_decode_ceiling(self):
        ce = decode_ceilings(self.res["runs"], self.configs, self.res["models"], 20.0, 4)
        # 100 prompt tokens + 4 / 2: the KV cache at position 102 on average.
        self.assertEqual(ce["2.6:Q4_K_M:F16"], {
            "bytes_per_token": 4_369_388_856 + 57344 * 102.0, "weights_bytes": 4_369_388_856,
            "kv_bytes": 57344 * 102.0, "bandwidth_gbs": 20.0,
            "ceiling_tok_s": 20e9 / (4_369_388_856 + 57344 * 102.0)})

    def test_sweep_and_lowmem(self):
        sweep = slices_sweep(self.res["runs"], self.configs[0], [1, 4, 9])
        self.assertEqual([(p["max_slices"], p["n_runs"]) for p in sweep], [(1, 1), (9, 2)])
        self.assertEqual(sweep[1]["wall_s"], 9.0)  # the A/B runs of ours: 10 and 8 s
        self.assertEqual(lowmem_summary(self.res["runs"]),
                         {"peak_rss_mib": 1500.0, "wall_s": 14.0, "ttft_s": 9.0, "decode_tok_s": 1.8})
        self.assertIsNone(lowmem_summary([]))


if __name__ == "__main__":
    unittest.main()
