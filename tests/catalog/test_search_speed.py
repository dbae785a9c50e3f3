"""What the fast paths of searching keep: pages equal to the reference's, counts where they
are cheap, and pgstac searches from many threads at once (issue 13)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from catalog_helpers import make_item
from pixelfleet.catalog import new_collection, open_catalog, parse_query, sqlite_search
from pixelfleet.catalog.memory import MemoryCatalog

N = 120


def ids(page: object) -> list[str]:
    return [i["id"] for i in page.items]  # type: ignore[attr-defined]


def test_a_slow_scan_is_not_counted_but_pages_stay_exact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = MemoryCatalog()
    items = [make_item(n, "p") for n in range(N)]
    query = parse_query(filter="cloud = 3", limit=4)
    with open_catalog(f"sqlite:///{tmp_path / 'c.db'}") as catalog:
        for cat in (catalog, reference):
            cat.save_collection(new_collection("p"))
            cat.upsert(items)
        want = reference.search(query)
        counted = catalog.search(query)
        assert ids(counted) == ids(want)
        assert counted.matched == want.matched == N // 10  # a small catalog is counted
        # As in a large catalog: the page's scan, scaled up, is over the budget.
        monkeypatch.setattr(sqlite_search, "COUNT_SKIP_ITEMS", 10)
        monkeypatch.setattr(sqlite_search, "COUNT_SKIP_STEPS", 0)
        skipped = catalog.search(query)
        assert ids(skipped) == ids(want)
        assert skipped.matched is None
        assert skipped.next_token is not None


@pytest.mark.postgres
def test_pgstac_answers_searches_from_many_threads(pg_url: str) -> None:
    with open_catalog(pg_url) as catalog:
        catalog.save_collection(new_collection("pool"))
        catalog.upsert([make_item(n, "pool") for n in range(40)])
        queries = [parse_query(ids=[f"i{n:04d}"], collections=["pool"]) for n in range(40)]
        with ThreadPoolExecutor(8) as threads:
            pages = list(threads.map(catalog.search, queries * 3))
    assert [ids(p) for p in pages] == [[f"i{n:04d}"] for n in range(40)] * 3


@pytest.mark.parametrize("sortby", ["datetime", "-datetime"])
def test_sorting_by_datetime_reads_dated_then_undated_items_from_one_index(
    tmp_path: Path, sortby: str
) -> None:
    # sortby=datetime puts items whose datetime is null last in both directions: one
    # ORDER BY would sort every item (0.3-0.6 s at 100,000), so each part is read in order.
    items = [make_item(n, "p") for n in range(N)]
    for item in items[::5]:
        item["properties"].update(datetime=None, start_datetime="2013-02-01T00:00:00Z",
                                  end_datetime="2013-02-28T00:00:00Z")  # fmt: skip
    reference = MemoryCatalog()
    with open_catalog(f"sqlite:///{tmp_path / 'c.db'}") as catalog:
        for cat in (catalog, reference):
            cat.save_collection(new_collection("p"))
            cat.upsert(items)
        got, want = [], []
        for cat, out in ((catalog, got), (reference, want)):
            token = None
            while True:
                page = cat.search(parse_query(sortby=sortby, limit=7, token=token))
                out += ids(page)
                if (token := page.next_token) is None:
                    break
        assert got == want and len(got) == N
        undated = {i["id"] for i in items[::5]}
        assert set(got[-len(undated) :]) == undated
        db = catalog._db  # type: ignore[attr-defined]
        undated_sql = sqlite_search.sort_expr(sqlite_search.UNDATED)
        plan = db.execute(
            f"EXPLAIN QUERY PLAN SELECT 1 FROM items WHERE {undated_sql} = 0"
            " ORDER BY items.datetime DESC LIMIT 5"
        ).fetchall()
    assert any("items_undated" in str(row) for row in plan), plan
