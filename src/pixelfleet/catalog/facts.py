"""What an item says about its source, read from headers: rasters (rasterio) and photos (EXIF).

Rasters are opened with the GTiff driver only, like thumbnails (a VRT in disguise
is refused); no pixel is read. Photos are parsed with the one Pillow reader their
first bytes name, and only their EXIF block is looked at (never decoding a pixel,
PNGs included). The format, byte-size and pixel-count checks are the ones rendering
makes (:func:`~pixelfleet.imagery.reading.check_source`), so ``pixelfleet index``
refuses what ``pixelfleet run`` refuses, with the same messages.
"""

from __future__ import annotations

import io
import math
import struct
import warnings
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pixelfleet.errors import InputError
from pixelfleet.imagery.reading import SNIFF_BYTES, check_source
from pixelfleet.models import Entry
from pixelfleet.settings import Settings
from pixelfleet.storage.base import Storage

PROJ_EXT = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
RASTER_EXT = "https://stac-extensions.github.io/raster/v1.1.0/schema.json"
_PHOTO_TYPES = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "BMP": "image/bmp",
}


@dataclass
class SourceFacts:
    """What was learned from reading a source's header."""

    media_type: str | None = None
    geometry: dict[str, Any] | None = None
    bbox: list[float] | None = None
    when: datetime | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    asset_fields: dict[str, Any] = field(default_factory=dict)
    extensions: list[str] = field(default_factory=list)


def read_facts(
    storage: Storage, entry: Entry, settings: Settings, *, check: bool = False
) -> SourceFacts:
    """Read a source's header (never its pixels) for its item.

    With ``check``, an object ``pixelfleet run`` would refuse is refused here too, with
    the same :class:`~pixelfleet.errors.InputError` and message, before anything is
    decoded (:func:`~pixelfleet.imagery.reading.check_source`, then the photo's pixel
    count once its header is parsed): that is how ``pixelfleet index``, which runs no
    step, checks its inputs. Without it (items built by ``run``, whose steps checked
    the object already), an object that is not an image, or a photo too large to
    read, gets an item without facts.
    """
    label = storage.describe(entry.key)
    head = storage.read(entry.key, 0, min(entry.size, SNIFF_BYTES)) if entry.size else b""
    try:
        fmt = check_source(head, entry.size, label, settings)
    except InputError:
        if check:
            raise
        return SourceFacts()
    if fmt == "GTiff":
        return raster_facts(storage, entry)
    facts = photo_facts(storage, entry, fmt, settings, check=check)
    facts.media_type = _PHOTO_TYPES.get(fmt)
    return facts


def raster_facts(storage: Storage, entry: Entry) -> SourceFacts:
    """Footprint, bbox, datetime tags, projection and bands of a GeoTIFF."""
    import rasterio
    from rasterio._err import CPLE_BaseError
    from rasterio.errors import NotGeoreferencedWarning, RasterioError

    from pixelfleet.imagery.rasters import GDAL_OPTIONS
    from pixelfleet.imagery.reading import raster_opener, unreadable_raster

    label = storage.describe(entry.key)
    path = storage.local_path(entry.key)
    opened = path or ""
    try:
        with rasterio.Env(**GDAL_OPTIONS), warnings.catch_warnings():
            # A TIFF without georeferencing is expected here (it gets no footprint).
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            if path is not None:
                with rasterio.open(path, driver="GTiff") as src:
                    return _dataset_facts(src)
            with storage.open(entry.key, entry.size) as f:
                opened, opener, failures = raster_opener(f)  # type: ignore[arg-type]
                try:
                    with rasterio.open(opened, driver="GTiff", opener=opener) as src:
                        return _dataset_facts(src)
                except (RasterioError, CPLE_BaseError):
                    # GDAL reports a failed read as a bad file; a storage error is not one.
                    if failures:
                        raise failures[0] from None
                    raise
    except (RasterioError, CPLE_BaseError) as exc:
        raise unreadable_raster(label, opened, exc) from exc


def _dataset_facts(src: Any) -> SourceFacts:
    from rio_stac.stac import get_dataset_geom

    facts = SourceFacts(media_type="image/tiff; application=geotiff")
    tags = src.tags()
    imagery = src.tags(ns="IMAGERY") if "IMAGERY" in (src.tag_namespaces() or []) else {}
    facts.when = parse_tag_datetime(imagery.get("ACQUISITIONDATETIME")) or parse_tag_datetime(
        tags.get("TIFFTAG_DATETIME")
    )
    if src.overviews(1) and src.block_shapes[0][1] < src.width:
        facts.media_type = "image/tiff; application=geotiff; profile=cloud-optimized"
    if src.crs is not None:
        geom = get_dataset_geom(src, densify_pts=8, precision=7)
        facts.geometry = _plain(geom["footprint"])
        facts.bbox = [round(float(v), 7) for v in geom["bbox"]]
        epsg = src.crs.to_epsg()
        facts.extensions.append(PROJ_EXT)
        facts.properties["proj:code"] = f"EPSG:{epsg}" if epsg else None
        if not epsg:
            facts.properties["proj:wkt2"] = src.crs.to_wkt()
        facts.properties["proj:bbox"] = [float(v) for v in src.bounds]
        facts.properties["proj:shape"] = [src.height, src.width]
        facts.properties["proj:transform"] = [float(v) for v in list(src.transform)[:6]]
    bands = []
    resolution = abs(src.transform.a) if src.crs is not None else None
    for i in range(src.count):
        band: dict[str, Any] = {"data_type": src.dtypes[i]}
        nodata = src.nodatavals[i]
        if nodata is not None:
            band["nodata"] = "nan" if math.isnan(nodata) else nodata
        if src.scales[i] != 1.0:
            band["scale"] = src.scales[i]
        if src.offsets[i] != 0.0:
            band["offset"] = src.offsets[i]
        if resolution:
            band["spatial_resolution"] = resolution
        bands.append(band)
    facts.extensions.append(RASTER_EXT)
    facts.asset_fields["raster:bands"] = bands
    facts.properties["pixelfleet:width"] = src.width
    facts.properties["pixelfleet:height"] = src.height
    return facts


def _plain(geometry: dict[str, Any]) -> dict[str, Any]:
    """GeoJSON with lists (rasterio returns tuples), for JSON and equality."""

    def conv(value: Any) -> Any:
        if isinstance(value, list | tuple):
            return [conv(v) for v in value]
        return float(value) if isinstance(value, int | float) else value

    return {"type": geometry["type"], "coordinates": conv(geometry["coordinates"])}


def photo_facts(
    storage: Storage, entry: Entry, fmt: str, settings: Settings, *, check: bool = False
) -> SourceFacts:
    """Datetime (EXIF DateTimeOriginal), size and, with EXIF GPS, a point for a photo.

    Only the header is parsed; with ``check``, a pixel count over ``max_image_pixels``
    raises :class:`~pixelfleet.errors.ImageTooLargeError` as rendering would.
    """
    from pixelfleet.imagery.photos import check_pixels, open_photo

    facts = SourceFacts()
    if entry.size > settings.max_object_bytes:
        return facts
    data = storage.read(entry.key)
    label = storage.describe(entry.key)
    image = open_photo(io.BytesIO(data), fmt, label, settings)
    try:
        width, height = image.size
        if check:
            check_pixels(label, width, height, settings)
        facts.properties["pixelfleet:width"], facts.properties["pixelfleet:height"] = width, height
        try:
            exif = header_exif(image, data)
        except (SyntaxError, ValueError, OSError, TypeError, KeyError, struct.error, zlib.error):
            return facts
        facts.when = exif_datetime(exif)
        point = gps_point(exif)
        if point is not None:
            facts.geometry = {"type": "Point", "coordinates": list(point)}
            facts.bbox = [point[0], point[1], point[0], point[1]]
    finally:
        image.close()
    return facts


def header_exif(image: Any, data: bytes) -> Any:
    """A photo's EXIF block (a Pillow ``Exif``), without decoding a pixel.

    Pillow's PNG reader decodes the whole image to reach the chunks after the pixel
    data (where ImageMagick, for one, puts EXIF): here those chunks are found by
    walking the file instead, and handed to Pillow's generic EXIF reader.
    """
    from PIL import Image

    if image.format != "PNG" or "exif" in image.info:
        return image.getexif()
    for name, value in png_trailing_exif(data).items():
        image.info.setdefault(name, value)
    # The generic method reads ``info`` only; the PNG one would call load() first.
    return Image.Image.getexif(image)


#: Where a PNG keeps EXIF: the ``eXIf`` chunk, or ImageMagick's hex text chunk.
_PNG_EXIF_TEXT = b"Raw profile type exif"


def png_trailing_exif(data: bytes) -> dict[str, Any]:
    """The EXIF a PNG stores after its pixel data, as Pillow's ``info`` would hold it.

    Chunks are skipped by their length, so no pixel is decompressed; only a text
    chunk holding EXIF is, up to Pillow's own limit for text chunks.
    """
    from PIL import PngImagePlugin

    found: dict[str, Any] = {}
    pos, after_pixels = 8, False
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IEND":
            break
        if kind == b"IDAT":
            after_pixels = True
        elif not after_pixels:
            continue  # Pillow read these with the header
        elif kind == b"eXIf":
            found["exif"] = b"Exif\x00\x00" + body
        elif kind in (b"tEXt", b"zTXt") and body.startswith(_PNG_EXIF_TEXT + b"\x00"):
            text = body[len(_PNG_EXIF_TEXT) + 1 :]
            if kind == b"zTXt":  # a compression-method byte, then zlib data
                inflate = zlib.decompressobj()
                text = inflate.decompress(text[1:], PngImagePlugin.MAX_TEXT_CHUNK)
            found[_PNG_EXIF_TEXT.decode()] = text.decode("latin-1", "replace")
    return found


def gps_point(exif: Any) -> tuple[float, float] | None:
    """``(lon, lat)`` from an EXIF GPS block, or None."""
    try:
        gps = exif.get_ifd(0x8825)
    except (KeyError, ValueError, TypeError, OSError):
        return None
    try:
        lat = _degrees(gps[2]) * (-1 if str(gps.get(1, "N")).upper().startswith("S") else 1)
        lon = _degrees(gps[4]) * (-1 if str(gps.get(3, "E")).upper().startswith("W") else 1)
    except (KeyError, TypeError, ValueError, ZeroDivisionError, IndexError):
        return None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180) or (lat == 0 and lon == 0):
        return None
    return round(lon, 7), round(lat, 7)


def _degrees(value: Any) -> float:
    d, m, s = (float(v) for v in value)
    return d + m / 60 + s / 3600


def parse_tag_datetime(text: Any) -> datetime | None:
    """A TIFF/EXIF ``YYYY:MM:DD HH:MM:SS`` or ISO timestamp, or None."""
    if not isinstance(text, str):
        return None
    value = text.strip().rstrip("\x00")
    for fmt in ("%Y:%m:%d %H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y:%m:%d"):
        try:
            return datetime.strptime(value, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def exif_datetime(exif: Any) -> datetime | None:
    """DateTimeOriginal (else DateTime) of a Pillow ``Exif``."""
    try:
        sub = exif.get_ifd(0x8769)
    except (KeyError, ValueError, TypeError, OSError, io.UnsupportedOperation):
        sub = {}
    return parse_tag_datetime(sub.get(0x9003)) or parse_tag_datetime(exif.get(0x0132))
