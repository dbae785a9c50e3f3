"""The spectral labeller on synthetic rasters with known fractions and on real samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from pixelfleet.errors import InputError, UnsupportedFormatError
from pixelfleet.labelers.base import ImageRef
from pixelfleet.labelers.spectral import SpectralConfig, SpectralLabeler, indices
from pixelfleet.settings import get_settings
from pixelfleet.storage import open_storage

DATA = Path(__file__).resolve().parents[1] / "data"


def write(path: Path, bands: np.ndarray, nodata: float | None = None) -> Path:
    count, height, width = bands.shape
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=width,
        height=height,
        count=count,
        dtype=bands.dtype,
        crs="EPSG:32617",
        transform=Affine(30, 0, 500000, 0, -30, 4000000),
        nodata=nodata,
        photometric="MINISBLACK",
    ) as dst:
        dst.write(bands)
    return path


def label(path: Path, **options: object) -> dict[str, float]:
    storage = open_storage(str(path.parent))
    entry = storage.head(path.name)
    assert entry is not None
    labeler = SpectralLabeler(SpectralConfig.model_validate(options))
    (labels,) = labeler.label([labeler.prepare(ImageRef(storage, entry, get_settings()))])
    return {lab.name: lab.confidence for lab in labels}


# Reflectance x 255 of each cover in NAIP's band order R, G, B, NIR.
COVER = {
    "water": (40, 60, 70, 10),
    "vegetation": (30, 60, 40, 150),
    "bare": (120, 110, 100, 130),
}


def naip_like(fractions: dict[str, float], size: int = 400) -> np.ndarray:
    bands = np.zeros((4, size, size), np.uint8)
    row = 0
    for cover, fraction in fractions.items():
        rows = round(size * fraction)
        bands[:, row : row + rows] = np.array(COVER[cover], np.uint8)[:, None, None]
        row += rows
    return bands


def test_synthetic_naip_fractions(tmp_path: Path) -> None:
    path = write(tmp_path / "n.tif", naip_like({"water": 0.3, "vegetation": 0.5, "bare": 0.2}))
    got = label(path, sensor="naip", size=100)  # decimated 4x
    assert got == pytest.approx({"water": 30, "vegetation": 50, "bare/other": 20}, abs=1.0)


def test_nodata_pixels_do_not_count(tmp_path: Path) -> None:
    bands = naip_like({"water": 0.25, "vegetation": 0.25, "bare": 0.5})
    bands[:, 300:] = 0  # half of the bare part: a zero collar, no nodata declared
    got = label(write(tmp_path / "n.tif", bands), sensor="naip")
    assert got == pytest.approx(
        {"water": 100 / 3, "vegetation": 100 / 3, "bare/other": 100 / 3}, abs=1.0
    )
    bands[:, 300:] = 7
    got = label(write(tmp_path / "m.tif", bands, nodata=7), sensor="naip")
    assert got == pytest.approx(
        {"water": 100 / 3, "vegetation": 100 / 3, "bare/other": 100 / 3}, abs=1.0
    )


def test_synthetic_landsat_snow_water_vegetation(tmp_path: Path) -> None:
    # Landsat 8 C2 SR: reflectance = DN * 0.0000275 - 0.2; bands 1..7 (blue is band 2).
    def dn(reflectance: float) -> int:
        return round((reflectance + 0.2) / 0.0000275)

    # blue, green, red, nir, swir1 for each cover.
    snow = [0.8, 0.8, 0.78, 0.7, 0.1]
    water = [0.06, 0.05, 0.03, 0.01, 0.005]
    forest = [0.03, 0.06, 0.03, 0.35, 0.15]
    image = np.zeros((7, 100, 100), np.uint16)
    for rows, cover in ((slice(0, 10), snow), (slice(10, 40), water), (slice(40, 100), forest)):
        for band, value in zip((2, 3, 4, 5, 6), cover, strict=True):
            image[band - 1, rows] = dn(value)
    image[0] = dn(0.05)
    image[6] = dn(0.05)
    got = label(write(tmp_path / "l.tif", image), sensor="landsat8")
    assert got == pytest.approx({"snow/ice": 10, "water": 30, "vegetation": 60}, abs=0.01)


def test_real_naip_sample() -> None:
    got = label(DATA / "naip_m_3607824_se_17_1_20160620_sub.tif", sensor="naip")
    assert sum(got.values()) == pytest.approx(100)
    # Measured on the full-resolution tile with numpy: 58.5% NDVI >= 0.3, 5.8% NDWI >= 0.
    assert got["vegetation"] == pytest.approx(58.5, abs=3)
    assert got["water"] == pytest.approx(5.8, abs=2)
    assert "snow/ice" not in got  # NAIP has no SWIR


def test_real_landsat_stack(tmp_path: Path) -> None:
    bands = []
    for b in (4, 5, 6):
        with rasterio.open(DATA / f"sr_b{b}_20200829.tif") as src:
            bands.append(src.read(1))
    path = write(tmp_path / "stack.tif", np.stack(bands), nodata=0)
    got = label(path, sensor="landsat8", bands={"red": 1, "nir": 2, "swir1": 3})
    assert set(got) <= {"vegetation", "bare/other"} and sum(got.values()) == pytest.approx(100)
    # The same rule computed here with numpy on every pixel.
    red, nir = (b.astype(float) * 0.0000275 - 0.2 for b in bands[:2])
    expected = 100 * np.mean((nir - red) / (nir + red) >= 0.3)
    assert got["vegetation"] == pytest.approx(expected, abs=1.5)


def test_wrong_bands_and_photos_fail_clearly() -> None:
    with pytest.raises(InputError, match=r"has 4 band\(s\), but sensor 'sentinel2' needs"):
        label(DATA / "naip_m_3607824_se_17_1_20160620_sub.tif", sensor="sentinel2")
    with pytest.raises(UnsupportedFormatError, match="multispectral GeoTIFF"):
        label(DATA / "flower.jpg", sensor="naip")


def test_indices_are_nan_where_undefined() -> None:
    zero = np.zeros((2, 2), np.float32)
    got = indices({"red": zero, "nir": zero, "green": zero})
    assert np.isnan(got["ndvi"]).all() and np.isnan(got["ndwi"]).all() and "ndsi" not in got
