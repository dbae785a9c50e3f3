"""GeoTIFF and COG thumbnails with rasterio, reading no more than the thumbnail needs.

One decimated read, ``src.read(indexes, out_shape=...)``, lets GDAL pick the
smallest overview that is still at least as large as the thumbnail. Three GDAL
behaviours shape the code:

- With ``GDAL_OVERVIEW_OVERSAMPLING_THRESHOLD`` above 1, GDAL takes an overview
  up to that factor *smaller* than asked for and enlarges it (a blurry thumbnail);
  reads here run with a threshold of 1.0.
- When a file has no usable overview, a single decimated read walks every band
  over the whole file; once the decoded blocks outgrow ``GDAL_CACHEMAX`` each block
  is decoded again for every band. Large reads are therefore split into horizontal
  swaths a few block rows high, which decode each block once in a bounded cache.
- Without an overview near the thumbnail's size, GDAL's averaging costs about 15%
  more than sampling on tiled files (where every block is decoded either way), and
  ten times more on striped files, where a nearest-neighbour read only decodes
  the strips that hold sampled rows. The default ``"auto"`` resampling therefore
  averages when it reads an overview near the thumbnail's size, and otherwise
  samples 4 x 4 points per thumbnail pixel (1 x 4 on strips: extra columns are
  free, extra rows are not) and averages them here: close to a true average
  (mean difference under 2 levels of 255 on aerial imagery) at the cost of sampling.

Complex bands (SAR: ``complex_int16``, ``complex64``...) are shown as their amplitude,
``abs(value)``: always read by sampling, and the amplitudes averaged here, because
averaging complex values (GDAL's ``average``, ``bilinear``...) cancels their phases.

Only the GTiff driver may open a file, so a VRT or other format in disguise is
refused and no file GDAL reads can point it at another file or URL.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import rasterio
from PIL import Image
from rasterio._err import CPLE_BaseError  # GDAL errors; rasterio only exports them here
from rasterio.enums import ColorInterp, Interleaving, MaskFlags, Resampling
from rasterio.errors import RasterioError
from rasterio.windows import Window

from pixelfleet.errors import (
    ImageTooLargeError,
    InputError,
    UnsupportedFormatError,
)
from pixelfleet.imagery.failures import unreadable_raster
from pixelfleet.imagery.memory import hold_decoded, out_of_memory
from pixelfleet.imagery.pictures import ThumbnailOptions, fit_size, too_large_message
from pixelfleet.settings import Settings

if TYPE_CHECKING:
    from rasterio.io import DatasetReader


#: GDAL options for every raster pixelfleet opens (thumbnails, composites, COGs, facts),
#: set per call so that library use behaves like the worker.
GDAL_OPTIONS = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_PAM_ENABLED": "NO",
    # 1.0: never read an overview smaller than asked for and enlarge it (2 let GDAL
    # take a level up to twice too coarse: blurry thumbnails, measured).
    "GDAL_OVERVIEW_OVERSAMPLING_THRESHOLD": "1.0",
}

#: Resampling names accepted by the thumbnail step (besides ``"auto"``).
RESAMPLING = {
    "nearest": Resampling.nearest,
    "bilinear": Resampling.bilinear,
    "cubic": Resampling.cubic,
    "lanczos": Resampling.lanczos,
    "average": Resampling.average,
}

# Decoded bytes one read may cover before it is split into swaths; well under the
# default 64 MB GDAL_CACHEMAX, so a swath's blocks stay cached while every band is read.
SWATH_BYTES = 16 * 1024**2

# "auto" samples instead of averaging when the level read is at least this many times
# larger than the thumbnail (on each side), taking this many samples along each axis.
AUTO_SAMPLING_FACTOR = 4
SUPERSAMPLE = 4


def band_dtype(name: str) -> np.dtype[Any]:
    """The numpy type rasterio reads a band of type ``name`` (``src.dtypes[i]``) into.

    numpy has no complex integers, so ``np.dtype("complex_int16")`` (SAR data) raises a
    ``TypeError``; rasterio reads GDAL's complex integer bands as ``complex64``.
    """
    if name.startswith("complex_int"):
        return np.dtype(np.complex64)
    return np.dtype(name)


@dataclass
class ReadPlan:
    """What to read from a raster for one thumbnail."""

    indexes: list[int]
    alpha: int | None
    mask: str  # "alpha", "internal", "nodata" or "none"
    palette: dict[int, tuple[int, ...]] | None
    width: int
    height: int
    resampling: Resampling
    swath_rows: int
    supersample: tuple[int, int] = (1, 1)  # samples per thumbnail pixel: rows, columns
    #: Memory the read holds at once (blocks, swath and buffers), and what it is, in words.
    decoded_bytes: int = 0
    decoded_what: str = ""


def render_raster(
    path: str,
    config: ThumbnailOptions,
    settings: Settings,
    label: str,
    *,
    opener: Callable[..., Any] | None = None,
) -> Image.Image:
    """Open a GeoTIFF (a local path, or ``path`` served by ``opener``) and render it.

    Returns an L, LA, RGB or RGBA image no larger than ``config.size``. Raises
    :class:`ImageTooLargeError` before decoding when the pixels to decode are over
    ``settings.max_image_pixels`` or the memory the read needs at once is over the
    worker's budget (:mod:`pixelfleet.imagery.memory`); the read then waits while
    other threads hold the budget. GDAL failing raises :class:`CorruptInputError`, or
    the storage error that made it fail (see :func:`~pixelfleet.imagery.reading.unreadable_raster`).
    """
    try:
        with (
            rasterio.Env(**GDAL_OPTIONS),
            rasterio.open(path, driver="GTiff", opener=opener) as src,
        ):
            plan = plan_read(src, config, settings, label)
            with hold_decoded(plan.decoded_bytes, label, plan.decoded_what, settings):
                data, alpha = read(src, plan)
    except (RasterioError, CPLE_BaseError) as exc:
        raise unreadable_raster(label, path, exc) from exc
    except MemoryError as exc:
        raise out_of_memory(label, settings, "a buffer could not be allocated") from exc
    return compose(data, alpha, plan, config.percentiles)


def plan_read(
    src: DatasetReader, config: ThumbnailOptions, settings: Settings, label: str
) -> ReadPlan:
    """Choose bands, mask source, output size, resampling and swath height; check the size."""
    try:
        dtypes = [band_dtype(name) for name in src.dtypes]
    except TypeError:
        raise UnsupportedFormatError(
            f"{label}: unsupported data type ({', '.join(sorted(set(src.dtypes)))}); "
            "thumbnails are made from integer, floating-point and complex bands: convert it "
            "(gdal_translate -ot Float32 ...)"
        ) from None
    interps = list(src.colorinterp)
    alpha = next((i + 1 for i, c in enumerate(interps) if c == ColorInterp.alpha), None)
    if config.bands:
        bad = [b for b in config.bands if b > src.count]
        if bad:
            raise InputError(
                f"{label}: has {src.count} band(s) but the step asks for bands "
                f"{list(config.bands)}; use indexes from 1 to {src.count}, or leave 'bands' "
                "out to use the default"
            )
        indexes = list(config.bands)
    else:
        indexes = default_bands(interps)
    if alpha in indexes:
        alpha = None  # asked for as a picture band: show it, do not use it as transparency

    palette = None
    if len(indexes) == 1 and interps[indexes[0] - 1] == ColorInterp.palette:
        try:
            palette = src.colormap(indexes[0])
        except ValueError:
            palette = None

    flags = src.mask_flag_enums[indexes[0] - 1]
    if alpha is not None:
        mask = "alpha"
    elif MaskFlags.per_dataset in flags and MaskFlags.alpha not in flags:
        mask = "internal"
    elif MaskFlags.nodata in flags:
        mask = "nodata"
    else:
        mask = "none"

    width, height = fit_size(src.width, src.height, config.size)
    factor = overview_factor(src, indexes[0], width, height)
    level_w, level_h = math.ceil(src.width / factor), math.ceil(src.height / factor)
    read_bands = len(indexes) + (alpha is not None)
    # A pixel-interleaved block holds every band: all of them are decoded.
    decoded_bands = src.count if src.interleaving == Interleaving.pixel else read_bands
    check_pixels(label, level_w, level_h, decoded_bands, factor, settings)

    supersample = (1, 1)
    striped = src.block_shapes[0][1] >= src.width
    if palette is not None:
        resampling = Resampling.nearest  # averaging palette indexes makes other colours
    elif dtypes[indexes[0] - 1].kind == "c":
        # Amplitudes are averaged here: averaging complex values cancels their phases.
        resampling = Resampling.nearest
        n = max(1, min(SUPERSAMPLE, int(min(level_w / width, level_h / height))))
        supersample = (1 if striped else n, n)
    elif config.resampling == "auto":
        resampling = Resampling.average
        if min(level_w / width, level_h / height) >= AUTO_SAMPLING_FACTOR:
            resampling = Resampling.nearest
            supersample = (1 if striped else SUPERSAMPLE, SUPERSAMPLE)
    else:
        resampling = RESAMPLING[config.resampling]

    itemsize = dtypes[indexes[0] - 1].itemsize
    row_bytes = level_w * decoded_bands * itemsize
    if row_bytes * level_h <= SWATH_BYTES:
        swath_rows = height
    else:
        # Whole block rows of the level read, about SWATH_BYTES of them, in thumbnail rows.
        block_h = src.block_shapes[0][0]
        level_rows = max(block_h, SWATH_BYTES // row_bytes // block_h * block_h)
        swath_rows = max(1, int(level_rows * factor * height / src.height))
    decoded_bytes, decoded_what = decoded_at_once(
        src, dtypes, read_bands, swath_rows * level_h // height + 1, level_w, width * height
    )
    return ReadPlan(
        indexes,
        alpha,
        mask,
        palette,
        width,
        height,
        resampling,
        swath_rows,
        supersample,
        decoded_bytes,
        decoded_what,
    )


def decoded_at_once(
    src: DatasetReader,
    dtypes: list[np.dtype[Any]],
    bands: int,
    swath_level_rows: int,
    level_w: int,
    out_pixels: int,
) -> tuple[int, str]:
    """The bytes a read holds at once, and what they are in words.

    GDAL decodes a whole block (tile or strip) however little of it is wanted. A
    pixel-interleaved block holds every band, and GDAL keeps a band's copy beside it
    while it hands the band out (a 16384 x 16384 3-band uint8 tile of 768 MiB measured
    1.1 GB resident; one band of float64, 2 GiB, measured 2.2 GB). Swaths of the level
    read pass through GDAL's resampling (at most :data:`SWATH_BYTES` beyond a block),
    and the output (with supersampling, up to 16 samples per thumbnail pixel) is worked
    on in float64 at worst.
    """
    block_h, block_w = src.block_shapes[0]
    itemsize = max(d.itemsize for d in dtypes)
    pixel = src.interleaving == Interleaving.pixel and src.count > 1
    block_bands = src.count if pixel else 1
    block = block_w * block_h * block_bands * itemsize
    blocks = block + (block // block_bands if pixel else 0)
    swath = min(SWATH_BYTES, min(swath_level_rows, src.height) * level_w * bands * itemsize)
    out = out_pixels * SUPERSAMPLE * SUPERSAMPLE * (bands + 1) * 8
    dtype = ", ".join(sorted({str(d) for d in src.dtypes}))
    what = f"one {block_w}x{block_h} block x {block_bands} band(s) of {dtype}"
    if pixel:
        what += " and a band's copy"
    return blocks + swath + out, what


def default_bands(interps: list[ColorInterp]) -> list[int]:
    """Bands shown by default: red, green, blue by colour interpretation, else the first
    three bands that are not alpha, else the first non-alpha band as grey."""
    where = {c: i + 1 for i, c in reversed(list(enumerate(interps)))}
    rgb = [where.get(ColorInterp.red), where.get(ColorInterp.green), where.get(ColorInterp.blue)]
    if all(rgb):
        return [int(b) for b in rgb if b]
    picture = [i + 1 for i, c in enumerate(interps) if c != ColorInterp.alpha]
    if len(picture) >= 3:
        return picture[:3]
    return picture[:1] or [1]


def overview_factor(src: DatasetReader, band: int, width: int, height: int) -> int:
    """The decimation factor of the level GDAL will decode (1: full resolution).

    That is the coarsest overview still at least the thumbnail's size, allowing the
    1% GDAL itself allows with an oversampling threshold of 1.0.
    """
    best = 1
    for factor in sorted(src.overviews(band)):
        if src.width / factor * 1.01 >= width and src.height / factor * 1.01 >= height:
            best = factor
    return best


def check_pixels(
    label: str, width: int, height: int, bands: int, factor: int, settings: Settings
) -> None:
    """Refuse a read whose level has more pixels (or 4x more samples) than the limit."""
    limit = settings.max_image_pixels
    pixels = width * height
    hint = " (full resolution: no overview is near the thumbnail size; gdaladdo adds some)"
    hint = hint if factor == 1 else f" (overview level 1/{factor})"
    if pixels > limit:
        raise ImageTooLargeError(too_large_message(label, width, height, limit, hint))
    if pixels * bands > 4 * limit:
        raise ImageTooLargeError(
            f"{label}: {width}x{height} pixels x {bands} bands to decode is over the limit of "
            f"{limit:,} pixels x 4 bands{hint}; if the image is genuine, raise "
            "PIXELFLEET_MAX_IMAGE_PIXELS"
        )


def read(src: DatasetReader, plan: ReadPlan) -> tuple[np.ndarray, np.ndarray | None]:
    """Read the planned bands at thumbnail size, pixel-interleaved, swath by swath.

    Returns ``(data, alpha)``: data of shape (height, width, bands) in the file's
    dtype (float32 or float64 when samples were averaged here, or for the amplitude of
    complex bands), and a uint8 (height, width) opacity, or None when every pixel is valid.
    """
    indexes = plan.indexes + ([plan.alpha] if plan.alpha else [])
    dtype = band_dtype(src.dtypes[plan.indexes[0] - 1])
    sample_y, sample_x = plan.supersample
    rows, cols = plan.height * sample_y, plan.width * sample_x
    buf = np.empty((rows, cols, len(indexes)), dtype=dtype)
    internal = np.empty((rows, cols), np.uint8) if plan.mask == "internal" else None
    rows_per_out = src.height / rows
    step = plan.swath_rows * sample_y
    for r0 in range(0, rows, step):
        r1 = min(rows, r0 + step)
        top = r0 * rows_per_out
        window = Window(0, top, src.width, min(src.height - top, (r1 - r0) * rows_per_out))
        out = buf[r0:r1].transpose(2, 0, 1)
        src.read(indexes, window=window, out=out, resampling=plan.resampling)
        if internal is not None:
            src.read_masks(
                plan.indexes[0], window=window, out=internal[r0:r1], resampling=plan.resampling
            )
    complex_values = dtype.kind == "c"
    if complex_values:
        buf = np.abs(buf)  # the amplitude: float32 from complex64, float64 from complex128
        dtype = buf.dtype

    data = buf[..., : len(plan.indexes)]
    alpha: np.ndarray | None = None
    if plan.mask == "alpha":
        values = buf[..., -1]
        alpha = np.nan_to_num(np.clip(values, 0, 255)).astype(np.uint8)  # GDAL's rule
    elif plan.mask == "internal":
        alpha = internal
    elif plan.mask == "nodata":
        valid = np.zeros(data.shape[:2], bool)
        for i, band in enumerate(plan.indexes):
            nodata = src.nodatavals[band - 1]
            if nodata is not None and complex_values:
                nodata = abs(nodata)  # compared with the amplitude
            channel = data[..., i]
            if nodata is None:
                valid |= True
            elif math.isnan(nodata):
                valid |= ~np.isnan(channel)
            else:
                valid |= channel != np.asarray(nodata).astype(dtype)
        alpha = valid.astype(np.uint8) * 255
    elif plan.mask == "none" and plan.palette is None:
        alpha = fill_collar(data)
    if dtype.kind == "f":
        finite = np.isfinite(data).all(axis=2)
        if not finite.all():
            opaque = np.where(finite, np.uint8(255), np.uint8(0))
            alpha = opaque if alpha is None else np.asarray(np.minimum(alpha, opaque))
    if plan.supersample != (1, 1):
        data, alpha = box_average(data, alpha, sample_y, sample_x)
    if alpha is not None and alpha.min() == 255:
        alpha = None
    return data, alpha


def fill_collar(data: np.ndarray) -> np.ndarray | None:
    """The opacity of a raster that declares no nodata, mask or alpha but is framed by a
    fill value (a rotated scene's collar: 0 in cog_hirise_mars.tif, 1 in riotiler_cog.tif).

    When the four corners hold the same value in every band, and that value is 0 or (not
    8-bit data) lies outside the range of every other pixel, the pixels of that value
    reached from an edge along their row or column are transparent, as GDAL's
    ``nearblack`` finds a collar; such pixels inside the picture stay opaque. None (all
    opaque) otherwise.
    """
    value = data[0, 0]
    corners = (data[0, -1], data[-1, 0], data[-1, -1])
    if not all(np.array_equal(c, value) for c in corners):
        return None
    fill = (data == value).all(axis=2)
    collar = np.logical_and.accumulate(fill, axis=1)
    collar |= np.logical_and.accumulate(fill[:, ::-1], axis=1)[:, ::-1]
    collar |= np.logical_and.accumulate(fill, axis=0)
    collar |= np.logical_and.accumulate(fill[::-1], axis=0)[::-1]
    if collar.all():
        return None  # a constant picture: nothing to tell apart
    if (value != 0).any():
        rest = data[~collar]
        outside = (value < rest.min(axis=0)) | (value > rest.max(axis=0))
        if data.dtype == np.uint8 or not outside.all():
            return None
    return np.where(collar, np.uint8(0), np.uint8(255))


def box_average(
    data: np.ndarray, alpha: np.ndarray | None, size_y: int, size_x: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Average blocks of ``size_y x size_x`` samples into one pixel, weighted by opacity.

    Transparent samples do not count; a pixel's opacity is its samples' mean.
    uint8 data stays uint8, other types become floating point.
    """
    height, width = data.shape[0] // size_y, data.shape[1] // size_x
    if alpha is None and data.dtype == np.uint8 and data.shape[2] in (1, 3):
        # The common case (8-bit grey or RGB, all valid): Pillow's box reduce is ~5x faster.
        whole = data[: height * size_y, : width * size_x]
        image = Image.fromarray(
            np.ascontiguousarray(whole if data.shape[2] == 3 else whole[..., 0])
        )
        reduced = np.asarray(image.reduce((size_x, size_y)))
        return reduced.reshape(height, width, data.shape[2]), None
    small = data.dtype.itemsize <= 2 and data.dtype.kind in "iu"
    acc = np.float32 if small or data.dtype == np.float32 else np.float64
    total = np.zeros((height, width, data.shape[2]), acc)
    weight = np.zeros((height, width), acc)
    for dy in range(size_y):
        for dx in range(size_x):
            sample = data[dy : height * size_y : size_y, dx : width * size_x : size_x]
            if alpha is None:
                total += sample
                continue
            opacity = alpha[dy : height * size_y : size_y, dx : width * size_x : size_x]
            # Transparent samples may hold NaN or a huge nodata value: leave them out.
            total += np.where(opacity[..., None] > 0, sample, 0) * opacity[..., None]
            weight += opacity
    count = size_y * size_x
    if alpha is None:
        mean = total / count
        mean_alpha = None
    else:
        mean = total / np.maximum(weight, 1)[..., None]
        mean_alpha = (weight / count + 0.5).astype(np.uint8)
    if data.dtype == np.uint8:
        return (mean + 0.5).astype(np.uint8), mean_alpha
    return mean, mean_alpha


def compose(
    data: np.ndarray,
    alpha: np.ndarray | None,
    plan: ReadPlan,
    percentiles: tuple[float, float],
) -> Image.Image:
    """Turn read data into an 8-bit L, LA, RGB or RGBA image.

    Palettes are applied; uint8 data is shown as is; other types are stretched per
    band between the given percentiles of the valid pixels.
    """
    valid = None if alpha is None else alpha > 0
    if plan.palette is not None:
        lut = palette_lut(plan.palette, data.dtype)
        rgba = lut[np.clip(data[..., 0], 0, len(lut) - 1).astype(np.intp)]
        pixels = rgba[..., :3]
        opacity = rgba[..., 3]
        alpha = opacity if alpha is None else np.minimum(alpha, opacity)
        if alpha.min() == 255:
            alpha = None
    elif data.dtype == np.uint8:
        pixels = data
    else:
        pixels = np.empty(data.shape, np.uint8)
        for i in range(data.shape[2]):
            pixels[..., i] = stretch(data[..., i], valid, percentiles)
    channels = [pixels[..., i] for i in range(pixels.shape[2])]
    if alpha is not None:
        channels.append(alpha)
    stacked = np.ascontiguousarray(np.stack(channels, axis=2))
    if stacked.shape[2] == 1:
        return Image.fromarray(stacked[..., 0])
    return Image.fromarray(stacked)


def stretch(
    band: np.ndarray, valid: np.ndarray | None, percentiles: tuple[float, float]
) -> np.ndarray:
    """Scale one band to uint8 between two percentiles of its valid, finite values.

    A constant band becomes mid-grey; a band with no valid value becomes black.
    """
    values = band if valid is None else band[valid]
    if band.dtype.kind == "f":
        values = values[np.isfinite(values)]
    if values.size == 0:
        return np.zeros(band.shape, np.uint8)
    low, high = np.percentile(values, percentiles)
    low, high = float(low), float(high)
    if high <= low:
        low, high = low - 0.5, low + 0.5
    # Clipping first keeps huge values (nodata sentinels, inf) from overflowing float32.
    clipped = np.clip(band, low, high).astype(np.float32)
    scaled = (clipped - np.float32(low)) * np.float32(255.0 / (high - low)) + np.float32(0.5)
    stretched: np.ndarray = np.nan_to_num(scaled, nan=0.0).astype(np.uint8)
    return stretched


def palette_lut(colormap: dict[int, tuple[int, ...]], dtype: np.dtype[Any]) -> np.ndarray:
    """A lookup table from palette index to RGBA; indexes without a colour are transparent."""
    size = 256 if dtype.itemsize == 1 else 65536
    lut = np.zeros((size, 4), np.uint8)
    for index, colour in colormap.items():
        if 0 <= index < size:
            rgba = tuple(colour) + (255,) * (4 - len(colour))
            lut[index] = rgba[:4]
    return lut
