"""Shared by the imaging, raster and photo tests: factories for tiny inputs, and helpers.

The factories follow rio-tiler's conftest style: a fixture returns a callable that
writes a small file into the test's temporary folder.
"""

from __future__ import annotations

import io
import itertools
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from PIL import Image
from rasterio.enums import ColorInterp, Resampling

from pixelfleet.errors import StorageError
from pixelfleet.imagery.pictures import ThumbnailOptions
from pixelfleet.imagery.thumbnails import render_thumbnail
from pixelfleet.ops.thumbnail import ThumbnailConfig
from pixelfleet.settings import Settings
from pixelfleet.storage.memory import MemoryStorage

RGB = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]


def config(**kwargs: Any) -> ThumbnailOptions:
    """Thumbnail options writing lossless PNG, so pixels can be compared exactly (validated
    as the thumbnail step's settings are); tiny test images are not enlarged unless asked
    (``min_size``), so their pixels can be compared one for one."""
    kwargs.setdefault("key", "{stem}.png")
    kwargs.setdefault("min_size", 0)
    return ThumbnailConfig(**kwargs).to_options()


def render(source: Any, settings: Settings | None = None, **kwargs: Any) -> Image.Image:
    """Render ``source`` and decode the result."""
    data = render_thumbnail(source, config(**kwargs), settings or Settings())
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def pixels(image: Image.Image) -> np.ndarray:
    """The image as a numpy array."""
    return np.asarray(image)


def ramp(
    bands: int, height: int, width: int, dtype: str = "uint8", scale: float = 1.0
) -> np.ndarray:
    """Distinct smooth values per band."""
    rows, cols = np.mgrid[0:height, 0:width]
    layers = [(rows * 3 + cols * (b + 1)) * scale for b in range(bands)]
    return np.stack(layers).astype(dtype)


class TifFactory:
    """Writes small georeferenced GeoTIFFs from (bands, rows, cols) arrays into a folder."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.counter = itertools.count()

    def __call__(
        self,
        data: np.ndarray,
        *,
        nodata: float | None = None,
        tiled: bool = True,
        block: int = 16,
        overviews: tuple[int, ...] = (),
        colorinterp: list[ColorInterp] | None = None,
        colormap: dict[int, tuple[int, int, int, int]] | None = None,
        mask: np.ndarray | None = None,
        compress: str = "deflate",
        interleave: str = "pixel",
    ) -> Path:
        count, height, width = data.shape
        path = self.folder / f"raster{next(self.counter)}.tif"
        profile: dict[str, Any] = {
            "driver": "GTiff",
            "width": width,
            "height": height,
            "count": count,
            "dtype": data.dtype.name,
            "crs": "EPSG:3857",
            "transform": Affine(10, 0, 1000, 0, -10, 2000),
            "nodata": nodata,
            "compress": compress,
            "interleave": interleave,
        }
        if tiled:
            profile.update(tiled=True, blockxsize=block, blockysize=block)
        with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
            if colorinterp:
                dst.colorinterp = colorinterp
            if colormap:
                dst.write_colormap(1, colormap)
            if mask is not None:
                dst.write_mask(mask)
            if overviews:
                dst.build_overviews(list(overviews), Resampling.average)
        return path


class PhotoFactory:
    """Saves Pillow images into a folder, in a format, with save options (exif...)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.counter = itertools.count()

    def __call__(
        self, image: Image.Image, fmt: str = "JPEG", suffix: str = ".jpg", **options: Any
    ) -> Path:
        path = self.folder / f"photo{next(self.counter)}{suffix}"
        image.save(path, format=fmt, **options)
        return path


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width x height`` but holds a few bytes of pixels."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


class RecordingStorage(MemoryStorage):
    """A memory storage that records the keys read, and can fail reads past an offset."""

    def __init__(self, url: str, fail_after: int | None = None):
        super().__init__(url)
        self.reads: list[tuple[str, int | None, int | None]] = []
        self.fail_after = fail_after

    def read(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        self.reads.append((key, start, end))
        if self.fail_after is not None and (start or 0) >= self.fail_after:
            raise StorageError(f"connection reset reading {key}")
        return super().read(key, start, end)
