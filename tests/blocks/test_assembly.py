"""Putting outputs together: several bands either interleave, overview levels made in
strips or from the level before, BigTIFF, and the planner's strips."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from blocks_helpers import read

from pixelfleet import blocks
from pixelfleet.blocks.grid import strip_rows, strips
from pixelfleet.blocks.tiff import Level, TileSource, read_directories, write_tiff


@pytest.fixture
def image(make_raster: Callable[..., Path]) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(3)
    data = rng.integers(1, 60000, (3, 75, 61)).astype("uint16")
    return make_raster("img.tif", data, Affine(5, 0, 100, 0, -5, 500), nodata=0), data


@pytest.mark.parametrize("interleave", ["PIXEL", "BAND"])
def test_several_bands_in_either_interleave(
    tmp_path: Path, image: tuple[Path, np.ndarray], interleave: str
) -> None:
    path, data = image
    out = blocks.Output(
        str(tmp_path / "o.tif"),
        tile_size=16,
        nodata=0,
        overviews=[2, 4, 8, 32],
        creation_options={"INTERLEAVE": interleave, "PREDICTOR": 2},
    )
    blocks.apply(
        "blocks_testfns:stack", {"a": str(path)}, {"a": out}, block_size=16, executor="inline"
    )
    with rasterio.open(out.url) as dst:
        assert dst.read().astype("uint16").tolist() == data.tolist()
        assert dst.interleaving.name == interleave.lower()
        assert len(dst.overviews(1)) == 4
        # Strips are 16 rows: level 32 is made from level 8, each pixel still one of
        # its 32 x 32 cell's own pixels (nearest).
        top = dst.read(out_shape=(3, 3, 2))
    for b in range(3):
        for i in range(3):
            for j in range(2):
                cell = data[b, i * 32 : i * 32 + 32, j * 32 : j * 32 + 32].astype("f4")
                assert top[b, i, j] in cell
    sizes = [(d.width, d.height) for d in read_directories(out.url)]
    assert sizes == [(61, 75), (31, 38), (16, 19), (8, 10), (2, 3)]
    from rio_cogeo.cogeo import cog_validate

    assert cog_validate(out.url)[0]


def test_integer_averages_round_and_statistics_count_every_band(
    tmp_path: Path, image: tuple[Path, np.ndarray]
) -> None:
    path, data = image
    out = blocks.Output(
        str(tmp_path / "o.tif"),
        nodata=0,
        overviews=[4],
        overview_resampling="average",
        tile_size=32,
    )
    result = blocks.apply(
        "blocks_testfns:stack", {"a": str(path)}, {"a": out}, block_size=(7, 32), executor="inline"
    )
    as_float = data.astype("f4")
    with rasterio.open(out.url) as dst:
        level = dst.read(out_shape=(3, 19, 16))
    cell = data[1, 4:8, 8:12].astype(np.float64)
    assert level[1, 1, 2] == np.float32(np.mean(cell))  # float32 output: no rounding here
    stats = result.outputs["a"].statistics
    assert [s.minimum for s in stats] == [float(as_float[b].min()) for b in range(3)]
    assert [s.count for s in stats] == [75 * 61] * 3


def test_bigtiff_and_classic_files_hold_the_same_image(
    tmp_path: Path, image: tuple[Path, np.ndarray]
) -> None:
    path, data = image
    src = tmp_path / "tiled.tif"
    with rasterio.open(path) as s:
        profile = {
            **s.profile,
            "tiled": True,
            "blockxsize": 16,
            "blockysize": 16,
            "compress": "deflate",
        }
        with rasterio.open(src, "w", **profile) as d:
            d.write(s.read())
    directory = read_directories(str(src))[0]
    tags = {c: t for c, t in directory.tags.items() if c not in (324, 325)}
    level = Level(tags, [TileSource(str(src), o, n) for o, n in directory.tiles])
    for big in (False, True):
        target = tmp_path / f"big-{big}.tif"
        write_tiff(str(target), [level], bigtiff=big)
        assert target.read_bytes()[2] == (43 if big else 42)
        assert np.array_equal(read(target), data)


def test_strips_are_whole_blocks_tiles_and_first_overview_cells() -> None:
    assert strip_rows(512, [512], [4]) == 512
    assert strip_rows(256, [512], [4]) == 512
    assert strip_rows(300, [512], [4]) == 38400
    assert strip_rows(48, [32], []) == 96
    assert strips(7800, 512)[-1] == (7680, 7800) and len(strips(7800, 512)) == 16
