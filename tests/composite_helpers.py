"""Shared by the composite tests: tiny band files, a straightforward numpy reference,
and a pipeline runner."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine

from pixelfleet.ledger import open_ledger
from pixelfleet.pipeline import pipeline_from_dict
from pixelfleet.runner import Runner, RunSummary

SCENE = "LC08_L1TP_047027_20200829_20200906_02_T1"
TRANSFORM = Affine(30.0, 0.0, 300000.0, 0.0, -30.0, 4100000.0)


def band_data(band: int, height: int = 300, width: int = 260, seed: int = 0) -> np.ndarray:
    """Smooth structure plus noise, a zero collar in one corner, a few bright 'clouds'."""
    rng = np.random.default_rng(seed * 100 + band)
    yy, xx = np.mgrid[0:height, 0:width]
    base = 6000 + 900 * band + 2500 * np.sin(xx / 23.0 + band) * np.cos(yy / 31.0)
    data = base + rng.normal(0, 300, (height, width))
    data[rng.random((height, width)) < 0.01] = 30000 + 1000 * band  # bright outliers
    out = np.clip(data, 1, 65535).astype(np.uint16)
    out[yy + xx < 60] = 0  # zero fill outside the scene's footprint
    return out


def write_band(
    path: Path,
    data: np.ndarray,
    *,
    crs: str = "EPSG:32654",
    transform: Any = TRANSFORM,
    nodata: float | None = None,
    block: int | None = 64,
) -> Path:
    """Write a tiled (or, with ``block=None``, striped) single- or multi-band GeoTIFF
    (``data`` 2-D or bands-first 3-D)."""
    arr = data if data.ndim == 3 else data[None]
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=arr.shape[2],
        height=arr.shape[1],
        count=arr.shape[0],
        dtype=arr.dtype,
        crs=crs,
        transform=transform,
        compress="deflate",
        **({"tiled": True, "blockxsize": block, "blockysize": block} if block else {}),
        nodata=nodata,
    ) as dst:
        dst.write(arr)
    return path


def write_scene(
    folder: Path,
    bands: tuple[int, ...] = (2, 3, 4, 5, 7),
    scene: str = SCENE,
    block: int | None = 64,
    **kw: Any,
) -> dict[int, np.ndarray]:
    """Write ``{scene}_B{band}.TIF`` files; returns the data by band."""
    out = {}
    for b in bands:
        out[b] = band_data(b, **kw)
        write_band(folder / f"{scene}_B{b}.TIF", out[b], block=block)
    return out


def reference(
    bands: list[np.ndarray],
    lows: list[float],
    highs: list[float],
    gamma: float = 1.0,
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """The obvious numpy composite: scale each band linearly, gamma, round; RGBA."""
    if valid is None:
        valid = np.all([b != 0 for b in bands], axis=0)
    out = []
    for band, low, high in zip(bands, lows, highs, strict=True):
        t = np.clip((band.astype(np.float64) - low) / (high - low), 0, 1) ** (1 / gamma)
        ch = np.floor(t * 255 + 0.5).astype(np.uint8)
        ch[~valid] = 0
        out.append(ch)
    out.append(valid.astype(np.uint8) * 255)
    return np.stack(out)


def exact_percentiles(
    bands: list[np.ndarray], pct: tuple[float, float] = (2, 98)
) -> tuple[list[float], list[float]]:
    """Exact percentiles of the valid pixels (every band non-zero), per band."""
    valid = np.all([b != 0 for b in bands], axis=0)
    lows, highs = [], []
    for b in bands:
        low, high = np.percentile(b[valid], pct)
        lows.append(float(low))
        highs.append(float(high))
    return lows, highs


def composite_pipeline(src: Path | str, out: Path | str, **step: Any) -> Any:
    """A scene pipeline with one composite step, run inline."""
    step = {"op": "composite", **step}
    return pipeline_from_dict(
        {
            "source": {
                "url": str(src),
                "include": ["**/*.TIF", "**/*.tif"],
                "partition": {"by": "scene", "pattern": "{scene}_B{band}.TIF"},
            },
            "output": {"url": str(out)},
            "steps": [step],
            "run": {"executor": "inline"},
        }
    )


def run(pipeline: Any, ledger: str = "sqlite:///:memory:", **kw: Any) -> RunSummary:
    """Run a pipeline with a fresh in-memory ledger (or the given one)."""
    with open_ledger(ledger) as led:
        return Runner(pipeline, led, progress=False, **kw).run()


def read(path: Path) -> np.ndarray:
    """All bands of a raster at full resolution."""
    with rasterio.open(path) as src:
        return src.read()
