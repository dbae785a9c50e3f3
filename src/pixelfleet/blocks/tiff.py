"""Just enough TIFF to assemble a tiled GeoTIFF from tiles GDAL has already compressed.

Block processing compresses output tiles in every worker at once: each worker writes
its strip of the image to a tiled GeoTIFF of its own, through GDAL. The final file is
then put together here without decompressing anything: the directories (IFDs) GDAL
wrote for a template of the whole image and for each overview level are read, their
tile offsets replaced, and the compressed tiles copied across byte for byte.

The layout written is a Cloud Optimized GeoTIFF's: the header, every directory (full
resolution first, then the overviews, largest first), then the tile data with the
smallest overview first and full resolution last, each level's tiles row by row.
Classic TIFF is written when the file fits in 4 GiB, BigTIFF otherwise; only
little-endian files (what GDAL writes on every platform pixelfleet runs on) are read.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

#: Byte size of one value of each TIFF field type.
TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8}
TYPE_SIZES.update({13: 4, 16: 8, 17: 8, 18: 8})
_INT_FORMATS = {1: "B", 3: "H", 4: "I", 6: "b", 8: "h", 9: "i", 13: "I", 16: "Q", 17: "q", 18: "Q"}

NEW_SUBFILE_TYPE = 254
IMAGE_WIDTH = 256
IMAGE_LENGTH = 257
TILE_WIDTH = 322
TILE_LENGTH = 323
TILE_OFFSETS = 324
TILE_BYTE_COUNTS = 325
#: Tags that describe how tiles are encoded: every level of one file must agree on them.
STRUCTURE_TAGS = (258, 259, 262, 277, 284, 317, 322, 323, 338, 339)
#: Georeferencing and metadata tags, which only the full-resolution directory carries.
GEO_TAGS = (33550, 33922, 34264, 34735, 34736, 34737, 42112)


class TiffError(ValueError):
    """A file is not a TIFF this module can read (or its tiles cannot be copied)."""


@dataclass
class Tag:
    """One directory entry: its field type, value count and raw little-endian value bytes."""

    type: int
    count: int
    data: bytes

    def ints(self) -> list[int]:
        """The values of an integer-typed tag."""
        fmt = _INT_FORMATS.get(self.type)
        if fmt is None:
            raise TiffError(f"TIFF field type {self.type} is not an integer type")
        return list(struct.unpack(f"<{self.count}{fmt}", self.data))

    @classmethod
    def of_ints(cls, values: Sequence[int], type_: int) -> Tag:
        """A tag of integer ``values`` stored as ``type_`` (3 SHORT, 4 LONG, 16 LONG8)."""
        return cls(type_, len(values), struct.pack(f"<{len(values)}{_INT_FORMATS[type_]}", *values))


@dataclass
class Directory:
    """One image directory (IFD) of a TIFF file."""

    tags: dict[int, Tag]

    def value(self, code: int) -> int:
        """The first value of an integer tag (raises :class:`TiffError` if missing)."""
        tag = self.tags.get(code)
        if tag is None:
            raise TiffError(f"the TIFF directory has no tag {code}")
        return tag.ints()[0]

    @property
    def width(self) -> int:
        """Image width, pixels."""
        return self.value(IMAGE_WIDTH)

    @property
    def height(self) -> int:
        """Image height, pixels."""
        return self.value(IMAGE_LENGTH)

    @property
    def tiles(self) -> list[tuple[int, int]]:
        """``(offset, byte count)`` of every tile, in the file's tile order."""
        if TILE_OFFSETS not in self.tags:
            raise TiffError("the TIFF directory is not tiled (no TileOffsets)")
        offsets = self.tags[TILE_OFFSETS].ints()
        counts = self.tags[TILE_BYTE_COUNTS].ints()
        return list(zip(offsets, counts, strict=True))

    def structure(self) -> dict[int, bytes]:
        """The encoding tags' values, for comparing two directories."""
        return {c: self.tags[c].data for c in STRUCTURE_TAGS if c in self.tags}


def read_directories(path: str) -> list[Directory]:
    """Every directory of a little-endian classic TIFF or BigTIFF, in file order."""
    with open(path, "rb") as f:
        head = f.read(16)
        if head[:2] != b"II":
            raise TiffError(f"{path}: not a little-endian TIFF")
        (magic,) = struct.unpack("<H", head[2:4])
        if magic == 42:
            big = False
            (offset,) = struct.unpack("<I", head[4:8])
        elif magic == 43:
            big = True
            (offset,) = struct.unpack("<Q", head[8:16])
        else:
            raise TiffError(f"{path}: not a TIFF (magic number {magic})")
        out: list[Directory] = []
        seen: set[int] = set()
        while offset and offset not in seen:
            seen.add(offset)
            f.seek(offset)
            if big:
                (n,) = struct.unpack("<Q", f.read(8))
                entry_size, count_fmt, value_size = 20, "<HHQ", 8
            else:
                (n,) = struct.unpack("<H", f.read(2))
                entry_size, count_fmt, value_size = 12, "<HHI", 4
            raw = f.read(n * entry_size)
            offset = struct.unpack("<Q" if big else "<I", f.read(value_size))[0]
            tags: dict[int, Tag] = {}
            for i in range(n):
                entry = raw[i * entry_size : (i + 1) * entry_size]
                code, type_, count = struct.unpack(count_fmt, entry[: entry_size - value_size])
                size = TYPE_SIZES.get(type_, 1) * count
                value = entry[entry_size - value_size :]
                if size <= value_size:
                    data = value[:size]
                else:
                    (where,) = struct.unpack("<Q" if big else "<I", value)
                    here = f.tell()
                    f.seek(where)
                    data = f.read(size)
                    f.seek(here)
                tags[code] = Tag(type_, count, data)
            out.append(Directory(tags))
        return out


@dataclass
class TileSource:
    """Where one compressed tile's bytes are: a file, an offset, a byte count."""

    path: str
    offset: int
    size: int


@dataclass
class Level:
    """One directory to write: its tags (without tile offsets and byte counts) and its
    tiles, in the order the directory lists them."""

    tags: dict[int, Tag]
    tiles: list[TileSource] = field(default_factory=list)


def write_tiff(path: str, levels: Sequence[Level], bigtiff: bool | None = None) -> int:
    """Write ``levels`` (full resolution first, then overviews, largest first) as one
    TIFF at ``path`` in the Cloud Optimized GeoTIFF layout; returns the file's size.

    ``bigtiff``: None writes BigTIFF only when the file would not fit in 4 GiB.
    """
    data_bytes = sum(t.size for level in levels for t in level.tiles)
    big = bool(bigtiff)
    layout = _layout(levels, big)
    if bigtiff is None and layout.data_start + data_bytes >= 2**32 - 1:
        big = True
        layout = _layout(levels, big)
    # Tile data: the smallest overview first, full resolution last (COG order).
    offsets: list[list[int]] = [[] for _ in levels]
    position = layout.data_start
    for index in reversed(range(len(levels))):
        for tile in levels[index].tiles:
            offsets[index].append(position if tile.size else 0)
            position += tile.size
    header = _header(levels, offsets, big)
    with open(path, "wb") as out:
        out.write(header)
        if out.tell() != layout.data_start:  # pragma: no cover - a bug in _layout
            raise TiffError("TIFF directories came out larger than planned")
        for index in reversed(range(len(levels))):
            copy_ranges(out, levels[index].tiles)
        size = out.tell()
    return size


def copy_ranges(out: object, tiles: Iterable[TileSource]) -> None:
    """Append tiles to the open file ``out``, runs of adjacent tiles in one copy."""
    runs: list[TileSource] = []
    for tile in tiles:
        if not tile.size:
            continue
        last = runs[-1] if runs else None
        if last is not None and last.path == tile.path and last.offset + last.size == tile.offset:
            last.size += tile.size
        else:
            runs.append(TileSource(tile.path, tile.offset, tile.size))
    fileno = out.fileno()  # type: ignore[attr-defined]
    out.flush()  # type: ignore[attr-defined]
    handles: dict[str, int] = {}
    try:
        for run in runs:
            fd = handles.get(run.path)
            if fd is None:
                fd = handles[run.path] = os.open(run.path, os.O_RDONLY)
            _copy(fd, fileno, run.offset, run.size)
    finally:
        for fd in handles.values():
            os.close(fd)


def _copy(src: int, dst: int, offset: int, size: int) -> None:
    """Copy ``size`` bytes at ``offset`` of ``src`` to the end of ``dst`` (in the kernel
    where it can)."""
    done = 0
    while done < size:
        try:
            n = os.copy_file_range(src, dst, size - done, offset + done)
        except (AttributeError, OSError):
            n = 0
        if n <= 0:  # no copy_file_range here (or across these filesystems): read and write
            chunk = os.pread(src, min(size - done, 8 * 1024 * 1024), offset + done)
            if not chunk:
                raise TiffError(f"tile bytes missing from {src}: the file is truncated")
            n = os.write(dst, chunk)
        done += n


@dataclass
class _Layout:
    ifd_offsets: list[int]
    data_start: int


def _entry_sizes(big: bool) -> tuple[int, int, int]:
    """(entry size, count field size, inline value size) of a directory."""
    return (20, 8, 8) if big else (12, 2, 4)


def _tags_for(level: Level, tile_offsets: Sequence[int], big: bool) -> dict[int, Tag]:
    tags = dict(level.tags)
    offset_type = 16 if big else 4
    tags[TILE_OFFSETS] = Tag.of_ints(list(tile_offsets), offset_type)
    tags[TILE_BYTE_COUNTS] = Tag.of_ints([t.size for t in level.tiles], offset_type)
    if not big:
        tags = {code: _classic(code, tag) for code, tag in tags.items()}
    return tags


def _classic(code: int, tag: Tag) -> Tag:
    """A tag from a BigTIFF directory as a classic TIFF can hold it."""
    narrower = {16: 4, 17: 9, 18: 13}.get(tag.type)
    if narrower is None:
        return tag
    values = tag.ints()
    if any(v >= 2**32 or v < -(2**31) for v in values):
        raise TiffError(f"tag {code} holds values too large for a classic TIFF")
    return Tag.of_ints(values, narrower)


def _ifd_size(tags: dict[int, Tag], big: bool) -> int:
    entry, count_size, inline = _entry_sizes(big)
    size = count_size + len(tags) * entry + inline
    for tag in tags.values():
        n = len(tag.data)
        if n > inline:
            size += n + (n % 2)
    return size


def _layout(levels: Sequence[Level], big: bool) -> _Layout:
    position = 16 if big else 8
    offsets = []
    for level in levels:
        tags = _tags_for(level, [0] * len(level.tiles), big)
        offsets.append(position)
        position += _ifd_size(tags, big)
        position += position % 2
    return _Layout(offsets, position)


def _header(levels: Sequence[Level], tile_offsets: list[list[int]], big: bool) -> bytes:
    layout = _layout(levels, big)
    entry_size, _count_size, inline = _entry_sizes(big)
    word = "<Q" if big else "<I"
    parts = [b"II+\x00\x08\x00\x00\x00" + struct.pack("<Q", 16) if big else b"II*\x00"]
    if not big:
        parts.append(struct.pack("<I", 8))
    position = 16 if big else 8
    for index, level in enumerate(levels):
        tags = _tags_for(level, tile_offsets[index], big)
        ordered = sorted(tags.items())
        values_at = position + (8 if big else 2) + len(ordered) * entry_size + inline
        entries = [struct.pack("<Q" if big else "<H", len(ordered))]
        extra: list[bytes] = []
        for code, tag in ordered:
            head = struct.pack("<HHQ" if big else "<HHI", code, tag.type, tag.count)
            if len(tag.data) <= inline:
                entries.append(head + tag.data.ljust(inline, b"\x00"))
            else:
                entries.append(head + struct.pack(word, values_at))
                padded = tag.data + (b"\x00" if len(tag.data) % 2 else b"")
                extra.append(padded)
                values_at += len(padded)
        following = layout.ifd_offsets[index + 1] if index + 1 < len(levels) else 0
        entries.append(struct.pack(word, following))
        block = b"".join(entries) + b"".join(extra)
        block += b"\x00" * (len(block) % 2)
        parts.append(block)
        position += len(block)
    out = b"".join(parts)
    if len(out) != layout.data_start:  # pragma: no cover - _layout and _header disagree
        raise TiffError("TIFF directory layout mismatch")
    return out
