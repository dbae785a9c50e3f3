"""The glue: list -> plan -> skip what is current -> execute -> record -> summarise.

Every path goes through :class:`Runner`: a first run, a resumed run after a crash
(just run the pipeline again: tasks the ledger holds as done are skipped, and outputs
that are already current are not rewritten), and ``retry --failed``.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pixelfleet.catalog import Catalog
from pixelfleet.catalog.indexer import ItemIndexer
from pixelfleet.errors import ConfigError, PixelfleetError
from pixelfleet.executors import Executor, Job, open_executor
from pixelfleet.ledger import Ledger, RunRecord, TaskRecord
from pixelfleet.models import Entry, Task, TaskResult
from pixelfleet.pipeline import Pipeline, Source, pipeline_from_dict
from pixelfleet.plan import PlanStats, in_shard, plan
from pixelfleet.settings import get_settings
from pixelfleet.sources.listing import select
from pixelfleet.storage import open_storage, scheme_of

#: How many planned tasks are checked against the ledger at once.
_CHUNK = 256
#: Ledger writes are batched; flush at least this often (seconds) or this many records.
_FLUSH_SECONDS = 0.5
_FLUSH_RECORDS = 500


@dataclass
class RunSummary:
    """What a run did, for the CLI summary and for tests."""

    run_id: str
    state: str
    executor: str
    output_url: str
    seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    failures: list[TaskRecord] = field(default_factory=list)

    @property
    def failed(self) -> int:
        """Tasks that ended failed."""
        return self.counts.get("tasks_failed", 0)


@dataclass
class DryRunReport:
    """What a run would do."""

    tasks: int = 0
    objects: int = 0
    bytes: int = 0
    already_done: int = 0
    sample: list[Task] = field(default_factory=list)
    unmatched: int = 0  # objects no scene pattern matched (scene partitions)


def new_run_id() -> str:
    """A sortable, readable run id: ``20261121-101500-3fa2``."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def check_executor_fits(pipeline: Pipeline, executor_spec: str) -> None:
    """Refuse combinations that cannot work, before anything starts."""
    name = executor_spec.split("://", 1)[0]
    if name != "inline":
        for section, url in (("source", pipeline.source.url), ("output", pipeline.output.url)):
            if scheme_of(url) == "memory":
                raise ConfigError(
                    f"{section}.url {url!r} is memory:// storage, which lives inside one process; "
                    f"executor {executor_spec!r} runs workers in other processes. "
                    "Use --executor inline, or a file:// or s3:// URL."
                )


class Runner:
    """Runs one pipeline against one ledger."""

    def __init__(
        self,
        pipeline: Pipeline,
        ledger: Ledger,
        executor: str | None = None,
        workers: int | None = None,
        progress: bool | None = None,
        shard: tuple[int, int] | None = None,
        catalog: Catalog | None = None,
        only: Sequence[str] = (),
    ):
        self.pipeline = pipeline
        self.catalog = catalog
        self.ledger = ledger
        self.executor_spec = executor or pipeline.run.executor
        self.workers = workers or pipeline.run.workers
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.shard = shard
        self.only = tuple(only)
        check_executor_fits(pipeline, self.executor_spec)

    # -- planning -------------------------------------------------------------------------

    def planned_tasks(self, stats: PlanStats | None = None) -> Iterator[Task]:
        """The pipeline's tasks, lazily, in key order (only this shard's, if sharded,
        and only the groups named by ``only``, if given)."""
        src = self.pipeline.source
        entries = source_entries(src)
        tasks = plan(entries, src.partition, self.pipeline.settings_hash, stats)
        if self.only:
            tasks = (t for t in tasks if matches_only(t.group, self.only))
        if self.shard is not None:
            index, count = self.shard
            tasks = (t for t in tasks if in_shard(t, index, count))
        return tasks

    def dry_run(self, sample: int = 10) -> DryRunReport:
        """Count tasks, objects and bytes, and how many tasks are already done; write nothing."""
        report = DryRunReport()
        stats = PlanStats()
        for chunk in _chunks(self.planned_tasks(stats), _CHUNK):
            done = self.ledger.done_ids([t.id for t in chunk])
            for task in chunk:
                report.tasks += 1
                report.objects += len(task.entries)
                report.bytes += task.size
                if task.id in done:
                    report.already_done += 1
                elif len(report.sample) < sample:
                    report.sample.append(task)
        report.unmatched = stats.unmatched
        return report

    # -- running --------------------------------------------------------------------------

    def run(self) -> RunSummary:
        """Run the pipeline: every task not already done, with retries; then summarise."""
        open_storage(self.pipeline.output.url, get_settings())  # fail early on a bad URL
        record = RunRecord(
            run_id=new_run_id(),
            pipeline_path=self.pipeline.path or "",
            pipeline=self.pipeline.to_json_dict(),
            executor=self.executor_spec,
            created=time.time(),
        )
        self.ledger.save_run(record)
        return self._execute(record, self.planned_tasks(), skip_done=True)

    def retry(self, run_id: str | None, unfinished: bool = False) -> RunSummary:
        """Run a recorded run's failed tasks again (and unfinished ones, if asked)."""
        record = self.ledger.get_run(run_id)
        states = ["failed", "pending", "running"] if unfinished else ["failed"]
        records = self.ledger.find_tasks(record.run_id, states)
        previous = dict(record.counts)
        summary = self._execute(
            record, (r.to_task() for r in records), skip_done=False, known=records
        )
        # The run's totals are its first execution's, corrected by what this retry settled.
        by_state = self.ledger.state_counts(record.run_id)
        record.counts = {
            **previous,
            "tasks_done": by_state.get("done", 0),
            "tasks_failed": by_state.get("failed", 0),
            "retries": previous.get("retries", 0) + summary.counts["retries"],
        }
        record.state = "failed" if record.counts["tasks_failed"] else "done"
        self.ledger.save_run(record)
        summary.state = record.state
        summary.counts["tasks_retried"] = len(records)
        return summary

    def _execute(
        self,
        record: RunRecord,
        tasks: Iterable[Task],
        skip_done: bool,
        known: list[TaskRecord] | None = None,
    ) -> RunSummary:
        pipeline = self.pipeline
        attempts_allowed = pipeline.run.attempts
        counts = dict.fromkeys(
            (
                "tasks_planned",
                "tasks_skipped",
                "tasks_done",
                "tasks_failed",
                "retries",
                "objects_written",
                "objects_current",
                "objects_failed",
                "objects_skipped",
                "objects_missing",
                "bytes",
                "items_indexed",
            ),
            0,
        )
        indexer: ItemIndexer | None = None
        by_id = {r.task_id: r for r in known or []}
        lost: list[TaskRecord] = []  # tasks whose worker died: they may have left partial writes
        inflight: dict[str, TaskRecord] = {}
        retry_queue: deque[Job] = deque()
        unsaved: list[TaskRecord] = []
        last_flush = time.monotonic()
        started = time.monotonic()
        plan_iter = iter(tasks)
        exhausted = False
        bar = _progress_bar(self.progress)
        executor: Executor = open_executor(
            self.executor_spec, workers=self.workers, threads=pipeline.threads
        )
        record.executor = executor.describe()
        self.ledger.save_run(record)

        def flush(force: bool = False) -> None:
            nonlocal last_flush, unsaved
            if unsaved and (
                force
                or len(unsaved) >= _FLUSH_RECORDS
                or time.monotonic() - last_flush > _FLUSH_SECONDS
            ):
                self.ledger.save_tasks(record.run_id, unsaved)
                unsaved = []
                last_flush = time.monotonic()
            if indexer is not None:
                counts["items_indexed"] += indexer.flush(force)

        try:
            # Opened inside: a catalog that cannot be reached ends the run as interrupted.
            section = pipeline.catalog
            if section is not None:
                indexer = ItemIndexer.open(
                    section.url,
                    section.collection,
                    section.title,
                    section.description,
                    record.run_id,
                    self.catalog,
                )
            executor.start(json.dumps(pipeline.to_json_dict()), pipeline.run.timeout)
            capacity = max(1, executor.capacity())
            while True:
                # Keep the executor fed: retries first, then new tasks from the plan.
                while retry_queue and len(inflight) < capacity + len(retry_queue):
                    executor.submit(retry_queue.popleft())
                while not exhausted and len(inflight) < capacity:
                    chunk = list(itertools.islice(plan_iter, _CHUNK))
                    exhausted = len(chunk) < _CHUNK
                    done = self.ledger.done_ids([t.id for t in chunk]) if skip_done else set()
                    for task in chunk:
                        counts["tasks_planned"] += 1
                        if task.id in done:
                            counts["tasks_skipped"] += 1
                            counts["objects_skipped"] += len(task.entries)
                            continue
                        rec = by_id.get(task.id) or TaskRecord.pending(task)
                        rec.state, rec.attempts, rec.updated = "running", 0, time.time()
                        inflight[task.id] = rec
                        unsaved.append(rec)
                        counts["bytes"] += task.size
                        executor.submit(Job(task.id, json.dumps(task.to_dict())))
                    if bar is not None:  # the total grows while the source is still listed
                        if exhausted:
                            bar.set_description("pixelfleet", refresh=False)
                        bar.total = counts["tasks_planned"] - counts["tasks_skipped"]
                        bar.refresh()
                if exhausted and not inflight:
                    break
                for result in executor.results(wait=0.25):
                    if result.error_type in ("WorkerLostError", "TaskTimeoutError"):
                        lost.extend(r for r in [inflight.get(result.task_id)] if r is not None)
                    self._settle(result, inflight, retry_queue, attempts_allowed, counts, unsaved)
                    if indexer is not None and result.task_id not in inflight:
                        indexer.add(result)
                    if bar is not None and result.task_id not in inflight:
                        bar.update(1)
                        bar.set_postfix_str(
                            f"ok={counts['tasks_done']} failed={counts['tasks_failed']}"
                            f" skipped={counts['tasks_skipped']}",
                            refresh=False,
                        )
                flush()
            flush(force=True)
        except BaseException:
            for rec in inflight.values():
                rec.state = "pending"
                unsaved.append(rec)
            flush(force=True)
            record.state, record.finished = "interrupted", time.time()
            record.counts = counts
            self.ledger.save_run(record)
            raise
        finally:
            executor.close()
            if bar is not None:
                bar.close()
            if indexer is not None:
                indexer.close()
        self._remove_partial(lost)
        record.finished = time.time()
        record.counts = counts
        record.state = "failed" if counts["tasks_failed"] else "done"
        self.ledger.save_run(record)
        failures = self.ledger.find_tasks(record.run_id, ["failed"], limit=20)
        return RunSummary(
            run_id=record.run_id,
            state=record.state,
            executor=record.executor,
            output_url=pipeline.output.url,
            seconds=time.monotonic() - started,
            counts=counts,
            failures=failures,
        )

    def _remove_partial(self, lost: list[TaskRecord]) -> None:
        """Clean what writers killed mid-write left in the output (hidden temp files)."""
        if not lost:
            return
        output = open_storage(self.pipeline.output.url, get_settings())
        ops = self.pipeline.make_ops()
        keys = {
            key
            for rec in lost
            for entry in rec.to_task().entries
            for op in ops
            if op.scope == "entry"
            for key in _output_keys(op, entry)
        }
        for rec in lost:  # task-scope ops (scene composites) write per task
            task = rec.to_task()
            for op in ops:
                if op.scope == "task":
                    keys.update(_group_output_keys(op, task))
        output.remove_partial(keys)

    @staticmethod
    def _settle(
        result: TaskResult,
        inflight: dict[str, TaskRecord],
        retry_queue: deque[Job],
        attempts_allowed: int,
        counts: dict[str, int],
        unsaved: list[TaskRecord],
    ) -> None:
        """Fold one result in: retry it, or record it as done or failed."""
        rec = inflight.get(result.task_id)
        if rec is None:
            return  # a late duplicate (at-least-once delivery): the first result counted
        attempts = rec.attempts + 1
        now = time.time()
        if result.state == "failed" and not result.permanent and attempts < attempts_allowed:
            rec.apply(result, attempts, "running", now)
            unsaved.append(rec)
            counts["retries"] += 1
            payload = json.dumps(rec.to_task().to_dict())
            isolate = result.error_type == "WorkerLostError"
            retry_queue.append(Job(rec.task_id, payload, isolate=isolate))
            return
        rec.apply(result, attempts, result.state, now)
        unsaved.append(rec)
        del inflight[result.task_id]
        counts["tasks_done" if result.state == "done" else "tasks_failed"] += 1
        if result.entries:
            counts["objects_written"] += rec.n_done
            counts["objects_current"] += rec.n_skipped
            counts["objects_failed"] += rec.n_failed
            counts["objects_missing"] += rec.n_missing
        else:
            counts["objects_failed"] += len(rec.entries)


def source_entries(src: Source) -> Iterator[Entry]:
    """The source's objects: from its S3 Inventory report if it names one, else a listing;
    through the include/exclude globs and content types either way."""
    settings = get_settings()
    if src.inventory:
        from pixelfleet.sources.s3inventory import inventory_entries, read_manifest

        manifest, root = read_manifest(src.inventory, settings)
        return inventory_entries(
            manifest, root, src.url, src.include, src.exclude, src.ignore_case, src.content_types
        )
    entries = select(open_storage(src.url, settings), src.include, src.exclude, src.ignore_case)
    if not src.content_types:
        return entries
    from pixelfleet.sources.s3inventory import extensions_for

    extensions = extensions_for(src.content_types)
    return (e for e in entries if os.path.splitext(e.key)[1].lower() in extensions)


def matches_only(group: str, only: Sequence[str]) -> bool:
    """Tell whether a task's group is one ``--only`` names: the whole group
    (``landsat/LC08...``) or its last part (the scene's name), ignoring case."""
    last = group.rsplit("/", 1)[-1].lower()
    wanted = {o.strip("/").lower() for o in only}
    return group.lower() in wanted or last in wanted


def _output_keys(op: Any, entry: Any) -> list[str]:
    try:
        return list(op.output_keys(entry))
    except PixelfleetError:  # an unsafe key has no output to clean
        return []


def _group_output_keys(op: Any, task: Task) -> list[str]:
    try:
        return list(op.output_keys_group(task.group or task.entries[0].key, task.entries))
    except (PixelfleetError, IndexError):  # no scene, or an unsafe key: nothing to clean
        return []


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def _progress_bar(enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(
        total=None,
        unit="task",
        desc="pixelfleet (listing)",
        file=sys.stderr,
        mininterval=0.5,
        dynamic_ncols=True,
    )


def pipeline_of(record: RunRecord) -> Pipeline:
    """The pipeline a recorded run used."""
    return pipeline_from_dict(record.pipeline, where=record.pipeline_path or record.run_id)
