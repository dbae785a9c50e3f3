"""The ``Catalog`` interface: STAC items to store, and search over them.

A catalog keeps STAC items (JSON dicts) by ``(collection, id)``; storing an item
again replaces it, so a rerun updates in place, and :meth:`Catalog.delete` removes
items by id. :meth:`Catalog.search` answers a
:class:`~pixelfleet.catalog.query.SearchQuery` (text, bbox, datetime, ids,
collections, CQL2 filter, sort, page) with one :class:`SearchPage`.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pixelfleet.catalog.query import SearchQuery
from pixelfleet.errors import BadQueryError, ConfigError, ItemNotFoundError

_COLLECTION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def check_collection_id(value: str) -> str:
    """Return ``value`` if it is a valid collection id, else raise :class:`ConfigError`."""
    if not isinstance(value, str) or not _COLLECTION_ID.match(value):
        raise ConfigError(
            f"collection {value!r} is not a valid collection id; use 1-100 letters, digits,"
            " '.', '_' or '-', starting with a letter or digit, e.g. 'naip'"
        )
    return value


@dataclass
class SearchPage:
    """One page of search results."""

    items: list[dict[str, Any]]
    #: Items matching the query over all pages (None when the backend does not count).
    matched: int | None = None
    #: Token for the next page, or None on the last page.
    next_token: str | None = None
    #: Token for the previous page, where the backend offers one.
    prev_token: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def new_collection(
    collection_id: str, title: str | None = None, description: str | None = None
) -> dict[str, Any]:
    """A minimal STAC 1.1 collection; its extent is filled in from the items."""
    return {
        "type": "Collection",
        "stac_version": "1.1.0",
        "id": check_collection_id(collection_id),
        "title": title or collection_id,
        "description": description or f"Items indexed by pixelfleet into {collection_id!r}.",
        "license": "other",
        "extent": {
            "spatial": {"bbox": [[-180.0, -90.0, 180.0, 90.0]]},
            "temporal": {"interval": [[None, None]]},
        },
        "links": [],
    }


def check_item(item: Any) -> dict[str, Any]:
    """Refuse what is not a STAC item this catalog can store (before anything is written)."""
    if not isinstance(item, dict) or item.get("type") != "Feature":
        raise BadQueryError("an item must be a JSON object with type 'Feature'")
    ident = item.get("id")
    if not isinstance(ident, str) or not ident or len(ident) > 1024:
        raise BadQueryError(f"item id {ident!r} must be a non-empty string of at most 1024 chars")
    check_collection_id(str(item.get("collection", "")))
    props = item.get("properties")
    if not isinstance(props, dict):
        raise BadQueryError(f"item {ident!r} has no properties object")
    if not props.get("datetime") and not (
        props.get("start_datetime") and props.get("end_datetime")
    ):
        raise BadQueryError(f"item {ident!r} needs properties.datetime (or start/end_datetime)")
    bbox = item.get("bbox")
    if bbox is not None and (
        not isinstance(bbox, list)
        or len(bbox) not in (4, 6)
        or not all(type(v) in (float, int) for v in bbox)
    ):
        raise BadQueryError(f"item {ident!r} has a bbox that is not 4 or 6 numbers")
    return item


class Catalog(ABC):
    """STAC items by collection and id, searchable.

    Implementations store, remove and search items and store collections; the
    conveniences below build on those five methods, none of which the others can
    stand in for. :class:`~pixelfleet.catalog.memory.MemoryCatalog` is the reference
    behaviour.
    """

    #: The URL this catalog was opened with.
    url: str = ""

    @abstractmethod
    def upsert(self, items: Sequence[dict[str, Any]]) -> int:
        """Insert or replace items (by collection and id) in one transaction; return how many.

        Each item's collection must exist (:meth:`save_collection`), else
        :class:`ItemNotFoundError`; an item that is not a valid STAC item is a
        :class:`BadQueryError`. Either way nothing of the batch is stored. The same
        item twice in one batch: the last one wins.
        """

    @abstractmethod
    def delete(self, collection_id: str, item_ids: Sequence[str]) -> int:
        """Remove items of one collection by id in one transaction; return how many were.

        Ids not in the collection (or a collection that does not exist) are not an
        error: they are simply not counted. Removed items leave every index, and the
        collection's extent is that of the items left.
        """

    @abstractmethod
    def search(self, query: SearchQuery) -> SearchPage:
        """One page of the items matching ``query``."""

    @abstractmethod
    def save_collection(self, collection: dict[str, Any]) -> None:
        """Insert or replace a collection (by id)."""

    @abstractmethod
    def collections(self) -> list[dict[str, Any]]:
        """Every collection, by id, with its extent updated from its items."""

    def close(self) -> None:  # noqa: B027 - optional: most catalogs hold a connection
        """Release connections."""

    def ensure_collection(
        self, collection_id: str, title: str | None = None, description: str | None = None
    ) -> None:
        """Create a collection if it does not exist yet (a title given replaces the old one)."""
        existing = {c["id"]: c for c in self.collections()}
        current = existing.get(collection_id)
        if current is None or (title and current.get("title") != title):
            self.save_collection(new_collection(collection_id, title, description))

    def get_collection(self, collection_id: str) -> dict[str, Any]:
        """A collection by id; :class:`ItemNotFoundError` if there is none."""
        for collection in self.collections():
            if collection["id"] == collection_id:
                return collection
        raise ItemNotFoundError(f"no collection {collection_id!r} in the catalog")

    def get_item(self, collection_id: str, item_id: str) -> dict[str, Any]:
        """An item by collection and id; :class:`ItemNotFoundError` if there is none."""
        page = self.search(SearchQuery(ids=[item_id], collections=[collection_id], limit=1))
        if not page.items:
            raise ItemNotFoundError(f"no item {item_id!r} in collection {collection_id!r}")
        return page.items[0]

    def upsert_all(self, items: Iterable[dict[str, Any]], batch: int = 5000) -> int:
        """Upsert items from any iterable, ``batch`` per transaction."""
        total = 0
        chunk: list[dict[str, Any]] = []
        for item in items:
            chunk.append(item)
            if len(chunk) >= batch:
                total += self.upsert(chunk)
                chunk = []
        if chunk:
            total += self.upsert(chunk)
        return total

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
