"""Catalog contract: every backend (memory reference, SQLite, pgstac) answers alike."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from catalog_helpers import make_item
from pixelfleet.catalog import Catalog, new_collection, open_catalog, parse_query
from pixelfleet.catalog.memory import MemoryCatalog
from pixelfleet.catalog.sqlite_search import fts_query
from pixelfleet.errors import BadQueryError, ConfigError, ItemNotFoundError

N = 60


@pytest.fixture(params=["memory", "sqlite", pytest.param("pgstac", marks=pytest.mark.postgres)])
def catalog(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Catalog]:
    if request.param == "memory":
        cat: Catalog = MemoryCatalog()
    elif request.param == "sqlite":
        cat = open_catalog(f"sqlite:///{tmp_path / 'cat.db'}")
    else:
        cat = open_catalog(request.getfixturevalue("pg_url"))
    with cat:
        yield cat


@pytest.fixture
def filled(catalog: Catalog) -> tuple[Catalog, str, MemoryCatalog]:
    """The catalog with N items in a fresh collection, and the reference holding the same."""
    name = f"c{secrets.token_hex(3)}"
    reference = MemoryCatalog()
    items = [make_item(n, name) for n in range(N)]
    for cat in (catalog, reference):
        cat.save_collection(new_collection(name, "Test"))
        cat.upsert(items)
    return catalog, name, reference


def ids(catalog: Catalog, **query: Any) -> list[str]:
    return [i["id"] for i in catalog.search(parse_query(**query)).items]


def all_ids(catalog: Catalog, **query: Any) -> list[str]:
    """Every page, following tokens."""
    out: list[str] = []
    token = None
    for _ in range(100):
        page = catalog.search(parse_query(**query, token=token))
        out += [i["id"] for i in page.items]
        token = page.next_token
        if token is None:
            return out
    raise AssertionError("paging never ended")


QUERIES: list[dict[str, Any]] = [
    {},
    {"q": "glacier"},
    {"q": "glaciers"},  # stemmed
    {"q": "scene 7"},
    {"q": ["dog", "snow"]},
    {"q": "dog,snow"},
    {"bbox": "-95.5,21.5,-92.5,24.5"},
    {"datetime": "2013-02-01/2013-02-10"},
    {"datetime": "../2013-01-05"},
    {"datetime": "2013-03-01T00:00:00Z/.."},
    {"datetime": "2013-01-03"},
    {"ids": ["i0003", "i0010", "nope"]},
    {"filter": {"op": "=", "args": [{"property": "cloud"}, 3]}},
    {"filter": {"op": "<", "args": [{"property": "cloud"}, 2]}},
    {"filter": {"op": "in", "args": [{"property": "kind"}, ["photo"]]}},
    {"filter": {"op": "like", "args": [{"property": "title"}, "scene 1%"]}},
    {"filter": {"op": "between", "args": [{"property": "cloud"}, 2, 4]}},
    {"filter": {"op": "isNull", "args": [{"property": "missing"}]}},
    {"filter": {"op": "not", "args": [{"op": "=", "args": [{"property": "kind"}, "raster"]}]}},
    {
        "filter": {
            "op": "and",
            "args": [
                {"op": ">=", "args": [{"property": "cloud"}, 5]},
                {"op": "=", "args": [{"property": "kind"}, "raster"]},
            ],
        }
    },
    {
        "filter": {
            "op": "or",
            "args": [
                {"op": "=", "args": [{"property": "id"}, "i0001"]},
                {"op": "=", "args": [{"property": "id"}, "i0002"]},
            ],
        }
    },
    {
        "filter": {
            "op": "s_intersects",
            "args": [{"property": "geometry"}, {"bbox": [-95.5, 21.5, -92.5, 24.5]}],
        }
    },
    {
        "filter": {
            "op": "t_intersects",
            "args": [{"property": "datetime"}, {"interval": ["2013-01-10", "2013-01-12"]}],
        }
    },
    {
        "filter": {
            "op": ">",
            "args": [{"property": "datetime"}, {"timestamp": "2013-02-20T00:00:00Z"}],
        }
    },
    {"q": "water", "bbox": "-100,20,-80,40", "datetime": "2013-01-01/2013-06-30"},
]


@pytest.mark.parametrize("query", QUERIES, ids=[str(q)[:60] for q in QUERIES])
def test_search_matches_the_reference(
    filled: tuple[Catalog, str, MemoryCatalog], query: dict[str, Any]
) -> None:
    catalog, name, reference = filled
    got = all_ids(catalog, **query, collections=[name], limit=7)
    want = all_ids(reference, **query, collections=[name], limit=7)
    assert got == want
    assert len(set(got)) == len(got)


@pytest.mark.parametrize("sortby", ["-datetime", "datetime", "id", "-id", "-datetime,id"])
def test_sorting_and_paging_are_total_and_stable(
    filled: tuple[Catalog, str, MemoryCatalog], sortby: str
) -> None:
    catalog, name, reference = filled
    got = all_ids(catalog, collections=[name], sortby=sortby, limit=9)
    assert got == all_ids(reference, collections=[name], sortby=sortby, limit=9)
    assert sorted(got) == [f"i{n:04d}" for n in range(N)]


def test_rerun_updates_in_place(filled: tuple[Catalog, str, MemoryCatalog]) -> None:
    catalog, name, _ = filled
    changed = make_item(5, name, title="scene five renamed glacier")
    catalog.upsert([changed, changed])
    assert len(all_ids(catalog, collections=[name], limit=50)) == N
    item = catalog.get_item(name, "i0005")
    assert item["properties"]["title"] == "scene five renamed glacier"
    assert "i0005" in ids(catalog, collections=[name], q="renamed")
    assert "i0005" not in ids(catalog, collections=[name], q="desert", limit=50)


def test_collections_have_extents(filled: tuple[Catalog, str, MemoryCatalog]) -> None:
    catalog, name, _ = filled
    found = catalog.get_collection(name)
    assert found["extent"]["spatial"]["bbox"] == [[-100.0, 20.0, -60.0, 40.0]]
    interval = found["extent"]["temporal"]["interval"][0]
    assert interval[0].startswith("2013-01-01") and interval[1].startswith("2013-03-")


def test_counts_and_missing_things(filled: tuple[Catalog, str, MemoryCatalog]) -> None:
    catalog, name, _ = filled
    assert catalog.search(parse_query(collections=[name], q="glacier")).matched == N // 8 + (
        1 if N % 8 > 0 else 0
    )
    with pytest.raises(ItemNotFoundError):
        catalog.get_item(name, "nope")
    with pytest.raises(ItemNotFoundError):
        catalog.get_collection("nope-nope")
    with pytest.raises(ItemNotFoundError, match="create it first"):
        catalog.upsert([make_item(1, "not-there")])


@pytest.mark.parametrize(
    "text",
    ['"', "*", "OR", "NEAR(a b)", "a AND", "title:x", "-", "^glacier", "'; DROP TABLE items; --",
     "\x00", "🙂", "glacier)", "(", "a|b", "a & b", "<->", "_", "x" * 400],
)  # fmt: skip
def test_odd_text_is_only_text(filled: tuple[Catalog, str, MemoryCatalog], text: str) -> None:
    catalog, name, reference = filled
    assert ids(catalog, collections=[name], q=text) == ids(reference, collections=[name], q=text)


def test_fts_query_quotes_every_word() -> None:
    assert fts_query(["glacier water", "dog"]) == '("glacier" "water") OR ("dog")'
    assert fts_query([""]) is None


def test_tokens_belong_to_their_query(filled: tuple[Catalog, str, MemoryCatalog]) -> None:
    catalog, name, reference = filled
    page = reference.search(parse_query(collections=[name], limit=2))
    assert page.next_token
    with pytest.raises(BadQueryError, match="token"):
        reference.search(parse_query(collections=[name], q="dog", token=page.next_token))
    with pytest.raises(BadQueryError, match="token"):
        reference.search(parse_query(token="garbage"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"bbox": "1,2,3"}, "4 finite numbers"),
        ({"bbox": "a,b,c,d"}, "4 numbers"),
        ({"bbox": "10,0,5,1"}, "antimeridian"),
        ({"bbox": "0,80,1,95"}, "outside"),
        ({"bbox": "nan,0,1,1"}, "finite"),
        ({"limit": 0}, "from 1 to"),
        ({"limit": 100000}, "from 1 to"),
        ({"limit": "ten"}, "whole number"),
        ({"datetime": "yesterday"}, "RFC 3339"),
        ({"datetime": "2014-01-01/2013-01-01"}, "start is after"),
        ({"datetime": "../.."}, "at least one end"),
        ({"sortby": "cloud"}, "cannot sort by"),
        ({"filter": {"op": "foo", "args": []}}, "not supported"),
        ({"filter": "{not json"}, "not valid JSON"),
        ({"filter": {"op": "=", "args": [{"property": "a'b"}, 1]}}, "not a valid name"),
        ({"filter": {"op": "=", "args": [{"property": "a"}, [1]]}}, "not a string"),
        ({"filter_lang": "cql2-text", "filter": "a=1"}, "cql2-json"),
    ],
)
def test_bad_queries_say_what_is_wrong(args: dict[str, Any], message: str) -> None:
    with pytest.raises(BadQueryError, match=message):
        parse_query(**args)


def test_deep_and_huge_filters_are_refused() -> None:
    deep: dict[str, Any] = {"op": "=", "args": [{"property": "a"}, 1]}
    for _ in range(30):
        deep = {"op": "not", "args": [deep]}
    with pytest.raises(BadQueryError, match="deeper"):
        parse_query(filter=deep)
    wide = {"op": "or", "args": [{"op": "=", "args": [{"property": "a"}, i]} for i in range(300)]}
    with pytest.raises(BadQueryError, match="nodes"):
        parse_query(filter=wide)


def test_collection_ids_and_urls_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="collection"):
        new_collection("../x")
    with pytest.raises(ConfigError, match="no known scheme"):
        open_catalog("mysql://x")
    cat = open_catalog(f"sqlite:///{tmp_path / 'x.db'}")
    cat.close()


@pytest.mark.parametrize(
    "window",
    ["2012-06-01/2012-06-02", "2014-12-31/2015-01-01", "../2011-01-01", "2016-01-01/..",
     "2013-07-01", "2015-03-01T00:00:00Z/2015-03-01T00:00:01Z"],
)  # fmt: skip
def test_intervals_meet_windows(catalog: Catalog, window: str) -> None:
    name = f"c{secrets.token_hex(3)}"
    reference = MemoryCatalog()
    spans = [
        {"datetime": None, "start_datetime": "2012-01-01T00:00:00Z",
         "end_datetime": "2012-12-31T23:59:59Z"},
        {"datetime": "2015-06-01T00:00:00Z", "start_datetime": "2014-01-01T00:00:00Z",
         "end_datetime": "2016-01-01T00:00:00Z"},
        {"datetime": "2010-05-05T00:00:00Z"},
        {"datetime": "2013-07-01T12:00:00Z"},
    ]  # fmt: skip
    items = [make_item(n, name, **props) for n, props in enumerate(spans)]
    for cat in (catalog, reference):
        cat.save_collection(new_collection(name))
        cat.upsert(items)
    got = ids(catalog, collections=[name], datetime=window, limit=50)
    assert got == ids(reference, collections=[name], datetime=window, limit=50)


@pytest.mark.parametrize(("cap", "stream"), [(0, 1.0), (3, 1.0), (20, 1.0), (3, 0.0)])
def test_sqlite_plans_agree_with_the_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cap: int, stream: float
) -> None:
    """Whichever index drives a search (text in datetime order, text, R*Tree, or the sort
    order; the text stream cut short), results agree, ties within a second included."""
    import pixelfleet.catalog.sqlite_search as sqlite_catalog

    monkeypatch.setattr(sqlite_catalog, "DRIVE_CAP", cap)
    monkeypatch.setattr(sqlite_catalog, "STREAM_SECONDS", stream)
    monkeypatch.setattr(sqlite_catalog, "PROGRESS_OPS", 1 if stream == 0 else 1000)
    reference = MemoryCatalog()
    items = [make_item(n, "p") for n in range(N)]
    for n, item in enumerate(items):
        if n % 2:  # many items in the same second, some a fraction apart
            item["properties"]["datetime"] = f"2013-01-0{1 + n % 3}T00:00:00.{n % 4}Z"
    with open_catalog(f"sqlite:///{tmp_path / 'plans.db'}") as catalog:
        for cat in (catalog, reference):
            cat.save_collection(new_collection("p"))
            cat.upsert(items)
        for query in QUERIES:
            for sortby in ("-datetime", "id"):
                got = all_ids(catalog, **query, sortby=sortby, limit=4)
                assert got == all_ids(reference, **query, sortby=sortby, limit=4), query
                page = catalog.search(parse_query(**query, limit=4))
                want = reference.search(parse_query(**query, limit=4)).matched
                assert page.matched == want or (stream == 0 and page.matched is None)


def test_sqlite_text_index_is_rebuilt_for_another_version(tmp_path: Path) -> None:
    import sqlite3

    url = f"sqlite:///{tmp_path / 'v.db'}"
    with open_catalog(url) as catalog:
        catalog.save_collection(new_collection("v"))
        catalog.upsert([make_item(n, "v") for n in range(20)])
    with sqlite3.connect(tmp_path / "v.db") as db:  # as an older version would have left it
        db.execute("INSERT INTO items_fts(items_fts) VALUES ('delete-all')")
        db.execute("UPDATE catalog_meta SET value = 1 WHERE key = 'text_version'")
    with open_catalog(url) as catalog:
        assert len(ids(catalog, q="glacier", limit=50)) == 3
        catalog.upsert([make_item(0, "v", title="renamed")])  # old words removed exactly
        assert "i0000" not in ids(catalog, q="glacier", limit=50)
        assert ids(catalog, q="renamed") == ["i0000"]


@pytest.mark.postgres
def test_pgstac_takes_odd_text_and_filters_without_failing(pg_url: str) -> None:
    """Free text and filters that pass parsing never make pgstac fail (only 400s)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    with open_catalog(pg_url) as catalog:
        catalog.save_collection(new_collection("fuzz"))
        catalog.upsert([make_item(n, "fuzz") for n in range(10)])

        values = st.one_of(
            st.text(max_size=12), st.integers(-5, 50), st.floats(-1e6, 1e6), st.booleans()
        )
        leaf = st.builds(
            lambda op, name, value: {"op": op, "args": [{"property": name}, value]},
            st.sampled_from(["=", "<>", "<", ">=", "like"]),
            st.sampled_from(["cloud", "kind", "title", "id", "datetime", "x:y"]),
            values,
        )

        @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
        @given(st.text(max_size=40), st.one_of(st.none(), leaf))
        def search(text: str, expr: Any) -> None:
            try:
                query = parse_query(q=text or None, filter=expr, collections=["fuzz"])
            except BadQueryError:
                return
            with contextlib.suppress(BadQueryError):  # a 400, never anything else
                catalog.search(query)

        search()
