"""The "newest first" sort (capture time, then datetime) is read from an index in SQLite,
and its pages stay those of the reference, items without a capture time last (issue 13)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from catalog_helpers import make_item
from pixelfleet.catalog import new_collection, open_catalog, parse_query
from pixelfleet.catalog.items import NEWEST_FIRST
from pixelfleet.catalog.memory import MemoryCatalog
from pixelfleet.catalog.sqlite import NEWEST_FIRST as SQLITE_NEWEST_FIRST

N = 90


def items() -> list[dict[str, object]]:
    """Every third item has no capture time; captures run against the datetimes."""
    out = []
    for n in range(N):
        props = {} if n % 3 == 0 else {"pixelfleet:captured": f"20{10 + n % 7:02d}-05-05T00:00:00Z"}
        out.append(make_item(n, "p", **props))
    return out


def search_plans(db: sqlite3.Connection, run: object) -> list[str]:
    """The query plans of the page queries a search ran (``run()``)."""
    seen: list[str] = []
    db.set_trace_callback(lambda sql: seen.append(sql) if "ORDER BY" in sql else None)
    try:
        run()  # type: ignore[operator]
    finally:
        db.set_trace_callback(None)
    assert seen
    return [" ".join(r[3] for r in db.execute("EXPLAIN QUERY PLAN " + sql)) for sql in seen]


def test_newest_first_reads_the_capture_index_and_pages_like_the_reference(
    tmp_path: Path,
) -> None:
    reference = MemoryCatalog()
    with open_catalog(f"sqlite:///{tmp_path / 'c.db'}") as catalog:
        for cat in (catalog, reference):
            cat.save_collection(new_collection("p"))
            cat.upsert(items())
        query = parse_query(sortby=NEWEST_FIRST, limit=7)
        plans = search_plans(catalog._db, lambda: catalog.search(query))  # type: ignore[attr-defined]
        assert all("USING INDEX items_newest" in p for p in plans), plans
        assert not any("TEMP B-TREE" in p for p in plans), plans  # no sorting at all
        got, want = [], []
        for cat, out in ((catalog, got), (reference, want)):
            token = None
            while True:
                page = cat.search(parse_query(sortby=NEWEST_FIRST, limit=7, token=token))
                out += [i["id"] for i in page.items]
                token = page.next_token
                if token is None:
                    break
    assert got == want
    assert len(got) == N
    # Items without a capture time come last, newest datetime first among them.
    assert got[-N // 3 :] == [i for i in want if int(i[1:]) % 3 == 0]


def test_an_existing_catalog_gets_the_index_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with open_catalog(f"sqlite:///{path}") as catalog:
        catalog.save_collection(new_collection("p"))
        catalog.upsert(items())
    with sqlite3.connect(path) as db:
        db.execute("DROP INDEX items_newest")  # as a catalog made before the index was
    reference = MemoryCatalog()
    reference.save_collection(new_collection("p"))
    reference.upsert(items())
    query = parse_query(sortby=NEWEST_FIRST, limit=3)
    with open_catalog(f"sqlite:///{path}") as catalog:
        assert catalog.search(query).items == reference.search(query).items
    with sqlite3.connect(path) as db:
        names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "items_newest" in names


def test_the_index_is_made_again_when_the_sort_changes(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    with open_catalog(f"sqlite:///{path}") as catalog:
        catalog.save_collection(new_collection("p"))
    with sqlite3.connect(path) as db:
        db.execute("DROP INDEX items_newest")
        db.execute("CREATE INDEX items_newest ON items(datetime)")  # an older definition
    with open_catalog(f"sqlite:///{path}"):
        pass
    with sqlite3.connect(path) as db:
        (sql,) = db.execute("SELECT sql FROM sqlite_master WHERE name = 'items_newest'").fetchone()
    assert "pixelfleet:captured" in sql


def test_the_indexed_sort_is_the_pages_newest_first() -> None:
    assert SQLITE_NEWEST_FIRST == NEWEST_FIRST


def test_a_collections_pages_are_read_from_the_sort_indexes(tmp_path: Path) -> None:
    """Within a collection, SQLite (no row counts) took the (collection, id) key and
    sorted the whole collection for every page; the sort indexes are walked instead."""
    path = tmp_path / "c.db"
    with open_catalog(f"sqlite:///{path}") as catalog:
        catalog.save_collection(new_collection("p"))
        catalog.upsert([make_item(n, "p") for n in range(300)])
        db = catalog._db  # type: ignore[attr-defined]
        for sortby, index in ((NEWEST_FIRST, "items_newest"), (None, "items_when")):
            query = parse_query(sortby=sortby, limit=7, collections=["p"])
            plans = search_plans(db, lambda q=query: catalog.search(q))
            assert all(f"USING INDEX {index}" in p for p in plans), plans
            # The collection is fixed, so its sort term drops out: SQLite walks the index
            # and orders only runs of equal values by id ("RIGHT PART"), never the match.
            assert not any("TEMP B-TREE FOR ORDER BY" in p for p in plans), plans
