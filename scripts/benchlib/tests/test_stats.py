"""stats: the ratio interval, the A/B summary and the pair order, on hand-computed values."""
import math
import unittest

from benchlib.stats import ab_summary, median, pair_order_text, ratio_interval, with_derived


def run(side, pair, order, **figures):
    return {"config": "2.6:Q4_K_M:F16", "series": "ab", "side": side, "pair": pair,
            "order": order, **figures}


class RatioInterval(unittest.TestCase):
    def test_equal_ratios_have_a_zero_width_interval(self):
        self.assertEqual(ratio_interval([0.5, 0.5, 0.5]), (0.5, 0.5, 0.5))

    def test_two_pairs_use_students_t_with_one_degree_of_freedom(self):
        # logs -ln2, +ln2: mean 0, sample stdev ln2*sqrt(2), half-width t(1)=12.706 * ln2.
        g, lo, hi = ratio_interval([0.5, 2.0])
        self.assertAlmostEqual(g, 1.0, places=12)
        self.assertAlmostEqual(math.log2(lo), -12.706, places=9)
        self.assertAlmostEqual(math.log2(hi), 12.706, places=9)

    def test_fewer_than_two_usable_ratios_give_none(self):
        self.assertIsNone(ratio_interval([0.9]))
        self.assertIsNone(ratio_interval([0.9, None, 0.0, -1.0]))


class AbSummary(unittest.TestCase):
    def test_medians_and_per_pair_ratios(self):
        runs = [run("ours", 1, 1, wall_s=10.0), run("llama.cpp", 1, 2, wall_s=20.0),
                run("llama.cpp", 2, 3, wall_s=30.0), run("ours", 2, 4, wall_s=12.0),
                # Not A/B: left out.
                {**run("ours", None, 5, wall_s=1.0), "series": "warmup"}]
        w = ab_summary(runs, "2.6:Q4_K_M:F16")["wall_s"]
        self.assertEqual(w["ours"], 11.0)
        self.assertEqual(w["llama.cpp"], 25.0)
        self.assertEqual(w["ratios"], [0.5, 0.4])
        self.assertAlmostEqual(w["ratio_median"], 0.45)
        self.assertAlmostEqual(w["ratio_interval"][0], math.sqrt(0.2))

    def test_a_missing_figure_gives_no_ratio_for_that_pair(self):
        runs = [run("ours", 1, 1, prefill_s=3.0), run("llama.cpp", 1, 2)]
        p = ab_summary(runs, "2.6:Q4_K_M:F16")["prefill_s"]
        self.assertEqual(p["ratios"], [None])
        self.assertIsNone(p["ratio_median"])
        self.assertIsNone(p["llama.cpp"])


class Helpers(unittest.TestCase):
    def test_pair_order(self):
        res = {"runs": [run("ours", 1, 1), run("llama.cpp", 1, 2),
                        run("llama.cpp", 2, 3), run("ours", 2, 4)]}
        self.assertEqual(pair_order_text(res, "2.6:Q4_K_M:F16"),
                         "counterbalanced: ours first in 1, llama.cpp first in 1")
        res["runs"] = res["runs"][:2]
        self.assertEqual(pair_order_text(res, "2.6:Q4_K_M:F16"), "ours first in every pair")

    def test_per_slice_is_the_median_projector_call(self):
        self.assertEqual(with_derived({"chunk_encode_s": [3.0, 1.0, 2.0]})["per_slice_ms"], 2000.0)
        self.assertNotIn("per_slice_ms", with_derived({"chunk_encode_s": []}))

    def test_median_ignores_what_is_not_a_number(self):
        self.assertEqual(median([3, None, 1, "x", 2]), 2)
        self.assertIsNone(median([None]))


if __name__ == "__main__":
    unittest.main()
