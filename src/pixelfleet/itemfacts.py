"""What an item says about its source, read from headers: rasters (rasterio) and photos (EXIF).

Rasters are opened with the GTiff driver only, like thumbnails (a VRT in disguise
is refused); no pixel is read. Photos are parsed with the one Pillow reader their
first bytes name, and only their EXIF block is looked at.
"""

from __future__ import annotations

import io
import math
import warnings
from typing import Any

from pixelfleet.errors import CorruptInputError
from pixelfleet.items import PROJ_EXT, RASTER_EXT, SourceFacts, exif_datetime, parse_tag_datetime
from pixelfleet.models import Entry, one_line
from pixelfleet.settings import Settings
from pixelfleet.storage.base import Storage


def raster_facts(storage: Storage, entry: Entry) -> SourceFacts:
    """Footprint, bbox, datetime tags, projection and bands of a GeoTIFF."""
    import rasterio
    from rasterio._err import CPLE_BaseError
    from rasterio.errors import NotGeoreferencedWarning, RasterioError

    from pixelfleet.imaging import _opener_for
    from pixelfleet.rasters import GDAL_OPTIONS

    label = storage.describe(entry.key)
    path = storage.local_path(entry.key)
    try:
        with rasterio.Env(**GDAL_OPTIONS), warnings.catch_warnings():
            # A TIFF without georeferencing is expected here (it gets no footprint).
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            if path is not None:
                with rasterio.open(path, driver="GTiff") as src:
                    return _dataset_facts(src)
            with storage.open(entry.key, entry.size) as f:
                fake, opener, _ = _opener_for(f)  # type: ignore[arg-type]
                with rasterio.open(fake, driver="GTiff", opener=opener) as src:
                    return _dataset_facts(src)
    except (RasterioError, CPLE_BaseError) as exc:
        raise CorruptInputError(
            f"{label}: cannot read its GeoTIFF header for the catalog ({one_line(str(exc))})"
        ) from exc


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


def photo_facts(storage: Storage, entry: Entry, fmt: str, settings: Settings) -> SourceFacts:
    """Datetime (EXIF DateTimeOriginal), size and, with EXIF GPS, a point for a photo."""
    from pixelfleet.photos import open_photo

    facts = SourceFacts()
    if entry.size > settings.max_object_bytes:
        return facts
    data = storage.read(entry.key)
    image = open_photo(io.BytesIO(data), fmt, storage.describe(entry.key), settings)
    try:
        facts.properties["pixelfleet:width"], facts.properties["pixelfleet:height"] = image.size
        try:
            exif = image.getexif()
        except (SyntaxError, ValueError, OSError, TypeError, KeyError):
            return facts
        facts.when = exif_datetime(exif)
        point = gps_point(exif)
        if point is not None:
            facts.geometry = {"type": "Point", "coordinates": list(point)}
            facts.bbox = [point[0], point[1], point[0], point[1]]
    finally:
        image.close()
    return facts


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
