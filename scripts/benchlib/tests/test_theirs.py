"""Their side: the argv of llama-mtmd-cli and parsing its log (JSONL with timestamps, or plain
text), and reading their build's flags."""
import tempfile
import unittest
from argparse import Namespace
from pathlib import Path

from benchlib.config import Config
from benchlib.theirs import cmake_cache_value, log_entries, parse_theirs, their_argv

# llama-mtmd-cli -lv 4 --log-jsonl --log-timestamps --perf, -n 4 (times in microseconds since
# the log started): the lines the parser looks for, in the order mtmd-cli prints them.
JSONL = """\
{"type":"log","time":0,"level":"info","msg":"build: 6123 (abcdef0) with cc for x86_64-linux-gnu\\n"}
{"type":"log","time":500000,"level":"info","msg":"main: loading model: /m/model-Q4_K_M.gguf\\n"}
{"type":"log","time":750000,"level":"info","msg":"encoding mtmd batch, n_chunks = 2\\n"}
{"type":"log","time":2250000,"level":"info","msg":"mtmd batch encoding done in 1500 ms\\n"}
{"type":"log","time":2300000,"level":"info","msg":"decoding image batch 1/1, n_tokens_batch = 128\\n"}
{"type":"log","time":2500000,"level":"info","msg":"image decoded (batch 1/1) in 200 ms\\n"}
{"type":"log","time":3000000,"level":"none","msg":"\\n"}
{"type":"log","time":3250000,"level":"none","msg":" a"}
{"type":"log","time":3500000,"level":"none","msg":" b"}
{"type":"log","time":3750000,"level":"none","msg":" c"}
{"type":"log","time":4000000,"level":"none","msg":" d"}
{"type":"log","time":4010000,"level":"none","msg":"\\n\\n"}
{"type":"log","time":4020000,"level":"info","msg":"llama_perf_context_print:        load time =     500.00 ms\\n"}
{"type":"log","time":4020001,"level":"info","msg":"llama_perf_context_print: prompt eval time =    2000.00 ms /   140 tokens (   14.29 ms per token,    70.00 tokens per second)\\n"}
{"type":"log","time":4020002,"level":"info","msg":"llama_perf_context_print:        eval time =     750.00 ms /     3 runs   (  250.00 ms per token,     4.00 tokens per second)\\n"}
{"type":"log","time":4020003,"level":"info","msg":"llama_perf_context_print:       total time =    3500.00 ms /   143 tokens\\n"}
"""

# A log without --log-jsonl (plain text, no timestamps), with a line of the older mtmd-cli path
# too ("image slice encoded", one per slice). The generated text is not found in plain text.
PLAIN = """\
main: loading model: /m/model-Q4_K_M.gguf
encoding mtmd batch, n_chunks = 2
mtmd batch encoding done in 1500 ms
image slice encoded in 700 ms
 a b c d

llama_perf_context_print:        load time =     500.00 ms
llama_perf_context_print: prompt eval time =    2000.00 ms /   140 tokens (   14.29 ms per token,    70.00 tokens per second)
llama_perf_context_print:        eval time =     750.00 ms /     3 runs   (  250.00 ms per token,     4.00 tokens per second)
llama_perf_context_print:       total time =    3500.00 ms /   143 tokens
"""


class ParseTheirs(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self.tmp.name)

    def tearDown(self):
        self.tmp.cleanup()

    def parse(self, stdout: str, n_predict: int, stderr: str = "") -> dict:
        (self.dir / "run.stdout").write_text(stdout)
        (self.dir / "run.stderr").write_text(stderr)
        rec = {"stdout": str(self.dir / "run.stdout"), "stderr": str(self.dir / "run.stderr")}
        parse_theirs(rec, n_predict)
        return rec

    def test_jsonl_log(self):
        rec = self.parse(JSONL, 4)
        self.assertEqual(rec["text"], " a b c d")
        self.assertEqual(rec["n_generated"], 4)
        self.assertIs(rec["log_timestamps"], True)
        self.assertEqual(rec["load_s"], 0.5)
        self.assertEqual(rec["encode_s"], 1.5)  # from the timestamps of the batch's two lines
        self.assertEqual(rec["chunk_encode_s"], [0.75, 0.75])
        self.assertEqual(rec["n_chunks"], 2)
        self.assertEqual(rec["image_tokens"], 128)
        self.assertEqual(rec["prompt_tokens"], 140)
        self.assertEqual(rec["perf"], {"load": [500.0], "prompt": [2000.0, 140.0],
                                       "eval": [750.0, 3.0], "total": [3500.0, 143.0]})
        self.assertEqual(rec["image_embd_decode_s"], 0.2)
        # Prompt done at 3.0 s, prompt eval 2.0 s, loaded at 0.5 s.
        self.assertEqual(rec["preprocess_s"], 0.5)
        self.assertEqual(rec["prefill_s"], 0.5)  # prompt eval 2.0 s minus encode 1.5 s
        self.assertEqual(rec["prompt_eval_s_incl_encode"], 2.0)
        self.assertEqual(rec["prompt_tok_s"], 280.0)
        self.assertEqual(rec["decode_tok_s_own"], 4.0)
        self.assertEqual(rec["ttft_s"], 3.25)
        self.assertEqual(rec["decode_tok_s"], 4.0)  # 3 steps from 3.25 s to 4.0 s
        self.assertNotIn("warning", rec)

    def test_log_split_over_stdout_and_stderr(self):
        lines = JSONL.splitlines(keepends=True)
        rec = self.parse("".join(lines[:12]), 4, stderr="".join(lines[12:]))
        self.assertEqual(rec["ttft_s"], 3.25)
        self.assertEqual(rec["prefill_s"], 0.5)

    def test_fewer_pieces_than_asked(self):
        rec = self.parse(JSONL, 6)
        self.assertEqual(rec["n_generated"], 5)  # the final "\n\n" counts when short
        self.assertEqual(rec["warning"], "found 5 generated pieces, expected 6")

    def test_perf_lines_missing(self):
        rec = self.parse(JSONL.split('{"type":"log","time":4020000')[0], 4)
        self.assertEqual(rec["ttft_s"], 3.25)
        self.assertIsNone(rec["prompt_tokens"])
        self.assertNotIn("prefill_s", rec)
        self.assertEqual(rec["warning"], "llama.cpp's perf lines are missing from its log: "
                                         "no prefill figure for this run")

    def test_plain_text_log(self):
        rec = self.parse(PLAIN, 4)
        self.assertIs(rec["log_timestamps"], False)
        self.assertEqual(rec["text"], "")  # only "none"-level JSONL entries are generated text
        self.assertIsNone(rec["n_generated"])
        self.assertIsNone(rec["load_s"])
        self.assertEqual(rec["chunk_encode_s"], [0.75, 0.75, 0.7])
        self.assertAlmostEqual(rec["encode_s"], 2.2)
        self.assertEqual(rec["prefill_s"], 0.0)  # prompt eval 2.0 s < encode 2.2 s
        self.assertIsNone(rec["prompt_tok_s"])
        self.assertEqual(rec["ttft_s"], 2.75)  # (total 3500 - eval 750) ms
        self.assertEqual(rec["decode_tok_s"], 4.0)
        self.assertEqual(rec["warning"], "no log timestamps: TTFT from perf total - eval")

    def test_log_entries(self):
        (self.dir / "o").write_text(JSONL.splitlines()[1] + "\nplain line\n{not json\n")
        self.assertEqual(log_entries(str(self.dir / "o"), str(self.dir / "missing")), [
            (0.5, "info", "main: loading model: /m/model-Q4_K_M.gguf\n"),
            (None, "text", "plain line\n"), (None, "text", "{not json\n")])


class TheirArgv(unittest.TestCase):
    def test_argv(self):
        cfg = Config("2.6", "Q4_K_M", "F16", Path("/m/model.gguf"), Path("/m/mmproj.gguf"))
        a = Namespace(prompt="Describe.", n_predict=32, threads=2, ctx=4096, llama_warmup=True)
        base = ["/b/llama-mtmd-cli", "-m", "/m/model.gguf", "--mmproj", "/m/mmproj.gguf",
                "--image", "/i.png", "-p", "Describe.", "-n", "32", "--temp", "0", "--ignore-eos",
                "-t", "2", "-c", "4096", "--perf", "-lv", "4", "--log-jsonl", "--log-timestamps",
                "--log-prefix"]
        argv = their_argv(cfg, Path("/i.png"), a, Path("/b/llama-mtmd-cli"))
        self.assertEqual([str(x) for x in argv], base)
        a.llama_warmup = False
        argv = their_argv(cfg, Path("/i.png"), a, Path("/b/llama-mtmd-cli"))
        self.assertEqual([str(x) for x in argv], base + ["--no-warmup", "-fa", "on"])

    def test_cmake_cache_value(self):
        with tempfile.TemporaryDirectory() as d:
            cache = Path(d) / "CMakeCache.txt"
            cache.write_text("// Flags used by the CXX compiler\nCMAKE_CXX_FLAGS:STRING=-mno-amx-tile "
                             "\nCMAKE_CXX_FLAGS_RELEASE:STRING=-O3\n")
            self.assertEqual(cmake_cache_value(cache, "CMAKE_CXX_FLAGS"), "-mno-amx-tile")
            self.assertEqual(cmake_cache_value(cache, "CMAKE_CXX_FLAGS_RELEASE"), "-O3")
            self.assertIsNone(cmake_cache_value(cache, "GGML_NATIVE"))
            self.assertIsNone(cmake_cache_value(Path(d) / "missing", "CMAKE_CXX_FLAGS"))


if __name__ == "__main__":
    unittest.main()
