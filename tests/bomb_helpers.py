"""Decompression bombs built at test time: tiled GeoTIFFs of deflated zeros, written by
hand so that a file that decodes to gigabytes takes a fraction of a second to make.

A deflate stream of zeros is made of one compressed megabyte-sized chunk repeated:
after a full flush, zlib's output for the same input is the same bytes, and the Adler-32
of ``n`` zero bytes is known in closed form. Tiles may share their bytes (every tile
offset points at one compressed tile), which libtiff and GDAL accept.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

_CHUNK = 16 * 1024**2  # zeros per repeated deflate chunk

#: TIFF sample format and bits of each numpy type the writer knows.
_SAMPLE = {
    "uint8": (1, 8),
    "uint16": (1, 16),
    "int16": (2, 16),
    "float32": (3, 32),
    "float64": (3, 64),
}


def deflated_zeros(nbytes: int) -> bytes:
    """A zlib stream that inflates to ``nbytes`` zero bytes, built in well under a second."""
    co = zlib.compressobj(9)
    head = co.compress(b"") + co.flush(zlib.Z_SYNC_FLUSH)  # the 2-byte zlib header
    whole, rest = divmod(nbytes, _CHUNK)
    parts = [head]
    if whole:
        chunk = zlib.compressobj(9)
        body = chunk.compress(bytes(_CHUNK)) + chunk.flush(zlib.Z_FULL_FLUSH)
        body = body[2:]  # without its own zlib header
        parts.append(body * whole)
    if rest:
        tail = zlib.compressobj(9)
        parts.append((tail.compress(bytes(rest)) + tail.flush(zlib.Z_FULL_FLUSH))[2:])
    parts.append(b"\x03\x00")  # a final, empty fixed-Huffman block
    adler = ((nbytes % 65521) << 16) | 1  # Adler-32 of n zero bytes: a = 1, b = n
    parts.append(struct.pack(">I", adler))
    return b"".join(parts)


def write_zero_tiff(
    path: Path,
    width: int,
    height: int,
    bands: int,
    dtype: str,
    tile: int | None = None,
) -> Path:
    """Write a pixel-interleaved, deflate-compressed tiled TIFF of zeros.

    ``tile`` is the tile side (a multiple of 16); None makes one tile of the whole image
    (its side rounded up to 16): the smallest file that makes a reader decode everything
    at once. Every tile shares the same compressed bytes.
    """
    fmt, bits = _SAMPLE[dtype]
    side_w = tile or -(-width // 16) * 16
    side_h = tile or -(-height // 16) * 16
    tile_bytes = side_w * side_h * bands * np.dtype(dtype).itemsize
    data = deflated_zeros(tile_bytes)
    across, down = -(-width // side_w), -(-height // side_h)
    n_tiles = across * down

    # Layout: header (8) | tile data | IFD | out-of-line tag values.
    data_at = 8
    ifd_at = data_at + len(data)
    ifd_at += ifd_at % 2
    entries: list[tuple[int, int, int, bytes | int]] = []  # tag, type, count, value

    def short(tag: int, *values: int) -> None:
        entries.append((tag, 3, len(values), struct.pack(f"<{len(values)}H", *values)))

    def long(tag: int, *values: int) -> None:
        entries.append((tag, 4, len(values), struct.pack(f"<{len(values)}I", *values)))

    long(256, width)
    long(257, height)
    short(258, *([bits] * bands))
    short(259, 8)  # Adobe deflate
    short(262, 1)  # min-is-black
    short(277, bands)
    short(284, 1)  # contiguous (pixel-interleaved)
    short(322, side_w)
    short(323, side_h)
    long(324, *([data_at] * n_tiles))
    long(325, *([len(data)] * n_tiles))
    if bands > 1:
        short(338, *([0] * (bands - 1)))  # unspecified extra samples
    short(339, *([fmt] * bands))
    # A pixel size and origin (no CRS): a geotransform, so readers do not warn.
    entries.append((33550, 12, 3, struct.pack("<3d", 1.0, 1.0, 0.0)))
    entries.append((33922, 12, 6, struct.pack("<6d", 0, 0, 0, 0.0, float(height), 0)))

    n = len(entries)
    extra_at = ifd_at + 2 + 12 * n + 4
    ifd = bytearray(struct.pack("<H", n))
    extra = bytearray()
    for tag, kind, count, value in sorted(entries, key=lambda e: e[0]):
        raw = value if isinstance(value, bytes) else b""
        if len(raw) <= 4:
            ifd += struct.pack("<HHI", tag, kind, count) + raw.ljust(4, b"\x00")
        else:
            ifd += struct.pack("<HHII", tag, kind, count, extra_at + len(extra))
            extra += raw
            if len(extra) % 2:
                extra += b"\x00"
    ifd += struct.pack("<I", 0)
    with open(path, "wb") as f:
        f.write(b"II*\x00" + struct.pack("<I", ifd_at))
        f.write(data)
        f.write(b"\x00" * (ifd_at - data_at - len(data)))
        f.write(bytes(ifd))
        f.write(bytes(extra))
    return path


#: The three bombs of issue 12: (name, width, height, bands, dtype), one tile each.
ISSUE_BOMBS = [
    ("bomb-4xf64.tif", 16384, 16384, 4, "float64"),  # 8 GiB decoded
    ("bomb-1xf64.tif", 16384, 16384, 1, "float64"),  # 2 GiB decoded
    ("bomb-3xu8.tif", 16384, 16384, 3, "uint8"),  # 768 MiB decoded
]


def write_issue_bombs(folder: Path) -> list[Path]:
    """Write the three single-tile bombs of issue 12 into ``folder``."""
    return [write_zero_tiff(folder / name, w, h, b, t) for name, w, h, b, t in ISSUE_BOMBS]
