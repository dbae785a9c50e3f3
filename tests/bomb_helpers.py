"""Hostile files built at test time: decompression bombs (tiled GeoTIFFs of deflated
zeros, PNGs of zeros), images whose headers claim absurd sizes, PNG text-chunk bombs and
VRTs that point elsewhere, written by hand so that a file that decodes to gigabytes takes
a fraction of a second to make.

A deflate stream of zeros is made of one compressed megabyte-sized chunk repeated:
after a full flush, zlib's output for the same input is the same bytes, and the Adler-32
of ``n`` zero bytes is known in closed form. Tiles may share their bytes (every tile
offset points at one compressed tile), which libtiff and GDAL accept.
"""

from __future__ import annotations

import functools
import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

_CHUNK = 16 * 1024**2  # zeros per repeated deflate chunk

#: TIFF sample format and bits of each numpy type the writer knows.
_SAMPLE = {
    "int8": (2, 8),
    "uint8": (1, 8),
    "uint16": (1, 16),
    "int16": (2, 16),
    "uint32": (1, 32),
    "int32": (2, 32),
    "float32": (3, 32),
    "float64": (3, 64),
    "complex64": (6, 64),  # complex float32 (SAR)
}


def deflated_zeros(nbytes: int) -> bytes:
    """A zlib stream that inflates to ``nbytes`` zero bytes, built in well under a second."""
    whole, rest = divmod(nbytes, _CHUNK)
    parts = [b"\x78\xda"]  # the zlib header of level 9
    if whole:
        parts.append(_deflated_block(_CHUNK) * whole)
    if rest:
        parts.append(_deflated_block(rest))
    parts.append(b"\x03\x00")  # a final, empty fixed-Huffman block
    adler = ((nbytes % 65521) << 16) | 1  # Adler-32 of n zero bytes: a = 1, b = n
    parts.append(struct.pack(">I", adler))
    return b"".join(parts)


@functools.cache
def _deflated_block(nbytes: int) -> bytes:
    """``nbytes`` zeros as raw deflate blocks ending on a byte boundary (a full flush),
    so that copies of it follow one another in one stream."""
    co = zlib.compressobj(9)
    return (co.compress(bytes(nbytes)) + co.flush(zlib.Z_FULL_FLUSH))[2:]  # no zlib header


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


#: One single-tile bomb of each sample type the writer knows, each 1 GiB or more decoded
#: (16384 x 16384 pixels): (name, width, height, bands, dtype).
DTYPE_BOMBS = [
    (f"bomb-{b}x{dtype}.tif", 16384, 16384, b, dtype)
    for dtype, b in [
        ("int8", 4),
        ("uint8", 4),
        ("uint16", 2),
        ("int16", 2),
        ("uint32", 1),
        ("int32", 1),
        ("float32", 1),
        ("float64", 1),
        ("complex64", 1),
    ]
]


def write_tiled_giant(path: Path, side: int, tile: int = 4096) -> Path:
    """A one-band uint8 GeoTIFF ``side`` x ``side`` pixels whose tiles all share one
    deflated tile of zeros: a dimension bomb a few hundred kilobytes long."""
    return write_zero_tiff(path, side, side, 1, "uint8", tile=tile)


# -- photos --------------------------------------------------------------------------------


def png_chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk: length, type, body, CRC."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def write_png(
    path: Path,
    width: int,
    height: int,
    colour: int = 0,
    before: Sequence[bytes] = (),
    idat: bytes | None = None,
) -> Path:
    """A PNG of zeros (``colour``: 0 grey, 2 RGB, 6 RGBA; 8 bits), with the chunks
    ``before`` its pixels. ``idat`` replaces the pixel data (e.g. a stub for a PNG whose
    header alone is the bomb)."""
    channels = {0: 1, 2: 3, 6: 4}[colour]
    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    if idat is None:
        idat = deflated_zeros(height * (1 + width * channels))  # filter byte 0 + zeros
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header))
        for chunk in before:
            f.write(chunk)
        f.write(png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b""))
    return path


def ztxt(keyword: bytes, nbytes: int) -> bytes:
    """A zTXt chunk whose text inflates to ``nbytes`` zero bytes."""
    return png_chunk(b"zTXt", keyword + b"\x00\x00" + deflated_zeros(nbytes))


def itxt(keyword: bytes, nbytes: int) -> bytes:
    """A compressed iTXt chunk whose text inflates to ``nbytes`` zero bytes."""
    return png_chunk(b"iTXt", keyword + b"\x00\x01\x00\x00\x00" + deflated_zeros(nbytes))


def text(keyword: bytes, nbytes: int) -> bytes:
    """A tEXt chunk of ``nbytes`` letters."""
    return png_chunk(b"tEXt", keyword + b"\x00" + b"a" * nbytes)


def write_jpeg_header(path: Path, width: int, height: int) -> Path:
    """A JPEG that is only a header claiming ``width`` x ``height`` (SOI, a quantisation
    table, SOF0, a Huffman table stub, no scan): a dimension bomb of 200 bytes."""
    dqt = b"\xff\xdb" + struct.pack(">H", 67) + b"\x00" + bytes(range(1, 65))
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    path.write_bytes(b"\xff\xd8" + dqt + sof + b"\xff\xd9")
    return path


def write_gif_header(path: Path, width: int, height: int) -> Path:
    """A GIF whose logical screen is ``width`` x ``height``, with one 1 x 1 frame."""
    screen = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00" * 6
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    path.write_bytes(screen + frame + b"\x3b")
    return path


def write_bmp_header(path: Path, width: int, height: int) -> Path:
    """A 24-bit BMP whose header claims ``width`` x ``height`` and holds 16 bytes of pixels."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    head = b"BM" + struct.pack("<IHHI", 14 + 40 + 16, 0, 0, 14 + 40)
    path.write_bytes(head + info + bytes(16))
    return path


# -- VRTs ----------------------------------------------------------------------------------


def vrt_to(source: str, relative: bool = False) -> str:
    """A one-band GDAL VRT reading its pixels from ``source`` (a path or a URL)."""
    return (
        '<VRTDataset rasterXSize="64" rasterYSize="64">'
        '<VRTRasterBand dataType="Byte" band="1"><SimpleSource>'
        f'<SourceFilename relativeToVRT="{int(relative)}">{source}</SourceFilename>'
        "<SourceBand>1</SourceBand></SimpleSource></VRTRasterBand></VRTDataset>\n"
    )


def make_nested(root: Path, names: list[str], leaf: str, data: bytes) -> str:
    """Folders ``names`` one inside the other (through descriptors: the whole path may be
    longer than the system's limit) and the file ``leaf`` in the last; its key."""
    fd = os.open(root, os.O_RDONLY)
    try:
        for name in names:
            os.mkdir(name, dir_fd=fd)
            inner = os.open(name, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = inner
        out = os.open(leaf, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(out, data)
        os.close(out)
    finally:
        os.close(fd)
    return "/".join([*names, leaf])
