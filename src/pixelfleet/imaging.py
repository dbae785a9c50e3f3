"""Thumbnail rendering without a pipeline: sniff the format, read only what is needed, encode.

``render_thumbnail(source, config)`` takes a local path, bytes or a seekable binary
file and returns the encoded thumbnail. The format is recognised from the first
bytes, never from the name: TIFFs go to :mod:`pixelfleet.rasters` (rasterio, GTiff
driver only, overview-aware decimated reads) and photos to :mod:`pixelfleet.photos`
(Pillow, the detected format's reader only). Anything else is refused with
:class:`~pixelfleet.errors.UnsupportedFormatError`.

``render_object(storage, entry, config)`` is what the thumbnail step calls: it opens
local objects by path and remote ones as ranged files, so a COG in a bucket costs a
few range requests rather than a download.
"""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, BinaryIO

from PIL import Image

from pixelfleet.errors import ImageTooLargeError, InputError, UnsupportedFormatError
from pixelfleet.models import Entry
from pixelfleet.settings import Settings, get_settings
from pixelfleet.storage.base import SeekableReader, Storage

if TYPE_CHECKING:
    from pixelfleet.ops.thumbnail import ThumbnailConfig

#: Formats a thumbnail can be rendered from, as shown in error messages.
SUPPORTED_INPUTS = "GeoTIFF/COG, JPEG, PNG, WebP, GIF and BMP"

#: MIME type of each output format.
CONTENT_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}

# How many leading bytes sniffing looks at (WebP needs 12, the XML check a few more).
_SNIFF_BYTES = 64

Source = str | os.PathLike[str] | bytes | BinaryIO


def sniff_format(head: bytes) -> str:
    """Name the format of an object from its first bytes.

    Returns ``"GTiff"`` for TIFF and BigTIFF, or a Pillow format name (``"JPEG"``,
    ``"PNG"``, ``"WEBP"``, ``"GIF"``, ``"BMP"``) for photos. Raises
    :class:`UnsupportedFormatError` naming what was found otherwise.
    """
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "GTiff"
    if head[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:2] == b"BM" and len(head) >= 26:
        return "BMP"
    raise UnsupportedFormatError(describe_unsupported(head))


def describe_unsupported(head: bytes) -> str:
    """Say in words what a refused object looks like (without the object's name)."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    known = [
        (b"<vrtdataset", "a GDAL VRT (XML) file"),
        (b"<?xml", "an XML file"),
        (b"<", "an XML or HTML file"),
        (b"\x00\x00\x00\x0cjp  \r\n\x87\n", "a JPEG 2000 file"),
        (b"\xffO\xffQ", "a JPEG 2000 codestream"),
        (b"\x89hdf", "an HDF5 file"),
        (b"cdf\x01", "a netCDF file"),
        (b"cdf\x02", "a netCDF file"),
        (b"pk\x03\x04", "a ZIP archive"),
        (b"\x1f\x8b", "a gzip file"),
        (b"%pdf", "a PDF document"),
        (b"nitf", "a NITF file"),
        (b"grib", "a GRIB file"),
        (b"ehfa_header_tag", "an ERDAS Imagine file"),
        (b"{", "a JSON file"),
    ]
    if not head:
        what = "an empty object"
    elif head[4:8] == b"ftyp":
        what = f"an ISO media file ({head[8:12].decode('latin-1').strip()!r}: HEIF/AVIF/MP4)"
    else:
        for magic, name in known:
            if text.startswith(magic) or head.startswith(magic):
                what = name
                break
        else:
            what = f"an unknown format (first bytes {head[:8].hex(' ')})"
    return (
        f"is {what}, detected from its first bytes; thumbnails are made from "
        f"{SUPPORTED_INPUTS}: convert it or leave it out of the source"
    )


def render_thumbnail(
    source: Source,
    config: ThumbnailConfig,
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
    settings = settings or get_settings()
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        label = name or path
        with open(path, "rb") as f:
            fmt = _sniff(f.read(_SNIFF_BYTES), label)
        if fmt == "GTiff":
            image = _render_raster(path, None, config, settings, label)
        else:
            _check_object_size(os.path.getsize(path), label, settings)
            with open(path, "rb") as f:
                image = _render_photo(f, fmt, config, settings, label)
    else:
        label = name or str(getattr(source, "name", "") or "<file>")
        source.seek(0)
        fmt = _sniff(source.read(_SNIFF_BYTES), label)
        source.seek(0)
        if fmt == "GTiff":
            fake_path, opener, failures = _opener_for(source)
            try:
                image = _render_raster(fake_path, opener, config, settings, label)
            except InputError:
                # GDAL reports a failed read as a bad file; a storage error is not one.
                if failures:
                    raise failures[0] from None
                raise
        else:
            size = source.seek(0, io.SEEK_END)
            _check_object_size(size, label, settings)
            source.seek(0)
            # Photos are small and decoded whole: one read instead of many ranged ones.
            image = _render_photo(io.BytesIO(source.read()), fmt, config, settings, label)
    return encode(image, config.output_format, config.quality, config.background)


def render_object(
    storage: Storage, entry: Entry, config: ThumbnailConfig, settings: Settings | None = None
) -> bytes:
    """Render the thumbnail of one stored object, reading it the cheapest way.

    Local objects are opened by path; remote ones through
    :meth:`Storage.open <pixelfleet.storage.base.Storage.open>`, so a GeoTIFF costs
    only the range requests its header and the needed overview tiles take.
    """
    settings = settings or get_settings()
    label = storage.describe(entry.key)
    path = storage.local_path(entry.key)
    if path is not None:
        return render_thumbnail(path, config, settings, name=label)
    with storage.open(entry.key, entry.size) as f:
        return render_thumbnail(f, config, settings, name=label)  # type: ignore[arg-type]


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


def _sniff(head: bytes, label: str) -> str:
    try:
        return sniff_format(head)
    except UnsupportedFormatError as exc:
        raise UnsupportedFormatError(f"{label} {exc}") from None


def _check_object_size(size: int, label: str, settings: Settings) -> None:
    if size > settings.max_object_bytes:
        raise ImageTooLargeError(
            f"{label}: {size:,} bytes is over the limit of {settings.max_object_bytes:,} bytes "
            "for a photo (decoded whole); raise PIXELFLEET_MAX_OBJECT_BYTES to accept it"
        )


def _render_raster(
    path: str,
    opener: Callable[..., Any] | None,
    config: ThumbnailConfig,
    settings: Settings,
    label: str,
) -> Image.Image:
    from pixelfleet.rasters import render_raster

    return render_raster(path, config, settings, label, opener=opener)


def _render_photo(
    fp: BinaryIO, fmt: str, config: ThumbnailConfig, settings: Settings, label: str
) -> Image.Image:
    from pixelfleet.photos import render_photo

    return render_photo(fp, fmt, config, settings, label)


def _opener_for(source: BinaryIO) -> tuple[str, Callable[..., Any], list[Exception]]:
    """A made-up path, a rasterio ``opener`` that serves ``source`` under it only, and
    the list where errors raised by ``source`` while GDAL reads are kept.

    The path is unique per call, so concurrent renders never share an opener
    registration. GDAL also asks the opener for sidecar files (``.aux.xml``,
    ``.ovr``, ``.msk``); refusing them keeps a GeoTIFF from pulling in other objects.
    """
    fake_path = f"/pixelfleet-{uuid.uuid4().hex}/source.tif"
    failures: list[Exception] = []

    def opener(path: str, mode: str = "rb", **kwargs: Any) -> io.RawIOBase:
        if path != fake_path or "w" in mode or "+" in mode:
            raise FileNotFoundError(path)
        return _Cursor(source, failures)

    return fake_path, opener, failures


class _Cursor(SeekableReader):
    """A read-only view of a shared seekable file with a position of its own.

    GDAL may open a file more than once and expects each handle to seek on its own;
    sharing the underlying file also shares whatever it has cached (the header that
    sniffing already fetched, for a :class:`RangeFile`).
    """

    def __init__(self, shared: BinaryIO, failures: list[Exception]):
        super().__init__()
        self._shared = shared
        self._failures = failures
        self._pos = 0
        self._size = shared.seek(0, io.SEEK_END)

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            size = self._size - self._pos
        try:
            self._shared.seek(self._pos)
            data = self._shared.read(size)
        except Exception as exc:  # noqa: BLE001 - kept and raised again once GDAL gives up
            # An exception cannot cross GDAL (it would only be printed as "ignored"):
            # GDAL gets a short read and fails; render_thumbnail raises this instead.
            self._failures.append(exc)
            return b""
        self._pos += len(data)
        return data
