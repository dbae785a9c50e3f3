"""Opening input rasters by URL and reading them window by window on the reference grid.

A local file is opened by its path; a remote object (S3, memory) through ranged reads
served to GDAL by pixelfleet's storage (``imagery.reading.raster_opener``), so GDAL never
follows a URL itself. An input on the grid's own pixel grid is read directly; any other
(another CRS, pixel size or pixel edges) through a ``WarpedVRT`` onto the grid, warped
only where a block asks.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import rasterio
from affine import Affine
from rasterio._err import CPLE_BaseError
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from pixelfleet.blocks.grid import GridSpec, RasterInfo
from pixelfleet.blocks.spec import Input
from pixelfleet.errors import ImageTooLargeError, InputError, ObjectNotFoundError
from pixelfleet.imagery.reading import SNIFF_BYTES, raster_opener, sniff_labelled, unreadable_raster
from pixelfleet.settings import Settings
from pixelfleet.storage import Storage, open_storage
from pixelfleet.urls import scheme_of

if TYPE_CHECKING:
    from rasterio.io import DatasetReader


def split_url(url: str) -> tuple[str, str]:
    """A file's URL as (the storage URL of its folder, its key there).

    ``s3://b/x/y.tif`` -> (``s3://b/x``, ``y.tif``); ``/data/y.tif`` -> (``/data``,
    ``y.tif``); a bare name is in the current folder.
    """
    scheme = scheme_of(url)
    if scheme:
        rest = url.split("://", 1)[1]
        folder, name = posixpath.split(rest)
        if not name:
            raise InputError(f"{url!r} names a folder, not a file")
        if not folder or (scheme in ("s3", "memory") and "/" not in rest):
            raise InputError(f"{url!r} has no bucket or store name before the file name")
        return f"{scheme}://{folder}", name
    path = os.path.abspath(url)
    return os.path.dirname(path), os.path.basename(path)


class Opened:
    """Storages opened for a run, one per folder, kept for the life of a ``with``."""

    def __init__(
        self,
        settings: Settings,
        untrusted: bool = False,
        roots: Mapping[str, Storage] | None = None,
    ):
        """``roots`` lends storages already open, by their URL: an input URL under one
        is read from it (with the rest of the URL as the key), so its checks hold."""
        self.settings = settings
        self.untrusted = untrusted
        self.stack = contextlib.ExitStack()
        self._storages: dict[str, Storage] = {}
        self._roots = {url.rstrip("/"): storage for url, storage in (roots or {}).items()}

    def __enter__(self) -> Opened:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stack.close()

    def storage(self, url: str) -> tuple[Storage, str]:
        """The storage holding ``url`` and its key there."""
        for prefix, lent in self._roots.items():
            if url.startswith(prefix + "/"):
                return lent, url[len(prefix) + 1 :]
        root, key = split_url(url)
        storage = self._storages.get(root)
        if storage is None:
            storage = self._storages[root] = open_storage(root, self.settings)
        return storage, key

    def open(self, url: str) -> DatasetReader:
        """Open one input for reading (kept open until the ``with`` ends).

        Untrusted inputs (a pipeline's objects) must be GeoTIFFs, sniffed from their
        bytes, within ``PIXELFLEET_MAX_IMAGE_PIXELS``; a user's own files in ``apply``
        may be anything GDAL reads.
        """
        storage, key = self.storage(url)
        label = storage.describe(key)
        path = storage.local_path(key)
        opener = None
        size: int | None = None
        if path is None or self.untrusted:
            entry = storage.head(key)
            if entry is None:
                raise ObjectNotFoundError(f"{label}: input not found")
            size = entry.size
        if self.untrusted:
            sniff_labelled(storage.read(key, 0, SNIFF_BYTES), label)
        if path is None:
            remote = self.stack.enter_context(storage.open(key, size))
            path, opener, _failures = raster_opener(remote)  # type: ignore[arg-type]
        elif not os.path.exists(path):
            raise ObjectNotFoundError(f"{label}: input not found")
        drivers = ["GTiff"] if self.untrusted or opener is not None else None
        try:
            dataset = self.stack.enter_context(
                rasterio.open(path, driver=drivers[0] if drivers else None, opener=opener)
            )
        except (RasterioError, CPLE_BaseError) as exc:
            raise unreadable_raster(label, path, exc) from exc
        if self.untrusted and dataset.width * dataset.height > self.settings.max_image_pixels:
            raise ImageTooLargeError(
                f"{label}: {dataset.width} x {dataset.height} pixels is over the limit of "
                f"{self.settings.max_image_pixels:,}; raise PIXELFLEET_MAX_IMAGE_PIXELS to "
                "accept it"
            )
        return dataset

    def describe(self, url: str) -> str:
        """The input's full URL, for messages."""
        storage, key = self.storage(url)
        return storage.describe(key)


def raster_info(name: str, label: str, dataset: DatasetReader, spec: Input) -> RasterInfo:
    """What planning needs to know about an opened input; bad band choices raise."""
    bands = spec.bands or tuple(range(1, dataset.count + 1))
    if max(bands) > dataset.count:
        raise InputError(
            f"{label}: has {dataset.count} band(s), so band {max(bands)} cannot be read; "
            f"use band numbers from 1 to {dataset.count}"
        )
    dtypes = tuple(dataset.dtypes[b - 1] for b in bands)
    if len(set(dtypes)) > 1:
        raise InputError(
            f"{label}: bands {list(bands)} have different types ({', '.join(dtypes)}); "
            "give them as separate inputs"
        )
    if np.dtype(dtypes[0]).kind == "c":
        raise InputError(f"{label}: complex data ({dtypes[0]}) cannot be read in blocks")
    nodata = spec.nodata if spec.nodata is not None else dataset.nodata
    if nodata is not None and not np.isnan(nodata):
        typed = np.array(nodata).astype(dtypes[0])
        if typed != nodata:
            raise InputError(f"{label}: nodata {nodata} cannot be held by its type {dtypes[0]}")
    return RasterInfo(
        name=name,
        label=label,
        crs=dataset.crs,
        transform=dataset.transform,
        width=dataset.width,
        height=dataset.height,
        count=dataset.count,
        dtypes=dtypes,
        nodata=float(nodata) if nodata is not None else None,
    )


class InputReader:
    """Reads one input's pixels for any window of the grid, margin included."""

    def __init__(
        self,
        info: RasterInfo,
        spec: Input,
        dataset: DatasetReader,
        grid: GridSpec,
        overlap: int,
        resampling: str,
    ):
        self.info = info
        self.bands = list(spec.bands or range(1, dataset.count + 1))
        self.dtype = np.dtype(info.dtypes[0])
        self.nodata = info.nodata
        self.fill = self.nodata if self.nodata is not None else 0
        self.overlap = overlap
        self._dataset = dataset
        self._vrt: WarpedVRT | None = None
        self._offset = grid.aligned(info)
        if self._offset is None:
            o = overlap
            # The VRT covers the grid and its margin, so a block's read is always inside it.
            self._vrt = WarpedVRT(
                dataset,
                crs=grid.crs,
                transform=grid.transform @ Affine.translation(-o, -o),
                width=grid.width + 2 * o,
                height=grid.height + 2 * o,
                resampling=Resampling[spec.resampling or resampling],
                src_nodata=self.nodata,
                nodata=self.fill,
            )

    @property
    def warped(self) -> bool:
        """True when the input is reprojected or resampled onto the grid."""
        return self._vrt is not None

    def close(self) -> None:
        """Release the warped view, if any (the dataset belongs to its opener)."""
        if self._vrt is not None:
            self._vrt.close()

    def read(self, window: Window) -> np.ndarray:
        """``(bands, rows, cols)`` for ``window`` of the grid grown by the overlap on
        every side; pixels the input does not cover are its nodata value (or 0)."""
        o = self.overlap
        rows, cols = int(window.height) + 2 * o, int(window.width) + 2 * o
        try:
            if self._vrt is not None:
                vrt_window = Window(int(window.col_off), int(window.row_off), cols, rows)
                data: np.ndarray = self._vrt.read(self.bands, window=vrt_window)
                return data
            assert self._offset is not None
            col = self._offset[0] + int(window.col_off) - o
            row = self._offset[1] + int(window.row_off) - o
            return self._read_direct(col, row, cols, rows)
        except (RasterioError, CPLE_BaseError) as exc:
            raise unreadable_raster(self.info.label, "", exc) from exc

    def _read_direct(self, col: int, row: int, cols: int, rows: int) -> np.ndarray:
        width, height = self.info.width, self.info.height
        c0, r0 = max(col, 0), max(row, 0)
        c1, r1 = min(col + cols, width), min(row + rows, height)
        if c0 == col and r0 == row and c1 == col + cols and r1 == row + rows:
            whole: np.ndarray = self._dataset.read(self.bands, window=Window(col, row, cols, rows))
            return whole
        out = np.full((len(self.bands), rows, cols), self.fill, self.dtype)
        if c1 > c0 and r1 > r0:
            part = self._dataset.read(self.bands, window=Window(c0, r0, c1 - c0, r1 - r0))
            out[:, r0 - row : r1 - row, c0 - col : c1 - col] = part
        return out
