"""SVG primitives: axis scale, tick labels, wrapping, escaping, a panel's bars."""
import re
import unittest

from benchlib.svg import bar_panel, esc, nice_max, stacked_panel, svg_doc, tick_fmt, wrap


class Primitives(unittest.TestCase):
    def test_nice_max(self):
        self.assertEqual(nice_max(0), (1.0, 0.2))
        self.assertEqual(nice_max(10), (10, 2))
        self.assertEqual(nice_max(11), (12.5, 2.5))
        self.assertEqual(nice_max(3.3), (4.0, 1))
        self.assertEqual(nice_max(1.1), (1.25, 0.25))

    def test_tick_fmt(self):
        self.assertEqual(tick_fmt(4, 2), "4")
        self.assertEqual(tick_fmt(0.4, 0.2), "0.4")
        self.assertEqual(tick_fmt(0.75, 0.25), "0.75")

    def test_wrap(self):
        self.assertEqual(wrap("aaaa bbbb cccc", 61), ["aaaa bbbb", "cccc"])
        self.assertEqual(wrap("aaaa bbbb cccc", 60), ["aaaa", "bbbb", "cccc"])  # "aaaa bbbb": 60.48 px
        self.assertEqual(wrap("short", 600), ["short"])

    def test_esc(self):
        self.assertEqual(esc('a<b & "c"'), "a&lt;b &amp; &quot;c&quot;")

    def test_doc(self):
        doc = svg_doc(100, 50, "", "T & t")
        self.assertTrue(doc.startswith('<svg xmlns="http://www.w3.org/2000/svg" width="100" height="50"'))
        self.assertIn("<title>T &amp; t</title>", doc)


class Panels(unittest.TestCase):
    def test_bar_panel(self):
        svg = bar_panel(0, 0, 400, 300, "Title", ["g1", "g2"],
                        [("ours", "#111111", [1.0, 2.0]), ("theirs", "#222222", [None, 4.0])],
                        "s", "{:.1f}", ref=1.0, outline={"theirs"})
        self.assertEqual(len(re.findall(r'fill="#111111"', svg)), 2 + 1)  # bars + legend
        self.assertEqual(len(re.findall(r'stroke="#222222"', svg)), 1 + 1)  # outlined bar + legend
        for label in ("1.0", "2.0", "4.0", "g1", "g2", "Title"):
            self.assertIn(f">{label}</text>", svg)
        self.assertIn('stroke-dasharray="6,4"', svg)  # the reference line

    def test_stacked_panel_total_and_rest(self):
        svg = stacked_panel(0, 0, 400, 300, "T", [("bar", [1.0, 2.0], 4.0)],
                            [("a", "#aaaaaa"), ("b", "#bbbbbb"), ("rest", "#cccccc")], "seconds")
        self.assertIn(">4.00 s</text>", svg)
        self.assertEqual(len(re.findall(r'fill="#cccccc"', svg)), 1 + 1)  # the rest + legend


if __name__ == "__main__":
    unittest.main()
