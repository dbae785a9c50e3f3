"""CQL2-JSON filters on common properties: checking, evaluating in Python, and SQL for SQLite.

(Reading what clients send, CQL2 text or JSON, is :mod:`pixelfleet.catalog.filters`; it
hands this module the JSON form.)

Supported: ``and``, ``or``, ``not``; ``=``, ``<>``, ``<``, ``<=``, ``>``, ``>=``;
``like`` (``%`` and ``_``, case-sensitive), ``in``, ``between``, ``isNull``;
``s_intersects`` (by bounding boxes: the item's bbox against the geometry's, or against
each member's of a GeometryCollection; a bbox whose west is east of its east crosses the
antimeridian), and ``t_intersects`` / ``anyinteracts`` against the item's datetime
interval. Operands are ``{"property": name}`` (``id``, ``collection``, ``datetime``,
``geometry`` or any item property such as ``eo:cloud_cover``), strings, numbers,
booleans, ``{"timestamp": ...}`` (RFC 3339), ``{"date": ...}`` (``YYYY-MM-DD``) and
``{"interval": [a, b]}``.

A filter may nest at most :data:`MAX_DEPTH` deep and hold :data:`MAX_NODES` nodes;
anything else is a :class:`~pixelfleet.errors.BadQueryError` naming the problem.
Comparisons follow SQL: a missing property is unknown, and unknown is not a match.
"""

from __future__ import annotations

import math
import re
from typing import Any

from pixelfleet.catalog.values import (
    RFC3339_EXAMPLE,
    item_bbox,
    item_interval,
    parse_bbox,
    rfc3339_epoch,
    split_antimeridian,
    to_epoch,
)
from pixelfleet.errors import BadQueryError

MAX_DEPTH = 12
MAX_NODES = 200
MAX_LIST = 100
MAX_STRING = 1000

LOGICAL = {"and", "or", "not"}
COMPARISON = {"=", "<>", "<", "<=", ">", ">="}
SPATIAL = {"s_intersects"}
TEMPORAL = {"t_intersects", "anyinteracts"}
OTHER = {"like", "in", "between", "isNull"}
OPERATORS = LOGICAL | COMPARISON | SPATIAL | TEMPORAL | OTHER

_PROPERTY = re.compile(r"^[A-Za-z_][A-Za-z0-9_:.\-]{0,63}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")

#: GeoJSON geometry types with coordinates (a GeometryCollection holds these).
GEOMETRIES = ("Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon")


def check_filter(expr: Any) -> dict[str, Any]:
    """Validate a CQL2-JSON expression; return it unchanged, or raise ``BadQueryError``."""
    if not isinstance(expr, dict):
        raise BadQueryError("filter must be a CQL2-JSON object such as {'op': '=', 'args': [...]}")
    counter = [0]
    _check(expr, 0, counter, boolean=True)
    return expr


def _check(node: Any, depth: int, counter: list[int], boolean: bool = False) -> None:
    counter[0] += 1
    if counter[0] > MAX_NODES:
        raise BadQueryError(f"filter has more than {MAX_NODES} nodes; simplify it")
    if depth > MAX_DEPTH:
        raise BadQueryError(f"filter nests deeper than {MAX_DEPTH} levels; simplify it")
    if boolean:
        if not isinstance(node, dict) or "op" not in node:
            raise BadQueryError(
                f"filter: expected an operation {{'op': ..., 'args': [...]}}, got {_short(node)}"
            )
        op, args = node.get("op"), node.get("args")
        if op not in OPERATORS:
            raise BadQueryError(
                f"filter: operator {_short(op)} is not supported; use one of: "
                + ", ".join(sorted(OPERATORS))
            )
        if not isinstance(args, list):
            raise BadQueryError(f"filter: {op!r} needs 'args' as a list")
        arity = {"not": 1, "isNull": 1, "between": 3}.get(op, 2)
        if op in ("and", "or"):
            if len(args) < 2:
                raise BadQueryError(f"filter: {op!r} needs at least 2 args")
            for arg in args:
                _check(arg, depth + 1, counter, boolean=True)
            return
        if len(args) != arity:
            raise BadQueryError(f"filter: {op!r} needs {arity} args, got {len(args)}")
        if op in COMPARISON or op in ("between", "in"):
            _check_text_fields(op, args)
        if op == "not":
            _check(args[0], depth + 1, counter, boolean=True)
            return
        if op == "in":
            _check(args[0], depth + 1, counter)
            if not isinstance(args[1], list) or len(args[1]) > MAX_LIST:
                raise BadQueryError(f"filter: 'in' needs a list of at most {MAX_LIST} values")
            for value in args[1]:
                _check_literal(value)
            return
        if op == "s_intersects":
            geometry_boxes(args[1], "s_intersects")
            if _prop(args[0]) != "geometry":
                raise BadQueryError("filter: s_intersects compares {'property': 'geometry'}")
            return
        if op in TEMPORAL:
            temporal_interval(args[1])
            if _prop(args[0]) not in ("datetime",):
                raise BadQueryError("filter: t_intersects compares {'property': 'datetime'}")
            return
        if op == "like" and not isinstance(args[1], str):
            raise BadQueryError("filter: 'like' needs a pattern string as its second arg")
        for arg in args:
            _check(arg, depth + 1, counter)
        return
    if isinstance(node, dict):
        if "property" in node:
            _prop(node)
            return
        if "timestamp" in node or "date" in node:
            timestamp(node)
            return
        if "op" in node:
            raise BadQueryError(
                f"filter: {_short(node.get('op'))} in {_short(node)} is not supported as an"
                " operand (no functions or arithmetic); compare a property with a value, e.g."
                " {'op': '=', 'args': [{'property': 'title'}, 'x']}"
            )
        raise BadQueryError(f"filter: operand {_short(node)} is not a property, value or timestamp")
    _check_literal(node)


def _check_literal(value: Any) -> None:
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise BadQueryError("filter: numbers must be finite")
        if isinstance(value, int) and abs(value) > 2**53:
            raise BadQueryError("filter: whole numbers must be within +-2**53")
        return
    if isinstance(value, str):
        if len(value) > MAX_STRING:
            raise BadQueryError(f"filter: strings must be at most {MAX_STRING} characters")
        return
    if isinstance(value, dict) and ("timestamp" in value or "date" in value):
        timestamp(value)
        return
    raise BadQueryError(
        f"filter: value {_short(value)} is not a string, number, boolean or timestamp"
    )


def is_property_name(name: Any) -> bool:
    """Whether ``name`` may name a property (letters, digits, ``_ : . -``; at most 64)."""
    return isinstance(name, str) and _PROPERTY.match(name) is not None


def _check_text_fields(op: str, args: list[Any]) -> None:
    """``id`` and ``collection`` are text: a timestamp compared with one is a mistake
    (every backend would answer it differently), refused naming both."""
    operands = [*args[:1], *(args[1] if op == "in" and isinstance(args[1], list) else args[1:])]
    fields = [a["property"] for a in operands if isinstance(a, dict) and a.get("property") in
              ("id", "collection")]  # fmt: skip
    stamps = [a for a in operands if is_instant_literal(a)]
    if fields and stamps:
        raise BadQueryError(
            f"filter: {fields[0]} is text and cannot be compared with {_short(stamps[0])};"
            f" compare it with a string, e.g. {{'op': '=', 'args': [{{'property': '{fields[0]}'}},"
            " 'x']}, or compare a timestamp with datetime, start_datetime or end_datetime"
        )


def _prop(node: Any) -> str:
    name = node.get("property") if isinstance(node, dict) else None
    if not isinstance(name, str) or not _PROPERTY.match(name):
        raise BadQueryError(
            f"filter: property {_short(name)} is not a valid name (letters, digits, _ : . -)"
        )
    return name.removeprefix("properties.")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def timestamp(node: dict[str, Any]) -> float:
    """Epoch seconds of ``{"timestamp": ...}`` (RFC 3339) or ``{"date": ...}`` (its start)."""
    if "date" in node and "timestamp" not in node:
        return _date(node["date"])
    text = node.get("timestamp")
    if not isinstance(text, str):
        raise BadQueryError(
            f"filter: {_short(node)} needs an RFC 3339 string, e.g."
            f" {{'timestamp': '{RFC3339_EXAMPLE}'}}"
        )
    return rfc3339_epoch(text, what="filter timestamp")


def _date(text: Any, end: bool = False) -> float:
    if not isinstance(text, str) or not _DATE.match(text):
        raise BadQueryError(
            f"filter: date {_short(text)} must be YYYY-MM-DD, e.g. {{'date': '2013-06-20'}}"
        )
    return to_epoch(text, end=end, what="filter date")


def _instant(text: str, end: bool) -> float:
    """An interval end: a date (whole day) or an RFC 3339 timestamp."""
    if _DATE.match(text):
        return _date(text, end=end)
    return rfc3339_epoch(text, what="filter interval")


def temporal_interval(node: Any) -> tuple[float, float]:
    """``(start, end)`` of a timestamp, date or interval operand (open ends are infinite)."""
    if isinstance(node, dict) and "interval" in node:
        parts = node["interval"]
        if not isinstance(parts, list) or len(parts) != 2:
            raise BadQueryError("filter: an interval is a list of two timestamps ('..' for open)")
        ends = []
        for i, part in enumerate(parts):
            if part == "..":
                ends.append(-math.inf if i == 0 else math.inf)
            elif isinstance(part, str):
                ends.append(_instant(part, end=i == 1))
            elif isinstance(part, dict):
                ends.append(timestamp(part))
            else:
                raise BadQueryError("filter: interval ends must be timestamps or '..'")
        return ends[0], ends[1]
    if isinstance(node, dict) and ("timestamp" in node or "date" in node):
        value = timestamp(node)
        if "date" in node and "timestamp" not in node:
            return value, _date(node["date"], end=True)
        return value, value
    raise BadQueryError("filter: t_intersects needs a timestamp, date or interval")


def geometry_boxes(node: Any, what: str, depth: int = 0) -> list[tuple[float, float, float, float]]:
    """Bounding boxes (west <= east) of a geometry, checked: one for a geometry, one per
    member of a GeometryCollection, two for a bbox across the antimeridian."""
    if isinstance(node, dict) and node.get("type") == "GeometryCollection":
        members = node.get("geometries")
        if not isinstance(members, list) or depth > 2:
            raise BadQueryError(
                f"{what}: a GeometryCollection needs 'geometries', a list of geometries"
                " (nested at most 3 deep)"
            )
        boxes = [b for m in members for b in geometry_boxes(m, what, depth + 1)]
        if len(boxes) > MAX_LIST:
            raise BadQueryError(f"{what}: a GeometryCollection may hold {MAX_LIST} geometries")
        return boxes
    return split_antimeridian(geometry_bbox(node, what))


def geometry_bbox(node: Any, what: str) -> tuple[float, float, float, float]:
    """The bbox of a GeoJSON geometry (or ``{"bbox": [...]}``, whose west may be east of
    its east), checked."""
    if isinstance(node, dict) and "bbox" in node and "type" not in node:
        box = parse_bbox(node["bbox"])
        if box is None:
            raise BadQueryError(f"{what}: bbox is empty")
        return box
    if not isinstance(node, dict) or node.get("type") not in GEOMETRIES:
        raise BadQueryError(
            f"{what}: expected a GeoJSON geometry ({', '.join(GEOMETRIES)} or"
            f" GeometryCollection), got {_short(node)}"
        )
    xs: list[float] = []
    ys: list[float] = []
    _collect(node.get("coordinates"), xs, ys, 0)
    if not xs:
        raise BadQueryError(f"{what}: the geometry has no coordinates")
    return parse_bbox([min(xs), min(ys), max(xs), max(ys)]) or (0, 0, 0, 0)


def _collect(coords: Any, xs: list[float], ys: list[float], depth: int) -> None:
    if depth > 4 or not isinstance(coords, list):
        raise BadQueryError("geometry coordinates are not nested lists of numbers")
    if len(xs) > 10_000:
        raise BadQueryError("geometry has more than 10000 points; simplify it")
    if coords and all(isinstance(c, int | float) and not isinstance(c, bool) for c in coords):
        if len(coords) < 2:
            raise BadQueryError("a position needs at least 2 numbers")
        xs.append(float(coords[0]))
        ys.append(float(coords[1]))
        return
    for c in coords:
        _collect(c, xs, ys, depth + 1)


# -- evaluation in Python (the reference, used by the memory catalog) -----------------------


def evaluate(expr: dict[str, Any], item: dict[str, Any]) -> bool:
    """Whether ``item`` matches a checked filter (SQL's rules: unknown is no match)."""
    return _eval(expr, item) is True


#: The item's instants a filter reads as epoch seconds: its sort datetime, and the start
#: and end of its interval (an item with one datetime starts and ends then), as pgstac
#: reads them (from its columns).
INSTANTS = {"datetime": 0, "start_datetime": 1, "end_datetime": 2}


def is_instant_literal(node: Any) -> bool:
    """A ``{"timestamp": ...}`` or ``{"date": ...}`` operand."""
    return isinstance(node, dict) and ("timestamp" in node or "date" in node)


def _value(node: Any, item: dict[str, Any], instants: bool = False) -> Any:
    """An operand's value for ``item``; with ``instants`` (a timestamp is compared), a
    property holding a date-time string is read as epoch seconds, to the millisecond
    (as the SQLite backend reads it), and a string that is not one as unknown."""
    if isinstance(node, dict) and "property" in node:
        name = _prop(node)
        if name == "id":
            return item.get("id")
        if name == "collection":
            return item.get("collection")
        if name in INSTANTS:
            return item_interval(item)[INSTANTS[name]]
        value = (item.get("properties") or {}).get(name)
        if isinstance(value, dict | list):
            return None
        if instants:
            return _property_instant(value)
        return value
    if isinstance(node, dict):
        return timestamp(node)
    return node


def _property_instant(value: Any) -> float | None:
    """A property's date-time string as epoch seconds rounded to the millisecond."""
    if not isinstance(value, str):
        return None
    try:
        return round(to_epoch(value, what="property"), 3)
    except BadQueryError:
        return None


def _values(args: list[Any], item: dict[str, Any]) -> list[Any]:
    """The operands' values; when one is a timestamp, properties are read as instants."""
    instants = _has_instant(args)
    return [_value(a, item, instants) for a in args]


def _compare(op: str, a: Any, b: Any) -> bool | None:
    if a is None or b is None:
        return None
    if isinstance(a, bool) or isinstance(b, bool):
        a, b = (int(a) if isinstance(a, bool) else a), (int(b) if isinstance(b, bool) else b)
    numeric = isinstance(a, int | float) and isinstance(b, int | float)
    if not numeric and type(a) is not type(b):
        return None
    if op == "=":
        return bool(a == b)
    if op == "<>":
        return bool(a != b)
    if op == "<":
        return bool(a < b)
    if op == "<=":
        return bool(a <= b)
    if op == ">":
        return bool(a > b)
    return bool(a >= b)


def like_regex(pattern: str) -> re.Pattern[str]:
    """A CQL2 ``like`` pattern (``%``, ``_``, ``\\`` escapes) as a regular expression."""
    out = []
    escaped = False
    for ch in pattern:
        if escaped:
            out.append(re.escape(ch))
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "%":
            out.append(".*")
        elif ch == "_":
            out.append(".")
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out), re.DOTALL)


def _eval(node: dict[str, Any], item: dict[str, Any]) -> bool | None:
    op, args = node["op"], node["args"]
    if op == "and":
        results = [_eval(a, item) for a in args]
        if any(r is False for r in results):
            return False
        return None if any(r is None for r in results) else True
    if op == "or":
        results = [_eval(a, item) for a in args]
        if any(r is True for r in results):
            return True
        return None if any(r is None for r in results) else False
    if op == "not":
        inner = _eval(args[0], item)
        return None if inner is None else not inner
    if op in COMPARISON:
        return _compare(op, *_values(args, item))
    if op == "like":
        value = _value(args[0], item)
        if not isinstance(value, str):
            return None
        return like_regex(args[1]).fullmatch(value) is not None
    if op == "in":
        value, *values = _values([args[0], *args[1]], item)
        if value is None:
            return None
        results = [_compare("=", value, v) for v in values]
        if any(r is True for r in results):
            return True
        return None if any(r is None for r in results) else False
    if op == "between":
        value, first, last = _values(args, item)
        low, high = _compare(">=", value, first), _compare("<=", value, last)
        if low is False or high is False:
            return False
        return None if low is None or high is None else True
    if op == "isNull":
        return _value(args[0], item) is None
    if op == "s_intersects":
        box = item_bbox(item)
        if box is None:
            return False
        return any(
            box[0] <= e and box[2] >= w and box[1] <= n and box[3] >= s
            for w, s, e, n in geometry_boxes(args[1], "s_intersects")
        )
    if op in TEMPORAL:
        _, start, end = item_interval(item)
        first, last = temporal_interval(args[1])
        return start <= last and end >= first
    raise BadQueryError(f"filter: operator {op!r} is not supported")  # pragma: no cover


# -- SQL for SQLite -------------------------------------------------------------------------


def to_sqlite(expr: dict[str, Any], params: list[Any]) -> str:
    """SQL for a checked filter over ``items`` (columns id, collection, datetime, dt_start,
    dt_end, minx, miny, maxx, maxy, content); values are appended to ``params``."""
    op, args = expr["op"], expr["args"]
    if op in ("and", "or"):
        return "(" + f" {op.upper()} ".join(to_sqlite(a, params) for a in args) + ")"
    if op == "not":
        return f"(NOT {to_sqlite(args[0], params)})"
    if op in COMPARISON:
        return _compare_sql(op, args[0], args[1], params, _has_instant(args))
    if op == "like":
        guard = _type_guard(args[0], args[1], params)
        left = _sql_value(args[0], params)
        params.append(args[1])
        return _guarded(guard, f"({left} LIKE ? ESCAPE '\\')")
    if op == "in":
        instants = _has_instant(args[1])
        parts = [_compare_sql("=", args[0], v, params, instants) for v in args[1]]
        return "(" + " OR ".join(parts) + ")" if parts else "(0)"
    if op == "between":
        instants = _has_instant(args)
        low = _compare_sql(">=", args[0], args[1], params, instants)
        high = _compare_sql("<=", args[0], args[2], params, instants)
        return f"({low} AND {high})"
    if op == "isNull":
        return f"({_sql_value(args[0], params)} IS NULL)"
    if op == "s_intersects":
        parts = []
        for w, s, e, n in geometry_boxes(args[1], "s_intersects"):
            params.extend([e, w, n, s])
            parts.append(
                "(items.minx <= ? AND items.maxx >= ? AND items.miny <= ? AND items.maxy >= ?)"
            )
        return "(" + " OR ".join(parts) + ")" if parts else "(0)"
    if op in TEMPORAL:
        first, last = temporal_interval(args[1])
        params.extend([_finite(last), _finite(first)])
        return "(items.dt_start <= ? AND items.dt_end >= ?)"
    raise BadQueryError(f"filter: operator {op!r} is not supported")  # pragma: no cover


def _has_instant(args: list[Any]) -> bool:
    return any(is_instant_literal(a) for a in args)


def _compare_sql(op: str, a: Any, b: Any, params: list[Any], instants: bool) -> str:
    """``a op b`` in SQL, unknown (NULL) where their types differ, as the reference has it
    (SQLite would otherwise order any text after any number)."""
    guard = None if instants else (_type_guard(a, b, params) or _type_guard(b, a, params))
    left = _sql_value(a, params, instants)
    right = _sql_value(b, params, instants)
    return _guarded(guard, f"({left} {'!=' if op == '<>' else op} {right})")


def _guarded(guard: str | None, sql: str) -> str:
    return sql if guard is None else f"(CASE WHEN {guard} THEN {sql} END)"


#: The JSON types a literal compares with: text with text, numbers and booleans with
#: numbers and booleans (the reference counts a boolean as 0 or 1).
_JSON_TYPES = {"text": "('text')", "number": "('integer', 'real', 'true', 'false')"}
#: What each column holds: the ids are text, the instants epoch seconds.
_COLUMN_KINDS = {"id": "text", "collection": "text"}


def _type_guard(prop: Any, literal: Any, params: list[Any]) -> str | None:
    """SQL that is true where property ``prop`` holds a value of ``literal``'s type (None:
    no condition needed, or ``prop``/``literal`` is not a property and a literal)."""
    if not (isinstance(prop, dict) and "property" in prop) or isinstance(literal, dict):
        return None
    kind = "text" if isinstance(literal, str) else "number"
    name = _prop(prop)
    if name in _COLUMNS:
        return None if _COLUMN_KINDS.get(name, "number") == kind else "0"
    params.append(f'$.properties."{name}"')
    return f"json_type(items.content, ?) IN {_JSON_TYPES[kind]}"


def _finite(value: float) -> float:
    return max(-1e18, min(1e18, value))


#: The columns of ``items`` a filter reads for the item's own fields and instants.
_COLUMNS = {
    "id": "items.id",
    "collection": "items.collection",
    "datetime": "items.datetime",
    "start_datetime": "items.dt_start",
    "end_datetime": "items.dt_end",
}


def _sql_value(node: Any, params: list[Any], instants: bool = False) -> str:
    """SQL for an operand; with ``instants`` (a timestamp is compared), a property holding
    text is read as epoch seconds to the millisecond (``julianday``: NULL when the text
    is no date), as the memory reference reads it."""
    if isinstance(node, dict) and "property" in node:
        name = _prop(node)
        if name in _COLUMNS:
            return _COLUMNS[name]
        # The name was checked against _PROPERTY, so it cannot close the quotes.
        path = f'$.properties."{name}"'
        if instants:
            params.extend([path, path])
            return (
                "(CASE WHEN json_type(items.content, ?) = 'text' THEN"
                " round((julianday(json_extract(items.content, ?)) - 2440587.5) * 86400.0, 3)"
                " END)"
            )
        params.append(path)
        return "json_extract(items.content, ?)"
    if isinstance(node, dict):
        params.append(timestamp(node))
        return "?"
    params.append(int(node) if isinstance(node, bool) else node)
    return "?"
