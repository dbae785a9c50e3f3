"""Reading filters (CQL2 text and JSON through the cql2 package), strict RFC 3339, limits
and the sort order of values, below the server."""

from __future__ import annotations

from typing import Any

import pytest

from pixelfleet.catalog import parse_query
from pixelfleet.catalog.filters import NOTHING, parse_filter
from pixelfleet.catalog.query import MAX_LIMIT, compare, sort_value
from pixelfleet.catalog.values import rfc3339_epoch, split_antimeridian
from pixelfleet.errors import BadQueryError

CLOUD = {"property": "cloud"}
GEOM = {"property": "geometry"}
WHEN = {"property": "datetime"}
EQ = {"op": "=", "args": [CLOUD, 1]}
OPEN = {"interval": ["2013-01-01", ".."]}


def point(x: float, y: float) -> dict[str, Any]:
    return {"type": "Point", "coordinates": [x, y]}


@pytest.mark.parametrize(
    ("given", "lang", "want"),
    [
        ("cloud BETWEEN 2 AND 4", None, {"op": "between", "args": [CLOUD, 2.0, 4.0]}),
        ({"op": "between", "args": [CLOUD, [2, 4]]}, None,
         {"op": "between", "args": [CLOUD, 2, 4]}),
        ('{"op": "between", "args": [{"property": "cloud"}, {"lower": 2, "upper": 4}]}', None,
         {"op": "between", "args": [CLOUD, 2, 4]}),
        ("cloud NOT BETWEEN 2 AND 4", "cql2-text",
         {"op": "not", "args": [{"op": "between", "args": [CLOUD, 2.0, 4.0]}]}),
        ("title IS NOT NULL", None,
         {"op": "not", "args": [{"op": "isNull", "args": [{"property": "title"}]}]}),
        ({"op": "anyinteracts", "args": [OPEN, WHEN]}, None,
         {"op": "t_intersects", "args": [WHEN, OPEN]}),
        ("T_INTERSECTS(datetime, DATE('2013-01-05'))", None,
         {"op": "t_intersects", "args": [{"property": "datetime"},
                                         {"interval": ["2013-01-05", "2013-01-05"]}]}),
        ("datetime < DATE('2013-01-05')", None,
         {"op": "<", "args": [{"property": "datetime"}, {"timestamp": "2013-01-05T00:00:00Z"}]}),
        ("S_INTERSECTS(geometry, BBOX(170, 0, -170, 1))", None,
         {"op": "or", "args": [
             {"op": "s_intersects", "args": [GEOM, {"bbox": [170.0, 0.0, 180.0, 1.0]}]},
             {"op": "s_intersects", "args": [GEOM, {"bbox": [-180.0, 0.0, -170.0, 1.0]}]}]}),
        ("S_INTERSECTS(GEOMETRYCOLLECTION(POINT(1 2), POINT(3 4)), geometry)", None,
         {"op": "or", "args": [
             {"op": "s_intersects", "args": [GEOM, point(1.0, 2.0)]},
             {"op": "s_intersects", "args": [GEOM, point(3.0, 4.0)]}]}),
        ({"op": "s_intersects", "args": [GEOM, {"type": "GeometryCollection", "geometries": []}]},
         None, NOTHING),
        ({"op": "AND", "args": [{"op": "isnull", "args": [CLOUD]}, EQ]},
         None, {"op": "and", "args": [{"op": "isNull", "args": [CLOUD]}, EQ]}),
        ("true", None, None),
        ("false", None, NOTHING),
        ("", None, None),
        ({}, "cql2-json", None),
    ],
)  # fmt: skip
def test_filters_are_read_into_one_json_form(given: Any, lang: str | None, want: Any) -> None:
    assert parse_filter(given, lang) == want


def test_the_cql2_package_reads_what_our_checks_let_through() -> None:
    # A JSON filter the package cannot read is refused with its words, naming the filter.
    with pytest.raises(BadQueryError, match="not valid CQL2"):
        parse_filter("cloud = = 1")


@pytest.mark.parametrize(
    "text",
    ["a = " + "(" * 5000 + "1" + ")" * 5000, "a = " + "-" * 5000 + "1", "NOT " * 5000 + "a = 1",
     "a IN (" + "(" * 3000 + "1" + ")" * 3000 + ")", "x" * 30_000],
)  # fmt: skip
def test_text_that_would_crash_the_parser_is_refused_first(text: str) -> None:
    # (The cql2 package recurses without a limit: each of these crashes the process.)
    with pytest.raises(BadQueryError, match="deeper|signs|NOTs|longer"):
        parse_filter(text)


def test_deep_json_is_refused_before_the_package_reads_it() -> None:
    deep: dict[str, Any] = {"op": "=", "args": [CLOUD, 1]}
    for _ in range(3000):
        deep = {"op": "not", "args": [deep]}
    with pytest.raises(BadQueryError, match="deeper"):
        parse_filter(deep)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1970-01-01T00:00:00Z", 0.0),
        ("1970-01-01t01:00:00+01:00", 0.0),
        ("1969-12-31T16:00:00-08:00", 0.0),
        ("1970-01-01T00:00:00.5Z", 0.5),
        ("1970-01-01T00:00:00.123456789Z", 0.123456789),
        ("1969-12-31T23:59:60Z", -0.000001),
    ],
)
def test_rfc3339_timestamps(text: str, seconds: float) -> None:
    assert rfc3339_epoch(text) == pytest.approx(seconds, abs=1e-6)


@pytest.mark.parametrize(
    "text",
    ["1970-01-01", "1970-01-01T00:00:00", "1970-01-01T00:00:00+0100", "1970-01-01T00:00:00.Z",
     "1970-01-01T00:00:00,5Z", "1970-02-30T00:00:00Z", "1970-01-01T00:00:61Z",
     "1970-01-01T00:00:00+24:00", "1970-01-01 00:00:00Z", 19700101],
)  # fmt: skip
def test_not_rfc3339(text: Any) -> None:
    with pytest.raises(BadQueryError, match="RFC 3339.*2013-06-20T00:00:00Z"):
        rfc3339_epoch(text)


def test_limits_above_the_maximum_are_cut_and_bboxes_may_cross_the_antimeridian() -> None:
    assert parse_query(limit=10**9).limit == MAX_LIMIT
    assert parse_query(limit="5000").limit == MAX_LIMIT
    assert parse_query(limit=10.0).limit == 10
    query = parse_query(bbox="170,0,-170,1")
    assert query.bbox is None and query.filter is not None
    assert split_antimeridian((170, 0, -170, 1)) == [(170, 0, 180.0, 1), (-180.0, 0, -170, 1)]
    assert parse_query(bbox="-170,0,170,1").bbox == (-170, 0, 170, 1)


def test_values_sort_numbers_then_strings_and_missing_last() -> None:
    keys = [("x", "asc")]
    assert compare([1], [2], keys) == -1 and compare([2], ["a"], keys) == -1
    assert compare([None], [1], keys) == 1 and compare([None], [None], keys) == 0
    assert compare([None], [1], [("x", "desc")]) == 1  # last either way
    assert compare(["b"], [5], [("x", "desc")]) == -1
    item = {"id": "a", "properties": {"ok": True, "n": float("nan"), "l": [1], "d": {}}}
    assert [sort_value(item, k) for k in ("ok", "n", "l", "d", "none", "id")] == [
        1, None, None, None, None, "a"
    ]  # fmt: skip
