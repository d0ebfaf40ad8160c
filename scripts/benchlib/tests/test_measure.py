"""/usr/bin/time -v parsing and running one measured process."""
import os
import sys
import tempfile
import unittest
from pathlib import Path

from benchlib.measure import clock_seconds, parse_time_v, run_measured

# The report of `/usr/bin/time -v` (GNU time 1.9), as written to its -o file.
TIME_V = """\
\tCommand being timed: "minicpmv run -m model.gguf --json"
\tUser time (seconds): 345.21
\tSystem time (seconds): 2.88
\tPercent of CPU this job got: 195%
\tElapsed (wall clock) time (h:mm:ss or m:ss): 2:57.60
\tAverage shared text size (kbytes): 0
\tAverage unshared data size (kbytes): 0
\tAverage stack size (kbytes): 0
\tAverage total size (kbytes): 0
\tMaximum resident set size (kbytes): 9000700
\tAverage resident set size (kbytes): 0
\tMajor (requiring I/O) page faults: 3
\tMinor (reclaiming a frame) page faults: 1131378
\tVoluntary context switches: 11
\tInvoluntary context switches: 0
\tSwaps: 0
\tFile system inputs: 352
\tFile system outputs: 8
\tSocket messages sent: 0
\tSocket messages received: 0
\tSignals delivered: 0
\tPage size (bytes): 4096
\tExit status: 0
"""


class ParseTimeV(unittest.TestCase):
    def test_fields(self):
        self.assertEqual(parse_time_v(TIME_V), {
            "user_s": 345.21, "sys_s": 2.88, "time_v_wall_s": 177.6, "peak_rss_kib": 9000700,
            "major_faults": 3, "minor_faults": 1131378, "exit_status": 0})

    def test_exit_status_of_a_failed_command(self):
        text = "\tCommand exited with non-zero status 3\n" + TIME_V.replace("Exit status: 0", "Exit status: 3")
        self.assertEqual(parse_time_v(text)["exit_status"], 3)

    def test_clock_formats(self):
        self.assertEqual(clock_seconds("0:00.50"), 0.5)
        self.assertEqual(clock_seconds("2:57.60"), 177.6)
        self.assertEqual(clock_seconds("1:02:03"), 3723.0)

    def test_nothing_known(self):
        self.assertEqual(parse_time_v("garbage\n\n"), {})


class RunMeasured(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.logs = Path(self.tmp.name) / "logs"

    def tearDown(self):
        self.tmp.cleanup()

    def test_output_files_and_exit_code(self):
        code = "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"
        rec = run_measured([sys.executable, "-c", code], self.logs, "001-x", timeout=60)
        self.assertEqual(rec["exit_code"], 3)
        self.assertFalse(rec["timed_out"])
        self.assertEqual(Path(rec["stdout"]).read_text(), "out\n")
        self.assertEqual(Path(rec["stderr"]).read_text(), "err\n")
        self.assertEqual(rec["stdout"], str(self.logs / "001-x.stdout"))
        self.assertGreater(rec["peak_rss_kib"], 0)
        self.assertEqual(rec["peak_rss_mib"], rec["peak_rss_kib"] / 1024)
        self.assertGreater(rec["wall_s"], 0)
        if os.access("/usr/bin/time", os.X_OK):
            self.assertIn("time_v_wall_s", rec)

    def test_timeout_kills(self):
        rec = run_measured([sys.executable, "-c", "import time; time.sleep(30)"], self.logs, "002-y",
                           timeout=0.3)
        self.assertTrue(rec["timed_out"])
        self.assertNotEqual(rec["exit_code"], 0)
        self.assertLess(rec["wall_s"], 20)


if __name__ == "__main__":
    unittest.main()
