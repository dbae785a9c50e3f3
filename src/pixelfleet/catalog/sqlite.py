"""The catalog in one SQLite file (``sqlite:///path.db``), the embedded default.

Items are rows of ``items`` (the item JSON plus the columns searches use); an FTS5
table indexes titles, keys, labels and descriptions (porter stemming), and an
R*Tree indexes bounding boxes. User text never reaches ``MATCH`` as syntax: it is
split into words and each word is quoted. Pages are keyset pages: a token holds
the sort values of the last item shown, so paging stays stable while items are
added. Upserts run in one transaction per batch with ``executemany``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Sequence
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
CREATE INDEX IF NOT EXISTS items_sort ON items(datetime DESC, collection, id);
CREATE INDEX IF NOT EXISTS items_id ON items(id);
CREATE TABLE IF NOT EXISTS catalog_meta (key TEXT PRIMARY KEY, value REAL NOT NULL);
CREATE VIRTUAL TABLE IF NOT EXISTS items_rtree USING rtree(id, minx, maxx, miny, maxy);
CREATE VIRTUAL TABLE IF NOT EXISTS items_fts USING fts5(
    title, keys, labels, description,
    tokenize = 'porter unicode61 remove_diacritics 2'
);
"""

#: Searches count matches up to this many; beyond it ``matched`` is None ("more than").
COUNT_CAP = 10_000

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
                existing = self._existing_rowids([(i["collection"], i["id"]) for i in items])
                if existing:
                    old = [(r,) for r in existing.values()]
                    db.executemany("DELETE FROM items_fts WHERE rowid = ?", old)
                    db.executemany("DELETE FROM items_rtree WHERE id = ?", old)
                next_id = db.execute("SELECT COALESCE(MAX(rowid), 0) FROM items").fetchone()[0]
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
                    assigned[key] = rowid
                    minx, miny, maxx, maxy = box if box else (None, None, None, None)
                    # Keyed by rowid: the same item twice in one batch, the last one wins.
                    item_rows[rowid] = (
                        rowid,
                        *key,
                        dt,
                        start,
                        end,
                        minx,
                        miny,
                        maxx,
                        maxy,
                        dumps(item),
                    )
                    fts_rows[rowid] = (
                        rowid,
                        text["title"],
                        text["keys"],
                        text["labels"],
                        text["description"],
                    )
                    tree_rows.pop(rowid, None)
                    if box:
                        tree_rows[rowid] = (rowid, box[0], box[2], box[1], box[3])
                db.executemany(
                    "INSERT OR REPLACE INTO items (rowid, collection, id, datetime, dt_start,"
                    " dt_end, minx, miny, maxx, maxy, content)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    list(item_rows.values()),
                )
                db.executemany(
                    "INSERT INTO items_fts (rowid, title, keys, labels, description)"
                    " VALUES (?, ?, ?, ?, ?)",
                    list(fts_rows.values()),
                )
                db.executemany(
                    "INSERT INTO items_rtree VALUES (?, ?, ?, ?, ?)", list(tree_rows.values())
                )
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

    def _existing_rowids(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
        found: dict[tuple[str, str], int] = {}
        by_collection: dict[str, list[str]] = {}
        for collection, ident in keys:
            by_collection.setdefault(collection, []).append(ident)
        for collection, idents in by_collection.items():
            for first in range(0, len(idents), 500):
                chunk = idents[first : first + 500]
                marks = ", ".join("?" * len(chunk))
                for rowid, ident in self._db.execute(
                    f"SELECT rowid, id FROM items WHERE collection = ? AND id IN ({marks})",
                    [collection, *chunk],
                ):
                    found[(collection, ident)] = rowid
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

    def where(self, query: SearchQuery) -> tuple[str, str, list[Any]] | None:
        """``(joins, conditions, params)`` for a query's conditions, or None if nothing can
        match. The plain-scan benchmark baseline reuses the conditions."""
        joins = ""
        conds: list[str] = []
        params: list[Any] = []
        if query.bbox is not None:
            w, s, e, n = query.bbox
            joins = (
                " JOIN items_rtree ON items_rtree.id = items.rowid AND items_rtree.minx <= ?"
                " AND items_rtree.maxx >= ? AND items_rtree.miny <= ? AND items_rtree.maxy >= ?"
            )
            params += [e, w, n, s]
        if query.q is not None:
            match = fts_query(query.q)
            if match is None:
                return None
            conds.append("items.rowid IN (SELECT rowid FROM items_fts WHERE items_fts MATCH ?)")
            params.append(match)
        if query.collections is not None:
            conds.append(f"items.collection IN ({', '.join('?' * len(query.collections))})")
            params += query.collections
        if query.ids is not None:
            conds.append(f"items.id IN ({', '.join('?' * len(query.ids))})")
            params += query.ids
        if query.datetime is not None:
            low, high = query.datetime
            if high is not None:
                conds.append("items.dt_start <= ?")
                params.append(high)
            if low is not None:
                conds.append("items.dt_end >= ?")
                params.append(low)
            # No item is longer than max_span, and an item's sort datetime lies in its
            # interval: so the sort index gives a bounded range to read, not "all before".
            span = self._max_span()
            if low is not None:
                conds.append("items.datetime >= ?")
                params.append(low - span)
            if high is not None:
                conds.append("items.datetime <= ?")
                params.append(high + span)
        if query.filter is not None:
            conds.append(to_sqlite(query.filter, params))
        return joins, " AND ".join(conds) or "1", params

    def _max_span(self) -> float:
        row = self._db.execute("SELECT value FROM catalog_meta WHERE key = 'max_span'").fetchone()
        return float(row[0]) if row else 0.0

    def search(self, query: SearchQuery) -> SearchPage:
        keys = query.sort_keys()
        after = decode_token(query)
        with self._lock:
            parts = self.where(query)
        if parts is None:
            return SearchPage(items=[], matched=0)
        joins, cond, params = parts
        page_cond, page_params = cond, list(params)
        if after is not None:
            clauses = []
            for i, (name, direction) in enumerate(keys):
                eq = [f"{_COLUMN[n]} = ?" for n, _ in keys[:i]]
                op = "<" if direction == "desc" else ">"
                clauses.append("(" + " AND ".join([*eq, f"{_COLUMN[name]} {op} ?"]) + ")")
                page_params += [*after[:i], after[i]]
            page_cond += " AND (" + " OR ".join(clauses) + ")"
        order = ", ".join(f"{_COLUMN[n]} {d.upper()}" for n, d in keys)
        sql = (
            f"SELECT items.content, {', '.join(_COLUMN[n] for n, _ in keys)} FROM items{joins}"
            f" WHERE {page_cond} ORDER BY {order} LIMIT ?"
        )
        with self._lock:
            try:
                rows = self._db.execute(sql, [*page_params, query.limit + 1]).fetchall()
                counted = self._db.execute(
                    f"SELECT COUNT(*) FROM (SELECT 1 FROM items{joins} WHERE {cond} LIMIT ?)",
                    [*params, COUNT_CAP + 1],
                ).fetchone()[0]
            except sqlite3.Error as exc:
                raise CatalogError(f"catalog search failed: {exc}") from exc
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        return SearchPage(
            items=[json.loads(r[0]) for r in rows],
            matched=counted if counted <= COUNT_CAP else None,
            next_token=encode_token(query, list(rows[-1][1:])) if more and rows else None,
        )
