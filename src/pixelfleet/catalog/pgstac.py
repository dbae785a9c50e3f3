"""The catalog in PostgreSQL with pgstac (``postgresql://user@host:5432/db``).

Through ``pypgstac``: the database is migrated to pypgstac's pgstac version when the
catalog is opened (PostGIS must be installable: ``postgresql-15-postgis-3`` on
Debian), items and collections are loaded with its ``Loader`` in upsert mode, and
searches call pgstac's own ``search()`` SQL function, deletes its ``delete_item()``.
Page tokens are pgstac's.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from typing_extensions import override

from pixelfleet.catalog.base import Catalog, SearchPage, check_item
from pixelfleet.catalog.cql2 import INSTANTS, is_instant_literal
from pixelfleet.catalog.pgstac_sort import COUNT_CAP, count_sql, last_values, page_sql, sorts_here
from pixelfleet.catalog.query import SearchQuery, decode_token, encode_token, iso
from pixelfleet.catalog.values import item_interval
from pixelfleet.errors import BadQueryError, CatalogError, ItemNotFoundError, MissingExtraError

_migrated: set[str] = set()

#: The expression pgstac's search() matches free text against (it must stay identical).
TEXT_INDEX = """
CREATE INDEX IF NOT EXISTS items_pixelfleet_text ON pgstac.items USING GIN ((
    to_tsvector('english', content->'properties'->>'description') ||
    to_tsvector('english', coalesce(content->'properties'->>'title', '')) ||
    to_tsvector('english', coalesce(content->'properties'->>'keywords', ''))
))
"""
_migrate_lock = threading.Lock()
#: Connections searches share, at most (a server answers that many searches at once).
POOL_SIZE = 8


#: A comparison of a property with a timestamp, as pgstac's temporal operators say it
#: (``NOT`` of the opposite where there is none: unknown stays unknown).
_AS_TEMPORAL = {
    "=": (False, "t_equals"),
    "<>": (True, "t_equals"),
    "<": (False, "t_before"),
    ">": (False, "t_after"),
    "<=": (True, "t_after"),
    ">=": (True, "t_before"),
}
#: The operator that says the same with its operands swapped.
_SWAPPED = {"=": "=", "<>": "<>", "<": ">", ">": "<", "<=": ">=", ">=": "<="}


def _temporal(op: str, prop: Any, stamp: Any) -> dict[str, Any]:
    negate, name = _AS_TEMPORAL[op]
    node = {"op": name, "args": [pgstac_filter(prop), stamp]}
    return {"op": "not", "args": [node]} if negate else node


def _timestamp_comparison(node: dict[str, Any]) -> dict[str, Any] | None:
    """A comparison (``=``, ``<`` ..., ``between``, ``in``) of a property pgstac keeps in
    its JSON (not one of its columns) with timestamps, in temporal operators: pgstac
    compares such a property as text, which a timestamp is not (PostgreSQL: "operator
    does not exist: text >= timestamp with time zone"), but reads it as a timestamp in a
    temporal operator. None when ``node`` is no such comparison."""
    op, args = node.get("op"), node.get("args")
    if not isinstance(args, list) or not args:
        return None

    def stored(a: Any) -> bool:
        return (
            isinstance(a, dict)
            and "property" in a
            and str(a["property"]).removeprefix("properties.")
            not in ("id", "collection", *INSTANTS)
        )

    if op in _AS_TEMPORAL and len(args) == 2:
        left, right = args
        if stored(left) and is_instant_literal(right):
            return _temporal(op, left, right)
        if stored(right) and is_instant_literal(left):
            return _temporal(_SWAPPED[op], right, left)
        return None
    if (
        op == "between"
        and len(args) == 3
        and stored(args[0])
        and all(is_instant_literal(a) for a in args[1:])
    ):
        low, high = _temporal(">=", args[0], args[1]), _temporal("<=", args[0], args[2])
        return {"op": "and", "args": [low, high]}
    values = args[1] if len(args) == 2 else None
    if (
        op == "in"
        and stored(args[0])
        and isinstance(values, list)
        and values
        and all(is_instant_literal(v) for v in values)
    ):
        return {"op": "or", "args": [_temporal("=", args[0], v) for v in values]}
    return None


def pgstac_filter(node: Any) -> Any:
    """Our CQL2-JSON as pgstac takes it: ``{"bbox": [...]}`` operands become polygons, and
    comparisons of a property with timestamps temporal operators
    (:func:`_timestamp_comparison`)."""
    if isinstance(node, dict):
        temporal = _timestamp_comparison(node)
        if temporal is not None:
            return temporal
        if set(node) == {"bbox"}:
            w, s, e, n = (
                node["bbox"][:4]
                if len(node["bbox"]) == 4
                else (node["bbox"][0], node["bbox"][1], node["bbox"][3], node["bbox"][4])
            )
            ring = [[w, s], [e, s], [e, n], [w, n], [w, s]]
            return {"type": "Polygon", "coordinates": [ring]}
        if "property" in node and isinstance(node["property"], str):
            return {"property": node["property"].removeprefix("properties.")}
        return {k: pgstac_filter(v) for k, v in node.items()}
    if isinstance(node, list):
        return [pgstac_filter(v) for v in node]
    return node


def search_body(query: SearchQuery) -> dict[str, Any]:
    """The JSON pgstac's ``search()`` takes for a query."""
    body: dict[str, Any] = {"limit": query.limit, "conf": {"context": "on"}}
    if query.collections is not None:
        body["collections"] = query.collections
    if query.ids is not None:
        body["ids"] = query.ids
    if query.bbox is not None:
        body["bbox"] = list(query.bbox)
    if query.datetime is not None:
        low, high = query.datetime
        body["datetime"] = (
            f"{'..' if low is None else iso(low)}/{'..' if high is None else iso(high)}"
        )
    if query.q is not None:
        # Words of a term must all match (pgstac would read bare spaces as "adjacent").
        body["q"] = [" AND ".join(t.split()) for t in query.q if t]
    if query.filter is not None:
        body["filter"] = pgstac_filter(query.filter)
        body["filter-lang"] = "cql2-json"
    body["sortby"] = [{"field": f, "direction": d} for f, d in query.sort_keys()]
    if query.token:
        token = query.token
        body["token"] = token if token.startswith(("next:", "prev:")) else f"next:{token}"
    return body


class PgstacCatalog(Catalog):
    """STAC items in PostgreSQL, through pgstac."""

    def __init__(self, url: str):
        try:
            from pypgstac.db import PgstacDB
        except ModuleNotFoundError as exc:
            raise MissingExtraError(
                "a postgresql:// catalog needs optional dependencies:"
                " pip install 'pixelfleet[pgstac]'"
            ) from exc
        self.url = url
        self._db = PgstacDB(dsn=url)
        self._pool: Any = None
        self._pool_lock = threading.Lock()
        try:
            self._migrate()
        except Exception as exc:
            self._db.close()
            raise CatalogError(f"cannot open the pgstac catalog at {_safe(url)}: {exc}") from exc

    def _migrate(self) -> None:
        from pypgstac.migrate import Migrate

        with _migrate_lock:
            if self.url not in _migrated:
                Migrate(self._db).run_migration()
                # pgstac's free-text search computes this expression for every row it
                # reads; a GIN index on it answers q from the index (70 -> 14 ms at 100k).
                import psycopg

                with psycopg.connect(self.url, autocommit=True) as conn:
                    conn.execute(TEXT_INDEX)
                _migrated.add(self.url)

    def _readers(self) -> Any:
        """The pool searches take connections from (opened on the first search): with one
        shared connection, every request thread of a server would wait for the others."""
        with self._pool_lock:
            if self._pool is None:
                from psycopg_pool import ConnectionPool

                self._pool = ConnectionPool(
                    self.url,
                    min_size=1,
                    max_size=POOL_SIZE,
                    kwargs={"autocommit": True},
                    configure=_configure,
                    open=True,
                    name="pixelfleet-pgstac",
                )
            return self._pool

    @override
    def close(self) -> None:
        with self._pool_lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None
        # pypgstac keeps one connection checked out of its pool (``connect()``), which
        # closing the pool leaves open: close it first, or every catalog leaks one.
        held = self._db.connection
        if held is not None and not held.closed:
            held.close()
        self._db.connection = None
        self._db.close()

    def _loader(self) -> Any:
        from pypgstac.load import Loader

        return Loader(self._db)

    @override
    def save_collection(self, collection: dict[str, Any]) -> None:
        from pypgstac.load import Methods

        try:
            self._loader().load_collections(iter([collection]), Methods.upsert)
        except Exception as exc:
            raise CatalogError(
                f"pgstac refused collection {collection.get('id')!r}: {exc}"
            ) from exc

    @override
    def upsert(self, items: Sequence[dict[str, Any]]) -> int:
        from pypgstac.load import Methods

        if not items:
            return 0
        for item in items:
            check_item(item)
            item_interval(item)  # a bad datetime is the caller's mistake, not the database's
        known = {c["id"] for c in self._raw_collections()}
        missing = {i["collection"] for i in items} - known
        if missing:
            raise ItemNotFoundError(
                f"collection {sorted(missing)[0]!r} does not exist in the catalog; create it first"
            )
        # The same item twice in one load would conflict with itself: the last one wins.
        unique = {(i["collection"], i["id"]): _storable(i) for i in items}
        try:
            self._loader().load_items(iter(list(unique.values())), Methods.upsert)
        except Exception as exc:
            raise CatalogError(f"pgstac refused the items: {exc}") from exc
        return len(items)

    @override
    def delete(self, collection_id: str, item_ids: Sequence[str]) -> int:
        import psycopg

        idents = list(dict.fromkeys(item_ids))
        if not idents:
            return 0
        try:
            conn = self._db.connect()
            with conn.transaction(), conn.cursor() as cursor:
                # pgstac's delete_item fails for an item that is not there: lock the ones
                # that are, so that no other writer removes them in between.
                cursor.execute(
                    "SELECT id FROM items WHERE collection = %s AND id = ANY(%s) FOR UPDATE",
                    [collection_id, idents],
                )
                found = [row[0] for row in cursor.fetchall()]
                if found:
                    cursor.executemany(
                        "SELECT delete_item(%s, %s)", [(i, collection_id) for i in found]
                    )
        except psycopg.Error as exc:
            raise CatalogError(
                f"pgstac could not delete items of collection {collection_id!r}: {exc}"
            ) from exc
        return len(found)

    def _raw_collections(self) -> list[dict[str, Any]]:
        # By code point, as every catalog lists them, whatever the database's locale.
        rows = self._db.query('SELECT content FROM collections ORDER BY id COLLATE "C"')
        return [r[0] for r in rows]

    @override
    def collections(self) -> list[dict[str, Any]]:
        out = []
        extents = {
            r[0]: r[1:]
            for r in self._db.query(
                "SELECT collection, min(datetime), max(end_datetime), ST_XMin(ST_Extent(geometry)),"
                " ST_YMin(ST_Extent(geometry)), ST_XMax(ST_Extent(geometry)),"
                " ST_YMax(ST_Extent(geometry)) FROM items GROUP BY collection"
            )
        }
        for collection in self._raw_collections():
            extent = extents.get(collection["id"])
            if extent is not None:
                start, end, *box = extent
                if box[0] is not None:
                    collection["extent"]["spatial"]["bbox"] = [[float(v) for v in box]]
                collection["extent"]["temporal"]["interval"] = [
                    [iso(start.timestamp()), iso(end.timestamp())]
                ]
            out.append(collection)
        return out

    @override
    def search(self, query: SearchQuery) -> SearchPage:
        import psycopg

        if query.q is not None and not any(query.q):
            return SearchPage(items=[], matched=0)
        try:
            with self._readers().connection() as conn:
                if sorts_here(query):
                    return self._sorted_here(conn, query)
                row = conn.execute(
                    "SELECT search(%s::jsonb)", [_jsonb(search_body(query))]
                ).fetchone()
            result = row[0] if row else None
        except psycopg.errors.RaiseException as exc:
            raise BadQueryError(f"pgstac refused the search: {exc.diag.message_primary}") from exc
        except (psycopg.errors.DataError, psycopg.errors.UndefinedFunction) as exc:
            # A value of the wrong type for what it is compared with ("operator does not
            # exist: text < integer"): the query's, not the server's, to fix.
            raise BadQueryError(f"pgstac refused the search: {exc.diag.message_primary}") from exc
        except psycopg.Error as exc:
            raise CatalogError(f"pgstac search failed: {exc}") from exc
        data: dict[str, Any] = result if isinstance(result, dict) else {}
        token = None
        for link in data.get("links") or []:
            if link.get("rel") == "next":
                body = link.get("body") or {}
                token = body.get("token") or str(link.get("href", "")).partition("token=")[2]
        return SearchPage(
            items=[_readable(i) for i in data.get("features") or []],
            matched=data.get("numberMatched"),
            next_token=token or None,
        )

    def _sorted_here(self, conn: Any, query: SearchQuery) -> SearchPage:
        """A search sorted by properties: pgstac's WHERE clause, our ORDER BY and pages
        (see :mod:`pixelfleet.catalog.pgstac_sort`)."""
        body = {k: v for k, v in search_body(query).items() if k not in ("sortby", "token")}
        where = conn.execute("SELECT stac_search_to_where(%s::jsonb)", [_jsonb(body)]).fetchone()
        where_sql = str(where[0] or "") if where else ""
        keys = query.sort_keys()
        sql, params = page_sql(where_sql, keys, decode_token(query), query.limit + 1)
        rows = conn.execute(sql, params).fetchall()
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        if not more and query.token is None:
            matched: int | None = len(rows)
        else:
            counted = conn.execute(count_sql(where_sql)).fetchone()[0]
            matched = int(counted) if counted <= COUNT_CAP else None
        return SearchPage(
            items=[_readable(r[0]) for r in rows],
            matched=matched,
            next_token=encode_token(query, last_values(rows[-1], keys)) if more else None,
        )


#: pgstac needs a geometry; items without one (photos) get an empty one, which no
#: spatial search matches, and get ``null`` back when read.
_NO_GEOMETRY = {"type": "GeometryCollection", "geometries": []}


def _storable(item: dict[str, Any]) -> dict[str, Any]:
    if item.get("geometry") is not None:
        return item
    return {**item, "geometry": _NO_GEOMETRY}


def _readable(item: dict[str, Any]) -> dict[str, Any]:
    """An item as stored, from what pgstac gives back: no geometry where it had none, and
    ``properties.datetime`` (which STAC requires, null for an item with a date range)
    where pgstac, which drops null properties when it stores an item, left it out."""
    properties = item.get("properties")
    if isinstance(properties, dict):
        properties.setdefault("datetime", None)
    geometry = item.get("geometry")
    empty = isinstance(geometry, dict) and geometry.get("type") == "GeometryCollection"
    if empty and not geometry.get("geometries"):  # type: ignore[union-attr]
        item["geometry"] = None
        item.pop("bbox", None)
    return item


def _configure(conn: Any) -> None:
    """A pooled connection: pgstac's schema first, JSON decoded by orjson when installed."""
    conn.execute("SET search_path TO pgstac, public")
    try:
        import orjson
    except ModuleNotFoundError:  # pragma: no cover - depends on the extras installed
        return
    from psycopg.types.json import set_json_loads

    set_json_loads(orjson.loads, conn)


def _jsonb(value: Any) -> Any:
    from psycopg.types.json import Jsonb

    return Jsonb(value)


def _safe(url: str) -> str:
    """A database URL without its password, for messages."""
    head, sep, tail = url.partition("@")
    if not sep or ":" not in head.split("//", 1)[-1]:
        return url
    scheme, _, user = head.partition("//")
    return f"{scheme}//{user.split(':', 1)[0]}:***@{tail}"
