"""``pixelfleet index``: rebuild a pipeline's STAC items from its sources and current outputs.

Nothing is rendered: it is a :class:`~pixelfleet.runner.Runner` run in ``"index"`` mode,
so objects come from the same source, go through the same executors and the same
worker checks as ``pixelfleet run`` (format sniffed, size limits, GTiff only: what run
refuses, index refuses with the same message), and items reach the catalog through
the same indexer. Each object's header is read for its item, and outputs that are
current are described in it (the others left out). Use it after adding a
``[catalog]`` to a pipeline whose tasks are already done, or to refill a catalog.

The run is kept in a ledger of its own in memory: indexing is not rendering, so it
must never mark a task done for ``pixelfleet run``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pixelfleet.catalog import Catalog
from pixelfleet.errors import ConfigError
from pixelfleet.ledger.memory import MemoryLedger
from pixelfleet.pipeline import Pipeline
from pixelfleet.runner import Runner
from pixelfleet.settings import get_settings


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
    pipeline: Pipeline,
    catalog: Catalog | None = None,
    threads: int | None = None,
    executor: str | None = None,
    workers: int | None = None,
    progress: bool | None = False,
) -> IndexSummary:
    """Build and upsert the item of every object the pipeline selects, on the pipeline's
    executor (or ``executor``) with ``threads`` objects in flight per worker process."""
    section = pipeline.catalog
    if section is None:
        raise ConfigError(
            f"{pipeline.path or 'the pipeline'} has no [catalog] section; add one, e.g."
            ' [catalog] collection = "naip"'
        )
    if threads is not None:
        pipeline = pipeline.model_copy(
            update={"run": pipeline.run.model_copy(update={"threads": threads})}
        )
    with MemoryLedger() as ledger:
        runner = Runner(
            pipeline,
            ledger,
            executor=executor,
            workers=workers,
            progress=progress,
            catalog=catalog,
            mode="index",
        )
        summary = runner.run()
        failed = [
            (f["key"] or rec.group, f"{f['error_type']}: {f['error']}")
            for rec in ledger.find_tasks(summary.run_id, ["failed"])
            for f in (
                rec.failures
                or [{"key": "", "error_type": rec.error_type or "", "error": rec.error or ""}]
            )
        ]
    return IndexSummary(
        run_id=summary.run_id,
        catalog_url=section.url or get_settings().catalog_url,
        collection=section.collection,
        indexed=summary.counts.items_indexed,
        without_outputs=summary.counts.objects_unrendered,
        failed=failed,
        seconds=summary.seconds,
    )
