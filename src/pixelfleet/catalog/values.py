"""Values that both query parsing and CQL2 filters read: timestamps as epoch seconds,
bboxes, and the datetime interval and bbox of an item.

Two readings of a timestamp: :func:`to_epoch` is lenient (bare dates, no zone), for what
people type into the CLI and the search page; :func:`rfc3339_epoch` is strict RFC 3339,
for the STAC API, whose clients must be told when they send anything else.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pixelfleet.errors import BadQueryError

_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# RFC 3339 section 5.6 date-time: full-date "T" full-time, a zone always, "." for fractions.
_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
)
#: What the API's error messages show as a valid timestamp.
RFC3339_EXAMPLE = "2013-06-20T00:00:00Z"


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


def rfc3339_epoch(text: Any, what: str = "datetime") -> float:
    """Epoch seconds of a strict RFC 3339 date-time (``2013-06-20T10:00:00.5+02:00``).

    A zone is required, fractions use ``.`` and have digits, and a leap second (``:60``)
    counts as the last instant of its minute. Anything else is a :class:`BadQueryError`
    that names the value and shows a valid one.
    """
    match = _RFC3339.match(text) if isinstance(text, str) and len(text) <= 64 else None
    hint = (
        f"{what} {text!r} is not an RFC 3339 date-time; give a date, time and zone such as"
        f" {RFC3339_EXAMPLE} or 2013-06-20T12:30:00.5+02:00"
    )
    if match is None:
        raise BadQueryError(hint)
    year, month, day, hour, minute, second = (int(match[i]) for i in range(1, 7))
    fraction = match[7] or ""
    leap = second == 60
    try:
        parsed = datetime(year, month, day, hour, minute, 59 if leap else second, tzinfo=UTC)
    except ValueError:
        raise BadQueryError(hint) from None
    zone = match[8].upper()
    offset = 0
    if zone != "Z":
        hours, minutes = int(zone[1:3]), int(zone[4:6])
        if hours > 23 or minutes > 59:
            raise BadQueryError(hint)
        offset = (hours * 60 + minutes) * 60 * (1 if zone[0] == "+" else -1)
    seconds = parsed.timestamp() - offset
    if leap:
        return seconds + 0.999999
    return seconds + (float("0" + fraction) if fraction else 0.0)


def parse_bbox(value: str | Sequence[Any] | None) -> tuple[float, float, float, float] | None:
    """``minx,miny,maxx,maxy`` in WGS84 degrees (a 6-number 3D bbox keeps its 2D part).

    West may be greater than east: such a box crosses the antimeridian (see
    :func:`split_antimeridian`).
    """
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
    return west, south, east, north


def split_antimeridian(
    box: tuple[float, float, float, float],
) -> list[tuple[float, float, float, float]]:
    """A box as boxes with west <= east: one, or two when it crosses the antimeridian."""
    west, south, east, north = box
    if west <= east:
        return [box]
    return [(west, south, 180.0, north), (-180.0, south, east, north)]


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
    """An item's 2D bbox, or None when it has no geometry.

    A bbox across the antimeridian (west > east, RFC 7946) is indexed as every
    longitude, so searches find the item on both sides (and some that miss it).
    """
    bbox = item.get("bbox")
    if not bbox:
        return None
    w, s, e, n = (bbox[0], bbox[1], bbox[3], bbox[4]) if len(bbox) == 6 else bbox[:4]
    if w > e:
        w, e = -180.0, 180.0
    return w, s, e, n
