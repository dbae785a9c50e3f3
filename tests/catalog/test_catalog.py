"""What the catalog does besides its contract (test_catalog_contract.py): parsing queries,
page tokens, SQLite's text index and pgstac under fuzzed input."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest

from catalog_helpers import make_item
from pixelfleet.catalog import Catalog, new_collection, open_catalog, parse_query
from pixelfleet.catalog.memory import MemoryCatalog
from pixelfleet.catalog.sqlite_search import fts_query
from pixelfleet.errors import BadQueryError, ConfigError


def ids(catalog: Catalog, **query: Any) -> list[str]:
    return [i["id"] for i in catalog.search(parse_query(**query)).items]


def test_fts_query_quotes_every_word() -> None:
    assert fts_query(["glacier water", "dog"]) == '("glacier" "water") OR ("dog")'
    assert fts_query([""]) is None


def test_tokens_belong_to_their_query() -> None:
    name, reference = "t", MemoryCatalog()
    reference.save_collection(new_collection(name))
    reference.upsert([make_item(n, name) for n in range(60)])
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
        ({"bbox": "0,80,1,95"}, "outside"),
        ({"bbox": "nan,0,1,1"}, "finite"),
        ({"limit": 0}, "at least 1"),
        ({"limit": -1}, "at least 1"),
        ({"limit": "ten"}, "whole number"),
        ({"limit": 2.5}, "whole number"),
        ({"limit": True}, "whole number"),
        ({"datetime": "yesterday"}, "RFC 3339"),
        ({"datetime": "2014-01-01/2013-01-01"}, "start is after"),
        ({"datetime": "../.."}, "at least one end"),
        ({"sortby": "a'b"}, "cannot sort by"),
        ({"sortby": "geometry"}, "cannot sort by"),
        ({"sortby": "id,-id"}, "twice"),
        ({"filter": {"op": "foo", "args": []}}, "not supported"),
        ({"filter": "{not json"}, "not valid CQL2 JSON"),
        ({"filter": "cloud >"}, "not valid CQL2 text: at line 1, column 8"),
        ({"filter": "cloud = 1", "filter_lang": "cql2-json"}, "not valid CQL2 JSON"),
        ({"filter": "casei(title) = 'x'"}, "not supported"),
        ({"filter": "a = " + "(" * 40 + "1" + ")" * 40}, "deeper"),
        ({"filter": "a = " + "- " * 10 + "1"}, "signs"),
        ({"filter": "NOT " * 300 + "a = 1"}, "NOTs"),
        ({"filter": [1, 2]}, "must be CQL2 JSON"),
        ({"filter": {"op": "=", "args": [{"property": "a'b"}, 1]}}, "not a valid name"),
        ({"filter": {"op": "=", "args": [{"property": "a"}, [1]]}}, "not a string"),
        (
            {"filter": {"op": ">", "args": [{"property": "datetime"}, {"timestamp": "2013"}]}},
            "RFC 3339",
        ),
        (
            {"filter": {"op": ">", "args": [{"property": "datetime"}, {"date": "2013-1-1"}]}},
            "YYYY-MM-DD",
        ),
        ({"filter": "id = TIMESTAMP('2014-01-01T00:00:00Z')"}, "id is text"),
        ({"filter": "collection IN (DATE('2014-01-01'), 'x')"}, "collection is text"),
        ({"filter": "id BETWEEN 'a' AND TIMESTAMP('2014-01-01T00:00:00Z')"}, "id is text"),
        ({"filter_lang": "cql-text", "filter": "a=1"}, "cql2-text"),
        ({"intersects": {"type": "GeometryCollection"}}, "geometries"),
        ({"intersects": {"type": "Circle", "coordinates": [1, 2]}}, "GeoJSON geometry"),
        ({"bbox": "0,0,1,1", "intersects": {"type": "Point", "coordinates": [0, 0]}}, "not both"),
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


def test_sqlite_delete_leaves_no_index_rows(tmp_path: Path) -> None:
    import sqlite3

    from pixelfleet.catalog.sqlite_search import ROWID_MASK

    url = f"sqlite:///{tmp_path / 'd.db'}"
    with open_catalog(url) as catalog:
        catalog.save_collection(new_collection("d"))
        catalog.upsert([make_item(n, "d") for n in range(20)])
        assert catalog.delete("d", [f"i{n:04d}" for n in range(0, 20, 2)]) == 10
    with sqlite3.connect(tmp_path / "d.db") as db:
        rowids = {r[0] for r in db.execute("SELECT rowid FROM items")}
        assert len(rowids) == 10
        assert {r[0] for r in db.execute("SELECT id FROM items_rtree")} == rowids
        for word in ("glacier", "scene", "synthetic"):
            texts = db.execute("SELECT rowid FROM items_fts WHERE items_fts MATCH ?", (word,))
            assert {r[0] & ROWID_MASK for r in texts} <= rowids, word


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
