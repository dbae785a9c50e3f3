"""Scene composites in bounded memory: bands streamed window by window to a COG.

``make_composite(bands, spec, workdir)`` is what the ``composite`` step calls, and is
usable without a pipeline. In order:

1. Open every band file the channels need (GTiff driver only, overviews hidden) and
   check they line up: same size, CRS and transform.
2. Fit a stretch per channel from a sample: a decimated nearest-neighbour read of
   every ``sample``-th pixel of every ``sample``-th row, at full resolution. Not from
   overviews: overviews built by averaging pull the top percentiles a few percent low.
3. Stream stripes of ``window_rows`` rows: read each band, mark nodata, zero fill and
   NaN transparent, stretch through a per-channel uint8 lookup table (integer bands)
   or in float32 (band math), and write RGBA (or grey + alpha) to an uncompressed
   temporary GeoTIFF.
4. Translate it with GDAL's COG driver (tiles, compression, averaged overviews).
5. Render the picture (PNG/JPEG/WebP, optional title) from the COG's overviews, and
   the histograms (raw bands from the sample, stretched channels counted exactly
   while streaming).

Memory is a few stripes plus GDAL's block cache, whatever the scene's size.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import rasterio
from rasterio._err import CPLE_BaseError
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import RasterioError
from rasterio.windows import Window

from pixelfleet.bandmath import Expression, is_expression
from pixelfleet.cogs import GDAL_ENV, write_outputs
from pixelfleet.errors import CorruptInputError, ImageTooLargeError, InputError
from pixelfleet.imaging import too_large_message
from pixelfleet.models import one_line
from pixelfleet.settings import Settings, get_settings
from pixelfleet.stretch import Stretch, StretchMode, describe, fit_stretch

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


@dataclass
class CompositeSpec:
    """What to make: channels (band names or expressions), stretch, and outputs."""

    channels: list[str]
    stretch: list[StretchMode]
    percentiles: tuple[float, float] = (2.0, 98.0)
    ranges: list[tuple[float, float]] | None = None
    gamma: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    nodata: float | None = None
    zero_is_nodata: bool = True
    sample: int = 8
    window_rows: int = 512
    cog: bool = True
    compress: str = "deflate"
    blocksize: int = 512
    image_size: int | None = 1024
    image_format: str = "png"
    image_quality: int = 90
    title: str | None = None
    background: str = "black"
    histogram: bool = False


@dataclass
class CompositeResult:
    """What :func:`make_composite` made: a COG file in the work folder, encoded
    image bytes, histogram plot bytes and statistics (JSON-compatible)."""

    cog_path: str | None
    image: bytes | None
    histogram_png: bytes | None
    stats: dict[str, Any]


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


def parse_channels(channels: Sequence[str]) -> list[str]:
    """The bands the channels read, in first-use order (expressions are checked here)."""
    needed: list[str] = []
    for ch in channels:
        for band in Channel(ch).bands:
            if band not in needed:
                needed.append(band)
    return needed


def make_composite(
    bands: Sequence[BandFile],
    spec: CompositeSpec,
    workdir: str,
    settings: Settings | None = None,
    scene: str = "",
) -> CompositeResult:
    """Make one composite of a scene; files go to ``workdir`` (a temporary folder).

    ``bands`` must hold every band the channels read. Bad input raises an
    :class:`~pixelfleet.errors.InputError` naming the band file at fault.
    """
    settings = settings or get_settings()
    channels = [Channel(c) for c in spec.channels]
    by_band = {normal_band(b.band): b for b in bands}
    needed = parse_channels(spec.channels)
    missing = [b for b in needed if b not in by_band]
    if missing:
        found = ", ".join(sorted(by_band, key=_band_sort)) or "none"
        raise InputError(
            f"{scene or 'scene'}: no file for band(s) {', '.join(missing)} (found bands: "
            f"{found}); upload the missing band files, or choose bands or a recipe this "
            "scene has"
        )
    with contextlib.ExitStack() as stack:
        stack.enter_context(rasterio.Env(**GDAL_ENV))
        datasets = {b: open_band(by_band[b], stack) for b in needed}
        first = datasets[needed[0]]
        check_aligned(needed, datasets, by_band)
        width, height = first.width, first.height
        if width * height > settings.max_image_pixels:
            raise ImageTooLargeError(
                too_large_message(
                    by_band[needed[0]].label, width, height, settings.max_image_pixels
                )
            )
        nodata = {b: band_nodata(datasets[b], by_band[b], spec.nodata) for b in needed}
        reader = BandReader(datasets, by_band, nodata, spec.zero_is_nodata)

        sample, valid_sample = reader.sample(spec.sample, stack)
        stretches = _fit(channels, sample, valid_sample, spec)
        stats: dict[str, Any] = {
            "scene": scene,
            "width": width,
            "height": height,
            "crs": first.crs.to_string() if first.crs else None,
            "sample_step": reader.step(spec.sample),
        }
        if spec.histogram:  # statistics of the raw bands are only shown in the histograms
            stats["bands"] = {
                b: dict(describe(sample[b][valid_sample], valid_sample.size), file=by_band[b].label)
                for b in needed
            }
        tmp = os.path.join(workdir, "composite-stream.tif")
        counts = _stream(reader, channels, stretches, spec, first, tmp)

    n_valid = int(counts[-1])
    stats["pixels"] = {"total": width * height, "valid": n_valid}
    names = CHANNEL_NAMES[len(channels)]
    stats["channels"] = [
        {
            "name": names[i],
            "source": ch.text,
            "stretch": stretches[i].to_dict(),
            "histogram": {"counts": [int(c) for c in counts[i]]},
        }
        for i, ch in enumerate(channels)
    ]

    cog_path, image = write_outputs(
        tmp,
        workdir,
        cog=spec.cog,
        compress=spec.compress,
        blocksize=spec.blocksize,
        image_size=spec.image_size,
        image_format=spec.image_format,
        quality=spec.image_quality,
        title=spec.title,
        background=spec.background,
    )
    histogram_png = None
    if spec.histogram:
        from pixelfleet.histograms import plot_histograms

        histogram_png = plot_histograms(stats, title=spec.title or scene)
    return CompositeResult(cog_path, image, histogram_png, stats)


def _band_sort(name: str) -> tuple[int, str]:
    return (int(name), "") if name.isdigit() else (10**6, name)


def open_band(band: BandFile, stack: contextlib.ExitStack) -> DatasetReader:
    """Open a band file (GTiff only, overviews hidden) for as long as ``stack`` lives."""
    try:
        return stack.enter_context(
            rasterio.open(band.path, driver="GTiff", opener=band.opener, **_OPEN_OPTIONS)
        )
    except (RasterioError, CPLE_BaseError) as exc:
        raise _corrupt(band, exc) from exc


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
        if np.dtype(src.dtypes[band.index - 1]).kind == "c":
            raise InputError(f"{band.label}: holds complex numbers, which make no composite")
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
        try:
            if out is not None:
                return self.datasets[name].read(band.index, window=window, out=out)
            return self.datasets[name].read(
                band.index, window=window, out_shape=out_shape, resampling=Resampling.nearest
            )
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
        return np.dtype(self.datasets[name].dtypes[self.bands[name].index - 1])

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


def _fit(
    channels: list[Channel],
    sample: dict[str, np.ndarray],
    valid: np.ndarray,
    spec: CompositeSpec,
) -> list[Stretch]:
    out = []
    for i, ch in enumerate(channels):
        values = ch.values(sample)
        ok = valid & np.isfinite(values) if values.dtype.kind == "f" else valid
        fixed = spec.ranges[i] if spec.ranges else None
        out.append(fit_stretch(values[ok], spec.stretch[i], spec.percentiles, fixed, spec.gamma[i]))
    return out


def _stream(
    reader: BandReader,
    channels: list[Channel],
    stretches: list[Stretch],
    spec: CompositeSpec,
    ref: DatasetReader,
    path: str,
) -> list[np.ndarray]:
    """Write the stretched channels and alpha, stripe by stripe; return per-channel
    counts of each output value over valid pixels, then the valid pixel count."""
    luts = []
    for ch, st in zip(channels, stretches, strict=True):
        dtype = reader.dtype(ch.bands[0])
        luts.append(st.lut(dtype) if ch.expression is None else None)
    count = len(channels) + 1
    profile = {
        "driver": "GTiff",
        "width": reader.width,
        "height": reader.height,
        "count": count,
        "dtype": "uint8",
        "crs": ref.crs,
        "transform": ref.transform,
        "tiled": True,
        "blockxsize": spec.blocksize,
        "blockysize": spec.blocksize,
        "interleave": "pixel",
        "photometric": "RGB" if count == 4 else "MINISBLACK",
        "alpha": "YES",
        "BIGTIFF": "IF_SAFER",
    }
    hist = [np.zeros(256, np.int64) for _ in channels]
    n_valid = 0
    rows = max(spec.blocksize, spec.window_rows // spec.blocksize * spec.blocksize)
    with rasterio.open(path, "w", **profile) as dst:
        dst.colorinterp = (
            [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
            if count == 4
            else [ColorInterp.gray, ColorInterp.alpha]
        )
        # Buffers reused stripe after stripe (fresh arrays each time fragment the heap).
        buffers = {
            name: np.empty((rows, reader.width), reader.dtype(name)) for name in reader.names
        }
        out_buffer = np.empty((count, rows, reader.width), np.uint8)
        for r0 in range(0, reader.height, rows):
            window = Window(0, r0, reader.width, min(rows, reader.height - r0))
            height = int(window.height)
            out = out_buffer[:, :height]
            valid = np.ones((height, reader.width), bool)
            arrays: dict[str, np.ndarray] = {}
            for i, ch in enumerate(channels):
                for band in ch.bands:
                    if band not in arrays:
                        arrays[band] = reader.read_band(band, window, out=buffers[band][:height])
                        reader.valid({band: arrays[band]}, out=valid)
                values = ch.values(arrays)
                lut = luts[i]
                if lut is not None:
                    info_min = np.iinfo(values.dtype).min
                    index = values if info_min == 0 else values.astype(np.int32) - info_min
                    np.take(lut, index, out=out[i])
                else:
                    if values.dtype.kind == "f":
                        valid &= np.isfinite(values)
                    out[i] = stretches[i].apply(values)
                del values
            n_invalid = valid.size - int(np.count_nonzero(valid))
            for i in range(len(channels)):
                if n_invalid:
                    np.multiply(out[i], valid, out=out[i], casting="unsafe")
                if spec.histogram:
                    counts = np.bincount(out[i].ravel(), minlength=256)
                    counts[0] -= n_invalid
                    hist[i] += counts
            np.multiply(valid, np.uint8(255), out=out[-1], casting="unsafe")
            n_valid += valid.size - n_invalid
            dst.write(out, window=window)
    return [*hist, np.array(n_valid)]
