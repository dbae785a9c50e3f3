"""Decoded pictures for labellers: any supported image as a small 8-bit RGB picture.

The very code the thumbnails use (:func:`pixelfleet.imagery.thumbnails.decode_object`),
so the same guards hold (format sniffed from the bytes, pixel limits checked before
decoding, GTiff driver only, overview-aware reads, JPEG DCT-domain shrinking).
"""

from __future__ import annotations

from PIL import Image

from pixelfleet.imagery.pictures import ThumbnailOptions, flatten
from pixelfleet.imagery.thumbnails import decode_object
from pixelfleet.labelers.base import ImageRef


def load_picture(image: ImageRef, size: int, short_side: int | None = None) -> Image.Image:
    """The image as RGB, its longest side at most ``size`` (never enlarged).

    With ``short_side``, photos are instead resized once so that their shorter side is
    that long (when they are larger): what classifiers want, without a second resize.
    Transparent pixels are laid on white. Raises an
    :class:`~pixelfleet.errors.InputError` for unsupported, corrupt or too-large input.
    """
    config = ThumbnailOptions(size=size, output_format="png", short_side=short_side)
    return to_rgb(decode_object(image.storage, image.entry, config, image.settings))


def to_rgb(picture: Image.Image) -> Image.Image:
    """An L, LA, RGB or RGBA picture as RGB (transparency on white)."""
    if picture.mode in ("LA", "RGBA"):
        picture = flatten(picture, "white")
    return picture.convert("RGB") if picture.mode != "RGB" else picture
