"""Search queries: parsing what users type (CLI, GET, POST) into one validated shape.

Every parser raises :class:`~pixelfleet.errors.BadQueryError` (a ``ValueError``)
whose message names the bad value and what would be valid; the server answers
those with 400.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pixelfleet.catalog.cql2 import geometry_bbox, is_property_name
from pixelfleet.catalog.filters import parse_filter, spatial_filter
from pixelfleet.catalog.values import item_interval, parse_bbox, to_epoch
from pixelfleet.errors import BadQueryError

#: Largest page a search returns; a larger ``limit`` is cut to it (as the STAC API says).
MAX_LIMIT = 1000
DEFAULT_LIMIT = 10
#: Sort keys that are the item's own fields rather than properties (``datetime`` is the
#: item's sort datetime: ``datetime``, or ``start_datetime`` for an interval).
ITEM_FIELDS = ("datetime", "id", "collection")
#: The sort key ``sortby=datetime`` puts first: 1 for an item whose ``datetime`` is null
#: (a year range), 0 otherwise. So sorting by datetime sorts by the property, as the sort
#: extension says, with the items that have none after the others in either direction
#: (among themselves by their start). Not a property name: no user can type it.
UNDATED = "@undated"
#: Properties nothing can be sorted by.
UNSORTABLE = ("geometry", "bbox")
#: Limits on what one query may ask for.
MAX_IDS = 1000
MAX_COLLECTIONS = 100
MAX_TEXT = 500
MAX_TERMS = 32

_WORD = re.compile(r"\w+", re.UNICODE)
# Words that are query syntax in some engines (pgstac); they are never searched for.
_OPERATOR_WORDS = {"and", "or", "not"}
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class SearchQuery:
    """A validated search. Build it with :func:`parse_query` from user input.

    ``datetime`` is an interval of epoch seconds (either end open as None);
    ``q`` is a list of free-text terms, any of which may match (each term's words
    must all match); ``filter`` is a checked CQL2-JSON expression; ``sortby`` is a
    list of ``(field, "asc"|"desc")``, where a field is ``datetime`` (the item's sort
    datetime), :data:`UNDATED`, ``id``, ``collection`` or a property's name; items without
    the property come last.
    """

    bbox: tuple[float, float, float, float] | None = None
    datetime: tuple[float | None, float | None] | None = None
    ids: list[str] | None = None
    collections: list[str] | None = None
    q: list[str] | None = None
    filter: dict[str, Any] | None = None
    sortby: list[tuple[str, str]] = field(default_factory=lambda: [("datetime", "desc")])
    limit: int = DEFAULT_LIMIT
    token: str | None = None

    def fingerprint(self) -> str:
        """What a page token is bound to: everything but the token and the limit."""
        body = {
            "b": self.bbox,
            "d": self.datetime,
            "i": self.ids,
            "c": self.collections,
            "q": self.q,
            "f": self.filter,
            "s": self.sortby,
        }
        text = json.dumps(body, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def sort_keys(self) -> list[tuple[str, str]]:
        """``sortby`` with ``collection`` and ``id`` appended, so the order is total."""
        keys = list(self.sortby)
        names = {k for k, _ in keys}
        for tie in ("collection", "id"):
            if tie not in names:
                keys.append((tie, "asc"))
        return keys


# -- sort order -----------------------------------------------------------------------------


def sort_value(item: dict[str, Any], name: str) -> Any:
    """What an item sorts by under one key: a number, a string, or None (no value)."""
    if name == "datetime":
        return item_interval(item)[0]
    if name == UNDATED:
        return 0 if (item.get("properties") or {}).get("datetime") else 1
    if name in ("id", "collection"):
        return str(item.get(name, ""))
    value = (item.get("properties") or {}).get(name)
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return value if math.isfinite(value) else None
    return value if isinstance(value, str) else None


def sort_values(item: dict[str, Any], keys: Sequence[tuple[str, str]]) -> list[Any]:
    """The values an item sorts by, for ``keys`` from :meth:`SearchQuery.sort_keys`."""
    return [sort_value(item, name) for name, _ in keys]


def compare(a: Sequence[Any], b: Sequence[Any], keys: Sequence[tuple[str, str]]) -> int:
    """-1, 0 or 1: the order of two sort-value lists under ``keys``.

    As SQL orders them: numbers before strings; no value (None) last whichever the
    direction.
    """
    for x, y, (_, direction) in zip(a, b, keys, strict=True):
        if x is None or y is None:
            if x is None and y is None:
                continue
            return 1 if x is None else -1
        x_text, y_text = isinstance(x, str), isinstance(y, str)
        if x_text != y_text:
            result = 1 if x_text else -1
        elif x == y:
            continue
        else:
            result = -1 if x < y else 1
        return -result if direction == "desc" else result
    return 0


# -- tokens ---------------------------------------------------------------------------------


def encode_token(query: SearchQuery, last: Sequence[Any]) -> str:
    """A page token: the sort values of the last item shown, bound to the query."""
    raw = json.dumps({"h": query.fingerprint(), "k": list(last)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_token(query: SearchQuery) -> list[Any] | None:
    """The sort values a query's token carries (None without a token)."""
    token = query.token
    if not token:
        return None
    keys: list[Any] | None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        keys = data["k"]
        ok = data["h"] == query.fingerprint() and isinstance(keys, list)
    except (ValueError, KeyError, TypeError):
        ok, keys = False, None
    if not ok or keys is None or len(keys) != len(query.sort_keys()):
        raise BadQueryError(
            "token is not a page token of this search; follow the 'next' link of the same query"
        )
    return keys


# -- datetimes ------------------------------------------------------------------------------


def iso(epoch: float) -> str:
    """Epoch seconds as an RFC 3339 UTC timestamp."""
    stamp = datetime.fromtimestamp(epoch, UTC)
    text = stamp.isoformat(timespec="microseconds" if stamp.microsecond else "seconds")
    return text.replace("+00:00", "Z")


def parse_datetime(text: str | None) -> tuple[float | None, float | None] | None:
    """``a``, ``a/b``, ``../b``, ``a/..`` (RFC 3339, or bare dates for whole days)."""
    if text is None or text == "":
        return None
    if not isinstance(text, str):
        raise BadQueryError(f"datetime {text!r} must be a string such as 2013-01-01/2013-12-31")
    parts = text.split("/")
    if len(parts) == 1:
        return to_epoch(parts[0]), to_epoch(parts[0], end=True)
    if len(parts) != 2:
        raise BadQueryError(
            f"datetime {text!r} must be one timestamp or an interval start/end (.. for open)"
        )
    start = None if parts[0] in ("", "..") else to_epoch(parts[0])
    end = None if parts[1] in ("", "..") else to_epoch(parts[1], end=True)
    if start is None and end is None:
        raise BadQueryError(f"datetime {text!r}: at least one end of the interval must be given")
    if start is not None and end is not None and start > end:
        raise BadQueryError(f"datetime {text!r}: the start is after the end")
    return start, end


# -- other parameters -----------------------------------------------------------------------


def parse_limit(value: Any) -> int:
    """A page size: a whole number of at least 1; above :data:`MAX_LIMIT` it is cut to it."""
    if value is None or value == "":
        return DEFAULT_LIMIT
    try:
        if isinstance(value, bool):
            raise ValueError
        number = int(value.strip()) if isinstance(value, str) else int(value)
        if isinstance(value, float) and value != number:
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise BadQueryError(
            f"limit {value!r} must be a whole number of at least 1, e.g. limit=10"
            f" (pages hold at most {MAX_LIMIT} items)"
        ) from None
    if number < 1:
        raise BadQueryError(
            f"limit {value!r} must be at least 1, e.g. limit=10 (pages hold at most"
            f" {MAX_LIMIT} items)"
        )
    return min(number, MAX_LIMIT)


def parse_strings(value: str | Sequence[Any] | None, what: str, most: int) -> list[str] | None:
    """A comma-separated string or a list of strings (ids, collections)."""
    if value is None or value == "" or value == []:
        return None
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
        raise BadQueryError(f"{what} {value!r} must be a list of strings")
    items = [i.strip() for i in items if i.strip()]
    if len(items) > most:
        raise BadQueryError(f"{what}: {len(items)} given, at most {most} allowed")
    if any(len(i) > 1024 for i in items):
        raise BadQueryError(f"{what}: each must be at most 1024 characters")
    return items or None


def parse_q(value: str | Sequence[Any] | None) -> list[str] | None:
    """Free text: a string (commas separate alternatives) or a list of alternatives.

    Only words count (letters and digits); quotes, operators and punctuation are
    plain text, never query syntax.
    """
    if value is None or value == "" or value == []:
        return None
    terms = value.split(",") if isinstance(value, str) else value
    if not isinstance(terms, list | tuple) or not all(isinstance(t, str) for t in terms):
        raise BadQueryError(f"q {value!r} must be a string or a list of strings")
    if sum(len(t) for t in terms) > MAX_TEXT:
        raise BadQueryError(f"q is longer than {MAX_TEXT} characters; search for fewer words")
    if len(terms) > MAX_TERMS:
        raise BadQueryError(f"q has {len(terms)} alternatives; at most {MAX_TERMS} allowed")
    cleaned = [" ".join(w for w in text_words(t) if w not in _OPERATOR_WORDS) for t in terms]
    return [t for t in cleaned if t] or [""]


def text_words(text: str) -> list[str]:
    """The words of a text, lower-cased, as the full-text index splits them."""
    return [w.lower() for w in _WORD.findall(text)][:MAX_TERMS]


def parse_sortby(value: str | Sequence[Any] | None) -> list[tuple[str, str]]:
    """``-datetime,+id`` (GET) or ``[{"field": "datetime", "direction": "desc"}]`` (POST).

    ``datetime`` becomes two keys: :data:`UNDATED` ascending, then ``datetime``, so items
    whose ``properties.datetime`` is null come last whichever the direction.
    """
    if value is None or value == "" or value == []:
        return [("datetime", "desc")]
    out: list[tuple[str, str]] = []
    if isinstance(value, str):
        for part in value.split(","):
            part = part.strip()
            direction = "desc" if part.startswith("-") else "asc"
            out.append((part.lstrip("+- "), direction))
    elif isinstance(value, list):
        for rule in value:
            if not isinstance(rule, dict) or not isinstance(rule.get("field"), str):
                raise BadQueryError(
                    f"sortby {value!r} must be a list of"
                    " {'field': ..., 'direction': 'asc'|'desc'}"
                )
            direction = str(rule.get("direction", "asc")).lower()
            if direction not in ("asc", "desc"):
                raise BadQueryError(f"sortby direction {direction!r} must be 'asc' or 'desc'")
            out.append((rule["field"], direction))
    else:
        raise BadQueryError(f"sortby {value!r} must be a string like -datetime or a list")
    fields: list[tuple[str, str]] = []
    for given, direction in out:
        name = given.removeprefix("properties.")
        if not is_property_name(name) or name in UNSORTABLE:
            raise BadQueryError(
                f"cannot sort by {given!r}; sort by datetime, id, collection or a property"
                " name (letters, digits, _ : . -), e.g. sortby=-datetime,properties.title"
            )
        if name in (f for f, _ in fields):
            raise BadQueryError(f"sortby names {name!r} twice")
        if name == "datetime":
            fields.append((UNDATED, "asc"))
        fields.append((name, direction))
    return fields


def parse_query(
    *,
    bbox: Any = None,
    datetime: Any = None,
    ids: Any = None,
    collections: Any = None,
    q: Any = None,
    filter: Any = None,  # noqa: A002 - the STAC API's own name
    filter_lang: str | None = None,
    sortby: Any = None,
    limit: Any = None,
    token: Any = None,
    intersects: Any = None,
) -> SearchQuery:
    """Validate search parameters as a user gave them; raise ``BadQueryError`` if any is bad.

    ``datetime`` is read leniently here (bare dates are whole days, a timestamp without a
    zone is UTC), for people at the CLI and the search page; the STAC API checks it is
    strict RFC 3339 before calling this. ``filter`` is CQL2 text or JSON (``filter_lang``
    says which, else a string starting with ``{`` is JSON). ``bbox`` may cross the
    antimeridian (west > east) and ``intersects`` may be a GeometryCollection: both become
    a spatial filter, which every backend answers.
    """
    expr = parse_filter(filter, filter_lang)
    box = parse_bbox(bbox)
    if intersects is not None:
        if box is not None:
            raise BadQueryError("give bbox or intersects, not both")
        if isinstance(intersects, dict) and intersects.get("type") == "GeometryCollection":
            expr = _both(expr, spatial_filter(intersects))
        else:
            box = geometry_bbox(intersects, "intersects")
    if box is not None and box[0] > box[2]:
        expr = _both(expr, spatial_filter({"bbox": list(box)}))
        box = None
    if token is not None and (not isinstance(token, str) or len(token) > 4096):
        raise BadQueryError("token must be a string from a 'next' link")
    collections_list = parse_strings(collections, "collections", MAX_COLLECTIONS)
    return SearchQuery(
        bbox=box,
        datetime=parse_datetime(datetime),
        ids=parse_strings(ids, "ids", MAX_IDS),
        collections=collections_list,
        q=parse_q(q),
        filter=expr,
        sortby=parse_sortby(sortby),
        limit=parse_limit(limit),
        token=token.removeprefix("next:") if token else None,
    )


def _both(first: dict[str, Any] | None, second: dict[str, Any]) -> dict[str, Any]:
    return second if first is None else {"op": "and", "args": [first, second]}


# -- what is indexed of an item -------------------------------------------------------------


def item_text(item: dict[str, Any]) -> dict[str, str]:
    """The text full-text search looks at: title, keys (id, source key), labels, description."""
    props = item.get("properties") or {}
    labels = props.get("labels") or []
    names = [str(label.get("name", "")) for label in labels if isinstance(label, dict)]
    keywords = [str(k) for k in props.get("keywords") or [] if isinstance(k, str)]
    return {
        "title": str(props.get("title") or ""),
        "keys": " ".join(
            str(v)
            for v in (item.get("id"), item.get("collection"), props.get("pixelfleet:key"))
            if v
        ),
        "labels": " ".join(names + keywords),
        "description": str(props.get("description") or ""),
    }
