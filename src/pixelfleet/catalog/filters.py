"""Filters as clients send them: CQL2 text or CQL2 JSON, read into the one JSON form that
:mod:`pixelfleet.catalog.cql2` checks, evaluates and turns into SQL.

Text is parsed by the ``cql2`` package (the OGC grammar, written in Rust); JSON is read by
the same package too, so both languages mean what the standard says. Before either reaches
it, text is refused when it nests deeper than :data:`MAX_PARENS` parentheses or chains
signs, and JSON when it nests deeper than the checker allows: the package's parser
recurses without a limit and a few thousand levels crash the process. Its JSON-schema
``validate()`` is not called: it takes about 50 ms a filter, and the checks in
:mod:`~pixelfleet.catalog.cql2` say more precisely what is wrong.

What clients send beyond CQL2 1.0 is normalized first: ``between`` with the range as a
list (``[x, [low, high]]``, which the STAC API validator sends) or as
``{"lower": ..., "upper": ...}``; ``anyinteracts``; spatial and temporal operands in
either order; an ``s_intersects`` GeometryCollection (one test per member, so every
backend matches items intersecting any member); a bbox across the antimeridian (two
boxes); the literals ``true`` and ``false``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pixelfleet.catalog.cql2 import MAX_DEPTH, MAX_NODES, check_filter, geometry_bbox
from pixelfleet.catalog.values import split_antimeridian
from pixelfleet.errors import BadQueryError

#: Longest filter text accepted (characters).
MAX_TEXT = 20_000
#: Deepest parenthesis nesting a text filter may have (a polygon takes two).
MAX_PARENS = 32
#: Longest run of signs (``- - -1``) a text filter may have.
MAX_SIGNS = 4

LANGUAGES = ("cql2-text", "cql2-json")
#: A filter that matches nothing (``false``): no item lacks an id.
NOTHING: dict[str, Any] = {"op": "isNull", "args": [{"property": "id"}]}

TEXT_EXAMPLE = "eo:cloud_cover < 10 AND datetime > TIMESTAMP('2021-01-01T00:00:00Z')"
JSON_EXAMPLE = '{"op": "<", "args": [{"property": "eo:cloud_cover"}, 10]}'

_CANONICAL = {
    name.lower(): name
    for name in (
        "and", "or", "not", "=", "<>", "<", "<=", ">", ">=", "like", "in", "between",
        "isNull", "s_intersects", "t_intersects",
    )
}  # fmt: skip
_CANONICAL["anyinteracts"] = "t_intersects"
_QUOTED = re.compile(r"'(?:[^']|'')*'|\"[^\"]*\"")
_NOT = re.compile(r"\bnot\b", re.IGNORECASE)
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_SIGNS = re.compile(rf"[-+](?:\s*[-+]){{{MAX_SIGNS},}}")


def parse_filter(value: Any, lang: str | None = None) -> dict[str, Any] | None:
    """A checked CQL2-JSON filter from CQL2 text or JSON (a string or a parsed object).

    ``lang`` is ``cql2-text``, ``cql2-json`` or None (a string starting with ``{`` is
    JSON, any other string text). Returns None for no filter (``None``, ``""``, ``{}``,
    ``true``); raises :class:`BadQueryError` naming the bad expression.
    """
    if lang not in (None, "", *LANGUAGES):
        raise BadQueryError(
            f"filter-lang {lang!r} is not supported; use cql2-text (e.g. {TEXT_EXAMPLE})"
            f" or cql2-json (e.g. {JSON_EXAMPLE})"
        )
    if value is None or value == "" or value == {}:
        return None
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            raise BadQueryError(f"filter is longer than {MAX_TEXT} characters; simplify it")
        text = value.strip()
        if lang == "cql2-json" or (not lang and text.startswith("{")):
            try:
                value = json.loads(text)
            except (ValueError, RecursionError):
                raise BadQueryError(
                    f"filter {_short(text)} is not valid CQL2 JSON (JSON is expected with"
                    f" filter-lang cql2-json), e.g. {JSON_EXAMPLE}"
                ) from None
        else:
            value = from_text(text)
    if isinstance(value, bool):
        return None if value else dict(NOTHING)
    if not isinstance(value, dict):
        raise BadQueryError(
            f"filter {_short(value)} must be CQL2 JSON (an object such as {JSON_EXAMPLE})"
            f" or CQL2 text (such as {TEXT_EXAMPLE})"
        )
    expr = check_filter(normalize(value))
    _read_as_cql2(expr)
    return expr


def from_text(text: str) -> Any:
    """The CQL2 JSON of a CQL2 text expression (a dict, or a bool for ``true``/``false``)."""
    import cql2

    _guard_text(text)
    try:
        parsed = cql2.parse_text(text)
    except Exception as exc:  # noqa: BLE001 - the package raises plain Exception on syntax
        raise BadQueryError(
            f"filter {_short(text)} is not valid CQL2 text: {_parse_error(exc)};"
            f" e.g. {TEXT_EXAMPLE}"
        ) from None
    return parsed.to_json()


def _guard_text(text: str) -> None:
    """Refuse text the parser would recurse on too deeply (it would crash the process)."""
    bare = _QUOTED.sub("''", text)
    depth = deepest = 0
    for ch in bare:
        if ch in "([":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in ")]":
            depth -= 1
    if deepest > MAX_PARENS or len(_NOT.findall(bare)) > MAX_NODES:
        raise BadQueryError(
            f"filter nests deeper than {MAX_PARENS} parentheses or has more than {MAX_NODES}"
            " NOTs; simplify it"
        )
    if _SIGNS.search(bare):
        raise BadQueryError(f"filter {_short(text)} chains more than {MAX_SIGNS} signs")


def _parse_error(exc: Exception) -> str:
    """The parser's report in one line: where, and what it expected."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    where = next((line[3:].strip() for line in lines if line.startswith("-->")), "")
    expected = next((line[1:].strip() for line in lines if line.startswith("=")), "")
    if where and expected:
        line, _, column = where.partition(":")
        return f"at line {line}, column {column}: {expected}"
    return lines[0] if lines else "it does not parse"


def _read_as_cql2(expr: dict[str, Any]) -> None:
    """Have the ``cql2`` package read the (checked, so shallow) JSON too: what it cannot
    read is not CQL2, whatever our checks allowed."""
    import cql2

    try:
        cql2.Expr(expr)
    except Exception as exc:  # noqa: BLE001 - the package raises plain Exception
        raise BadQueryError(
            f"filter {_short(expr)} is not valid CQL2 JSON ({exc}); e.g. {JSON_EXAMPLE}"
        ) from None


def normalize(node: Any, depth: int = 0) -> Any:
    """A CQL2-JSON expression with the forms clients send beyond CQL2 1.0 rewritten (see
    the module's description); other nodes are returned as they are, for the checks."""
    if depth > MAX_DEPTH:
        raise BadQueryError(f"filter nests deeper than {MAX_DEPTH} levels; simplify it")
    if not isinstance(node, dict) or "op" not in node or not isinstance(node.get("args"), list):
        return node
    op = node["op"]
    op = _CANONICAL.get(op.lower(), op) if isinstance(op, str) else op
    args = [normalize(a, depth + 1) for a in node["args"]]
    if op == "between" and len(args) == 2:
        bounds = args[1]
        if isinstance(bounds, list) and len(bounds) == 2:
            args = [args[0], *bounds]
        elif isinstance(bounds, dict) and set(bounds) == {"lower", "upper"}:
            args = [args[0], bounds["lower"], bounds["upper"]]
    if op in ("s_intersects", "t_intersects") and len(args) == 2:
        if _is_property(args[1]) and not _is_property(args[0]):
            args = [args[1], args[0]]
        if op == "s_intersects":
            return _spatial(args)
        if _is_date(args[1]):  # a date is its whole day
            args = [args[0], {"interval": [args[1]["date"], args[1]["date"]]}]
    elif op != "t_intersects":
        # Elsewhere a date is its first instant; as a timestamp every backend reads it.
        args = [_date_start(a) for a in args]
    if op in ("and", "or") and len(args) > 2 * MAX_NODES:
        raise BadQueryError(f"filter has more than {MAX_NODES} nodes; simplify it")
    return {**node, "op": op, "args": args}


def _spatial(args: list[Any]) -> dict[str, Any]:
    """``s_intersects``: a GeometryCollection becomes one test per member, a bbox across
    the antimeridian two (each backend then reads plain geometries and boxes)."""
    prop, geometry = args
    members = _members(geometry, 0)
    if members is None:
        return {"op": "s_intersects", "args": [prop, geometry]}
    tests = [{"op": "s_intersects", "args": [prop, m]} for m in members]
    if not tests:
        return dict(NOTHING)
    return tests[0] if len(tests) == 1 else {"op": "or", "args": tests}


def _members(geometry: Any, depth: int) -> list[Any] | None:
    """The plain parts of a GeometryCollection or an antimeridian bbox (None for others)."""
    if not isinstance(geometry, dict):
        return None
    if geometry.get("type") == "GeometryCollection":
        members = geometry.get("geometries")
        if not isinstance(members, list) or depth > 2:
            return None  # the checks name the problem
        out: list[Any] = []
        for member in members:
            parts = _members(member, depth + 1)
            out += [member] if parts is None else parts
        return out
    if "bbox" in geometry and "type" not in geometry:
        box = geometry_bbox(geometry, "s_intersects")
        halves = split_antimeridian(box)
        return None if len(halves) == 1 else [{"bbox": list(b)} for b in halves]
    return None


def _is_property(node: Any) -> bool:
    return isinstance(node, dict) and "property" in node


def _is_date(node: Any) -> bool:
    return isinstance(node, dict) and set(node) == {"date"} and isinstance(node["date"], str)


def _date_start(node: Any) -> Any:
    if _is_date(node) and _DATE.match(node["date"]):
        return {"timestamp": f"{node['date']}T00:00:00Z"}
    if isinstance(node, list):
        return [_date_start(v) for v in node]
    return node


def spatial_filter(geometry: Any) -> dict[str, Any]:
    """The filter "intersects this geometry" (for ``intersects`` and antimeridian bboxes)."""
    expr = normalize({"op": "s_intersects", "args": [{"property": "geometry"}, geometry]})
    check_filter(expr)
    return dict(expr)


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = repr(text) if isinstance(value, str) else text
    return text if len(text) <= 120 else text[:117] + "..."
