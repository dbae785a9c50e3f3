"""Thumbnail rendering without a pipeline: sniff the format, read only what is needed, encode.

``render_thumbnail(source, config)`` takes a local path, bytes or a seekable binary
file and returns the encoded thumbnail. The format is recognised from the first
bytes, never from the name: TIFFs go to :mod:`pixelfleet.imagery.rasters` (rasterio, GTiff
driver only, overview-aware decimated reads) and photos to :mod:`pixelfleet.imagery.photos`
(Pillow, the detected format's reader only). Anything else is refused with
:class:`~pixelfleet.errors.UnsupportedFormatError`.

``render_object(storage, entry, config)`` is what the thumbnail step calls: it opens
local objects by path and remote ones as ranged files, so a COG in a bucket costs a
few range requests rather than a download.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from typing import Any, BinaryIO

from PIL import Image

from pixelfleet.errors import InputError
from pixelfleet.imagery.pictures import ThumbnailOptions, encode
from pixelfleet.imagery.reading import SNIFF_BYTES, check_source, raster_opener
from pixelfleet.models import Entry
from pixelfleet.settings import Settings, get_settings
from pixelfleet.storage.base import Storage

Source = str | os.PathLike[str] | bytes | BinaryIO


def render_thumbnail(
    source: Source,
    config: ThumbnailOptions,
    settings: Settings | None = None,
    *,
    name: str | None = None,
) -> bytes:
    """Render one thumbnail and return the encoded image bytes.

    ``source`` is a local path, the object's bytes, or a seekable binary file (such
    as :class:`~pixelfleet.storage.base.RangeFile`); rasters read from a file only
    fetch the byte ranges they need. ``name`` is used in error messages (default:
    the path, or the file's ``name`` attribute). Bad input raises an
    :class:`~pixelfleet.errors.InputError` subclass with a one-line message.
    """
    image = enlarge_small(decode_thumbnail(source, config, settings, name=name), config)
    return encode(image, config.output_format, config.quality, config.background)


def enlarge_small(image: Image.Image, config: ThumbnailOptions) -> Image.Image:
    """``image`` enlarged when its longest side is under ``config.min_size``: by the
    smallest whole factor that reaches it (at most up to ``config.size``), nearest
    neighbour, so that a 13 x 12 raster becomes a 65 x 60 thumbnail of square, sharp
    pixels rather than a speck. Larger images are returned as they are."""
    longest = max(image.size)
    if not config.min_size or longest >= config.min_size:
        return image
    factor = min(-(-config.min_size // longest), max(config.size // longest, 1))
    if factor <= 1:
        return image
    width, height = image.size
    return image.resize((width * factor, height * factor), Image.Resampling.NEAREST)


def decode_thumbnail(
    source: Source,
    config: ThumbnailOptions,
    settings: Settings | None = None,
    *,
    name: str | None = None,
) -> Image.Image:
    """:func:`render_thumbnail` before encoding: an L, LA, RGB or RGBA picture.

    The source is checked before anything is decoded (``reading.check_source``: format
    from the bytes, size limits), as every stage that opens a source image checks it.
    """
    settings = settings or get_settings()
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        label = name or path
        # One open for the sniff, the size and (for a photo) the decode.
        with open(path, "rb") as f:
            head = f.read(SNIFF_BYTES)
            fmt = check_source(head, os.fstat(f.fileno()).st_size, label, settings)
            if fmt != "GTiff":
                f.seek(0)
                return _render_photo(f, fmt, config, settings, label)
        return _render_raster(path, None, config, settings, label)
    label = name or str(getattr(source, "name", "") or "<file>")
    source.seek(0)
    head = source.read(SNIFF_BYTES)
    fmt = check_source(head, source.seek(0, io.SEEK_END), label, settings)
    source.seek(0)
    if fmt != "GTiff":
        # Photos are small and decoded whole: one read instead of many ranged ones.
        return _render_photo(io.BytesIO(source.read()), fmt, config, settings, label)
    fake_path, opener, failures = raster_opener(source)
    try:
        return _render_raster(fake_path, opener, config, settings, label)
    except InputError:
        # GDAL reports a failed read as a bad file; a storage error is not one.
        if failures:
            raise failures[0] from None
        raise


def render_object(
    storage: Storage, entry: Entry, config: ThumbnailOptions, settings: Settings | None = None
) -> bytes:
    """Render the thumbnail of one stored object, reading it the cheapest way.

    Local objects are opened by path; remote ones through
    :meth:`Storage.open <pixelfleet.storage.base.Storage.open>`, so a GeoTIFF costs
    only the range requests its header and the needed overview tiles take.
    """
    image = enlarge_small(decode_object(storage, entry, config, settings), config)
    return encode(image, config.output_format, config.quality, config.background)


def decode_object(
    storage: Storage, entry: Entry, config: ThumbnailOptions, settings: Settings | None = None
) -> Image.Image:
    """:func:`render_object` before encoding (what labellers look at)."""
    settings = settings or get_settings()
    label = storage.describe(entry.key)
    path = storage.local_path(entry.key)
    if path is not None:
        return decode_thumbnail(path, config, settings, name=label)
    with storage.open(entry.key, entry.size) as f:
        return decode_thumbnail(f, config, settings, name=label)  # type: ignore[arg-type]


def _render_raster(
    path: str,
    opener: Callable[..., Any] | None,
    config: ThumbnailOptions,
    settings: Settings,
    label: str,
) -> Image.Image:
    from pixelfleet.imagery.rasters import render_raster

    return render_raster(path, config, settings, label, opener=opener)


def _render_photo(
    fp: BinaryIO, fmt: str, config: ThumbnailOptions, settings: Settings, label: str
) -> Image.Image:
    from pixelfleet.imagery.photos import render_photo

    return render_photo(fp, fmt, config, settings, label)
