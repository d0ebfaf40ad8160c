"""The test image: a deterministic PNG, standard library only."""
import math
import struct
import zlib
from pathlib import Path

from .util import write_bytes_atomic


def write_png(path: Path, w: int, h: int) -> None:
    """Smooth gradients with structure: red ramps left to right, green is diagonal waves, blue a
    16x9 checkerboard of two levels; the same bytes every time."""
    write_bytes_atomic(path, png_bytes(w, h))


def png_bytes(w: int, h: int) -> bytes:
    """The PNG file of write_png."""
    red = bytes(round(255 * x / max(1, w - 1)) for x in range(w))
    gx = bytes(int(64 + 63 * math.sin(2 * math.pi * 3 * x / w)) for x in range(w))
    bx = bytes(200 if (x * 16 // w) % 2 else 50 for x in range(w))
    invert = bytes(255 - v for v in range(256))
    raw = bytearray()
    for y in range(h):
        gy = int(160 * y / max(1, h - 1))
        add = bytes(min(255, v + gy) for v in range(256))
        row = bytearray(w * 3)
        row[0::3] = red
        row[1::3] = gx.translate(add)
        row[2::3] = bx.translate(invert) if (y * 9 // h) % 2 else bx
        raw += b"\x00" + row
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + png_chunk(b"IDAT", zlib.compress(bytes(raw), 6)) + png_chunk(b"IEND", b""))


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
