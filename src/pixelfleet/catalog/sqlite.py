"""The catalog in one SQLite file (``sqlite:///path.db``), the embedded default.

Items are rows of ``items`` (the item JSON plus the columns searches use); an FTS5
table indexes titles, keys, labels and descriptions (porter stemming), and an
R*Tree indexes bounding boxes. User text never reaches ``MATCH`` as syntax: it is
split into words and each word is quoted. Pages are keyset pages: a token holds
the sort values of the last item shown, so paging stays stable while items are
added. Upserts run in one transaction per batch with ``executemany``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pixelfleet.catalog.base import Catalog, SearchPage, check_item
from pixelfleet.catalog.cql2 import to_sqlite
from pixelfleet.catalog.query import (
    SearchQuery,
    decode_token,
    encode_token,
    iso,
    item_bbox,
    item_interval,
    item_text,
)
from pixelfleet.errors import CatalogError, ItemNotFoundError
from pixelfleet.ledger.sqlite import sqlite_path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS stac_collections (
    id TEXT PRIMARY KEY,
    content TEXT NOT NULL,
    minx REAL, miny REAL, maxx REAL, maxy REAL,
    dt_start REAL, dt_end REAL
);
CREATE TABLE IF NOT EXISTS items (
    rowid INTEGER PRIMARY KEY,
    collection TEXT NOT NULL,
    id TEXT NOT NULL,
    datetime REAL NOT NULL,
    dt_start REAL NOT NULL,
    dt_end REAL NOT NULL,
    minx REAL, miny REAL, maxx REAL, maxy REAL,
    content TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS items_key ON items(collection, id);
CREATE INDEX IF NOT EXISTS items_sort ON items(datetime);
CREATE TABLE IF NOT EXISTS catalog_meta (key TEXT PRIMARY KEY, value REAL NOT NULL);
CREATE VIRTUAL TABLE IF NOT EXISTS items_rtree USING rtree(id, minx, maxx, miny, maxy);
CREATE VIRTUAL TABLE IF NOT EXISTS items_fts USING fts5(
    title, keys, labels, description,
    tokenize = 'porter unicode61 remove_diacritics 2'
);
"""

#: Searches count matches up to this many; beyond it ``matched`` is None ("more than").
COUNT_CAP = 1000
#: An index drives a search when it narrows it to at most this many candidates.
DRIVE_CAP = 2000
#: How long a text search may read the text index in datetime order before an index
#: drives it instead, and how long counting matches may take (seconds).
STREAM_SECONDS = 0.025
COUNT_SECONDS = 0.010
#: SQLite virtual-machine steps between looks at the clock.
PROGRESS_OPS = 1000


@dataclass
class Conditions:
    """Row conditions of a search, with the full-text query and bbox kept apart."""

    conds: list[str] = field(default_factory=list)
    params: list[Any] = field(default_factory=list)
    match: str | None = None
    box: tuple[float, float, float, float] | None = None
    #: Bounds of the items' sort datetime the datetime condition implies.
    window: tuple[float | None, float | None] | None = None

    def add(self, sql: str, *params: Any) -> None:
        """Add one condition and its parameters."""
        self.conds.append(f"({sql})")
        self.params.extend(params)


try:  # orjson (a pypgstac dependency) encodes items about five times faster
    import orjson

    def dumps(item: dict[str, Any]) -> str:
        """An item as compact JSON text."""
        return orjson.dumps(item).decode()

except ModuleNotFoundError:  # pragma: no cover - depends on the extras installed

    def dumps(item: dict[str, Any]) -> str:
        """An item as compact JSON text."""
        return json.dumps(item, separators=(",", ":"))


_COLUMN = {"datetime": "items.datetime", "id": "items.id", "collection": "items.collection"}


#: Full-text rows are keyed by (sort second, item rowid): the item's rowid is the low 31 bits.
ROWID_MASK = 2**31 - 1
_SECOND_OFFSET = 2**31


def fts_key(dt: float, rowid: int) -> int:
    """The full-text rowid of an item: its datetime's second above its own rowid, so that
    the text index lists matches newest (or oldest) first and pages can stop early.
    Seconds outside 1901-2106 are clamped (they only lose that ordering)."""
    second = min(max(math.floor(dt) + _SECOND_OFFSET, 0), 2**32 - 1)
    return (second << 31) | rowid


def fts_key_range(low: float | None, high: float | None) -> tuple[int, int]:
    """Full-text rowids of items whose sort datetime is within ``[low, high]``."""
    first = 0 if low is None else fts_key(low, 0)
    last = 2**63 - 1 if high is None else fts_key(high, ROWID_MASK)
    return first, last


def fts_query(terms: list[str]) -> str | None:
    """An FTS5 query for free-text terms: words quoted, words of a term ANDed, terms ORed.

    Returns None when no term has a word (nothing can match).
    """
    groups = []
    for term in terms:
        words = term.split()
        if words:
            groups.append("(" + " ".join('"' + w.replace('"', '""') + '"' for w in words) + ")")
    return " OR ".join(groups) if groups else None


class SqliteCatalog(Catalog):
    """STAC items in a SQLite file, with FTS5 and R*Tree indexes."""

    def __init__(self, url: str):
        self.url = url
        path = sqlite_path(url)
        if path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(
                path, check_same_thread=False, timeout=30.0, isolation_level=None
            )
            if path != ":memory:":
                self._db.execute("PRAGMA journal_mode=WAL")
            for pragma in (
                "synchronous=NORMAL",
                "temp_store=MEMORY",
                "cache_size=-262144",
                "mmap_size=268435456",
                "case_sensitive_like=ON",
            ):
                self._db.execute(f"PRAGMA {pragma}")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise CatalogError(f"cannot open the catalog {url!r}: {exc}") from exc
        self._known: set[str] = set()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- writing ------------------------------------------------------------------------------

    def save_collection(self, collection: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO stac_collections (id, content) VALUES (?, ?)"
                " ON CONFLICT(id) DO UPDATE SET content = excluded.content",
                (collection["id"], json.dumps(collection)),
            )
            self._known.add(collection["id"])

    def upsert(self, items: Sequence[dict[str, Any]]) -> int:
        if not items:
            return 0
        rows = []
        for item in items:
            check_item(item)
            dt, start, end = item_interval(item)
            box = item_bbox(item)
            text = item_text(item)
            rows.append((item, dt, start, end, box, text))
        with self._lock:
            self._check_collections({item["collection"] for item in items})
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                next_id = db.execute("SELECT COALESCE(MAX(rowid), 0) FROM items").fetchone()[0]
                # Fast path: store the batch as new items; the unique (collection, id) index
                # refuses those already there, and only then are old rows looked up.
                db.execute("SAVEPOINT fresh")
                item_rows, fts_rows, tree_rows = self._rows(rows, {}, next_id)
                before = db.total_changes
                db.executemany(
                    "INSERT OR IGNORE INTO items (rowid, collection, id, datetime, dt_start,"
                    " dt_end, minx, miny, maxx, maxy, content)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    item_rows,
                )
                if db.total_changes - before == len(item_rows):
                    db.execute("RELEASE fresh")
                else:
                    db.execute("ROLLBACK TO fresh")
                    db.execute("RELEASE fresh")
                    found = self._existing_rowids([(i["collection"], i["id"]) for i in items])
                    if found:
                        old_text = [(fts_key(dt, r),) for r, dt in found.values()]
                        db.executemany("DELETE FROM items_fts WHERE rowid = ?", old_text)
                        db.executemany(
                            "DELETE FROM items_rtree WHERE id = ?",
                            [(r,) for r, _ in found.values()],
                        )
                    existing = {key: rowid for key, (rowid, _) in found.items()}
                    item_rows, fts_rows, tree_rows = self._rows(rows, existing, next_id)
                    db.executemany(
                        "INSERT OR REPLACE INTO items (rowid, collection, id, datetime,"
                        " dt_start, dt_end, minx, miny, maxx, maxy, content)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        item_rows,
                    )
                db.executemany(
                    "INSERT INTO items_fts (rowid, title, keys, labels, description)"
                    " VALUES (?, ?, ?, ?, ?)",
                    fts_rows,
                )
                db.executemany("INSERT INTO items_rtree VALUES (?, ?, ?, ?, ?)", tree_rows)
                self._grow_extents(rows)
                # The longest item interval bounds datetime searches to an index range.
                span = max(max(r[3], r[1]) - min(r[2], r[1]) for r in rows)
                db.execute(
                    "INSERT INTO catalog_meta VALUES ('max_span', ?) ON CONFLICT(key)"
                    " DO UPDATE SET value = max(value, excluded.value)",
                    (span,),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return len(items)

    def _rows(
        self, rows: list[Any], existing: dict[tuple[str, str], int], next_id: int
    ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """Rows for items, text and boxes; new items get rowids after ``next_id``.
        The same item twice in one batch: the last one wins."""
        assigned: dict[tuple[str, str], int] = {}
        item_rows: dict[int, tuple[Any, ...]] = {}
        fts_rows: dict[int, tuple[Any, ...]] = {}
        tree_rows: dict[int, tuple[Any, ...]] = {}
        for item, dt, start, end, box, text in rows:
            key = (item["collection"], item["id"])
            rowid = existing.get(key) or assigned.get(key)
            if rowid is None:
                next_id += 1
                rowid = next_id
                if rowid > ROWID_MASK:
                    raise CatalogError(f"{self.url} holds over 2**31 items: split it")
            assigned[key] = rowid
            minx, miny, maxx, maxy = box if box else (None, None, None, None)
            item_rows[rowid] = (rowid, *key, dt, start, end, minx, miny, maxx, maxy, dumps(item))
            fts_rows[rowid] = (
                fts_key(dt, rowid),
                text["title"],
                text["keys"],
                text["labels"],
                text["description"],
            )
            tree_rows.pop(rowid, None)
            if box:
                tree_rows[rowid] = (rowid, box[0], box[2], box[1], box[3])
        return list(item_rows.values()), list(fts_rows.values()), list(tree_rows.values())

    def _existing_rowids(
        self, keys: list[tuple[str, str]]
    ) -> dict[tuple[str, str], tuple[int, float]]:
        """``(collection, id) -> (rowid, sort datetime)`` of the items already stored."""
        found: dict[tuple[str, str], tuple[int, float]] = {}
        by_collection: dict[str, list[str]] = {}
        for collection, ident in keys:
            by_collection.setdefault(collection, []).append(ident)
        for collection, idents in by_collection.items():
            for first in range(0, len(idents), 500):
                chunk = idents[first : first + 500]
                marks = ", ".join("?" * len(chunk))
                for rowid, ident, dt in self._db.execute(
                    f"SELECT rowid, id, datetime FROM items WHERE collection = ?"
                    f" AND id IN ({marks})",
                    [collection, *chunk],
                ):
                    found[(collection, ident)] = (rowid, dt)
        return found

    def _check_collections(self, wanted: set[str]) -> None:
        missing = wanted - self._known
        if missing:
            rows = self._db.execute("SELECT id FROM stac_collections").fetchall()
            self._known = {r[0] for r in rows}
            missing = wanted - self._known
        if missing:
            raise ItemNotFoundError(
                f"collection {sorted(missing)[0]!r} does not exist in {self.url}; create it first"
            )

    def _grow_extents(self, rows: list[Any]) -> None:
        by_collection: dict[str, list[Any]] = {}
        for row in rows:
            by_collection.setdefault(row[0]["collection"], []).append(row)
        for collection, group in by_collection.items():
            boxes = [r[4] for r in group if r[4]]
            starts = [r[2] for r in group]
            ends = [r[3] for r in group]
            args: list[Any] = [min(starts), max(ends)]
            sql = "UPDATE stac_collections SET dt_start = min(coalesce(dt_start, ?1), ?1),"
            sql += " dt_end = max(coalesce(dt_end, ?2), ?2)"
            if boxes:
                sql += (
                    ", minx = min(coalesce(minx, ?3), ?3), miny = min(coalesce(miny, ?4), ?4),"
                    " maxx = max(coalesce(maxx, ?5), ?5), maxy = max(coalesce(maxy, ?6), ?6)"
                )
                args += [
                    min(b[0] for b in boxes),
                    min(b[1] for b in boxes),
                    max(b[2] for b in boxes),
                    max(b[3] for b in boxes),
                ]
            self._db.execute(sql + f" WHERE id = ?{len(args) + 1}", [*args, collection])

    # -- reading ------------------------------------------------------------------------------

    def collections(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT content, minx, miny, maxx, maxy, dt_start, dt_end"
                " FROM stac_collections ORDER BY id"
            ).fetchall()
        out = []
        for content, minx, miny, maxx, maxy, start, end in rows:
            collection = json.loads(content)
            if minx is not None:
                collection["extent"]["spatial"]["bbox"] = [[minx, miny, maxx, maxy]]
            if start is not None:
                collection["extent"]["temporal"]["interval"] = [[iso(start), iso(end)]]
            out.append(collection)
        return out

    def conditions(self, query: SearchQuery) -> Conditions | None:
        """A query's conditions on ``items`` rows, or None if nothing can match.

        Text and bbox are kept apart: the planner decides whether their index drives
        the search or they are checked row by row.
        """
        found = Conditions()
        if query.q is not None:
            found.match = fts_query(query.q)
            if found.match is None:
                return None
        if query.bbox is not None:
            w, s, e, n = query.bbox
            found.box = (w, s, e, n)
            # Exact checks on the item's own box (the R*Tree rounds outwards to float32).
            found.add(
                "items.minx <= ? AND items.maxx >= ? AND items.miny <= ? AND items.maxy >= ?",
                e, w, n, s,
            )  # fmt: skip
        if query.collections is not None:
            found.add(f"items.collection IN ({', '.join('?' * len(query.collections))})",
                      *query.collections)  # fmt: skip
        if query.ids is not None:
            found.add(f"items.id IN ({', '.join('?' * len(query.ids))})", *query.ids)
            if query.collections is None:
                # Lets the (collection, id) index find ids without an index of its own.
                found.add("items.collection IN (SELECT id FROM stac_collections)")
        if query.datetime is not None:
            low, high = query.datetime
            if high is not None:
                found.add("items.dt_start <= ?", high)
            if low is not None:
                found.add("items.dt_end >= ?", low)
            # No item is longer than max_span, and an item's sort datetime lies within
            # max_span of its interval: the sort index gives a bounded range to read.
            span = self._max_span()
            found.window = (
                None if low is None else low - span,
                None if high is None else high + span,
            )
            if low is not None:
                found.add("items.datetime >= ?", low - span)
            if high is not None:
                found.add("items.datetime <= ?", high + span)
        if query.filter is not None:
            params: list[Any] = []
            found.add(to_sqlite(query.filter, params), *params)
        return found

    def _max_span(self) -> float:
        row = self._db.execute("SELECT value FROM catalog_meta WHERE key = 'max_span'").fetchone()
        return float(row[0]) if row else 0.0

    def search(self, query: SearchQuery) -> SearchPage:
        keys = query.sort_keys()
        after = decode_token(query)
        with self._lock:
            try:
                found = self.conditions(query)
                if found is None:
                    return SearchPage(items=[], matched=0)
                page = None
                if found.match is not None and keys[0][0] == "datetime":
                    page = self._stream(query, found, keys, after)
                return page or self._indexed(query, found, keys, after)
            except sqlite3.Error as exc:
                raise CatalogError(f"catalog search failed: {exc}") from exc

    def _stream(
        self,
        query: SearchQuery,
        found: Conditions,
        keys: list[tuple[str, str]],
        after: list[Any] | None,
    ) -> SearchPage | None:
        """Text searches in datetime order: read the text index in its own (datetime) order,
        check the other conditions row by row, and stop once the page is full. Returns
        None when that takes longer than :data:`STREAM_SECONDS` (the other conditions are
        far more selective than the text): the caller then drives by an index."""
        desc = keys[0][1] == "desc"
        first, last = fts_key_range(*found.window) if found.window else fts_key_range(None, None)
        conds, params = list(found.conds), list(found.params)
        if after is not None:
            if desc:
                last = min(last, fts_key(after[0], ROWID_MASK))
            else:
                first = max(first, fts_key(after[0], 0))
            keyset, keyset_params = keyset_condition(keys, after)
            conds.append(keyset)
            params += keyset_params
        columns = ", ".join(_COLUMN[n] for n, _ in keys)
        sql = (
            f"SELECT items.content, {columns}, items_fts.rowid >> 31 FROM items_fts"
            f" CROSS JOIN items ON items.rowid = (items_fts.rowid & {ROWID_MASK})"
            " WHERE items_fts MATCH ? AND items_fts.rowid BETWEEN ? AND ?"
            f"{''.join(' AND ' + c for c in conds)}"
            f" ORDER BY items_fts.rowid {'DESC' if desc else 'ASC'}"
        )
        collected: list[Any] = []
        stop_second = None
        exhausted = True
        with self._budget(STREAM_SECONDS) as interrupted:
            try:
                for row in self._db.execute(sql, [found.match, first, last, *params]):
                    if stop_second is not None and row[-1] != stop_second:
                        exhausted = False
                        break
                    collected.append(row[:-1])
                    if len(collected) == query.limit + 1:
                        # Ties within this second are collected too, then sorted exactly.
                        stop_second = row[-1]
            except sqlite3.OperationalError:
                if interrupted():
                    return None
                raise
        ordered = sorted(collected, key=functools.cmp_to_key(_row_order(keys)))
        more = len(ordered) > query.limit or not exhausted
        rows = ordered[: query.limit]
        matched = len(rows) if exhausted and not more and after is None else None
        if matched is None:
            source = f"items_fts CROSS JOIN items ON items.rowid = (items_fts.rowid & {ROWID_MASK})"
            counted = self._count(
                source,
                ["items_fts MATCH ?", "items_fts.rowid BETWEEN ? AND ?", *found.conds],
                [found.match, *fts_key_range(*found.window or (None, None)), *found.params],
            )
            matched = counted
        return self._page(query, rows, more, matched)

    def _indexed(
        self,
        query: SearchQuery,
        found: Conditions,
        keys: list[tuple[str, str]],
        after: list[Any] | None,
    ) -> SearchPage:
        """Searches driven by an index (text, R*Tree) or by the sort order, sorted by SQL."""
        source, conds, params = self._plan(found)
        page_conds, page_params = list(conds), list(params)
        if after is not None:
            keyset, keyset_params = keyset_condition(keys, after)
            page_conds.append(keyset)
            page_params += keyset_params
        order = ", ".join(f"{_COLUMN[n]} {d.upper()}" for n, d in keys)
        sql = (
            f"SELECT items.content, {', '.join(_COLUMN[n] for n, _ in keys)} FROM {source}"
            f" WHERE {' AND '.join(page_conds) or '1'} ORDER BY {order} LIMIT ?"
        )
        rows = self._db.execute(sql, [*page_params, query.limit + 1]).fetchall()
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        if not more and after is None:
            matched: int | None = len(rows)
        else:
            matched = self._count(source, conds, params)
        return self._page(query, rows, more, matched)

    def _page(
        self, query: SearchQuery, rows: list[Any], more: bool, matched: int | None
    ) -> SearchPage:
        return SearchPage(
            items=[json.loads(r[0]) for r in rows],
            matched=matched,
            next_token=encode_token(query, list(rows[-1][1:])) if more and rows else None,
            extra={"matched_cap": COUNT_CAP},
        )

    def _count(self, source: str, conds: list[str], params: list[Any]) -> int | None:
        """How many rows match, if at most COUNT_CAP and countable within COUNT_SECONDS."""
        with self._budget(COUNT_SECONDS) as interrupted:
            try:
                counted = self._db.execute(
                    f"SELECT COUNT(*) FROM (SELECT 1 FROM {source}"
                    f" WHERE {' AND '.join(conds) or '1'} LIMIT ?)",
                    [*params, COUNT_CAP + 1],
                ).fetchone()[0]
            except sqlite3.OperationalError:
                if interrupted():
                    return None
                raise
        return int(counted) if counted <= COUNT_CAP else None

    @contextlib.contextmanager
    def _budget(self, seconds: float) -> Iterator[Callable[[], bool]]:
        """Interrupt the statements run inside after ``seconds``; yields "was it?"."""
        deadline = time.perf_counter() + seconds
        hit = [False]

        def check() -> int:
            if time.perf_counter() > deadline:
                hit[0] = True
                return 1
            return 0

        self._db.set_progress_handler(check, PROGRESS_OPS)
        try:
            yield lambda: hit[0]
        finally:
            self._db.set_progress_handler(None, 0)

    def _plan(self, found: Conditions) -> tuple[str, list[str], list[Any]]:
        """Choose what drives a search: the full-text index or the R*Tree when either
        narrows it to at most ``DRIVE_CAP`` candidates (the fewest wins), else the items
        in sort order with every condition checked row by row (a scan that stops once a
        page is full, which is quick exactly when matches are common)."""
        conds, params = list(found.conds), list(found.params)
        window = fts_key_range(*found.window) if found.window else fts_key_range(None, None)
        counts: dict[str, int] = {}
        if found.match is not None:
            counts["text"] = self._db.execute(
                "SELECT COUNT(*) FROM (SELECT 1 FROM items_fts WHERE items_fts MATCH ?"
                " AND rowid BETWEEN ? AND ? LIMIT ?)",
                [found.match, *window, DRIVE_CAP + 1],
            ).fetchone()[0]
        if found.box is not None:
            w, s, e, n = found.box
            counts["box"] = self._db.execute(
                "SELECT COUNT(*) FROM (SELECT 1 FROM items_rtree WHERE minx <= ? AND maxx >= ?"
                " AND miny <= ? AND maxy >= ? LIMIT ?)",
                [e, w, n, s, DRIVE_CAP + 1],
            ).fetchone()[0]
        driver = min(counts, key=lambda k: counts[k]) if counts else None
        if driver is not None and counts[driver] > DRIVE_CAP:
            driver = None
        text_check = (
            f"items.rowid IN (SELECT items_fts.rowid & {ROWID_MASK} FROM items_fts"
            " WHERE items_fts MATCH ? AND items_fts.rowid BETWEEN ? AND ?)"
        )
        if driver == "text":
            source = f"items_fts CROSS JOIN items ON items.rowid = (items_fts.rowid & {ROWID_MASK})"
            conds = ["items_fts MATCH ?", "items_fts.rowid BETWEEN ? AND ?", *conds]
            return source, conds, [found.match, *window, *params]
        source = "items"
        if driver == "box":
            w, s, e, n = found.box  # type: ignore[misc]
            source = "items_rtree CROSS JOIN items ON items.rowid = items_rtree.id"
            tree = (
                "items_rtree.minx <= ? AND items_rtree.maxx >= ?"
                " AND items_rtree.miny <= ? AND items_rtree.maxy >= ?"
            )
            conds = [tree, *conds]
            params = [e, w, n, s, *params]
        if found.match is not None:
            conds.append(text_check)
            params += [found.match, *window]
        return source, conds, params


def keyset_condition(keys: list[tuple[str, str]], after: list[Any]) -> tuple[str, list[Any]]:
    """SQL for "sorts after these values" under ``keys``."""
    clauses, params = [], []
    for i, (name, direction) in enumerate(keys):
        eq = [f"{_COLUMN[n]} = ?" for n, _ in keys[:i]]
        op = "<" if direction == "desc" else ">"
        clauses.append("(" + " AND ".join([*eq, f"{_COLUMN[name]} {op} ?"]) + ")")
        params += [*after[:i], after[i]]
    return "(" + " OR ".join(clauses) + ")", params


def _row_order(keys: list[tuple[str, str]]) -> Callable[[Any, Any], int]:
    from pixelfleet.catalog.memory import compare

    def order(a: Any, b: Any) -> int:
        return compare(list(a[1:]), list(b[1:]), keys)

    return order
