"""The server section's pure parts: reading streamed chunks, the images, the summary and its
table (the live part, two servers, runs in `scripts/bench --server`)."""
import unittest
from pathlib import Path

from benchlib.server import (METRICS, content_of, image_sizes, render, request_body, summarize,
                             theirs_server_argv)


def round_of(side: str, rnd: int, scale: float) -> dict:
    answer = {"ttft_s": 1.0 * scale, "total_s": 2.0 * scale, "tokens": 16}
    level = {"clients": [answer], "ttft_median_s": 1.0 * scale, "throughput_tok_s": 8.0 / scale}
    return {"side": side, "round": rnd, "load_s": 0.5 * scale, "first_ttft_s": 3.0 * scale,
            "second_ttft_s": 1.0 * scale, "first": answer, "second": answer,
            "levels": {"1": level, "2": level, "4": level}, "peak_rss_mib": 100.0 * scale}


class TestServerBench(unittest.TestCase):
    def test_content_chunks_are_told_from_role_usage_and_done(self):
        self.assertEqual(content_of(b'data: {"choices":[{"delta":{"content":"Hi"}}]}\n'), "Hi")
        self.assertIsNone(content_of(b'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}'))
        self.assertIsNone(content_of(b'data: {"choices":[],"usage":{"completion_tokens":3}}'))
        self.assertIsNone(content_of(b"data: [DONE]"))
        self.assertIsNone(content_of(b": keep-alive"))
        self.assertIsNone(content_of(b"data: {not json"))

    def test_images_are_distinct_and_one_projector_call_each(self):
        sizes = image_sizes(8)
        self.assertEqual(len(set(sizes)), 8)
        self.assertTrue(all(w * h <= 448 * 448 for w, h in sizes))

    def test_only_ours_is_asked_to_ignore_the_end_of_text(self):
        self.assertTrue(request_body("AA==", "q", 16, True)["ignore_eos"])
        self.assertNotIn("ignore_eos", request_body("AA==", "q", 16, False))

    def test_theirs_serves_every_request_instead_of_interrupting(self):
        argv = theirs_server_argv(Path("m.gguf"), Path("p.gguf"), 1, 2, 4096)
        self.assertEqual(argv[argv.index("--interrupt_requests") + 1], "False")
        self.assertTrue(request_body("AA==", "q", 16, False)["stream"])

    def test_ratios_are_per_round_ours_over_theirs(self):
        rounds = [round_of("ours", 0, 1.0), round_of("theirs", 0, 2.0),
                  round_of("theirs", 1, 4.0), round_of("ours", 1, 1.0)]
        s = summarize(rounds)
        self.assertEqual(s["load_s"]["ratios"], [0.5, 0.25])
        self.assertEqual(s["tput_4"]["ratios"], [2.0, 4.0])
        self.assertEqual(s["load_s"]["ours"], 0.5)
        self.assertEqual(s["tokens"]["ratios"], [1.0, 1.0])
        self.assertEqual(s["delivered"]["ours"], 1.0)
        self.assertEqual(set(s), {k for k, _, _ in METRICS})
        table = render({"date": "d", "commit": "c", "summary": s, "settings": {
            "scale": "real", "model": "m.gguf", "mmproj": "p.gguf", "threads": 2, "ctx": 4096,
            "n_predict": 16, "rounds": 2, "theirs_version": "0.3.36"}})
        self.assertIn("| load, until the server answers | 0.50 | 1.50 | **0.38** | 0.00–28.90 | 0.50, 0.25 | lower |", table)


if __name__ == "__main__":
    unittest.main()
