"""The video section's pure parts: the llama-mtmd-cli prompt, the argv of both sides, the
figures of a run, the per-round ratios and the table (the live part runs in
`scripts/bench --video`)."""
import unittest
from argparse import Namespace
from pathlib import Path

from benchlib.config import Config
from benchlib.video import METRICS, SIDES, figures, mtmd_prompt, ours_argv, render, summarize, theirs_argv


def run(side: str, rnd: int, scale: float) -> dict:
    return {"round": rnd, "side": side, "ttft_s": 10.0 * scale, "encode_s": 8.0 * scale,
            "s_per_frame": 4.0 * scale, "frames_per_s": 0.25 / scale, "n_chunks": 14,
            "prompt_tokens": 965, "peak_rss_mib": 100.0 * scale, "text": "x"}


class TestVideoBench(unittest.TestCase):
    def test_the_prompt_is_the_references_layout(self):
        # docs/video-reference.md: 2.6 joins frames and question with "\n"; 4.6 with nothing.
        self.assertEqual(mtmd_prompt(2, "\n", "q"), "<__media__>\n<__media__>\nq")
        self.assertEqual(mtmd_prompt(3, "", "q"), "<__media__>" * 3 + "q")

    def test_both_sides_get_the_same_settings_and_theirs_the_frames(self):
        a = Namespace(video_frames=2, n_predict=8, threads=2, ctx=4096)
        cfg = Config("4.6", "Q4_K_M", "F16", Path("m.gguf"), Path("p.gguf"))
        ours = [str(x) for x in ours_argv("minicpmv", cfg, Path("c.mp4"), a, frame_slices=9)]
        self.assertIn("--video", ours)
        self.assertEqual(ours[ours.index("--max-frames") + 1], "2")
        self.assertEqual(ours[ours.index("--frame-slices") + 1], "9")
        theirs = [str(x) for x in theirs_argv("mtmd", cfg, [Path("f1.png"), Path("f2.png")], a)]
        self.assertEqual([theirs[i + 1] for i, x in enumerate(theirs) if x == "--image"],
                         ["f1.png", "f2.png"])
        self.assertEqual(theirs[theirs.index("-p") + 1], "<__media__><__media__>What happens in this video?")
        for flag in ("-t", "-c", "-n"):
            self.assertEqual(ours[ours.index(flag) + 1], theirs[theirs.index(flag) + 1])

    def test_figures_per_frame(self):
        f = figures({"encode_s": 6.0, "ttft_s": 9.0, "n_chunks": 6, "peak_rss_mib": 1.0}, 2)
        self.assertEqual((f["s_per_frame"], f["frames_per_s"]), (3.0, 1 / 3))
        self.assertIsNone(figures({}, 2)["s_per_frame"])

    def test_ratios_are_per_round_and_the_table_has_every_metric(self):
        runs = [run("ours", r, 0.5) for r in (0, 1)] + [run("ours 9 slices", r, 1.0) for r in (0, 1)] \
            + [run("llama.cpp", r, 2.0) for r in (0, 1)]
        s = summarize(runs)
        self.assertAlmostEqual(s["ttft_s"]["ours ratio"], 0.25)
        self.assertAlmostEqual(s["ttft_s"]["ours 9 slices ratio"], 0.5)
        self.assertAlmostEqual(s["ttft_s"]["ours 9 slices interval"][0], 0.5)
        result = {"settings": {"clip": "c.mp4", "seconds": 60, "frames": 2, "threads": 2, "ctx": 4096,
                               "n_predict": 8, "rounds": 2, "commit": "abc", "question": "q"},
                  "configs": {"2.6:Q4_K_M:F16": {"video": {"frame_indices": [15, 45], "source_frames": 1800,
                                                           "chunks_per_frame": 3, "tokens_per_frame": 192,
                                                           "frame_slices": 2},
                                                 "runs": runs, "summary": s}}}
        md = render(result)
        for _, name, _ in METRICS:
            self.assertIn(f"| {name} |", md)
        self.assertIn("0.50", md)
        self.assertEqual(len(SIDES), 3)


if __name__ == "__main__":
    unittest.main()
