"""Putting an output together from its strips: statistics, overviews, one file.

1. The strips' statistics are added up (in strip order) and written, with the
   georeferencing and nodata, into a *template*: an empty GeoTIFF of the whole output
   written by GDAL with the same creation options as the strips (``SPARSE_OK``, so it
   holds no tiles and costs nothing).
2. Each overview level is written through GDAL (compressing on ``threads`` threads)
   from the parts the workers made, or made from the level before it.
3. :func:`pixelfleet.blocks.tiff.write_tiff` writes the final file: the template's
   directory with the strips' tiles, then one directory per level, the compressed
   tiles copied as they are, in the Cloud Optimized GeoTIFF layout.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

from pixelfleet.blocks.grid import GridSpec
from pixelfleet.blocks.overviews import reduce_level
from pixelfleet.blocks.spec import Output
from pixelfleet.blocks.statistics import BandStats, combine
from pixelfleet.blocks.strips import gtiff_profile, pad_edges, padding_value, whole_tiles
from pixelfleet.blocks.tiff import (
    GEO_TAGS,
    IMAGE_LENGTH,
    IMAGE_WIDTH,
    NEW_SUBFILE_TYPE,
    TILE_BYTE_COUNTS,
    TILE_OFFSETS,
    Directory,
    Level,
    Tag,
    TiffError,
    TileSource,
    read_directories,
    write_tiff,
)
from pixelfleet.errors import PixelfleetError
from pixelfleet.imagery.rasters import GDAL_OPTIONS


@dataclass
class RasterFacts:
    """What an output raster holds: size, bands, type, overview factors, statistics."""

    width: int
    height: int
    bands: int
    dtype: str
    overviews: list[int]
    statistics: list[BandStats]


@dataclass
class Assembled(RasterFacts):
    """An output put together: what it holds, and its local file."""

    path: str = ""


def assemble(
    name: str,
    output: Output,
    grid: GridSpec,
    strips: Sequence[dict[str, Any]],
    factors: Sequence[int],
    workdir: str,
    threads: int = 1,
) -> Assembled:
    """Assemble output ``name`` from its strips' results (in strip order)."""
    parts = [{**s["outputs"][name], "rows": s["rows"]} for s in strips]
    dtypes = {p["dtype"] for p in parts}
    bands = {p["bands"] for p in parts}
    if len(dtypes) > 1 or len(bands) > 1:
        raise PixelfleetError(
            f"output {name!r}: the function returned {sorted(bands)} band(s) of type(s) "
            f"{sorted(dtypes)} in different blocks; return one number of bands of one type "
            "(or set the output's dtype)"
        )
    dtype, count = dtypes.pop(), bands.pop()
    stats = combine([BandStats.from_list(b) for b in p["stats"]] for p in parts)
    with rasterio.Env(**GDAL_OPTIONS):
        template = os.path.join(workdir, f"{name}.template.tif")
        profile = gtiff_profile(output, dtype, count, grid.width, grid.height, grid)
        with rasterio.open(template, "w", SPARSE_OK=True, **profile) as dst:
            for b, band_stats in enumerate(stats, start=1):
                tags = band_stats.tags()
                if tags:
                    dst.update_tags(b, **tags)
        main = read_directories(template)[0]
        os.unlink(template)
        strip_files = [p["path"] for p in parts]
        levels = [Level(_without_tiles(main.tags), _stacked_tiles(main, strip_files))]
        level_files = _overviews(name, output, grid, parts, factors, dtype, count, workdir, threads)
        for f, paths in zip(factors, level_files, strict=True):
            directory = read_directories(paths[0])[0]
            kept = {c: t for c, t in _without_tiles(directory.tags).items() if c not in GEO_TAGS}
            kept[NEW_SUBFILE_TYPE] = Tag.of_ints([1], 4)
            # The level's files hold whole tiles; its directory states the true size.
            kept[IMAGE_WIDTH] = Tag.of_ints([math.ceil(grid.width / f)], 4)
            kept[IMAGE_LENGTH] = Tag.of_ints([math.ceil(grid.height / f)], 4)
            levels.append(Level(kept, _stacked_tiles(Directory(kept), paths, main)))
        final = os.path.join(workdir, f"{name}.tif")
        write_tiff(final, levels)
    for path in [*(p for paths in level_files for p in paths), *strip_files]:
        os.unlink(path)
    return Assembled(grid.width, grid.height, count, dtype, list(factors), stats, path=final)


def _without_tiles(tags: dict[int, Tag]) -> dict[int, Tag]:
    return {c: t for c, t in tags.items() if c not in (TILE_OFFSETS, TILE_BYTE_COUNTS)}


def _check_structure(main: Directory, other: Directory, path: str) -> None:
    """The tiles of ``other`` must be encoded as ``main``'s, or the copy would be garbage."""
    if main.structure() != other.structure():
        raise TiffError(
            f"{path} is encoded differently from the output's template; the creation "
            "options of its pieces disagree (a bug, or a GDAL that ignores one)"
        )


def _stacked_tiles(
    directory: Directory, paths: Sequence[str], main: Directory | None = None
) -> list[TileSource]:
    """The tiles of an image kept as files of whole rows of tiles (strips, or a level's
    rows of tiles), top to bottom, in the order ``directory`` lists them: row by row,
    and band by band first for files whose bands are stored apart."""
    main = main or directory
    tile_w, tile_h = directory.value(322), directory.value(323)
    across = math.ceil(directory.width / tile_w)
    down = math.ceil(directory.height / tile_h)
    separate = 284 in main.tags and main.value(284) == 2  # PlanarConfiguration: by band
    planes = main.value(277) if separate else 1
    rows: list[list[TileSource]] = [[] for _ in range(planes)]
    for path in paths:
        part = read_directories(path)[0]
        _check_structure(main, part, path)
        tiles = part.tiles
        part_down = len(tiles) // (planes * across)
        for p in range(planes):
            start = p * part_down * across
            rows[p].extend(
                TileSource(path, o, n) for o, n in tiles[start : start + part_down * across]
            )
    out = [t for plane in rows for t in plane]
    if len(out) != planes * across * down:
        raise TiffError(
            f"the pieces hold {len(out)} tiles and the image needs {planes * across * down}: "
            "pieces must be whole rows of tiles"
        )
    return out


def _overviews(
    name: str,
    output: Output,
    grid: GridSpec,
    parts: Sequence[dict[str, Any]],
    factors: Sequence[int],
    dtype: str,
    count: int,
    workdir: str,
    threads: int,
) -> list[list[str]]:
    """Write each overview level as GeoTIFFs of one row of tiles each (compressed on
    ``threads`` threads at once); returns each level's files, top to bottom.

    Levels the workers made parts of are written from those parts; the others are then
    made, in order, from the level before. Each file is compressed by GDAL on one thread
    and holds whole tiles only (the padding written here), so the bytes never depend on
    the number of threads or workers.
    """
    tile = output.tile_size
    fill = padding_value(output, np.dtype(dtype))
    sizes = {f: (math.ceil(grid.width / f), math.ceil(grid.height / f)) for f in factors}
    files: dict[int, list[str]] = {}

    def write_chunk(f: int, k: int, data: np.ndarray) -> None:
        """Tile row ``k`` of level ``f`` (``data``: its rows, unpadded)."""
        width, height = sizes[f]
        level_grid = GridSpec(grid.crs, grid.transform @ Affine.scale(f), width, height)
        profile = gtiff_profile(output, dtype, count, whole_tiles(width, tile), tile, level_grid)
        padded = pad_edges(data, 0, k * tile, width, height, tile, fill)
        with rasterio.Env(**GDAL_OPTIONS), rasterio.open(files[f][k], "w", **profile) as dst:
            dst.write(padded, window=Window(0, 0, padded.shape[2], padded.shape[1]))

    def plan(f: int) -> list[int]:
        rows = math.ceil(sizes[f][1] / tile)
        files[f] = [os.path.join(workdir, f"{name}.ovr{f}.{k:05d}.tif") for k in range(rows)]
        return list(range(rows))

    in_strips = [f for f in factors if all(str(f) in p["levels"] for p in parts)]
    pieces = {f: [(p["levels"][str(f)], _piece_rows(p, f)) for p in parts] for f in in_strips}

    def from_parts(job: tuple[int, int]) -> None:
        f, k = job
        top, bottom = k * tile, min((k + 1) * tile, sizes[f][1])
        chunks = []
        for path, (first, end) in pieces[f]:
            if end <= top or first >= bottom:
                continue
            piece = np.load(path, mmap_mode="r")
            chunks.append(piece[:, max(top, first) - first : min(bottom, end) - first])
        write_chunk(f, k, np.concatenate(chunks, axis=1))

    with ThreadPoolExecutor(max(1, threads)) as pool:
        list(pool.map(from_parts, [(f, k) for f in in_strips for k in plan(f)]))
        for f in in_strips:
            for path, _rows in pieces[f]:
                os.unlink(path)
        previous = in_strips[-1] if in_strips else None
        for f in factors:
            if f in in_strips:
                continue
            if previous is None:  # pragma: no cover - the planner makes level one in strips
                raise PixelfleetError(f"output {name!r}: overview {f} has no source")
            source, factor = previous, f // previous

            def reduced(k: int, source: int = source, factor: int = factor, f: int = f) -> None:
                top = k * tile * factor
                rows = _read_rows(files[source], tile, sizes[source], top, top + tile * factor)
                out = reduce_level(rows, factor, output.overview_resampling, output.nodata)
                write_chunk(f, k, out)

            list(pool.map(reduced, plan(f)))
            previous = f
    return [files[f] for f in factors]


def _piece_rows(part: dict[str, Any], f: int) -> tuple[int, int]:
    """The level-``f`` rows ``[first, end)`` a strip's part covers."""
    row0, row1 = part["rows"]
    return row0 // f, math.ceil(row1 / f)


def _read_rows(
    paths: Sequence[str], tile: int, size: tuple[int, int], top: int, bottom: int
) -> np.ndarray:
    """Rows ``[top, bottom)`` of a level kept as files of one row of tiles each."""
    width, height = size
    bottom = min(bottom, height)
    chunks = []
    with rasterio.Env(**GDAL_OPTIONS):
        for k in range(top // tile, math.ceil(bottom / tile)):
            first = k * tile
            lo, hi = max(top, first), min(bottom, first + tile)
            with rasterio.open(paths[k]) as src:
                chunks.append(src.read(window=Window(0, lo - first, width, hi - lo)))
    return np.concatenate(chunks, axis=1)
