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

from pixelfleet.errors import InputError, MissingExtraError
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
    facts = SourceFacts(media_type="image/tiff; application=geotiff")
    tags = src.tags()
    imagery = src.tags(ns="IMAGERY") if "IMAGERY" in (src.tag_namespaces() or []) else {}
    facts.when = parse_tag_datetime(imagery.get("ACQUISITIONDATETIME")) or parse_tag_datetime(
        tags.get("TIFFTAG_DATETIME")
    )
    if src.overviews(1) and src.block_shapes[0][1] < src.width:
        facts.media_type = "image/tiff; application=geotiff; profile=cloud-optimized"
    facts.geometry, facts.bbox = dataset_footprint(src)
    if src.crs is not None:
        epsg = src.crs.to_epsg()
        facts.extensions.append(PROJ_EXT)
        facts.properties["proj:code"] = f"EPSG:{epsg}" if epsg else None
        if not epsg:
            # Another planet's CRS, or one without a code: described in full.
            facts.properties["proj:wkt2"] = src.crs.to_wkt(version="WKT2_2019")
        facts.properties["proj:bbox"] = [float(v) for v in src.bounds]
        facts.properties["proj:shape"] = [src.height, src.width]
        facts.properties["proj:transform"] = [float(v) for v in list(src.transform)[:6]]
    bands = []
    resolution = abs(src.transform.a) if src.crs is not None else None
    for i in range(src.count):
        band: dict[str, Any] = {"data_type": _STAC_DATA_TYPES.get(src.dtypes[i], src.dtypes[i])}
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


#: rasterio's names of complex types, as the STAC raster extension spells them.
_STAC_DATA_TYPES = {"complex_int16": "cint16", "complex64": "cfloat32", "complex128": "cfloat64"}

#: Points per image edge when the footprint is projected to WGS84 (edges bend).
_EDGE_POINTS = 8
#: Decimal places kept in WGS84 coordinates (about 1 cm).
_PRECISION = 7


def dataset_footprint(src: Any) -> tuple[dict[str, Any] | None, list[float] | None]:
    """A raster's footprint in WGS84 (GeoJSON) and its bbox, following RFC 7946.

    The image's outline (``_EDGE_POINTS`` points along each edge) is taken to longitude
    and latitude through its geotransform, or through its ground control points when
    it has only those. A footprint that crosses the antimeridian is split into a
    MultiPolygon at +-180 (the ``antimeridian`` package) and its bbox has west > east;
    one around a pole is cut there too. A CRS with no way to WGS84 (another planet, a
    local engineering CRS) or points PROJ cannot place give ``(None, None)``: the item
    has no footprint, and its ``proj:`` fields still describe the grid.
    """
    import numpy as np
    from rasterio._err import CPLE_BaseError
    from rasterio.errors import CRSError, RasterioError
    from rasterio.warp import transform

    rows, cols = _outline(src.height, src.width)
    if src.crs is not None:
        crs = src.crs
        a, b, c, d, e, f = list(src.transform)[:6]
        col, row = np.asarray(cols, float), np.asarray(rows, float)
        xs, ys = a * col + b * row + c, d * col + e * row + f
    else:
        gcps, crs = src.gcps
        if len(gcps) < 3 or crs is None:
            return None, None
        from rasterio.transform import GCPTransformer

        try:
            with GCPTransformer(gcps) as gcp_transform:
                xs, ys = gcp_transform.xy(rows, cols, offset="ul")
        except (RasterioError, CPLE_BaseError, ValueError):
            return None, None
    try:
        lons, lats = transform(crs, "EPSG:4326", list(map(float, xs)), list(map(float, ys)))
    except (CRSError, RasterioError, CPLE_BaseError):
        return None, None  # no coordinate operation to WGS84: another planet, a local CRS
    ring = np.column_stack([np.asarray(lons, float), np.asarray(lats, float)])
    if not np.isfinite(ring).all():
        return None, None
    # GCP warps bend edges even in degrees: only a geotransform keeps them straight.
    return _wgs84_footprint(ring, src.crs is not None and bool(crs.is_geographic))


def _outline(height: int, width: int) -> tuple[list[float], list[float]]:
    """Pixel rows and columns around an image, counter-clockwise on a north-up map."""
    steps = [i / _EDGE_POINTS for i in range(_EDGE_POINTS)]
    rows: list[float] = []
    cols: list[float] = []
    for r0, c0, r1, c1 in ((0, 0, height, 0), (height, 0, height, width),
                           (height, width, 0, width), (0, width, 0, 0)):  # fmt: skip
        rows += [r0 + (r1 - r0) * t for t in steps]
        cols += [c0 + (c1 - c0) * t for t in steps]
    rows.append(rows[0])
    cols.append(cols[0])
    return rows, cols


def _wgs84_footprint(
    ring: Any, geographic: bool
) -> tuple[dict[str, Any] | None, list[float] | None]:
    """GeoJSON and bbox of a closed ring of (lon, lat) points, split at the antimeridian."""
    import numpy as np

    lons, lats = ring[:, 0], np.clip(ring[:, 1], -90.0, 90.0)
    # Unwrapped: every step the short way round, so an edge across the antimeridian
    # goes from 179.9 to 180.1 instead of to -179.9.
    steps = (np.diff(lons) + 180.0) % 360.0 - 180.0
    unwrapped = np.concatenate([[lons[0]], lons[0] + np.cumsum(steps)])
    polar = abs(unwrapped[-1] - unwrapped[0]) > 180.0  # the outline goes round a pole
    west, east = float(unwrapped.min()), float(unwrapped.max())
    south, north = float(lats.min()), float(lats.max())
    if not polar and east - west >= 360.0:
        west, east = -180.0, 180.0  # every longitude: no need to split
        unwrapped = np.clip(unwrapped, west, east)
    points = np.column_stack([unwrapped, lats])
    if not polar and _signed_area(points) < 0:
        points, lons = points[::-1], lons[::-1]  # RFC 7946: exterior rings counter-clockwise
    if geographic:
        # Edges are straight in degrees: the corners say it all.
        points, lons = points[::_EDGE_POINTS], lons[::_EDGE_POINTS]
    if not polar and west >= -180.0 and east <= 180.0:
        geometry = {"type": "Polygon", "coordinates": [_rounded(points)]}
        return geometry, [round(v, _PRECISION) for v in (west, south, east, north)]
    # Longitudes in [-180, 180] as GeoJSON has them (+-180 itself left alone).
    wrapped = np.where(np.abs(lons) <= 180.0, lons, (lons + 180.0) % 360.0 - 180.0)
    return _split_at_antimeridian(np.column_stack([wrapped, points[:, 1]]))


def _split_at_antimeridian(points: Any) -> tuple[dict[str, Any] | None, list[float] | None]:
    """A ring of (lon, lat) in [-180, 180] that jumps across the antimeridian (or goes
    round a pole) as a GeoJSON (Multi)Polygon cut at +-180, and its bbox (west > east);
    ``(None, None)`` for an outline too twisted to cut."""
    try:
        import antimeridian
        from shapely.geometry import Polygon, mapping
    except ImportError as exc:
        raise MissingExtraError(
            "footprints across the antimeridian need the 'antimeridian' package: "
            "pip install 'pixelfleet[catalog]'"
        ) from exc
    try:
        # great_circle=False: GeoJSON edges are straight lines in degrees (RFC 7946, 3.1.1).
        fixed = antimeridian.fix_polygon(
            Polygon(points.tolist()), fix_winding=True, great_circle=False
        )
    except Exception:  # noqa: BLE001 - an outline it cannot cut (twisted georeferencing)
        return None, None
    geometry = _plain(mapping(fixed))
    geometry["coordinates"] = _round_nested(geometry["coordinates"])
    bbox = [round(float(v), _PRECISION) for v in antimeridian.bbox(fixed)]
    return geometry, bbox


def _signed_area(points: Any) -> float:
    """Twice the signed area of a ring (positive: counter-clockwise)."""
    x, y = points[:, 0], points[:, 1]
    return float((x[:-1] * y[1:] - x[1:] * y[:-1]).sum())


def _rounded(points: Any) -> list[list[float]]:
    return [[round(float(x), _PRECISION), round(float(y), _PRECISION)] for x, y in points]


def _round_nested(value: Any) -> Any:
    if isinstance(value, list) and value and isinstance(value[0], float):
        return [round(v, _PRECISION) for v in value]
    return [_round_nested(v) for v in value]


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
