"""Photo thumbnails with Pillow: JPEG, PNG, WebP, GIF and BMP, with EXIF orientation.

The reader is the one format the first bytes named (no other Pillow plugin ever
sees the file). The pixel count is checked against ``max_image_pixels`` straight
after the header is parsed, before any pixel is decoded. The readers are used
directly rather than through ``Image.open`` because ``Image.open`` applies Pillow's
process-wide ``MAX_IMAGE_PIXELS`` (a warning above 89 Mpx, an error above 179 Mpx),
which cannot be set per call without changing state other threads share.

JPEGs are decoded at 1/2, 1/4 or 1/8 scale when that is still at least the
thumbnail's size (``draft``: the DCT does the shrinking), then resized exactly.
An embedded EXIF thumbnail is never used: it can be stale.
"""

from __future__ import annotations

import math
import struct
import zlib
from typing import BinaryIO

from PIL import (
    BmpImagePlugin,
    GifImagePlugin,
    Image,
    ImageFile,
    ImageOps,
    JpegImagePlugin,
    PngImagePlugin,
    WebPImagePlugin,
)

from pixelfleet.errors import CorruptInputError, ImageTooLargeError
from pixelfleet.imagery.memory import check_photo_memory
from pixelfleet.imagery.pictures import ThumbnailOptions, fit_size, too_large_message
from pixelfleet.models import one_line
from pixelfleet.settings import Settings

#: Pillow reader of each photo format that `reading.sniff_format` can name.
READERS: dict[str, type[ImageFile.ImageFile]] = {
    "JPEG": JpegImagePlugin.JpegImageFile,
    "PNG": PngImagePlugin.PngImageFile,
    "WEBP": WebPImagePlugin.WebPImageFile,
    "GIF": GifImagePlugin.GifImageFile,
    "BMP": BmpImagePlugin.BmpImageFile,
}

#: Pillow filter for each resampling name; "auto" is what ``Image.thumbnail`` uses.
FILTERS = {
    "auto": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "cubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "average": Image.Resampling.BOX,
}

# What a broken file makes Pillow raise while parsing or decoding.
_DECODE_ERRORS = (SyntaxError, OSError, ValueError, EOFError, struct.error, zlib.error)


def render_photo(
    fp: BinaryIO, fmt: str, config: ThumbnailOptions, settings: Settings, label: str
) -> Image.Image:
    """Decode a photo of format ``fmt`` (a :data:`READERS` key) into an L, LA, RGB or RGBA
    thumbnail no larger than ``config.size``, turned upright per its EXIF orientation."""
    if fmt == "GIF":
        # The logical screen size, checked before Pillow allocates frames that large.
        head = fp.read(10)
        fp.seek(0)
        if len(head) == 10:
            width, height = struct.unpack("<HH", head[6:10])
            check_pixels(label, width, height, settings)
    image = open_photo(fp, fmt, label, settings)
    try:
        width, height = image.size
        check_pixels(label, width, height, settings)
        target = fit_size(width, height, _longest_side(width, height, config))
        if fmt == "JPEG":
            image.draft(image.mode, target)
        check_photo_memory(label, image, settings)  # after draft: the size decoded
        try:
            image.load()
            picture = to_display_mode(image, config.percentiles)
            if picture.size != target:
                resample = FILTERS[config.resampling]
                gap = None if resample == Image.Resampling.NEAREST else 2.0
                picture = picture.resize(target, resample, reducing_gap=gap)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageTooLargeError(_bomb_message(label, exc, settings)) from None
        except _DECODE_ERRORS as exc:
            raise CorruptInputError(_corrupt_message(label, fmt, exc)) from None
        picture = upright(picture)
        # The file's image is closed below: one that needed no change is copied out.
        return picture.copy() if picture is image else picture
    finally:
        image.close()


def _longest_side(width: int, height: int, config: ThumbnailOptions) -> int:
    """The longest side a photo is fitted to: ``size``, or what makes the shorter side
    ``short_side`` long."""
    short = config.short_side
    if not short or min(width, height) <= short:
        return config.size
    return min(math.ceil(short * max(width, height) / min(width, height)), 4096)


def open_photo(fp: BinaryIO, fmt: str, label: str, settings: Settings) -> ImageFile.ImageFile:
    """Parse a photo's header with the one reader for ``fmt``; no pixel is decoded yet."""
    try:
        return READERS[fmt](fp)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # GIF frames are checked by Pillow itself while the header is parsed.
        raise ImageTooLargeError(_bomb_message(label, exc, settings)) from None
    except _DECODE_ERRORS as exc:
        raise CorruptInputError(_corrupt_message(label, fmt, exc)) from None


def check_pixels(label: str, width: int, height: int, settings: Settings) -> None:
    """Raise :class:`ImageTooLargeError` if ``width x height`` is over the pixel limit."""
    if width * height > settings.max_image_pixels:
        raise ImageTooLargeError(too_large_message(label, width, height, settings.max_image_pixels))


def to_display_mode(image: Image.Image, percentiles: tuple[float, float]) -> Image.Image:
    """Convert any Pillow mode to L, LA, RGB or RGBA; 16/32-bit grey is stretched."""
    mode = image.mode
    if mode in ("L", "LA", "RGB", "RGBA"):
        return image
    if mode == "P":
        has_alpha = "transparency" in image.info
        return image.convert("RGBA" if has_alpha else "RGB")
    if mode in ("PA", "RGBa"):
        return image.convert("RGBA")
    if mode in ("1", "La"):
        return image.convert("L" if mode == "1" else "LA")
    if mode.startswith("I") or mode == "F":
        # Imported here: rasters.py brings rasterio and GDAL (a third of a second and
        # 400 modules), which a worker making thumbnails of 8-bit photos never needs.
        import numpy as np

        from pixelfleet.imagery.rasters import stretch

        grey = stretch(np.asarray(image), None, percentiles)
        return Image.fromarray(grey)
    return image.convert("RGB")


def upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation (kept in ``image.info`` through resizing); a broken
    EXIF block is ignored rather than failing the photo."""
    try:
        # Asked first: exif_transpose copies an image that needs no turn.
        if image.getexif().get(_ORIENTATION, 1) not in _TURNED:
            return image
        return ImageOps.exif_transpose(image)
    except (SyntaxError, ValueError, KeyError, TypeError, struct.error, OSError):
        return image


_ORIENTATION = 0x0112  # the EXIF Orientation tag
#: Orientations other than upright (1): mirrored, turned, or both.
_TURNED = frozenset(range(2, 9))


def _corrupt_message(label: str, fmt: str, exc: BaseException) -> str:
    detail = one_line(str(exc)) or type(exc).__name__
    if "MAX_TEXT_CHUNK" in detail or "MAX_TEXT_MEMORY" in detail:
        return (
            f"{label}: a {fmt} metadata chunk decompresses to more than Pillow allows "
            f"({detail}): refused as a decompression bomb; strip the metadata to use it"
        )
    return (
        f"{label}: cannot be decoded as {fmt} ({detail}); it is truncated or corrupt: "
        "re-export or re-upload it"
    )


def _bomb_message(label: str, exc: BaseException, settings: Settings) -> str:
    return (
        f"{label}: {one_line(str(exc))} (pixelfleet's limit is {settings.max_image_pixels:,} "
        "pixels, PIXELFLEET_MAX_IMAGE_PIXELS)"
    )
