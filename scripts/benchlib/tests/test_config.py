"""Configurations, model file names, and the command line (defaults, --pair, --model-dir)."""
import contextlib
import io
import tempfile
import unittest
from pathlib import Path

from benchlib import cli
from benchlib.config import (Config, find_in, made_files, mmproj_names, note_made, parse_config,
                             text_names)


def dies(test: unittest.TestCase, fn, *args) -> str:
    """Asserts that fn(*args) exits with code 2; returns its error message."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), test.assertRaises(SystemExit) as e:
        fn(*args)
    test.assertEqual(e.exception.code, 2)
    return err.getvalue()


class ParseConfig(unittest.TestCase):
    def test_types_upper_cased(self):
        c = parse_config(" 2.6:q4_k_m:f16 ")
        self.assertEqual(c, Config("2.6", "Q4_K_M", "F16"))
        self.assertEqual(c.label, "2.6:Q4_K_M:F16")
        self.assertEqual(c.title, "MiniCPM-V 2.6, text Q4_K_M + mmproj F16")
        self.assertIsNone(c.model)

    def test_bad(self):
        for bad in ("2.6:Q4_K_M", "2.6::F16", "2.6:Q4_K_M:F16:x", ""):
            self.assertIn("expected VERSION:TEXT_TYPE:MMPROJ_TYPE", dies(self, parse_config, bad))

    def test_file_names(self):
        self.assertEqual(text_names("F16"), ["model.gguf", "model-F16.gguf", "model-f16.gguf"])
        self.assertEqual(text_names("Q4_K_M"), ["model-Q4_K_M.gguf"])
        self.assertEqual(mmproj_names("F16"), ["mmproj.gguf", "mmproj-F16.gguf", "mmproj-f16.gguf"])
        self.assertEqual(mmproj_names("Q8_0"), ["mmproj-Q8_0.gguf"])

    def test_find_and_made_files(self):
        with tempfile.TemporaryDirectory() as d:
            folder = Path(d)
            self.assertIsNone(find_in(folder, text_names("F16")))
            (folder / "model-f16.gguf").write_bytes(b"")
            self.assertEqual(find_in(folder, text_names("F16")), folder / "model-f16.gguf")
            self.assertEqual(made_files(folder), set())
            note_made(folder, "model.gguf", True)
            note_made(folder, "mmproj.gguf", True)
            note_made(folder, "model.gguf", False)
            self.assertEqual(made_files(folder), {"mmproj.gguf"})


class Options(unittest.TestCase):
    def options(self, *argv: str):
        a = cli.build_parser().parse_args(list(argv))
        cli.apply_defaults(a)
        return a

    def test_defaults(self):
        a = self.options()
        self.assertEqual((a.pairs, a.secondary_pairs, a.series_runs, a.n_predict, a.membw_mib),
                         (6, 3, 1, 32, 1024))
        self.assertEqual((a.threads, a.ctx, a.timeout, a.their_build), (2, 4096, 3600, "stock"))
        self.assertEqual(a.ours_bin, cli.OURS_BIN)
        self.assertEqual(a.prompt, "Describe this image in detail.")

    def test_quick_defaults_and_explicit_values(self):
        a = self.options("--quick", "--pairs", "2", "--ours-bin", "/no-such-dir/x/../minicpmv")
        self.assertEqual((a.pairs, a.secondary_pairs, a.series_runs, a.n_predict, a.membw_mib),
                         (2, 1, 1, 8, 256))
        self.assertEqual(a.ours_bin, Path("/no-such-dir/minicpmv"))

    def test_refused_values(self):
        for argv in (["--pairs", "0"], ["-n", "1"], ["-t", "0"], ["--quick", "--series-runs", "0"]):
            self.assertIn("are needed", dies(self, self.options, *argv))

    def test_image_size(self):
        self.assertEqual(cli.image_size("1920x1080"), (1920, 1080))
        self.assertIn("bad --image-size", dies(self, cli.image_size, "1920*1080"))

    def test_slices(self):
        self.assertEqual(cli.slice_values("9,1,4,1,"), [1, 4, 9])
        self.assertIn("bad --slices", dies(self, cli.slice_values, "1,four"))

    def test_pair_gives_files_and_adds_configurations(self):
        with tempfile.TemporaryDirectory() as d:
            m, p = Path(d) / "m.gguf", Path(d) / "p.gguf"
            m.write_bytes(b"")
            p.write_bytes(b"")
            configs = [parse_config("2.6:Q4_K_M:F16")]
            cli.apply_pairs(configs, [f"2.6:q4_k_m:f16={m},{p}", f"4.0:Q4_K_M:F16={m},{p}"])
            self.assertEqual([c.label for c in configs], ["2.6:Q4_K_M:F16", "4.0:Q4_K_M:F16"])
            self.assertEqual((configs[0].model, configs[0].mmproj), (m, p))
            self.assertIn("expected LABEL=MODEL,MMPROJ",
                          dies(self, cli.apply_pairs, configs, [f"2.6:Q4_K_M:F16={m}"]))
            self.assertIn("does not exist",
                          dies(self, cli.apply_pairs, configs, [f"2.6:Q4_K_M:F16={m},{d}/none"]))

    def test_model_folders(self):
        configs = [parse_config("2.6:Q4_K_M:F16"), parse_config("4.0:Q4_K_M:F16")]
        bench = Path("/cache/bench")
        a = self.options("--model-dir", "/data/m26", "--model-dir", "4.0=/data/m40")
        self.assertEqual(cli.model_folders(a, configs, bench),
                         {"2.6": Path("/data/m26"), "4.0": Path("/data/m40")})
        self.assertEqual(cli.model_folders(self.options(), configs, bench),
                         {"2.6": bench / "v2.6", "4.0": bench / "v4.0"})
        self.assertEqual(cli.model_folders(self.options("--quick"), configs, bench),
                         {"2.6": bench / "quick/v2.6-tiny", "4.0": bench / "quick/v4.0-tiny"})

    def test_plan(self):
        with tempfile.TemporaryDirectory() as d:
            a = self.options("--quick", "--out", f"{d}/out", "--bench-dir", f"{d}/bench",
                             "--configs", "2.6:Q4_K_M:F16,2.6:Q8_0:Q8_0", "--slices", "9,1,4,1")
            with contextlib.redirect_stderr(io.StringIO()):
                plan = cli.make_plan(a)
            self.assertTrue((Path(d) / "out").is_dir())
            self.assertEqual(plan.logs, Path(d) / "out/logs")
            self.assertEqual([c.label for c in plan.configs], ["2.6:Q4_K_M:F16", "2.6:Q8_0:Q8_0"])
            self.assertIs(plan.headline, plan.configs[0])
            self.assertEqual((plan.img_w, plan.img_h, plan.scale), (640, 360, "tiny"))
            self.assertEqual(plan.slices, [1, 4, 9])


if __name__ == "__main__":
    unittest.main()
