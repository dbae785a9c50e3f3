"""The catalog in one SQLite file (``sqlite:///path.db``), the embedded default.

(Searching is in :mod:`pixelfleet.catalog.sqlite_search`; this module keeps the tables.)

Items are rows of ``items`` (the item JSON plus the columns searches use); an FTS5
table indexes titles, keys, labels and descriptions (porter stemming), and an
R*Tree indexes bounding boxes. User text never reaches ``MATCH`` as syntax: it is
split into words and each word is quoted. Pages are keyset pages: a token holds
the sort values of the last item shown, so paging stays stable while items are
added. Upserts and deletes run in one transaction per batch with ``executemany``;
a delete removes the item's text and R*Tree rows with it.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
from collections.abc import Sequence
from typing import Any

from typing_extensions import override

from pixelfleet import jsontext
from pixelfleet.catalog.base import Catalog, check_item
from pixelfleet.catalog.query import (
    iso,
    item_text,
    parse_query,
)
from pixelfleet.catalog.sqlite_search import ROWID_MASK, SqliteSearch, fts_key, order_by
from pixelfleet.catalog.values import item_bbox, item_interval
from pixelfleet.errors import CatalogError, ItemNotFoundError
from pixelfleet.urls import sqlite_path

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
-- The sort index holds each item's interval too, so counting a datetime search's
-- matches reads only the index (a 30-day window of 100,000 items: 0.30 -> 0.10 ms).
CREATE INDEX IF NOT EXISTS items_when ON items(datetime, dt_start, dt_end);
DROP INDEX IF EXISTS items_sort;
-- sortby=datetime reads the items with a datetime, then those without, each in datetime
-- order from this index (either direction); see SqliteSearch._dated_first.
CREATE INDEX IF NOT EXISTS items_undated
    ON items((json_type(content, '$.properties.datetime') IS NOT 'text'), datetime);
CREATE TABLE IF NOT EXISTS catalog_meta (key TEXT PRIMARY KEY, value REAL NOT NULL);
CREATE VIRTUAL TABLE IF NOT EXISTS items_rtree USING rtree(id, minx, maxx, miny, maxy);
"""

# Contentless (the text is never read back) and without column sizes (no ranking): the
# index is all that is written. Its rowids are datetime-ordered (see fts_key), so a
# table of content or sizes keyed by them would take random writes.
_TEXT_SCHEMA = """
CREATE VIRTUAL TABLE IF NOT EXISTS items_fts USING fts5(
    title, keys, labels, description,
    tokenize = 'porter unicode61 remove_diacritics 2',
    content = '', columnsize = 0
);
"""

#: "Newest first": capture time, then datetime (``catalog.items.NEWEST_FIRST``; not
#: imported, to keep the item builder out of the catalog's imports).
NEWEST_FIRST = "-pixelfleet:captured,-datetime"
# Read from an index of exactly the terms ``order_by`` writes for that sort (index
# expressions name bare columns), instead of sorting every match: see docs/DESIGN.md.
_NEWEST_INDEX = "CREATE INDEX items_newest ON items({})".format(
    re.sub(r"\bitems\.", "", order_by(parse_query(sortby=NEWEST_FIRST).sort_keys()))
)

#: Bumped whenever what is indexed for text changes: the text index is then rebuilt, since
#: removing an item's old words needs exactly the words it was indexed with.
TEXT_VERSION = 2


class SqliteCatalog(SqliteSearch, Catalog):
    """STAC items in a SQLite file, with FTS5 and R*Tree indexes."""

    #: Searches are short and in-process: the server answers them on its event loop.
    searches_inline = True

    def __init__(self, url: str):
        self.url = url
        path = sqlite_path(url, "catalog")
        self._lock = threading.Lock()
        try:
            if path != ":memory:":
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
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
            self._check_newest_index()
            self._check_text_index()
        except (sqlite3.Error, OSError) as exc:
            raise CatalogError(f"cannot open the catalog {url!r}: {exc}") from exc
        self._known: set[str] = set()

    def _check_newest_index(self) -> None:
        """Create the "newest first" index, or make it again when its sort changed (an
        existing catalog gets it when opened)."""
        row = self._db.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = 'items_newest'"
        ).fetchone()
        if row is None or row[0] != _NEWEST_INDEX:
            self._db.execute("DROP INDEX IF EXISTS items_newest")
            self._db.execute(_NEWEST_INDEX)

    def _check_text_index(self) -> None:
        """Create the text index, or rebuild it when it was made by another TEXT_VERSION."""
        row = self._db.execute(
            "SELECT value FROM catalog_meta WHERE key = 'text_version'"
        ).fetchone()
        if row is not None and int(row[0]) == TEXT_VERSION:
            self._db.execute(_TEXT_SCHEMA)
            return
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("DROP TABLE IF EXISTS items_fts")
            db.execute(_TEXT_SCHEMA)  # (executescript would commit the transaction)
            rows = db.execute("SELECT rowid, datetime, content FROM items")
            while chunk := rows.fetchmany(5000):
                db.executemany(
                    "INSERT INTO items_fts (rowid, title, keys, labels, description)"
                    " VALUES (?, ?, ?, ?, ?)",
                    [_text_row(rowid, dt, json.loads(content)) for rowid, dt, content in chunk],
                )
            db.execute(
                "INSERT INTO catalog_meta VALUES ('text_version', ?) ON CONFLICT(key)"
                " DO UPDATE SET value = excluded.value",
                (TEXT_VERSION,),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    @override
    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- writing ------------------------------------------------------------------------------

    @override
    def save_collection(self, collection: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO stac_collections (id, content) VALUES (?, ?)"
                " ON CONFLICT(id) DO UPDATE SET content = excluded.content",
                (collection["id"], json.dumps(collection)),
            )
            self._known.add(collection["id"])

    @override
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
                        db.executemany(
                            "INSERT INTO items_fts (items_fts, rowid, title, keys, labels,"
                            " description) VALUES ('delete', ?, ?, ?, ?, ?)",
                            [_text_row(r, dt, json.loads(old)) for r, dt, old in found.values()],
                        )
                        db.executemany(
                            "DELETE FROM items_rtree WHERE id = ?",
                            [(r,) for r, _, _ in found.values()],
                        )
                    existing = {key: rowid for key, (rowid, _, _) in found.items()}
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
            content = jsontext.dumps(item)
            item_rows[rowid] = (rowid, *key, dt, start, end, minx, miny, maxx, maxy, content)
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
    ) -> dict[tuple[str, str], tuple[int, float, str]]:
        """``(collection, id) -> (rowid, sort datetime, item JSON)`` of the items stored."""
        found: dict[tuple[str, str], tuple[int, float, str]] = {}
        by_collection: dict[str, list[str]] = {}
        for collection, ident in keys:
            by_collection.setdefault(collection, []).append(ident)
        for collection, idents in by_collection.items():
            for first in range(0, len(idents), 500):
                chunk = idents[first : first + 500]
                marks = ", ".join("?" * len(chunk))
                for rowid, ident, dt, content in self._db.execute(
                    f"SELECT rowid, id, datetime, content FROM items WHERE collection = ?"
                    f" AND id IN ({marks})",
                    [collection, *chunk],
                ):
                    found[(collection, ident)] = (rowid, dt, content)
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

    @override
    def delete(self, collection_id: str, item_ids: Sequence[str]) -> int:
        idents = list(dict.fromkeys(item_ids))
        if not idents:
            return 0
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                found = self._stored(collection_id, idents)
                if found:
                    # A contentless text index forgets a row only when given the words it holds.
                    db.executemany(
                        "INSERT INTO items_fts (items_fts, rowid, title, keys, labels,"
                        " description) VALUES ('delete', ?, ?, ?, ?, ?)",
                        [_text_row(r[0], r[1], json.loads(r[2])) for r in found],
                    )
                    db.executemany("DELETE FROM items_rtree WHERE id = ?", [(r[0],) for r in found])
                    db.executemany("DELETE FROM items WHERE rowid = ?", [(r[0],) for r in found])
                    self._shrink_extent(collection_id, found)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return len(found)

    def _stored(self, collection_id: str, idents: list[str]) -> list[tuple[Any, ...]]:
        """``(rowid, datetime, content, minx, miny, maxx, maxy, dt_start, dt_end)`` of the
        items of a collection stored under ``idents``."""
        rows: list[tuple[Any, ...]] = []
        for first in range(0, len(idents), 500):
            chunk = idents[first : first + 500]
            marks = ", ".join("?" * len(chunk))
            rows += self._db.execute(
                "SELECT rowid, datetime, content, minx, miny, maxx, maxy, dt_start, dt_end"
                f" FROM items WHERE collection = ? AND id IN ({marks})",
                [collection_id, *chunk],
            ).fetchall()
        return rows

    def _shrink_extent(self, collection_id: str, removed: list[tuple[Any, ...]]) -> None:
        """Recompute a collection's extent from its items when a removed item was on its
        edge (removing one from the middle changes nothing, and costs no scan)."""
        row = self._db.execute(
            "SELECT minx, miny, maxx, maxy, dt_start, dt_end FROM stac_collections WHERE id = ?",
            (collection_id,),
        ).fetchone()
        if row is None:
            return
        minx, miny, maxx, maxy, start, end = row

        def on_edge(item: tuple[Any, ...]) -> bool:
            x0, y0, x1, y1, first, last = item[3:]
            if start is not None and (first <= start or last >= end):
                return True
            return (
                x0 is not None
                and minx is not None
                and (x0 <= minx or y0 <= miny or x1 >= maxx or y1 >= maxy)
            )

        if any(on_edge(item) for item in removed):
            self._db.execute(
                "UPDATE stac_collections SET (minx, miny, maxx, maxy, dt_start, dt_end) ="
                " (SELECT min(minx), min(miny), max(maxx), max(maxy), min(dt_start), max(dt_end)"
                " FROM items WHERE collection = ?1) WHERE id = ?1",
                (collection_id,),
            )

    # -- reading ------------------------------------------------------------------------------

    @override
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


def _text_row(rowid: int, dt: float, item: dict[str, Any]) -> tuple[Any, ...]:
    """The text index row of an item, as inserted (and as a 'delete' must repeat it)."""
    text = item_text(item)
    return (fts_key(dt, rowid), text["title"], text["keys"], text["labels"], text["description"])
