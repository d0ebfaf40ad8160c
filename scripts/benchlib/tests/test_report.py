"""results.md, the plots and the headline section of docs/BENCHMARKS.md, rendered from a small
fixed result and compared with what the bench rendered before it was split into modules."""
import contextlib
import io
import tempfile
import unittest
from pathlib import Path

from benchlib.config import parse_config
from benchlib.plots import write_svgs
from benchlib.report import HEADLINE_END, HEADLINE_START, fill_headline, render_markdown, their_build_text
from benchlib.tests import FIXTURES, fixture_json

GOLDEN = FIXTURES / "golden"
SVGS = ["ttft-vs-slices.svg", "peak-rss.svg", "decode-vs-ceiling.svg", "ab-pairs.svg"]


def small_result():
    res = fixture_json("result-small.json")
    configs = [parse_config(res["settings"]["headline"]), parse_config("2.6:Q8_0:Q8_0")]
    return res, configs, configs[0]


class Report(unittest.TestCase):
    maxDiff = None

    def test_markdown(self):
        res, configs, headline = small_result()
        self.assertEqual(render_markdown(res, configs, headline), (GOLDEN / "results.md").read_text())

    def test_markdown_quick_mode_and_missing_series(self):
        res, configs, headline = small_result()
        res["settings"]["quick"] = True
        res["lowmem"] = None
        res["slices_sweep"] = []
        md = render_markdown(res, configs, headline)
        self.assertIn("> **Quick mode**: tiny synthetic models", md)
        self.assertIn("Models (synthetic, random weights with the real shapes; tiny shapes in quick mode)", md)
        self.assertIn("| peak RSS (MiB) | 6050 | 3050 | not run |", md)
        self.assertNotIn("## Time to first token vs --max-slices", md)

    def test_svgs(self):
        res, configs, headline = small_result()
        with tempfile.TemporaryDirectory() as d:
            write_svgs(Path(d), res, configs, headline)
            self.assertEqual(sorted(p.name for p in Path(d).iterdir()), sorted(SVGS))
            for name in SVGS:
                with self.subTest(name):
                    self.assertEqual((Path(d) / name).read_text(), (GOLDEN / name).read_text())

    def test_fill_headline(self):
        res, _, headline = small_result()
        with tempfile.TemporaryDirectory() as d:
            doc = Path(d) / "BENCHMARKS.md"
            doc.write_text(f"# Benchmarks\n\nbefore\n\n{HEADLINE_START}\nold figures\n{HEADLINE_END}\n\nafter\n")
            with contextlib.redirect_stderr(io.StringIO()):
                fill_headline(doc, res, headline)
            self.assertEqual(doc.read_text(), (GOLDEN / "BENCHMARKS.md").read_text())

    def test_fill_headline_without_markers_changes_nothing(self):
        res, _, headline = small_result()
        with tempfile.TemporaryDirectory() as d:
            doc = Path(d) / "BENCHMARKS.md"
            doc.write_text("# Benchmarks\n")
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                fill_headline(doc, res, headline)
                fill_headline(Path(d) / "missing.md", res, headline)
            self.assertEqual(doc.read_text(), "# Benchmarks\n")
            self.assertIn("has no headline markers; not updated", err.getvalue())

    def test_their_build_text(self):
        self.assertEqual(their_build_text({"their_build": "stock", "their_cxx_flags": None}),
                         "stock: llama.cpp's CMake defaults, GGML_NATIVE=ON, vs our default native build")
        self.assertIn("plus `-mno-amx-tile` (AMX off",
                      their_build_text({"their_build": "stock", "their_cxx_flags": "-mno-amx-tile"}))
        self.assertEqual(their_build_text({"their_build": "same-flags"}),
                         "with our build's exact compiler flags")
        self.assertTrue(their_build_text({}).startswith("with the same flags as ours"))


if __name__ == "__main__":
    unittest.main()
