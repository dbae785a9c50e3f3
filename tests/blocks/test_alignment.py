"""Inputs on other grids: resolution, extent and CRS differ from the reference.

The reference here is made independently: the expected grid from the inputs' bounds
(snapped as documented), and each input's pixels on it by ``rasterio.warp.reproject``
of its whole array. Blocks are small (48 x 40) so many block edges are crossed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from blocks_helpers import read
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.warp import reproject, transform_bounds

from pixelfleet import blocks

ORIGIN = (500_000.0, 4_000_000.0)


def _field(rows: int, cols: int, seed: int) -> np.ndarray:
    """A smooth field with some noise, as uint16 (interpolation has something to do)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:cols]
    smooth = 2000 + 800 * np.sin(x / 17.0) * np.cos(y / 23.0)
    return (smooth + rng.integers(0, 200, (rows, cols))).astype("uint16")


@pytest.fixture
def three(make_raster: Callable[..., Path]) -> dict[str, Path]:
    """a: 30 m reference, UTM 33N; b: 15 m, another extent; c: ~25 m in UTM 32N."""
    x0, y0 = ORIGIN
    a = make_raster("a.tif", _field(150, 170, 1), Affine(30, 0, x0, 0, -30, y0), nodata=0)
    # b starts 7.5 m (half a 15 m pixel) off a's edges and covers a different area.
    b = make_raster(
        "b.tif", _field(260, 300, 2), Affine(15, 0, x0 + 607.5, 0, -15, y0 - 442.5), nodata=0
    )
    # c: the same place in the neighbouring UTM zone, 25 m pixels, a bit larger.
    left, bottom, right, top = transform_bounds(
        "EPSG:32633", "EPSG:32632", x0 - 600, y0 - 150 * 30 - 600, x0 + 170 * 30 + 600, y0 + 600
    )
    cols, rows = math.ceil((right - left) / 25), math.ceil((top - bottom) / 25)
    c = make_raster(
        "c.tif",
        _field(rows, cols, 3),
        Affine(25, 0, left, 0, -25, top),
        crs="EPSG:32632",
        nodata=0,
    )
    return {"a": a, "b": b, "c": c}


def expected_grid(paths: dict[str, Path], how: str) -> tuple[Affine, int, int]:
    """The grid as documented: a's pixels, the inputs' bounds in a's CRS combined,
    edges rounded to the nearest pixel edge of a."""
    with rasterio.open(paths["a"]) as ref:
        t, crs = ref.transform, ref.crs
    boxes = []
    for p in paths.values():
        with rasterio.open(p) as src:
            b = src.bounds
            boxes.append(
                b if src.crs == crs else transform_bounds(src.crs, crs, *b, densify_pts=21)
            )
    pick = (max, max, min, min) if how == "intersection" else (min, min, max, max)
    left, bottom, right, top = (f(box[i] for box in boxes) for i, f in enumerate(pick))

    def snap(v: float) -> int:
        return math.floor(v + 0.5) if v >= 0 else -math.floor(-v + 0.5)

    c0, c1 = snap((left - t.c) / t.a), snap((right - t.c) / t.a)
    r0, r1 = snap((top - t.f) / t.e), snap((bottom - t.f) / t.e)
    return t @ Affine.translation(c0, r0), c1 - c0, r1 - r0


def on_grid(path: Path, transform: Affine, width: int, height: int, resampling: str) -> np.ndarray:
    """The whole input reprojected onto the grid in one go (the reference)."""
    with rasterio.open(path) as src:
        out = np.zeros((height, width), src.dtypes[0])
        reproject(
            src.read(1),
            out,
            src_transform=src.transform,
            src_crs=src.crs,
            src_nodata=src.nodata,
            dst_transform=transform,
            dst_crs=CRS.from_epsg(32633),
            dst_nodata=src.nodata,
            resampling=Resampling[resampling],
        )
    return out


@pytest.mark.parametrize("footprint", ["intersection", "union"])
@pytest.mark.parametrize("resampling", ["nearest", "bilinear"])
def test_inputs_on_other_grids_match_whole_array_reprojection(
    three: dict[str, Path], tmp_path: Path, footprint: str, resampling: str
) -> None:
    outputs = {n: blocks.Output(str(tmp_path / f"{n}.tif"), overviews=[]) for n in three}
    result = blocks.apply(
        "blocks_testfns:stack",
        {n: str(p) for n, p in three.items()},
        outputs,
        block_size=(48, 40),
        grid="a",
        footprint=footprint,
        resampling=resampling,
        executor="inline",
    )
    transform, width, height = expected_grid(three, footprint)
    assert (result.grid.width, result.grid.height) == (width, height)
    assert result.grid.transform.almost_equals(transform)
    for name, path in three.items():
        with rasterio.open(outputs[name].url) as out:
            assert out.crs == CRS.from_epsg(32633)
            assert out.transform.almost_equals(transform)
            assert (out.width, out.height) == (width, height)
            got = out.read(1)
        want = on_grid(path, transform, width, height, resampling).astype("f4")
        if name == "a":  # the reference itself is read, never resampled
            assert np.array_equal(got, want), name
        else:
            assert np.array_equal(got, want), (name, np.abs(got - want).max(), (got != want).sum())


def test_an_explicit_grid_with_bounds(three: dict[str, Path], tmp_path: Path) -> None:
    grid = blocks.Grid(
        "EPSG:32633",
        60,
        bounds=(ORIGIN[0] + 1000, ORIGIN[1] - 3000, ORIGIN[0] + 4000, ORIGIN[1] - 600),
    )
    out = blocks.Output(str(tmp_path / "b.tif"), overviews=[])
    result = blocks.apply(
        "blocks_testfns:stack",
        {"b": str(three["b"])},
        {"b": out},
        grid=grid,
        resampling="average",
        block_size=16,
        executor="inline",
    )
    assert result.footprint == "reference"
    assert (result.grid.width, result.grid.height) == (50, 40)
    transform = Affine(60, 0, ORIGIN[0] + 1000, 0, -60, ORIGIN[1] - 600)
    assert result.grid.transform.almost_equals(transform)
    want = on_grid(three["b"], transform, 50, 40, "average").astype("f4")
    assert np.array_equal(read(out.url, 1), want)
