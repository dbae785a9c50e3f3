"""A 5 x 5 focal mean with ``overlap = 2`` equals ``scipy.ndimage.uniform_filter`` over
the whole image, edges included.

The edge rule: past an input's extent (here, past the image's edges) a block's margin
holds the input's nodata value, or 0 for an input without one, which is
``uniform_filter(mode="constant", cval=that value)``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from blocks_helpers import RED, read
from scipy import ndimage

from pixelfleet import blocks


def whole_image_mean(data: np.ndarray, cval: float) -> np.ndarray:
    return ndimage.uniform_filter(data.astype(np.float64), size=5, mode="constant", cval=cval)


@pytest.mark.parametrize(("block_size", "executor"), [(32, "inline"), ((20, 13), "threads")])
def test_focal_mean_equals_scipy_on_the_whole_image(
    tmp_path: Path, block_size: int | tuple[int, int], executor: str
) -> None:
    # The Landsat band declares nodata 0: the margin past its edges holds 0.
    with rasterio.open(RED) as src:
        data, nodata = src.read(1), src.nodata
    assert nodata == 0
    out = blocks.Output(str(tmp_path / "mean.tif"), dtype="float64", overviews=[])
    blocks.apply(
        "blocks_testfns:focal_mean",
        {"image": str(RED)},
        {"mean": out},
        overlap=2,
        block_size=block_size,
        executor=executor,
        workers=2,
    )
    got = read(out.url, 1)
    want = whole_image_mean(data, 0.0)
    # Sums of 25 integers are exact in float64; scipy divides per axis, we divide once.
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=0)
    assert np.array_equal(got.astype("f4"), want.astype("f4"))
    # Edges included: the first row and column average over the zero margin.
    assert got[0, 0] == data[:3, :3].sum() / 25


def test_the_margin_past_the_edge_is_the_inputs_nodata(
    tmp_path: Path, make_raster: Callable[..., Path]
) -> None:
    rng = np.random.default_rng(7)
    data = rng.integers(1, 1000, (37, 41)).astype("int16")
    path = make_raster("img.tif", data, Affine(10, 0, 0, 0, -10, 370), nodata=-5)
    out = blocks.Output(str(tmp_path / "mean.tif"), dtype="float64", overviews=[])
    blocks.apply(
        "blocks_testfns:focal_mean",
        {"image": str(path)},
        {"mean": out},
        overlap=2,
        block_size=16,
        executor="inline",
    )
    np.testing.assert_allclose(read(out.url, 1), whole_image_mean(data, -5.0), rtol=1e-13)
