"""What the items of each collection hold, for queryables, sorting and summaries.

A :class:`Profile` is read from a collection's newest :data:`SAMPLE` items (pages of the
ordinary search, so every catalog backend answers it): the properties with their JSON
types, the labels, the bands and the ground sample distances seen. :class:`Profiles`
keeps one per collection for :data:`TTL` seconds and forgets them all when the API writes;
items a pipeline indexes show up within the TTL.

``/queryables`` lists the item fields every collection has plus the properties seen, with
``additionalProperties: true``: a property seen in no sampled item may still be filtered
on. Sorting is stricter, so that a mistyped name is an error rather than no order: a
property is sortable when a profile saw it or, failing that, when one item has it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pixelfleet.catalog import Catalog, SearchQuery
from pixelfleet.catalog.query import ITEM_FIELDS, MAX_LIMIT, UNDATED
from pixelfleet.catalog.values import RFC3339_EXAMPLE, rfc3339_epoch
from pixelfleet.errors import BadQueryError

#: Items read per collection for its profile (newest first).
SAMPLE = 2000
#: Seconds a profile is kept.
TTL = 60.0
#: Most label names and band descriptions a summary lists.
MAX_SUMMARY = 100

#: What a band summary tells (not what differs from file to file: nodata, resolution).
BAND_KEYS = ("name", "description", "eo:common_name", "common_name", "data_type", "unit")

#: What every item can be filtered and sorted by, whatever its properties.
ITEM_QUERYABLES: dict[str, dict[str, Any]] = {
    "id": {"title": "Item ID", "type": "string"},
    "collection": {"title": "Collection ID", "type": "string"},
    "datetime": {
        "title": "Date and time",
        "description": "The item's datetime, or its start_datetime when it covers an interval;"
        f" compare it with a timestamp such as {RFC3339_EXAMPLE}",
        "type": "string",
        "format": "date-time",
    },
    "start_datetime": {
        "title": "Start",
        "description": "The start of the item's time range; its datetime when it has none",
        "type": "string",
        "format": "date-time",
    },
    "end_datetime": {
        "title": "End",
        "description": "The end of the item's time range; its datetime when it has none",
        "type": "string",
        "format": "date-time",
    },
    "geometry": {
        "title": "Footprint",
        "description": "Compared by bounding boxes (s_intersects)",
        "$ref": "https://geojson.org/schema/Geometry.json",
    },
}


@dataclass
class Profile:
    """What a sample of one collection's items holds."""

    #: Property name -> JSON types seen (``string``, ``integer``, ``number``, ``boolean``,
    #: and ``date-time`` for strings that are all RFC 3339 timestamps).
    properties: dict[str, set[str]] = field(default_factory=dict)
    labels: set[str] = field(default_factory=set)
    bands: list[dict[str, Any]] = field(default_factory=list)
    gsd: set[float] = field(default_factory=set)
    items: int = 0

    def add(self, item: dict[str, Any]) -> None:
        """Take in one item."""
        self.items += 1
        props = item.get("properties") or {}
        for name, value in props.items():
            kind = json_type(value)
            if kind is not None:
                self.properties.setdefault(name, set()).add(kind)
        for label in props.get("labels") or []:
            if isinstance(label, dict) and isinstance(label.get("name"), str):
                self.labels.add(label["name"])
        gsd = props.get("gsd")
        if isinstance(gsd, int | float) and not isinstance(gsd, bool) and gsd > 0:
            self.gsd.add(float(gsd))
        for asset in (item.get("assets") or {}).values():
            if not isinstance(asset, dict) or "data" not in (asset.get("roles") or []):
                continue
            for band in asset.get("bands") or asset.get("raster:bands") or []:
                if isinstance(band, dict):
                    described = {k: v for k, v in band.items() if k in BAND_KEYS}
                    fresh = described and described not in self.bands
                    if fresh and len(self.bands) < MAX_SUMMARY:
                        self.bands.append(described)

    def merge(self, other: Profile) -> None:
        """Take in another profile (for the catalog-wide queryables)."""
        for name, kinds in other.properties.items():
            self.properties.setdefault(name, set()).update(kinds)
        self.labels |= other.labels
        self.gsd |= other.gsd
        self.items += other.items

    def queryables(self) -> dict[str, dict[str, Any]]:
        """JSON schemas of the item fields and the properties seen."""
        found = dict(ITEM_QUERYABLES)
        for name in sorted(self.properties):
            if name in found or name.startswith("properties."):
                continue
            found[name] = {"title": name, **schema_of(self.properties[name])}
        return found

    def summaries(self, collection: dict[str, Any]) -> dict[str, Any]:
        """STAC summaries: the datetime range (from the collection's extent, over every
        item), and the labels, bands and gsd seen."""
        out: dict[str, Any] = {}
        interval = ((collection.get("extent") or {}).get("temporal") or {}).get("interval")
        if interval and interval[0] and interval[0][0]:
            out["datetime"] = {"minimum": interval[0][0], "maximum": interval[0][1]}
        if self.labels:
            out["labels"] = sorted(self.labels)[:MAX_SUMMARY]
        if self.bands:
            out["bands"] = self.bands
        if self.gsd:
            out["gsd"] = {"minimum": min(self.gsd), "maximum": max(self.gsd)}
        return out


def json_type(value: Any) -> str | None:
    """The JSON type of a property value a filter can compare (None for lists, objects,
    nulls)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        try:
            rfc3339_epoch(value)
        except BadQueryError:
            return "string"
        return "date-time"
    return None


def schema_of(kinds: set[str]) -> dict[str, Any]:
    """A JSON schema for the types seen of one property."""
    if kinds == {"date-time"}:
        return {"type": "string", "format": "date-time"}
    names = {"date-time": "string"}
    types = {names.get(k, k) for k in kinds}
    if types == {"integer", "number"}:
        types = {"number"}
    ordered = sorted(types)
    return {"type": ordered[0] if len(ordered) == 1 else ordered}


class Profiles:
    """Profiles of a catalog's collections, kept for :data:`TTL` seconds."""

    def __init__(self, ttl: float = TTL):
        self.ttl = ttl
        self._lock = threading.Lock()
        self._kept: dict[str, tuple[float, Profile]] = {}
        #: (property, collections searched) found sortable by a probe.
        self._sortable: set[tuple[str, tuple[str, ...]]] = set()

    def clear(self) -> None:
        """Forget everything (after a write)."""
        with self._lock:
            self._kept.clear()
            self._sortable.clear()

    def of(self, catalog: Catalog, collection_id: str) -> Profile:
        """The profile of one collection."""
        now = time.monotonic()
        with self._lock:
            kept = self._kept.get(collection_id)
            if kept is not None and now - kept[0] < self.ttl:
                return kept[1]
            profile = sample(catalog, collection_id)
            self._kept[collection_id] = (now, profile)
            return profile

    def merged(self, catalog: Catalog, collection_ids: Iterable[str]) -> Profile:
        """One profile over several collections."""
        out = Profile()
        for cid in collection_ids:
            out.merge(self.of(catalog, cid))
        return out

    def check_sortable(self, catalog: Catalog, query: SearchQuery) -> None:
        """Refuse sort keys no item has (a mistyped name would otherwise sort nothing)."""
        wanted = [name for name, _ in query.sortby if name not in (*ITEM_FIELDS, UNDATED)]
        if not wanted:
            return
        collections = query.collections or [c["id"] for c in catalog.collections()]
        known = self.merged(catalog, collections).properties
        for name in wanted:
            key = (name, tuple(query.collections or ()))
            if name in known or key in self._sortable:
                continue
            has = {"op": "not", "args": [{"op": "isNull", "args": [{"property": name}]}]}
            probe = SearchQuery(filter=has, collections=query.collections, limit=1)
            if catalog.search(probe).items:
                with self._lock:
                    self._sortable.add(key)
                continue
            choices = ", ".join([*ITEM_FIELDS, *sorted(known)][:40])
            raise BadQueryError(
                f"cannot sort by {name!r}: no item has it (or only lists and objects); sort"
                f" by one of: {choices} (the queryables list them all)"
            )


def sample(catalog: Catalog, collection_id: str) -> Profile:
    """Read a collection's newest :data:`SAMPLE` items into a profile."""
    profile = Profile()
    token = None
    while profile.items < SAMPLE:
        limit = min(MAX_LIMIT, SAMPLE - profile.items)
        page = catalog.search(SearchQuery(collections=[collection_id], limit=limit, token=token))
        for item in page.items:
            profile.add(item)
        token = page.next_token
        if token is None or not page.items:
            break
    return profile
