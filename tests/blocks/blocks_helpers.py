"""Helpers shared by the block-processing tests: sample bands, rasters made to order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / "data"
RED = DATA / "sr_b4_20200829.tif"  # Landsat SR band 4 (red), 149 x 112, nodata 0
NIR = DATA / "sr_b5_20200829.tif"  # band 5 (near infrared), same grid
NODATA = -9999.0


def write_raster(
    path: Path,
    data: np.ndarray,
    transform: Affine,
    crs: str | None = "EPSG:32633",
    nodata: float | None = None,
    **profile: Any,
) -> Path:
    """Write ``data`` (2-D, or bands first) as a GeoTIFF."""
    if data.ndim == 2:
        data = data[None]
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype=data.dtype,
        crs=crs,
        transform=transform,
        nodata=nodata,
        **profile,
    ) as dst:
        dst.write(data)
    return path


def read(path: Path | str, band: int | None = None) -> np.ndarray:
    """A raster's bands (or one band) at full resolution."""
    with rasterio.open(path) as src:
        return src.read(band) if band else src.read()


def numpy_ndvi() -> np.ndarray:
    """NDVI of the whole sample bands at once, the way the block function computes it."""
    with rasterio.open(RED) as r, rasterio.open(NIR) as n:
        red, nir = r.read(1), n.read(1)
        bad = (red == r.nodata) | (nir == n.nodata)
    red32, nir32 = red.astype("f4"), nir.astype("f4")
    out = (nir32 - red32) / (nir32 + red32 + np.float32(1e-9))
    out[bad] = NODATA
    return out
