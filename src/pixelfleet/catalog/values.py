"""Values that both query parsing and CQL2 filters read: timestamps as epoch seconds,
bboxes, and the datetime interval and bbox of an item."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pixelfleet.errors import BadQueryError

_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def to_epoch(text: str, end: bool = False, what: str = "datetime") -> float:
    """Parse an RFC 3339 timestamp (or a bare ``YYYY-MM-DD`` date) to epoch seconds.

    A bare date is its whole day: its start, or with ``end`` its last instant.
    A timestamp without a zone is taken as UTC.
    """
    if isinstance(text, str) and len(text) == 20 and text[10] == "T" and text[19] == "Z":
        try:  # the common shape, 2013-06-20T00:00:00Z: no cleaning needed
            return datetime.fromisoformat(text).timestamp()
        except ValueError:
            pass
    if not isinstance(text, str) or not text.strip() or len(text) > 64:
        raise BadQueryError(f"{what} {text!r} is not an RFC 3339 timestamp, e.g. 2013-06-20T00:00Z")
    value = text.strip()
    try:
        parsed = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        raise BadQueryError(
            f"{what} {text!r} is not an RFC 3339 timestamp or date; use e.g. "
            "2013-06-20T00:00:00Z or 2013-06-20"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    if end and _DATE_ONLY.match(value):
        parsed = parsed + timedelta(days=1) - timedelta(microseconds=1)
    return parsed.timestamp()


def parse_bbox(value: str | Sequence[Any] | None) -> tuple[float, float, float, float] | None:
    """``minx,miny,maxx,maxy`` in WGS84 degrees (a 6-number 3D bbox keeps its 2D part)."""
    if value is None or value == "" or value == []:
        return None
    parts: Sequence[Any] = value.split(",") if isinstance(value, str) else value
    try:
        numbers = [float(p) for p in parts]
    except (TypeError, ValueError):
        raise BadQueryError(
            f"bbox {value!r} must be 4 numbers: west,south,east,north (e.g. -88,30,-84,35)"
        ) from None
    if len(numbers) == 6:
        numbers = [numbers[0], numbers[1], numbers[3], numbers[4]]
    if len(numbers) != 4 or not all(math.isfinite(n) for n in numbers):
        raise BadQueryError(
            f"bbox {value!r} must be 4 finite numbers: west,south,east,north (e.g. -88,30,-84,35)"
        )
    west, south, east, north = numbers
    if not (-180 <= west <= 180 and -180 <= east <= 180 and -90 <= south <= north <= 90):
        raise BadQueryError(
            f"bbox {value!r} is outside -180..180 / -90..90 or has south > north;"
            " give west,south,east,north in degrees"
        )
    if west > east:
        raise BadQueryError(
            f"bbox {value!r} crosses the antimeridian (west > east); split it into two searches"
        )
    return west, south, east, north


def item_interval(item: dict[str, Any]) -> tuple[float, float, float]:
    """``(sort datetime, start, end)`` of an item in epoch seconds."""
    props = item.get("properties") or {}
    when = props.get("datetime")
    main = to_epoch(str(when), what="item datetime") if when else None
    first, last = props.get("start_datetime"), props.get("end_datetime")
    start = to_epoch(str(first), what="item datetime") if first else main
    end = to_epoch(str(last), what="item datetime") if last else main
    if start is None or end is None:
        raise BadQueryError(f"item {item.get('id')!r} needs a datetime or start/end_datetime")
    return (start if main is None else main), start, end


def item_bbox(item: dict[str, Any]) -> tuple[float, float, float, float] | None:
    """An item's 2D bbox, or None when it has no geometry."""
    bbox = item.get("bbox")
    if not bbox:
        return None
    if len(bbox) == 6:
        return bbox[0], bbox[1], bbox[3], bbox[4]
    return bbox[0], bbox[1], bbox[2], bbox[3]
