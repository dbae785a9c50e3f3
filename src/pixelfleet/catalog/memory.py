"""The in-memory catalog (``memory://``): the reference behaviour every backend must match.

Searching scans every item, so it is the plain-scan baseline too.
"""

from __future__ import annotations

import copy
import functools
import threading
from collections.abc import Sequence
from typing import Any

from typing_extensions import override

from pixelfleet.catalog.base import Catalog, SearchPage, check_item
from pixelfleet.catalog.cql2 import evaluate
from pixelfleet.catalog.query import (
    SearchQuery,
    compare,
    decode_token,
    encode_token,
    iso,
    item_text,
    sort_values,
    text_words,
)
from pixelfleet.catalog.values import item_bbox, item_interval
from pixelfleet.errors import ItemNotFoundError


def text_matches(terms: list[str], item: dict[str, Any]) -> bool:
    """Whether any term's words all appear among the item's indexed words."""
    words = set(text_words(" ".join(item_text(item).values())))
    return any(t and all(_stem(w) in {_stem(x) for x in words} for w in t.split()) for t in terms)


def _stem(word: str) -> str:
    # Close enough to the porter stemmer for plurals, which is what users type.
    for suffix in ("ies", "es", "s"):
        if word.endswith(suffix) and len(word) > len(suffix) + 2:
            return word[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return word


def matches(query: SearchQuery, item: dict[str, Any]) -> bool:
    """Whether an item matches every condition of a query (token and limit aside)."""
    if query.collections is not None and item.get("collection") not in query.collections:
        return False
    if query.ids is not None and item.get("id") not in query.ids:
        return False
    if query.bbox is not None:
        box = item_bbox(item)
        w, s, e, n = query.bbox
        if box is None or not (box[0] <= e and box[2] >= w and box[1] <= n and box[3] >= s):
            return False
    if query.datetime is not None:
        _, start, end = item_interval(item)
        low, high = query.datetime
        if (high is not None and start > high) or (low is not None and end < low):
            return False
    if query.q is not None and not text_matches(query.q, item):
        return False
    return query.filter is None or evaluate(query.filter, item)


class MemoryCatalog(Catalog):
    """Items in a dict, searched by scanning."""

    def __init__(self, url: str = "memory://"):
        self.url = url
        self._items: dict[tuple[str, str], dict[str, Any]] = {}
        self._collections: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    @override
    def upsert(self, items: Sequence[dict[str, Any]]) -> int:
        checked = [check_item(copy.deepcopy(i)) for i in items]
        with self._lock:
            for item in checked:
                if item["collection"] not in self._collections:
                    raise ItemNotFoundError(
                        f"collection {item['collection']!r} does not exist; create it first"
                    )
            for item in checked:
                item_interval(item)  # refuse bad datetimes before storing anything
            for item in checked:
                self._items[(item["collection"], item["id"])] = item
        return len(checked)

    @override
    def delete(self, collection_id: str, item_ids: Sequence[str]) -> int:
        with self._lock:
            gone = [self._items.pop((collection_id, i), None) for i in set(item_ids)]
        return sum(1 for item in gone if item is not None)

    @override
    def save_collection(self, collection: dict[str, Any]) -> None:
        with self._lock:
            self._collections[collection["id"]] = copy.deepcopy(collection)

    @override
    def collections(self) -> list[dict[str, Any]]:
        with self._lock:
            out = []
            for cid in sorted(self._collections):
                collection = copy.deepcopy(self._collections[cid])
                items = [i for (c, _), i in self._items.items() if c == cid]
                set_extent(collection, items)
                out.append(collection)
            return out

    @override
    def search(self, query: SearchQuery) -> SearchPage:
        keys = query.sort_keys()
        after = decode_token(query)
        with self._lock:
            found = [i for i in self._items.values() if matches(query, i)]

        def by_keys(a: tuple[list[Any], Any], b: tuple[list[Any], Any]) -> int:
            return compare(a[0], b[0], keys)

        cmp = functools.cmp_to_key(by_keys)
        pairs: list[tuple[list[Any], dict[str, Any]]] = [(sort_values(i, keys), i) for i in found]
        ranked = sorted(pairs, key=cmp)
        if after is not None:
            ranked = [r for r in ranked if compare(r[0], after, keys) > 0]
        page = ranked[: query.limit]
        more = len(ranked) > query.limit
        return SearchPage(
            items=[copy.deepcopy(i) for _, i in page],
            matched=len(found),
            next_token=encode_token(query, page[-1][0]) if more and page else None,
        )


def set_extent(collection: dict[str, Any], items: Sequence[dict[str, Any]]) -> None:
    """Fill a collection's spatial and temporal extent from its items."""
    boxes = [b for b in (item_bbox(i) for i in items) if b is not None]
    if boxes:
        collection["extent"]["spatial"]["bbox"] = [
            [
                min(b[0] for b in boxes),
                min(b[1] for b in boxes),
                max(b[2] for b in boxes),
                max(b[3] for b in boxes),
            ]
        ]
    intervals = [item_interval(i) for i in items]
    if intervals:
        collection["extent"]["temporal"]["interval"] = [
            [iso(min(i[1] for i in intervals)), iso(max(i[2] for i in intervals))]
        ]
