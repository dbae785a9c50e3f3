"""A scene's band files: opened safely, checked to line up, and read stripe by stripe.

Shared by composites (:mod:`pixelfleet.imagery.composite`) and their histograms
(:mod:`pixelfleet.imagery.histograms`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import rasterio
from rasterio._err import CPLE_BaseError
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.windows import Window

from pixelfleet.errors import CorruptInputError, InputError, UnsupportedFormatError
from pixelfleet.imagery.bandmath import Expression, is_expression
from pixelfleet.imagery.rasters import GDAL_OPTIONS, band_dtype
from pixelfleet.imagery.reading import SNIFF_BYTES, raster_opener, sniff_labelled
from pixelfleet.models import Entry, one_line
from pixelfleet.storage.base import Storage

if TYPE_CHECKING:
    from rasterio.io import DatasetReader

#: Channel names by position, for messages and statistics.
CHANNEL_NAMES = {1: ("grey",), 3: ("red", "green", "blue")}

#: Samples for statistics hold at least this many pixels (or every pixel).
MIN_SAMPLE = 1_000_000

_OPEN_OPTIONS = {"OVERVIEW_LEVEL": "NONE"}  # statistics must come from full resolution


@dataclass
class BandFile:
    """One band of a scene: where to read it, and how to name it in messages.

    ``path`` is a local path, or a made-up path that ``opener`` serves (remote
    objects); ``index`` is the band inside the file (1 for single-band files).
    """

    band: str
    label: str
    path: str
    opener: Callable[..., Any] | None = None
    index: int = 1


class Channel:
    """One output channel: a band read as it is, or an expression over bands."""

    def __init__(self, text: str):
        """Parse ``text``: a band name (``4``, ``8A``) or an expression (``b5 - b4``)."""
        self.text = text.strip()
        if is_expression(self.text):
            self.expression: Expression | None = Expression(self.text)
            self.bands = self.expression.bands
        else:
            self.expression = None
            self.bands = [normal_band(self.text)]

    def values(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """The channel's raw values from arrays keyed by band name."""
        if self.expression is None:
            return arrays[self.bands[0]]
        return self.expression.evaluate(arrays)


def normal_band(name: str) -> str:
    """A band's name as used in keys of dicts: ``"04"`` -> ``"4"``, ``"8a"`` -> ``"8A"``."""
    text = str(name).strip().upper()
    return str(int(text)) if text.isdigit() else text


def band_sort(name: str) -> tuple[int, str]:
    """Sort key for band names: numbers in order, then names."""
    return (int(name), "") if name.isdigit() else (10**6, name)


def open_band(band: BandFile, stack: contextlib.ExitStack) -> DatasetReader:
    """Open a band file (GTiff only, overviews hidden) for as long as ``stack`` lives."""
    try:
        return stack.enter_context(
            rasterio.open(band.path, driver="GTiff", opener=band.opener, **_OPEN_OPTIONS)
        )
    except (RasterioError, CPLE_BaseError) as exc:
        raise _corrupt(band, exc) from exc


def band_count(band: BandFile) -> int:
    """How many bands the file of ``band`` holds, from its header alone (what a dry run
    checks a step's band numbers against)."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(rasterio.Env(**GDAL_OPTIONS))
        return int(open_band(band, stack).count)


def stored_band_count(storage: Storage, entry: Entry) -> int | None:
    """How many bands a stored GeoTIFF holds, from its header (None for a photo or
    another format); a local object is opened by path, a remote one by ranged reads."""
    label = storage.describe(entry.key)
    if sniff_labelled(storage.read(entry.key, 0, SNIFF_BYTES), label) != "GTiff":
        return None
    path = storage.local_path(entry.key)
    if path is not None:
        return band_count(BandFile("1", label, path))
    with storage.open(entry.key, entry.size) as remote:
        fake_path, opener, _failures = raster_opener(remote)  # type: ignore[arg-type]
        return band_count(BandFile("1", label, fake_path, opener))


def _corrupt(band: BandFile, exc: BaseException) -> CorruptInputError:
    cause = exc.__cause__ if isinstance(exc.__cause__, CPLE_BaseError) else exc
    detail = one_line(str(cause).replace(band.path, "").strip(": ")) or type(exc).__name__
    return CorruptInputError(
        f"{band.label}: cannot be read as a GeoTIFF ({detail}); the band file is truncated or "
        "corrupt: re-create or re-upload it"
    )


def check_aligned(
    needed: list[str], datasets: dict[str, DatasetReader], by_band: dict[str, BandFile]
) -> None:
    """Refuse band files that do not share one grid (size, CRS, transform) or lack the band."""
    ref_band = needed[0]
    ref = datasets[ref_band]
    for b in needed:
        src, band = datasets[b], by_band[b]
        if band.index > src.count:
            raise InputError(
                f"{band.label}: has {src.count} band(s), so band {band.index} cannot be read; "
                f"use band numbers from 1 to {src.count}"
            )
        if band_dtype(src.dtypes[band.index - 1]).kind == "c":
            raise UnsupportedFormatError(
                f"{band.label}: unsupported data type {src.dtypes[band.index - 1]} (complex "
                "numbers, e.g. SAR) for a composite; convert the band to amplitude first "
                "(gdal_translate DERIVED_SUBDATASET:AMPLITUDE:in.tif out.tif)"
            )
        if b == ref_band:
            continue
        ref_label = by_band[ref_band].label
        if (src.width, src.height) != (ref.width, ref.height):
            raise InputError(
                f"{band.label}: is {src.width}x{src.height} pixels but {ref_label} is "
                f"{ref.width}x{ref.height}; the band files of a scene must have the same size "
                "(resample them to one grid, e.g. with gdalwarp -tr, or leave this band out)"
            )
        if src.crs != ref.crs:
            raise InputError(
                f"{band.label}: its CRS {_crs(src)} differs from {ref_label}'s {_crs(ref)}; "
                "the band files of a scene must share one grid (reproject with gdalwarp)"
            )
        if not src.transform.almost_equals(ref.transform, precision=1e-6):
            raise InputError(
                f"{band.label}: does not line up with {ref_label} (different origin or pixel "
                "size); the band files of a scene must share one grid"
            )


def _crs(src: DatasetReader) -> str:
    return src.crs.to_string() if src.crs else "(none)"


def band_nodata(src: DatasetReader, band: BandFile, override: float | None) -> float | None:
    """The value that marks missing data in a band: ``override``, else the file's."""
    if override is not None:
        return override
    value = src.nodatavals[band.index - 1]
    return None if value is None else float(value)


class BandReader:
    """Reads aligned windows of every needed band and tells which pixels are valid."""

    def __init__(
        self,
        datasets: dict[str, DatasetReader],
        bands: dict[str, BandFile],
        nodata: dict[str, float | None],
        zero_is_nodata: bool,
    ):
        """Read ``datasets`` (by band name); ``nodata`` and zeros (if asked) are invalid."""
        self.datasets = datasets
        self.bands = bands
        self.nodata = nodata
        self.zero = zero_is_nodata
        first = next(iter(datasets.values()))
        self.width, self.height = first.width, first.height

    def read(
        self, window: Window, out_shape: tuple[int, int] | None = None
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Every needed band over ``window`` (decimated to ``out_shape``), and validity."""
        arrays = {name: self.read_band(name, window, out_shape) for name in self.datasets}
        return arrays, self.valid(arrays)

    def read_band(
        self,
        name: str,
        window: Window,
        out_shape: tuple[int, int] | None = None,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """One band over ``window`` (decimated to ``out_shape``, nearest neighbour),
        into ``out`` when given: reusing buffers keeps the allocator from fragmenting."""
        band = self.bands[name]
        data: np.ndarray
        try:
            if out is not None:
                data = self.datasets[name].read(band.index, window=window, out=out)
            else:
                data = self.datasets[name].read(
                    band.index, window=window, out_shape=out_shape, resampling=Resampling.nearest
                )
            return data
        except (RasterioError, CPLE_BaseError) as exc:
            raise _corrupt(band, exc) from exc

    def step(self, step: int) -> int:
        """The sample step actually used for ``step`` on this scene."""
        return max(1, min(step, math.isqrt(self.width * self.height // MIN_SAMPLE)))

    def valid(self, arrays: dict[str, np.ndarray], out: np.ndarray | None = None) -> np.ndarray:
        """True where every band holds data: not its nodata value, not 0 (zero fill of
        integer bands, if asked), not NaN or infinite. With ``out``, those conditions
        are and-ed into it, in place."""
        shape = next(iter(arrays.values())).shape
        valid = np.ones(shape, bool) if out is None else out
        for name, a in arrays.items():
            nd = self.nodata[name]
            if a.dtype.kind == "f":
                valid &= np.isfinite(a)
                if nd is not None and not math.isnan(nd):
                    valid &= a != nd
                continue
            if nd is not None and _fits(nd, a.dtype):
                valid &= a != a.dtype.type(nd)
            if self.zero and a.dtype.kind in "ui" and nd != 0:
                valid &= a != 0
        return valid

    def sample(
        self, step: int, stack: contextlib.ExitStack | None = None
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Every ``step``-th pixel of every ``step``-th row (a decimated nearest-neighbour
        read at full resolution), read swath by swath; and which sampled pixels are valid.

        Small images are sampled more densely, so that a sample has at least
        :data:`MIN_SAMPLE` pixels (every pixel, below that size). Separate band files
        are read side by side (GDAL decodes without the GIL), in threads that live as
        long as ``stack``; bands of one file share a handle and are read in turn.
        """
        step = self.step(step)
        rows_out, cols_out = max(1, self.height // step), max(1, self.width // step)
        swath = max(1, 512 // step) * step
        names = self.names
        separate = len({id(d) for d in self.datasets.values()}) == len(names) > 1
        pool = None
        if separate and stack is not None:
            pool = stack.enter_context(ThreadPoolExecutor(len(names)))
        parts: list[dict[str, np.ndarray]] = []
        for out_r0 in range(0, rows_out, swath // step):
            out_rows = min(swath // step, rows_out - out_r0)
            window = Window(0, out_r0 * step, cols_out * step, out_rows * step)
            n = len(names)
            shape = (out_rows, cols_out)
            if pool is not None:
                stripes = list(pool.map(self.read_band, names, [window] * n, [shape] * n))
            else:
                stripes = [self.read_band(name, window, shape) for name in names]
            parts.append(dict(zip(names, stripes, strict=True)))
        arrays = {name: np.concatenate([p[name] for p in parts]) for name in names}
        return arrays, self.valid(arrays)

    def dtype(self, name: str) -> np.dtype[Any]:
        """The data type of one band."""
        dtype_name: str = self.datasets[name].dtypes[self.bands[name].index - 1]
        return band_dtype(dtype_name)

    @property
    def names(self) -> list[str]:
        """The bands this reader reads."""
        return list(self.datasets)


def _fits(value: float, dtype: np.dtype[Any]) -> bool:
    """Tell whether a nodata value is one of an integer type's values."""
    if math.isnan(value) or value != int(value):
        return False
    info = np.iinfo(dtype)
    return info.min <= value <= info.max
