"""The test image: the same pixels every time (checked on the decompressed pixel rows, so that
another zlib version cannot make the test fail)."""
import hashlib
import struct
import tempfile
import unittest
import zlib
from pathlib import Path

from benchlib.image import png_bytes, write_png


def pixel_rows(png: bytes) -> bytes:
    """The decompressed IDAT of a PNG with one IDAT chunk right after IHDR."""
    (n,) = struct.unpack(">I", png[33:37])
    assert png[37:41] == b"IDAT"
    return zlib.decompress(png[41:41 + n])


class TestImage(unittest.TestCase):
    def test_header(self):
        png = png_bytes(7, 3)
        # Signature, then IHDR: 7 x 3, 8 bits, RGB, with its CRC.
        self.assertEqual(png[:33].hex(), "89504e470d0a1a0a0000000d4948445200000007000000030802000000d0a18292")
        self.assertTrue(png.endswith(b"\x00\x00\x00\x00IEND\xaeB`\x82"))

    def test_pixels(self):
        # Per row: filter byte 0, then RGB per pixel.
        self.assertEqual(pixel_rows(png_bytes(7, 3)).hex(),
                         "000040322a5b32550e32807d32aa02c8d471c8ff24c8"
                         "000090cd2aabcd555ecd80cdcdaa5237d4c137ff7437"
                         "0000e0322afb3255ae3280ff32aaa2c8d4ffc8ffc4c8")
        rows = pixel_rows(png_bytes(64, 64))
        self.assertEqual(len(rows), 64 * (1 + 64 * 3))
        self.assertEqual(hashlib.sha256(rows).hexdigest(),
                         "0efbc8bf85e6b1cc0090d20cf7e69dc1dae53f990218d5158ea0291de4317c7a")

    def test_write_png(self):
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "sub/image-7x3.png"
            write_png(path, 7, 3)
            self.assertEqual(path.read_bytes(), png_bytes(7, 3))
            self.assertEqual([p.name for p in path.parent.iterdir()], ["image-7x3.png"])


if __name__ == "__main__":
    unittest.main()
