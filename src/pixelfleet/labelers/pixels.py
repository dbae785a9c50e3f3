"""Decoded pictures for labellers: any supported image as a small 8-bit RGB picture.

The same readers the thumbnails use, so the same guards hold (format sniffed from the
bytes, pixel limits checked before decoding, GTiff driver only, overview-aware reads,
JPEG DCT-domain shrinking).
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
from typing import BinaryIO

from PIL import Image

from pixelfleet.imagery.pictures import ThumbnailOptions, flatten
from pixelfleet.imagery.reading import (
    SNIFF_BYTES,
    check_object_size,
    raster_opener,
    sniff_labelled,
)
from pixelfleet.labelers.base import ImageRef


def load_picture(image: ImageRef, size: int, short_side: int | None = None) -> Image.Image:
    """The image as RGB, its longest side at most ``size`` (never enlarged).

    With ``short_side``, photos are instead resized once so that their shorter side is
    that long (when they are larger): what classifiers want, without a second resize.
    Transparent pixels are laid on white. Raises an
    :class:`~pixelfleet.errors.InputError` for unsupported, corrupt or too-large input.
    """
    from pixelfleet.imagery.photos import render_photo
    from pixelfleet.imagery.rasters import render_raster

    config = ThumbnailOptions(size=size, output_format="png")
    label = image.label
    path = image.local_path()
    if path is not None:
        with open(path, "rb") as f:
            fmt = sniff_labelled(f.read(SNIFF_BYTES), label)
        if fmt == "GTiff":
            picture = render_raster(path, config, image.settings, label)
        else:
            check_object_size(os.path.getsize(path), label, image.settings)
            with open(path, "rb") as f:
                if short_side:
                    config = _short_side_config(f, fmt, short_side, image, config)
                picture = render_photo(f, fmt, config, image.settings, label)
    else:
        storage, entry = image.storage, image.entry
        with storage.open(entry.key, entry.size) as remote:
            fmt = sniff_labelled(remote.read(SNIFF_BYTES), label)
            if fmt == "GTiff":
                remote.seek(0)
                fake_path, opener, failures = raster_opener(remote)  # type: ignore[arg-type]
                try:
                    picture = render_raster(fake_path, config, image.settings, label, opener=opener)
                except Exception:
                    if failures:
                        raise failures[0] from None
                    raise
            else:
                check_object_size(entry.size, label, image.settings)
                data = storage.read(entry.key)
                if short_side:
                    config = _short_side_config(io.BytesIO(data), fmt, short_side, image, config)
                picture = render_photo(io.BytesIO(data), fmt, config, image.settings, label)
    return to_rgb(picture)


def _short_side_config(
    fp: BinaryIO, fmt: str, short_side: int, image: ImageRef, config: ThumbnailOptions
) -> ThumbnailOptions:
    """A config whose longest side makes the photo's shorter side ``short_side`` long."""
    from pixelfleet.imagery.photos import open_photo

    # Header only: no pixel is decoded. (Not closed: that would close ``fp``, which
    # render_photo reads next.)
    width, height = open_photo(fp, fmt, image.label, image.settings).size
    fp.seek(0)
    if min(width, height) <= short_side:
        return config
    longest = math.ceil(short_side * max(width, height) / min(width, height))
    return dataclasses.replace(config, size=min(longest, 4096))


def to_rgb(picture: Image.Image) -> Image.Image:
    """An L, LA, RGB or RGBA picture as RGB (transparency on white)."""
    if picture.mode in ("LA", "RGBA"):
        picture = flatten(picture, "white")
    return picture.convert("RGB") if picture.mode != "RGB" else picture
