"""Reading untrusted image bytes safely: the format from the first bytes, size guards
before decoding, and seekable files served to GDAL without a path GDAL could follow.

Every stage that opens a source image (thumbnails, composites, labellers, catalog
facts) goes through these, so the same guards hold everywhere.
"""

from __future__ import annotations

import io
import struct
import uuid
from collections.abc import Callable
from typing import Any, BinaryIO

from pixelfleet.errors import (
    ImageTooLargeError,
    StorageError,
    UnsupportedFormatError,
)
from pixelfleet.imagery.failures import _FAILURES, _Failures
from pixelfleet.imagery.failures import unreadable_raster as unreadable_raster  # re-exported
from pixelfleet.settings import Settings
from pixelfleet.storage.base import SeekableReader

#: Formats a thumbnail can be rendered from, as shown in error messages.
SUPPORTED_INPUTS = "GeoTIFF/COG, JPEG, PNG, WebP, GIF and BMP"

#: How many leading bytes sniffing looks at (WebP needs 12, the XML check a few more).
SNIFF_BYTES = 64


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


def sniff_labelled(head: bytes, label: str) -> str:
    """:func:`sniff_format`, with the object's name at the start of the error message."""
    try:
        return sniff_format(head)
    except UnsupportedFormatError as exc:
        raise UnsupportedFormatError(f"{label} {exc}") from None


def check_object_size(size: int, label: str, settings: Settings) -> None:
    """Refuse a photo whose byte size is over ``max_object_bytes`` (it is decoded whole)."""
    if size > settings.max_object_bytes:
        raise ImageTooLargeError(
            f"{label}: {size:,} bytes is over the limit of {settings.max_object_bytes:,} bytes "
            "for a photo (decoded whole); raise PIXELFLEET_MAX_OBJECT_BYTES to accept it"
        )


def check_source(head: bytes, size: int, label: str, settings: Settings) -> str:
    """The checks made on a source object before any of it is decoded; returns its format.

    ``head`` is the object's first :data:`SNIFF_BYTES` bytes and ``size`` its byte
    size. The format is named from ``head`` (:func:`sniff_labelled`: anything but
    GeoTIFF and the photo formats is refused, whatever its name says). Photos are
    decoded whole, so one over ``max_object_bytes`` is refused (:func:`check_object_size`),
    and so is a GIF whose logical screen is over ``max_image_pixels`` (Pillow would
    allocate frames that large while parsing the header). A photo's own pixel count is
    checked once its header is parsed (:func:`pixelfleet.imagery.photos.check_pixels`);
    a raster's limit holds for the level a step reads (a thumbnail reads an overview),
    and a raster is opened with the GTiff driver only.

    Raises :class:`UnsupportedFormatError` or :class:`ImageTooLargeError` with a
    one-line message that starts with ``label``.
    """
    fmt = sniff_labelled(head, label)
    if fmt != "GTiff":
        check_object_size(size, label, settings)
    if fmt == "GIF" and len(head) >= 10:
        from pixelfleet.imagery.photos import check_pixels

        width, height = struct.unpack("<HH", head[6:10])
        check_pixels(label, width, height, settings)
    return fmt


def raster_opener(source: BinaryIO) -> tuple[str, Callable[..., Any], list[Exception]]:
    """A made-up path, a rasterio ``opener`` that serves ``source`` under it only, and
    the list where errors raised by ``source`` while GDAL reads are kept.

    The path is unique per call, so concurrent renders never share an opener
    registration. GDAL also asks the opener for sidecar files (``.aux.xml``,
    ``.ovr``, ``.msk``); refusing them keeps a GeoTIFF from pulling in other objects.
    A read that raises or returns fewer bytes than the object holds is kept in the
    list (and found by :func:`unreadable_raster` through the path) while GDAL gets a
    short read.
    """
    fake_path = f"/pixelfleet-{uuid.uuid4().hex}/source.tif"
    failures = _Failures()
    _FAILURES[fake_path] = failures

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
        expected = max(0, min(size, self._size - self._pos))
        try:
            self._shared.seek(self._pos)
            data = self._shared.read(size)
        except Exception as exc:  # noqa: BLE001 - kept and raised again once GDAL gives up
            # An exception cannot cross GDAL (it would only be printed as "ignored"):
            # GDAL gets a short read and fails; render_thumbnail raises this instead.
            self._failures.append(exc)
            return b""
        if len(data) < expected:
            # The object is this long, so a short answer is a failed read, not an end.
            name = getattr(self._shared, "name", "") or "the object"
            self._failures.append(
                StorageError(
                    f"cannot read {name}: got {len(data):,} of {expected:,} bytes at offset "
                    f"{self._pos:,} of {self._size:,} (an interrupted transfer)"
                )
            )
        self._pos += len(data)
        return data
