"""STAC items for source objects: built where the source is read, by the worker.

One STAC 1.1 item per source object: footprint and bbox in WGS84 (the image outline
through its geotransform or its GCPs, split at the antimeridian as RFC 7946 asks, see
:func:`~pixelfleet.catalog.facts.dataset_footprint`; photos, rasters without
georeferencing and rasters in a CRS with no way to WGS84, such as another planet's,
get none, photos with EXIF GPS a point), a datetime and where it came from
(``pixelfleet:datetime_source``: ``metadata`` for TIFF/EXIF tags, ``key`` for a
``YYYYMMDD`` date in the file name, else ``mtime``; ``pixelfleet:captured`` repeats the
capture time, or the start of a year, only when there is one, so that "newest first"
can sort by capture time and put objects known only by their file time after them:
``sortby=-pixelfleet:captured,-datetime``), projection and raster band
information, an asset for the source (``data``) and one per output, and provenance
(pixelfleet version, pipeline settings hash; the runner adds the run id).
"""

from __future__ import annotations

import posixpath
import re
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pixelfleet import __version__
from pixelfleet.catalog.facts import RASTER_EXT, SourceFacts, read_facts
from pixelfleet.models import Entry, OutputRecord, combined_etag
from pixelfleet.settings import Settings
from pixelfleet.storage.base import Storage

FILE_EXT = "https://stac-extensions.github.io/file/v2.1.0/schema.json"
#: The search order "newest first": by capture time, then items with only a file time
#: (no ``pixelfleet:captured``, which sorts last) by that time.
NEWEST_FIRST = "-pixelfleet:captured,-datetime"


def capture_property(when: datetime | None, span: dict[str, str], origin: str) -> dict[str, str]:
    """``{"pixelfleet:captured": "YYYY-MM-DDTHH:MM:SSZ"}``: the capture time (or the start
    of a year span) in one fixed form that sorts as text; nothing when the only time is the
    object's own (``origin == "mtime"``): that is when it was stored, not taken."""
    if origin == "mtime":
        return {}
    if when is not None:
        aware = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
        return {"pixelfleet:captured": aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
    if "start_datetime" in span:
        return {"pixelfleet:captured": span["start_datetime"]}
    return {}


_KEY_DATE = re.compile(r"(?<!\d)((?:19|20)\d{2})(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])(?!\d)")
_LANDSAT_ID = re.compile(r"L[COTEM]\d\d{6}(\d{4})(\d{3})[A-Z]{3}\d{2}")


@dataclass
class ItemSettings:
    """What a pipeline says about its items."""

    collection: str
    pipeline_hash: str
    public_url: str | None = None


def output_href(output: Storage, key: str, public_url: str | None) -> str:
    """Where an output can be fetched: the ``public_url`` template's URL, else its own."""
    if public_url:
        quoted = urllib.parse.quote(key, safe="/")
        if "{key}" in public_url:
            return public_url.replace("{key}", quoted)
        return public_url.rstrip("/") + "/" + quoted
    return object_href(output, key)


def object_href(storage: Storage, key: str) -> str:
    """An object's location: an absolute path on local storage, else its URL."""
    path = storage.local_path(key)
    return path if path is not None else storage.describe(key)


def key_year(key: str) -> int | None:
    """A year folder in an object's key (NAIP's ``al/2013/...``), the innermost one."""
    for part in reversed(key.split("/")[:-1]):
        if len(part) == 4 and part.isdigit() and 1900 <= int(part) <= 2099:
            return int(part)
    return None


def key_date(key: str) -> datetime | None:
    """A ``YYYYMMDD`` date in an object's file name (NAIP: ``m_..._20160620.tif``), or the
    year and day of year of a pre-collection Landsat scene id (``LC8PPPRRRYYYYDDD...``)."""
    name = posixpath.basename(key)
    landsat = _LANDSAT_ID.match(name)
    if landsat is not None:
        year, day = int(landsat[1]), int(landsat[2])
        if 1972 <= year <= 2099 and 1 <= day <= 366:
            return datetime(year, 1, 1, tzinfo=UTC) + timedelta(days=day - 1)
    for match in _KEY_DATE.finditer(name):
        try:
            return datetime(int(match[1]), int(match[2]), int(match[3]), tzinfo=UTC)
        except ValueError:
            continue
    return None


def build_item(
    source: Storage,
    output: Storage,
    entry: Entry,
    outputs: Sequence[OutputRecord],
    extra_properties: dict[str, Any],
    options: ItemSettings,
    settings: Settings,
    facts: SourceFacts | None = None,
) -> dict[str, Any]:
    """The STAC item of one source object, as a JSON dict.

    ``facts`` are the source's, when the caller read them already (``pixelfleet index``
    reads them first, checking the object: see :func:`~pixelfleet.catalog.facts.read_facts`).
    """
    import pystac

    if facts is None:
        facts = read_facts(source, entry, settings)
    when: datetime | None
    span: dict[str, str] = {}
    year = key_year(entry.key)
    if facts.when is not None:
        when, origin = facts.when, "metadata"
    elif (from_key := key_date(entry.key)) is not None:
        when, origin = from_key, "key"
    elif year is not None:
        # A year folder says "some time that year": an interval, not an instant.
        when, origin = None, "key"
        span = {
            "start_datetime": f"{year}-01-01T00:00:00Z",
            "end_datetime": f"{year}-12-31T23:59:59Z",
        }
    else:
        when, origin = datetime.fromtimestamp(entry.mtime or 0, UTC), "mtime"
    name = posixpath.basename(entry.key)
    properties: dict[str, Any] = {
        "title": name,
        "description": f"{entry.key} ({source.url})",
        "pixelfleet:key": entry.key,
        "pixelfleet:source": source.url,
        "pixelfleet:etag": entry.etag,
        "pixelfleet:size": entry.size,
        "pixelfleet:datetime_source": origin,
        **capture_property(when, span, origin),
        "pixelfleet:version": __version__,
        "pixelfleet:pipeline": options.pipeline_hash,
        **span,
        **facts.properties,
    }
    for key, value in extra_properties.items():
        properties[key] = value
    # Free-text search in pgstac looks at title, description and keywords, and its parser
    # keeps "flower.jpg" whole: the key's words and the labels' names go in keywords.
    keywords = [k for k in properties.get("keywords") or [] if isinstance(k, str)]
    keywords += re.findall(r"[^\W_]+", entry.key.lower())
    labels = properties.get("labels")
    if isinstance(labels, list):
        names = [str(x["name"]) for x in labels if isinstance(x, dict) and x.get("name")]
        # Parents and aliases make "cat" find a "tabby cat" and "cup" an "espresso".
        related = [
            str(word)
            for x in labels
            if isinstance(x, dict)
            for word in [*(x.get("parents") or []), *(x.get("aliases") or [])]
        ]
        if names:
            keywords += names + related
            properties["description"] += " — labels: " + ", ".join(names)
    properties["keywords"] = sorted(set(keywords))
    item = pystac.Item(
        id=entry.key,
        geometry=facts.geometry,
        bbox=facts.bbox,
        datetime=when,
        properties=properties,
        collection=None,
        stac_extensions=[*facts.extensions, FILE_EXT],
    )
    item.collection_id = options.collection
    item.add_asset(
        "data",
        pystac.Asset(
            href=object_href(source, entry.key),
            media_type=facts.media_type,
            title="Source",
            roles=["data"],
            extra_fields={"file:size": entry.size, **facts.asset_fields},
        ),
    )
    used: set[str] = {"data"}
    for record in outputs:
        base = record.asset or record.step
        name = base
        n = 1
        while name in used:
            n += 1
            name = f"{base}-{n}"
        used.add(name)
        item.add_asset(
            name,
            pystac.Asset(
                href=output_href(output, record.key, options.public_url),
                media_type=record.media_type,
                title=record.title,
                roles=list(record.roles or []) or None,
                extra_fields={
                    "file:size": record.size,
                    "pixelfleet:step": record.step,
                    **record.fields,
                },
            ),
        )
        if "raster:bands" in record.fields and RASTER_EXT not in item.stac_extensions:
            item.stac_extensions.append(RASTER_EXT)
    return item.to_dict(include_self_link=False, transform_hrefs=False)


def build_scene_item(
    source: Storage,
    output: Storage,
    scene: str,
    entries: Sequence[Entry],
    outputs: Sequence[OutputRecord],
    options: ItemSettings,
    settings: Settings,
    facts: SourceFacts | None = None,
) -> dict[str, Any]:
    """The STAC item of a scene made of several band files (a task-scope op's task).

    Footprint, datetime and projection come from the first band file (``facts``, when
    the caller read them already); each band file is a ``data`` asset; the scene's
    outputs (composites, histograms) are its other assets.
    """
    first = entries[0]
    item = build_item(
        source,
        output,
        first,
        outputs,
        {"pixelfleet:scene": scene, "pixelfleet:bands": [e.key for e in entries]},
        options,
        settings,
        facts,
    )
    item["id"] = scene
    props = item["properties"]
    props["title"] = posixpath.basename(scene) or scene
    props["pixelfleet:key"] = scene
    props["pixelfleet:etag"] = combined_etag(entries)
    props["pixelfleet:size"] = sum(e.size for e in entries)
    props["description"] = f"scene {scene}: {len(entries)} band files ({source.url})"
    data = item["assets"].pop("data")
    for entry in entries:
        stem = posixpath.splitext(posixpath.basename(entry.key))[0]
        item["assets"][f"data-{stem}"] = {
            **data,
            "href": object_href(source, entry.key),
            "title": posixpath.basename(entry.key),
            "file:size": entry.size,
        }
    return item
