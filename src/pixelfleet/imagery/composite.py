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
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import rasterio
from rasterio.enums import ColorInterp
from rasterio.windows import Window

from pixelfleet.errors import ImageTooLargeError, InputError
from pixelfleet.imagery.bands import (
    CHANNEL_NAMES,
    BandFile,
    BandReader,
    Channel,
    band_nodata,
    band_sort,
    check_aligned,
    normal_band,
    open_band,
)
from pixelfleet.imagery.cogs import write_outputs
from pixelfleet.imagery.histograms import asset_bands
from pixelfleet.imagery.pictures import too_large_message
from pixelfleet.imagery.rasters import GDAL_OPTIONS
from pixelfleet.imagery.stretch import Stretch, StretchMode, describe, fit_stretch
from pixelfleet.settings import Settings, get_settings

if TYPE_CHECKING:
    from rasterio.io import DatasetReader


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
    #: The picture's STAC ``raster:bands``: per channel, statistics and a 64-bucket
    #: histogram of its values (:func:`~pixelfleet.imagery.histograms.asset_bands`).
    bands: list[dict[str, Any]] = field(default_factory=list)


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
        found = ", ".join(sorted(by_band, key=band_sort)) or "none"
        raise InputError(
            f"{scene or 'scene'}: no file for band(s) {', '.join(missing)} (found bands: "
            f"{found}); upload the missing band files, or choose bands or a recipe this "
            "scene has"
        )
    with contextlib.ExitStack() as stack:
        stack.enter_context(rasterio.Env(**GDAL_OPTIONS))
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
        asset = asset_bands(channels, stretches, sample, valid_sample)
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
        from pixelfleet.imagery.histograms import plot_histograms

        histogram_png = plot_histograms(stats, title=spec.title or scene)
    return CompositeResult(cog_path, image, histogram_png, stats, asset)


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
