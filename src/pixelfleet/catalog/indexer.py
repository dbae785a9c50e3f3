"""Batching finished work's STAC items into the catalog: by count and on a timer.

One indexer serves ``pixelfleet run`` (items come with task results) and
``pixelfleet index`` (the same worker path, rendering nothing).
"""

from __future__ import annotations

import time
from typing import Any

from pixelfleet.catalog import Catalog, open_catalog
from pixelfleet.models import TaskResult
from pixelfleet.settings import get_settings


class ItemIndexer:
    """Collects finished tasks' STAC items and upserts them into the catalog in batches."""

    BATCH = 500
    SECONDS = 0.2

    def __init__(self, catalog: Catalog, run_id: str, owned: bool):
        self.catalog = catalog
        self.run_id = run_id
        self.owned = owned
        self.pending: list[dict[str, Any]] = []
        self.last = time.monotonic()

    @classmethod
    def open(
        cls,
        url: str | None,
        collection: str,
        title: str | None,
        description: str | None,
        run_id: str,
        catalog: Catalog | None = None,
    ) -> ItemIndexer:
        """An indexer into ``collection``: of ``catalog`` if given, else of the catalog at
        ``url`` (the settings' default for None), which it then owns and closes."""
        owned = catalog is None
        if catalog is None:
            catalog = open_catalog(url or get_settings().catalog_url)
        catalog.ensure_collection(collection, title, description)
        return cls(catalog, run_id, owned)

    def add(self, result: TaskResult) -> None:
        """Queue the items of a task's final result, stamped with the run id."""
        for entry in result.entries:
            if entry.item is not None:
                entry.item["properties"]["pixelfleet:run_id"] = self.run_id
                self.pending.append(entry.item)

    def flush(self, force: bool = False) -> int:
        """Upsert queued items when there are enough, or enough time passed; return how many."""
        if not self.pending or not (
            force or len(self.pending) >= self.BATCH or time.monotonic() - self.last > self.SECONDS
        ):
            return 0
        done = self.catalog.upsert(self.pending)
        self.pending = []
        self.last = time.monotonic()
        return done

    def close(self) -> None:
        """Close the catalog if this indexer opened it."""
        if self.owned:
            self.catalog.close()
