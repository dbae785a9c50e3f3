"""How the SQLite catalog answers searches: conditions, the choice of what drives a search,
and keyset pages (see docs/DESIGN.md, "How SQLite answers a search")."""

from __future__ import annotations

import contextlib
import functools
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pixelfleet.catalog.base import SearchPage
from pixelfleet.catalog.cql2 import to_sqlite
from pixelfleet.catalog.query import UNDATED, SearchQuery, compare, decode_token, encode_token
from pixelfleet.errors import CatalogError
from pixelfleet.jsontext import loads

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
#: A scan in sort order is not counted when its page, scaled to COUNT_CAP matches, comes
#: to more than COUNT_SKIP_STEPS progress steps of COUNT_STEP_OPS operations (see
#: SqliteSearch._indexed). A filter on a property read from the item's JSON matching one
#: item in 50 takes ~20 steps for a page of 11 (~1,800 scaled, and 10 ms to count); a
#: 30-day window of 100,000 items over 10 years takes under 5 (~450 scaled).
COUNT_STEP_OPS = 100
COUNT_SKIP_STEPS = 1000
#: ... and only in catalogs of more items than this (a smaller one is counted quickly).
COUNT_SKIP_ITEMS = 20 * COUNT_CAP


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


#: Sort keys with a value on every item: columns, and whether the item has no datetime.
_COLUMN = {
    "datetime": "items.datetime",
    "id": "items.id",
    "collection": "items.collection",
    UNDATED: "(json_type(items.content, '$.properties.datetime') IS NOT 'text')",
}


def sort_expr(name: str) -> str:
    """SQL for a sort key: a column, or a property's value (objects and arrays count as no
    value, as :func:`~pixelfleet.catalog.query.sort_value` has it). Property names were
    checked (letters, digits, ``_ : . -``), so they cannot close the quotes."""
    column = _COLUMN.get(name)
    if column is not None:
        return column
    path = f"'$.properties.\"{name}\"'"
    return (
        f"(CASE WHEN json_type(items.content, {path}) IN ('object', 'array') THEN NULL"
        f" ELSE json_extract(items.content, {path}) END)"
    )


def order_by(keys: list[tuple[str, str]]) -> str:
    """ORDER BY terms for sort keys: properties with no value last, whichever the direction."""
    terms = []
    for name, direction in keys:
        expr = sort_expr(name)
        if name not in _COLUMN:
            terms.append(f"({expr} IS NULL)")
        terms.append(f"{expr} {direction.upper()}")
    return ", ".join(terms)


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


class SqliteSearch:
    """Search over the tables :class:`~pixelfleet.catalog.sqlite.SqliteCatalog` keeps."""

    _db: sqlite3.Connection
    _lock: threading.Lock

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
            # Unary +: not through the (collection, id) key, which SQLite (it keeps no row
            # counts) would take for any collection and then sort the whole collection
            # (61 ms a page at 100,000 items in one collection, measured; 346 ms newest
            # first): the sort's own index is walked and the collection checked per row
            # (0.2 ms). ids are still found through the key (below).
            plus = "+" if query.ids is None else ""
            found.add(f"{plus}items.collection IN ({', '.join('?' * len(query.collections))})",
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
        """One page of items matching ``query`` (see :meth:`Catalog.search`)."""
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
        columns = ", ".join(sort_expr(n) for n, _ in keys)
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
            if not found.conds:  # text alone: the text index counts without reading items
                source = "items_fts"
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
        steps = [0]

        def step() -> int:
            steps[0] += 1
            return 0

        self._db.set_progress_handler(step, COUNT_STEP_OPS)
        try:
            if keys[0][0] == UNDATED:
                rows = self._dated_first(source, conds, params, keys, after, query.limit + 1)
            else:
                rows = self._sorted_rows(source, conds, params, keys, keys, after, query.limit + 1)
        finally:
            self._db.set_progress_handler(None, 0)
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        if not more and after is None:
            matched: int | None = len(rows)
        elif (
            source == "items"
            and steps[0] * (COUNT_CAP + 1) / len(rows) > COUNT_SKIP_STEPS
            and self._db.execute("SELECT MAX(rowid) FROM items").fetchone()[0] > COUNT_SKIP_ITEMS
        ):
            # A scan in sort order that took this much work to fill a page would not count
            # COUNT_CAP matches within COUNT_SECONDS either (matches are spread alike, e.g.
            # a filter on a property that no index holds): counting would only spend the
            # budget to say "more than". Work, not time, so the answer does not depend
            # on how busy the machine is.
            matched = None
        else:
            matched = self._count(source, conds, params)
        return self._page(query, rows, more, matched)

    def _sorted_rows(
        self,
        source: str,
        conds: list[str],
        params: list[Any],
        keys: list[tuple[str, str]],
        order: list[tuple[str, str]],
        after: list[Any] | None,
        limit: int,
    ) -> list[Any]:
        """Up to ``limit`` rows (the item and its ``keys`` values) in ``order``, after the
        ``order`` values ``after``."""
        if after is not None:
            keyset, keyset_params = keyset_condition(order, after)
            conds, params = [*conds, keyset], [*params, *keyset_params]
        sql = (
            f"SELECT items.content, {', '.join(sort_expr(n) for n, _ in keys)} FROM {source}"
            f" WHERE {' AND '.join(conds) or '1'} ORDER BY {order_by(order)} LIMIT ?"
        )
        return self._db.execute(sql, [*params, limit]).fetchall()

    def _dated_first(
        self,
        source: str,
        conds: list[str],
        params: list[Any],
        keys: list[tuple[str, str]],
        after: list[Any] | None,
        limit: int,
    ) -> list[Any]:
        """Rows sorted by datetime (:data:`UNDATED` first): the items with a datetime, then
        those without, each read in the order of the index on (undated, datetime), which
        serves both directions; one ORDER BY would sort every matching item."""
        rows: list[Any] = []
        for flag in (0, 1):
            if after is not None and after[0] > flag:
                continue
            rest = after[1:] if after is not None and after[0] == flag else None
            rows += self._sorted_rows(
                source, [*conds, f"{_COLUMN[UNDATED]} = ?"], [*params, flag],
                keys, keys[1:], rest, limit - len(rows),
            )  # fmt: skip
            if len(rows) >= limit:
                break
        return rows

    def _page(
        self, query: SearchQuery, rows: list[Any], more: bool, matched: int | None
    ) -> SearchPage:
        return SearchPage(
            items=[loads(r[0]) for r in rows],
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
    """SQL for "sorts after these values" under ``keys`` (no value sorts last)."""
    clauses, params = [], []
    for i, (name, direction) in enumerate(keys):
        value = after[i]
        if value is None:
            continue  # nothing sorts after "no value" on this key: ties go to the next key
        terms = []
        for (prior, _), seen in zip(keys[:i], after[:i], strict=True):
            if seen is None:
                terms.append(f"{sort_expr(prior)} IS NULL")
            else:
                terms.append(f"{sort_expr(prior)} = ?")
                params.append(seen)
        expr = sort_expr(name)
        op = "<" if direction == "desc" else ">"
        later = f"{expr} {op} ?"
        if name not in _COLUMN:
            later = f"({later} OR {expr} IS NULL)"
        terms.append(later)
        params.append(value)
        clauses.append("(" + " AND ".join(terms) + ")")
    return "(" + (" OR ".join(clauses) or "0") + ")", params


def _row_order(keys: list[tuple[str, str]]) -> Callable[[Any, Any], int]:
    def order(a: Any, b: Any) -> int:
        return compare(list(a[1:]), list(b[1:]), keys)

    return order
