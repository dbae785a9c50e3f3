"""``pixelfleet index``: rebuild a pipeline's STAC items from its sources and current outputs.

Nothing is rendered: the worker runs in ``"index"`` mode (see
:data:`~pixelfleet.ops.base.Mode`). Each object is checked as ``pixelfleet run`` checks
it (an object ``run`` refuses fails here with the same message, before anything is
decoded), its header is read for its item, and outputs that are current are described
in it (the others left out). Use it after adding a ``[catalog]`` to a pipeline whose
tasks are already done, or to refill a catalog.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pixelfleet.catalog import Catalog, open_catalog
from pixelfleet.errors import ConfigError
from pixelfleet.models import Entry, EntryResult
from pixelfleet.pipeline import Pipeline
from pixelfleet.settings import get_settings
from pixelfleet.sources.listing import select
from pixelfleet.storage import open_storage


@dataclass
class IndexSummary:
    """What ``index`` did."""

    run_id: str
    catalog_url: str
    collection: str
    indexed: int = 0
    without_outputs: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0


def reindex(
    pipeline: Pipeline, catalog: Catalog | None = None, threads: int = 8, batch: int = 500
) -> IndexSummary:
    """Build and upsert the item of every object the pipeline selects, ``threads`` at a time."""
    from pixelfleet.worker import prepare, process_entry

    section = pipeline.catalog
    if section is None:
        raise ConfigError(
            f"{pipeline.path or 'the pipeline'} has no [catalog] section; add one, e.g."
            ' [catalog] collection = "naip"'
        )
    started = time.monotonic()
    owned = catalog is None
    url = section.url or get_settings().catalog_url
    catalog = catalog or open_catalog(url)
    summary = IndexSummary(
        run_id="index-" + time.strftime("%Y%m%d-%H%M%S"),
        catalog_url=url,
        collection=section.collection,
    )
    try:
        catalog.ensure_collection(section.collection, section.title, section.description)
        prepared = prepare(json.dumps(pipeline.to_json_dict()))
        source = open_storage(pipeline.source.url, get_settings())
        src = pipeline.source
        entries = select(source, src.include, src.exclude, src.ignore_case)

        def one(entry: Entry) -> EntryResult:
            return process_entry(prepared, entry, "index")

        pending = []
        with ThreadPoolExecutor(max_workers=threads) as pool:
            for result in _bounded_map(pool, one, entries, threads * 4):
                if result.item is None:
                    summary.failed.append((result.key, f"{result.error_type}: {result.error}"))
                    continue
                if not result.outputs:
                    summary.without_outputs += 1
                result.item["properties"]["pixelfleet:run_id"] = summary.run_id
                pending.append(result.item)
                if len(pending) >= batch:
                    summary.indexed += catalog.upsert(pending)
                    pending = []
        if pending:
            summary.indexed += catalog.upsert(pending)
    finally:
        if owned:
            catalog.close()
    summary.seconds = time.monotonic() - started
    return summary


def _bounded_map(
    pool: ThreadPoolExecutor, fn: object, items: Iterator[Entry], window: int
) -> Iterator[EntryResult]:
    """``pool.map`` that keeps at most ``window`` entries in flight (listings can be huge)."""
    from collections import deque

    futures: deque[Any] = deque()
    for item in items:
        futures.append(pool.submit(fn, item))  # type: ignore[arg-type]
        if len(futures) >= window:
            yield futures.popleft().result()
    while futures:
        yield futures.popleft().result()
