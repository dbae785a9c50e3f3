"""Output pictures: their size, their encoding, and the options of a thumbnail.

Plain values only: the pipeline's step settings (:mod:`pixelfleet.ops`) turn into a
:class:`ThumbnailOptions`, and labellers build one directly.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image

#: MIME type of each output format.
CONTENT_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}


@dataclass(frozen=True)
class ThumbnailOptions:
    """How to render one thumbnail (see ``ThumbnailConfig`` for each field's meaning)."""

    size: int = 512
    output_format: str = "jpeg"
    quality: int = 85
    bands: tuple[int, ...] | None = None
    percentiles: tuple[float, float] = (2.0, 98.0)
    resampling: str = "auto"
    background: str = "white"
    #: Images whose longest side is shorter are enlarged (nearest neighbour, by a whole
    #: factor) to at least this (see :func:`pixelfleet.imagery.thumbnails.enlarge_small`).
    min_size: int = 0
    #: Photos only: resize so that the shorter side is this long (when it is longer),
    #: the longest side at most 4096, instead of fitting the longest side to ``size``
    #: (what classifiers want, in one resize).
    short_side: int | None = None


def encode(image: Image.Image, fmt: str, quality: int, background: str) -> bytes:
    """Encode an L, LA, RGB or RGBA image as ``"jpeg"``, ``"png"`` or ``"webp"``.

    JPEG has no transparency, so transparent pixels are laid on ``background``.
    An alpha channel that is fully opaque is dropped.
    """
    if image.mode in ("LA", "RGBA") and image.getchannel("A").getextrema() == (255, 255):
        image = image.convert(image.mode[:-1])
    out = io.BytesIO()
    if fmt == "jpeg":
        if image.mode in ("LA", "RGBA"):
            image = flatten(image, background)
        image.save(out, format="JPEG", quality=quality)
    elif fmt == "png":
        image.save(out, format="PNG", compress_level=6)
    elif fmt == "webp":
        if image.mode in ("L", "LA"):
            image = image.convert("RGBA" if image.mode == "LA" else "RGB")
        image.save(out, format="WEBP", quality=quality, method=4)
    else:
        raise ValueError(f"output format {fmt!r} is not one of {', '.join(CONTENT_TYPES)}")
    return out.getvalue()


def flatten(image: Image.Image, background: str) -> Image.Image:
    """Lay an LA or RGBA image on a solid background colour; returns L or RGB."""
    base_mode = image.mode[:-1]
    # For grey images, the colour's luminance (the same rule Pillow's L conversion uses).
    colour = Image.new("RGB", (1, 1), background).convert(base_mode).getpixel((0, 0))
    canvas = Image.new(base_mode, image.size, colour)
    canvas.paste(image.convert(base_mode), mask=image.getchannel("A"))
    return canvas


def fit_size(width: int, height: int, size: int) -> tuple[int, int]:
    """The thumbnail size: longest side ``size`` (never enlarged), aspect ratio kept."""
    longest = max(width, height)
    if longest <= size:
        return width, height
    scale = size / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def too_large_message(label: str, width: int, height: int, limit: int, hint: str = "") -> str:
    """The one-line message of :class:`ImageTooLargeError` for an image over the pixel limit."""
    return (
        f"{label}: {width}x{height} = {width * height:,} pixels to decode is over the limit "
        f"of {limit:,}{hint}; if the image is genuine, raise PIXELFLEET_MAX_IMAGE_PIXELS"
    )
