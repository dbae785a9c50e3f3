"""The glue: source -> plan -> skip what is done -> execute -> record -> acknowledge.

Every path goes through :class:`Runner`: a first run, a resumed run after a crash
(just run the pipeline again: tasks the ledger holds as done are skipped, and outputs
that are already current are not rewritten), ``retry --failed``, and a source that
never ends. Entries are taken from the source as they arrive (in a thread of their
own, so a source may block), their tasks are submitted at once, and ledger and
catalog writes are flushed by count and on a short timer; once an entry's outcome is
recorded in both, the source is told (``Source.ack``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import secrets
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pixelfleet import metrics
from pixelfleet.catalog import Catalog
from pixelfleet.catalog.indexer import ItemIndexer
from pixelfleet.errors import ConfigError, InputError, TaskTimeoutError, WorkerLostError
from pixelfleet.executors import Executor, Job, open_executor, parse_executor
from pixelfleet.ledger import Ledger, RunRecord, TaskRecord, TaskStats
from pixelfleet.ledger.base import HEARTBEAT_SECONDS
from pixelfleet.models import Entry, EntryResult, RunCounts, Task, TaskResult
from pixelfleet.ops.base import Mode, OpContext
from pixelfleet.pipeline import Partition, Pipeline, pipeline_from_dict
from pixelfleet.plan import PlanStats, in_shard, plan, skip_reason
from pixelfleet.settings import get_settings
from pixelfleet.sources.base import Source
from pixelfleet.storage import open_storage
from pixelfleet.urls import scheme_of

#: How many planned tasks are checked against the ledger at once.
_CHUNK = 256
#: Ledger writes are batched; flush at least this often (seconds) or this many records.
_FLUSH_SECONDS = 0.2
_FLUSH_RECORDS = 500
#: How long the loop waits for results or new entries when it has nothing else to do;
#: while it could take more work, it looks for new entries this often.
_IDLE_WAIT = 0.25
#: Errors of a task whose worker stopped mid-task: it may have left partial writes.
_DIED_MID_TASK = (WorkerLostError.__name__, TaskTimeoutError.__name__)
_BUSY_WAIT = 0.05
#: After the first new task, how long to wait for more to take in the same batch.
_GATHER = 0.01


@dataclass
class RunSummary:
    """What a run did, for the CLI summary and for tests."""

    run_id: str
    state: str
    executor: str
    output_url: str
    seconds: float = 0.0
    counts: RunCounts = field(default_factory=RunCounts)
    failures: list[TaskRecord] = field(default_factory=list)
    #: Task time percentiles and error kinds over the run's settled tasks.
    stats: TaskStats | None = None
    #: Objects listed but never read (the first 20), each with its reason in ``error``.
    skipped: list[TaskRecord] = field(default_factory=list)

    @property
    def failed(self) -> int:
        """Tasks that ended failed."""
        return self.counts.tasks_failed


@dataclass
class DryRunReport:
    """What a run would do."""

    tasks: int = 0
    objects: int = 0
    bytes: int = 0
    already_done: int = 0
    sample: list[Task] = field(default_factory=list)
    unmatched: int = 0  # objects no scene pattern matched (scene partitions)
    refused: int = 0  # objects that would be skipped unread (``Entry.skip``), not counted above


#: A dry run checks the steps against at most this many sampled tasks (headers only).
_CHECKED_TASKS = 8


class InputCheck:
    """A dry run's check of the steps against real inputs (:meth:`Op.check_inputs
    <pixelfleet.ops.base.Op.check_inputs>`): the first task, then each task that brings
    a file type (extension) not seen yet, with only those new objects for per-object
    steps; at most :data:`_CHECKED_TASKS` tasks, reading headers only."""

    def __init__(self, pipeline: Pipeline):
        self.pipeline = pipeline
        self.ops = pipeline.make_ops()
        self.kinds: set[str] = set()
        self.checked = 0
        self._ctx: OpContext | None = None

    def __call__(self, task: Task) -> None:
        """Check ``task`` if it brings a new file type; a step whose settings do not fit
        raises a ``ConfigError`` naming the pipeline file and the step."""
        if self.checked >= _CHECKED_TASKS or not task.entries:
            return
        fresh = {}
        for entry in task.entries:
            kind = os.path.splitext(entry.key)[1].lower()
            if kind not in self.kinds and kind not in fresh:
                fresh[kind] = entry
        if not fresh:
            return
        self.kinds.update(fresh)
        self.checked += 1
        group = task.group or task.entries[0].key
        for i, op in enumerate(self.ops):
            sample = task.entries if op.scope == "task" else tuple(fresh.values())
            try:
                op.check_inputs(self.context(), group, sample)
            except ConfigError as exc:
                where = self.pipeline.path or "pipeline"
                raise ConfigError(f"{where}: steps[{i}] ({op.name}): {exc}") from None
            except InputError:
                continue  # a bad object, not a bad setting: it fails on its own in the run

    def context(self) -> OpContext:
        """What the checks read through: the source; outputs go nowhere (none are written)."""
        if self._ctx is None:
            settings = self.pipeline.run.worker_settings(get_settings())
            self._ctx = OpContext(
                source=open_storage(self.pipeline.source.url, settings),
                output=open_storage("memory://pixelfleet-dry-run", settings),
                settings=settings,
                scene_pattern=self.pipeline.source.partition.pattern,
            )
        return self._ctx


def new_run_id() -> str:
    """A run id that sorts by start time (UTC, to the second) and is unique across machines
    starting at once (64 random bits): ``20261121-101500-3fa2c9e1d0b7a845``."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(8)


def check_executor_fits(pipeline: Pipeline, executor_spec: str) -> None:
    """Refuse combinations that cannot work, before anything starts."""
    name, _ = parse_executor(executor_spec)
    if name != "inline":
        for section, url in (("source", pipeline.source.url), ("output", pipeline.output.url)):
            if scheme_of(url) == "memory":
                raise ConfigError(
                    f"{section}.url {url!r} is memory:// storage, which lives inside one process; "
                    f"executor {executor_spec!r} runs workers in other processes. "
                    "Use --executor inline, or a file:// or s3:// URL."
                )


class Runner:
    """Runs one pipeline against one ledger, taking its work from one source."""

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
        source: Source | None = None,
        mode: Mode = "render",
    ):
        self.pipeline = pipeline
        self.catalog = catalog
        self.ledger = ledger
        self.executor_spec = executor or pipeline.run.executor
        self.workers = workers or pipeline.run.workers
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.shard = shard
        self.only = tuple(only)
        self._source = source
        #: ``"render"`` runs the steps; ``"index"`` (``pixelfleet index``) only rebuilds the
        #: items, from the sources' headers and the outputs that are current.
        self.mode = mode
        self._stopping = threading.Event()
        check_executor_fits(pipeline, self.executor_spec)

    def stop(self) -> None:
        """Ask a running :meth:`run` to take no more entries, finish the tasks in flight,
        record them and return (how a run over an endless source ends). Thread-safe."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        """:meth:`stop` was called."""
        return self._stopping.is_set()

    @property
    def source(self) -> Source:
        """Where entries come from: as given, else what the pipeline's ``[source]`` names."""
        if self._source is None:
            self._source = self.pipeline.make_source()
        return self._source

    # -- planning -------------------------------------------------------------------------

    @property
    def partition(self) -> Partition:
        """How entries are grouped into tasks: the pipeline's partition, except that
        ``auto`` over a source that may never end (events) is one task per object, so an
        entry never waits for a batch to fill."""
        partition = self.pipeline.source.partition
        if partition.by == "auto" and not source_ends(self.source):
            return partition.model_copy(update={"by": "object"})
        return partition

    def planned_tasks(self, stats: PlanStats | None = None) -> Iterator[Task]:
        """The pipeline's tasks, lazily, as the source yields entries (only this shard's, if
        sharded, and only the groups named by ``only``, if given)."""
        tasks = plan(self.source.entries(), self.partition, self.pipeline.settings_hash, stats)
        if self.only:
            tasks = (t for t in tasks if matches_only(t.group, self.only))
        if self.shard is not None:
            index, count = self.shard
            tasks = (t for t in tasks if in_shard(t, index, count))
        return tasks

    def dry_run(self, sample: int = 10) -> DryRunReport:
        """Count tasks, objects and bytes, and how many tasks are already done; write nothing.

        The steps are checked against a sample of the inputs too (:class:`InputCheck`): a
        setting no input can satisfy raises a ``ConfigError``, as the run would fail."""
        report = DryRunReport()
        stats = PlanStats()
        check = InputCheck(self.pipeline)
        for chunk in _chunks(self.planned_tasks(stats), _CHUNK):
            done = self.ledger.done_ids([t.id for t in chunk])
            for task in chunk:
                if skip_reason(task) is not None:
                    report.refused += 1
                    continue
                report.tasks += 1
                report.objects += len(task.entries)
                report.bytes += task.size
                check(task)
                if task.id in done:
                    report.already_done += 1
                elif len(report.sample) < sample:
                    report.sample.append(task)
        report.unmatched = stats.unmatched
        return report

    # -- running --------------------------------------------------------------------------

    def run(self) -> RunSummary:
        """Run the pipeline: every task not already done, with retries, for as long as the
        source yields entries; then summarise."""
        open_storage(self.pipeline.output.url, get_settings())  # fail early on a bad URL
        record = self.new_record(self.executor_spec)
        self.ledger.save_run(record)
        return self._execute(record, self.planned_tasks(), skip_done=True)

    def run_tasks(
        self, tasks: Iterable[Task], record: RunRecord | None = None, skip_done: bool = False
    ) -> RunSummary:
        """Run tasks planned by the caller (``pixelfleet watch`` plans one task per event),
        under ``record`` (a new run if None), with the same execution, retries, ledger,
        catalog and acknowledgements (to this runner's source) as :meth:`run`. Without
        ``skip_done`` every task goes to a worker, which still skips outputs that are
        current: an object deleted and uploaded again with the same bytes is remade."""
        if record is None:
            record = self.new_record(self.executor_spec)
            self.ledger.save_run(record)
        return self._execute(record, tasks, skip_done=skip_done)

    def new_record(self, executor: str) -> RunRecord:
        """A run record for this pipeline, started now by this process."""
        return RunRecord(
            run_id=new_run_id(),
            pipeline_path=self.pipeline.path or "",
            pipeline=self.pipeline.to_json_dict(),
            executor=executor,
            created=time.time(),
            host=socket.gethostname(),
            pid=os.getpid(),
            heartbeat=self.ledger.now(),
        )

    def retry(self, run_id: str | None, unfinished: bool = False) -> RunSummary:
        """Run a recorded run's failed tasks again (and unfinished ones, if asked)."""
        record = self.ledger.get_run(run_id)
        states = ["failed", "pending", "running"] if unfinished else ["failed"]
        records = self.ledger.find_tasks(record.run_id, states)
        previous = dataclasses.replace(record.counts)
        summary = self._execute(
            record, (r.to_task() for r in records), skip_done=False, known=records
        )
        # The run's totals are its first execution's, corrected by what this retry settled.
        by_state = self.ledger.state_counts(record.run_id)
        previous.tasks_done = by_state.get("done", 0)
        previous.tasks_failed = by_state.get("failed", 0)
        previous.retries += summary.counts.retries
        record.counts = previous
        record.state = "failed" if previous.tasks_failed else "done"
        self.ledger.save_run(record)
        summary.state = record.state
        summary.counts.tasks_retried = len(records)
        return summary

    def _execute(
        self,
        record: RunRecord,
        tasks: Iterable[Task],
        skip_done: bool,
        known: list[TaskRecord] | None = None,
    ) -> RunSummary:
        started = time.monotonic()
        executor: Executor = open_executor(
            self.executor_spec, workers=self.workers, threads=self.pipeline.threads
        )
        record.executor = executor.describe()
        self.ledger.save_run(record)
        run = _Execution(self, record, executor, skip_done, known or [])
        try:
            run.loop(tasks)
        except BaseException:
            run.interrupted()
            raise
        finally:
            run.close()
        if run.lost:
            output = open_storage(self.pipeline.output.url, get_settings())
            output.remove_partial(
                {key for rec in run.lost for key in self.pipeline.output_keys(rec.to_task())}
            )
        record.finished = time.time()
        record.counts = run.counts
        record.state = "failed" if run.counts.tasks_failed else "done"
        self.ledger.save_run(record)
        failures = self.ledger.find_tasks(record.run_id, ["failed"], limit=20)
        skipped = []
        if run.counts.objects_refused:
            skipped = self.ledger.find_tasks(record.run_id, ["skipped"], limit=20)
        return RunSummary(
            run_id=record.run_id,
            state=record.state,
            executor=record.executor,
            output_url=self.pipeline.output.url,
            seconds=time.monotonic() - started,
            counts=run.counts,
            failures=failures,
            stats=self.ledger.task_stats(record.run_id),
            skipped=skipped,
        )


class _Execution:
    """One pass of a runner over a stream of tasks: submit, settle, record, acknowledge."""

    def __init__(
        self,
        runner: Runner,
        record: RunRecord,
        executor: Executor,
        skip_done: bool,
        known: list[TaskRecord],
    ):
        self.runner = runner
        self.ledger = runner.ledger
        self.record = record
        self.executor = executor
        self.skip_done = skip_done
        self.by_id = {r.task_id: r for r in known}
        self.attempts_allowed = runner.pipeline.run.attempts
        self.counts = RunCounts()
        self.lost: list[TaskRecord] = []  # tasks whose worker died: may have left partial writes
        self.inflight: dict[str, TaskRecord] = {}
        self.entries_of: dict[str, tuple[Entry, ...]] = {}  # in flight: what to acknowledge
        self.retry_queue: deque[Job] = deque()
        #: Records waiting for the ledger, by task id: a task admitted and settled between
        #: two flushes is one row, written once, in its latest state.
        self.unsaved: dict[str, TaskRecord] = {}
        #: Final outcomes not yet acknowledged to the source, with each entry's result.
        self.settled: list[tuple[Entry, EntryResult | None]] = []
        self.last_flush = time.monotonic()
        self.indexer: ItemIndexer | None = None
        self.feed: _Feed | None = None
        self.bar = progress_bar(runner.progress)
        #: The executor is started with the first task it gets: a rerun with every task
        #: done starts no worker at all.
        self.started = False
        #: Entries are kept for :meth:`Source.ack` only when the source does something with it.
        source_type = type(runner.source)
        self.acks = source_type.ack is not Source.ack or source_type.settle is not Source.settle
        #: Pauses dispatch while storage is down (issue 12).
        self.breaker = StorageBreaker([runner.pipeline.source.url, runner.pipeline.output.url])

    def loop(self, tasks: Iterable[Task]) -> None:
        """Feed the executor from ``tasks`` and settle results until both run dry."""
        pipeline = self.runner.pipeline
        section = pipeline.catalog
        if section is not None:
            # Opened here: a catalog that cannot be reached ends the run as interrupted.
            self.indexer = ItemIndexer.open(
                section.url,
                section.collection,
                section.title,
                section.description,
                self.record.run_id,
                self.runner.catalog,
            )
        feed = self.feed = _Feed(iter(tasks), 2 * _CHUNK)
        last_beat = time.monotonic()
        while True:
            if time.monotonic() - last_beat > HEARTBEAT_SECONDS:
                self.ledger.beat(self.record.run_id)
                last_beat = time.monotonic()
            capacity = max(1, self.executor.capacity())
            # Keep the executor fed: retries first, then whatever the source has given.
            if self.breaker.open:
                capacity = self._probe_storage()
            while (
                capacity
                and self.retry_queue
                and len(self.inflight) < capacity + len(self.retry_queue)
            ):
                self.submit(self.retry_queue.popleft())
            if self.runner.stopping and not feed.ended:
                feed.ended = True  # take nothing more; what is in flight still settles
                self.runner.source.close()
            room = not feed.ended and len(self.inflight) < capacity
            if not capacity and not self.inflight:
                time.sleep(_IDLE_WAIT)  # paused with nothing in flight: wait for a probe
            if room:
                if not self.inflight:  # idle: wait for the source, and batch what comes
                    self._admit(feed.take(_CHUNK, _IDLE_WAIT, gather=True))
                elif 2 * len(self.inflight) < capacity or feed.waiting() >= _CHUNK // 4:
                    # Busy: take what is there without waiting (results are due), but
                    # leave a trickle to build up while the executor has plenty to do.
                    self._admit(feed.take(_CHUNK, 0.0, gather=False))
            if feed.ended and not self.inflight:
                break
            if self.inflight:
                wait = _BUSY_WAIT if room else _IDLE_WAIT
                for result in self.executor.results(wait=wait):
                    self._settle(result)
            # Batches are for throughput under load; with nothing in flight, write now.
            self.flush(force=not self.inflight)
        self.flush(force=True)

    def submit(self, job: Job) -> None:
        """Hand a job to the executor, starting the executor with the first one."""
        if not self.started:
            pipeline = self.runner.pipeline
            self.executor.start(json.dumps(pipeline.to_json_dict()), pipeline.run.timeout)
            self.started = True
        self.executor.submit(job)

    def _admit(self, chunk: list[Task]) -> None:
        """Skip what an earlier run did; submit the rest."""
        if not chunk:
            return
        counts = self.counts
        done = self.ledger.done_ids([t.id for t in chunk]) if self.skip_done else set()
        counts.tasks_planned += len(chunk)
        if done:
            skipped = [t for t in chunk if t.id in done]
            counts.tasks_skipped += len(skipped)
            counts.objects_skipped += sum(len(t.entries) for t in skipped)
            if self.acks:
                for task in skipped:
                    self.settled.extend((e, None) for e in task.entries)
            if len(skipped) == len(chunk):
                chunk = []
        for task in chunk:
            if task.id in done:
                continue
            reason = skip_reason(task)
            if reason is not None:  # never read: recorded as skipped, with the reason
                self.unsaved[task.id] = skipped_record(task, reason)
                counts.objects_refused += 1
                if self.acks:
                    self.settled.append((task.entries[0], None))
                continue
            rec = self.by_id.get(task.id) or TaskRecord.pending(task)
            rec.state, rec.attempts, rec.updated = "running", 0, time.time()
            self.inflight[task.id] = rec
            self.entries_of[task.id] = task.entries
            self.unsaved[task.id] = rec
            counts.bytes += task.size
            self.submit(Job(task.id, self._payload(task)))
        bar = self.bar
        if bar is not None:  # the total grows while the source still yields
            if self.feed is not None and self.feed.ended:
                bar.set_description("pixelfleet", refresh=False)
            bar.total = counts.tasks_planned - counts.tasks_skipped - counts.objects_refused
            bar.refresh()

    def _payload(self, task: Task) -> str:
        """A task as the worker reads it (with the mode, when it is not the default)."""
        data = task.to_dict()
        if self.runner.mode != "render":
            data["mode"] = self.runner.mode
        return json.dumps(data)

    def _probe_storage(self) -> int:
        """While a storage failure is held: 0 (submit nothing) until storage answers a
        probe; then settle or re-queue what was held and return the capacity."""
        outcome = self.breaker.poll()
        if outcome is None:
            return 0
        settle, requeue = outcome
        for result in settle:
            self._settle(result, charge=True)
        for result in requeue:  # storage was down: again, without charging an attempt
            rec = self.inflight[result.task_id]
            self.retry_queue.append(Job(rec.task_id, self._payload(rec.to_task())))
        return max(1, self.executor.capacity())

    def _settle(self, result: TaskResult, charge: bool = False) -> None:
        """Fold one result in: retry it, or record it as done or failed (a storage
        failure first waits for :class:`StorageBreaker`, unless ``charge``)."""
        rec = self.inflight.get(result.task_id)
        if rec is None:
            return  # a late duplicate (at-least-once delivery): the first result counted
        counts = self.counts
        # Results are JSON, so the error's class is known by name only.
        if result.error_type in _DIED_MID_TASK:
            self.lost.append(rec)
        if not charge and self.breaker.hold(result):
            return  # settled once a probe tells whether storage is down
        attempts = rec.attempts + 1
        now = time.time()
        if result.state == "failed" and not result.permanent and attempts < self.attempts_allowed:
            rec.apply(result, attempts, "running", now)
            self.unsaved[rec.task_id] = rec
            counts.retries += 1
            counts.requests += metrics.task_settled(self.record.run_id, rec, result, "retried")
            payload = self._payload(rec.to_task())
            isolate = result.error_type == WorkerLostError.__name__
            self.retry_queue.append(Job(rec.task_id, payload, isolate=isolate))
            return
        rec.apply(result, attempts, result.state, now)
        self.unsaved[rec.task_id] = rec
        del self.inflight[result.task_id]
        counts.requests += metrics.task_settled(self.record.run_id, rec, result, result.state)
        if result.state == "done":
            counts.tasks_done += 1
        else:
            counts.tasks_failed += 1
        if result.entries:
            counts.objects_written += rec.n_done
            counts.objects_current += rec.n_skipped
            counts.objects_failed += rec.n_failed
            counts.objects_missing += rec.n_missing
        else:
            counts.objects_failed += len(rec.entries)
        if self.runner.mode == "index":
            counts.objects_unrendered += sum(
                1 for e in result.entries if e.state != "failed" and not e.outputs
            )
        entries = self.entries_of.pop(result.task_id)
        if self.acks:
            self.settled.extend(_outcomes(entries, result))
        if self.indexer is not None:
            self.indexer.add(result)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(
                f"ok={counts.tasks_done} failed={counts.tasks_failed}"
                f" skipped={counts.tasks_skipped}",
                refresh=False,
            )

    def flush(self, force: bool = False) -> None:
        """Write what waits for the ledger and the catalog when there is enough of it or
        it has waited long enough; then acknowledge what both now hold."""
        metrics.progress(self.record.run_id, self.counts, len(self.inflight))
        now = time.monotonic()
        if self.unsaved and (
            force or len(self.unsaved) >= _FLUSH_RECORDS or now - self.last_flush > _FLUSH_SECONDS
        ):
            self.ledger.save_tasks(self.record.run_id, list(self.unsaved.values()))
            self.unsaved = {}
            self.last_flush = now
        if self.indexer is not None:
            self.counts.items_indexed += self.indexer.flush(force)
        if self.settled and not self.unsaved and (self.indexer is None or not self.indexer.pending):
            source = self.runner.source
            for entry, outcome in self.settled:
                source.settle(entry, outcome)
            self.settled = []

    def interrupted(self) -> None:
        """Record the run as interrupted: unfinished tasks go back to pending."""
        for rec in self.inflight.values():
            rec.state = "pending"
            self.unsaved[rec.task_id] = rec
        self.settled = []  # nothing more is acknowledged: a rerun sees those entries again
        with contextlib.suppress(Exception):  # the first error is the one to report
            self.flush(force=True)
        self.record.state, self.record.finished = "interrupted", time.time()
        self.record.counts = self.counts
        self.ledger.save_run(self.record)

    def close(self) -> None:
        """Stop the feed, the executor, the progress bar and the catalog."""
        metrics.progress(self.record.run_id, self.counts, inflight=0)
        if self.feed is not None:
            self.feed.stop()
        self.executor.close()
        if self.bar is not None:
            self.bar.close()
        if self.indexer is not None:
            self.indexer.close()


def skipped_record(task: Task, reason: str) -> TaskRecord:
    """The ledger's record of a task never run because its one object must not be read
    (``Entry.skip``): state ``skipped``, the reason as its error. Such a task is never
    ``done``, so every run lists and reports the object again."""
    rec = TaskRecord.pending(task)
    rec.state, rec.updated, rec.error = "skipped", time.time(), reason
    return rec


def _outcomes(
    entries: Sequence[Entry], result: TaskResult
) -> Iterator[tuple[Entry, EntryResult | None]]:
    """Each entry of a settled task with its result: its own, else (a scene's band files)
    the task's group result, else (the task failed as a whole) one made from the task's
    error."""
    by_key = {e.key: e for e in result.entries}
    whole = result.entries[0] if len(result.entries) == 1 else None
    for entry in entries:
        own = by_key.get(entry.key) or whole
        if own is None:
            own = EntryResult(
                key=entry.key,
                etag=entry.etag,
                state="done" if result.state == "done" else "failed",
                error_type=result.error_type,
                error=result.error,
            )
        yield entry, own


class StorageBreaker:
    """Pauses dispatch while storage is down, instead of burning the tasks' attempts.

    A task that failed with a storage error (``StorageError``: storage calls already
    retry with backoff, so storage failed for seconds) is held, and dispatch paused,
    while a probe (a ``head`` on the source and the output, in a thread) asks whether
    storage answers. If the first probe answers, the failure was the object's own: the
    held tasks are settled as usual (charged an attempt). If it does not, storage is
    down: probes go on every :attr:`probe_every` seconds and, once one answers, the
    held tasks go back to the queue uncharged and dispatch resumes.
    """

    probe_every = 2.0

    def __init__(self, urls: Sequence[str]):
        self.urls = list(urls)
        self.held: list[TaskResult] = []
        self.trips = 0  # outages seen (first probe failed)
        self._down = False  # a probe failed since the first hold
        self._probe: threading.Thread | None = None
        self._answered: bool | None = None
        self._next_probe = 0.0

    @property
    def open(self) -> bool:
        """Dispatch is paused."""
        return bool(self.held)

    def hold(self, result: TaskResult) -> bool:
        """Take a failed result to hold while storage is probed; False if it is no
        storage failure (settle it as usual)."""
        if result.state != "failed" or not _storage_failure(result):
            return False
        self.held.append(result)
        return True

    def poll(self) -> tuple[list[TaskResult], list[TaskResult]] | None:
        """While open, probe storage; when it answers, return ``(settle, requeue)``: the
        held results to settle as usual, and those to queue again uncharged."""
        if not self.held:
            return None
        if self._probe is not None and self._probe.is_alive():
            return None
        if self._probe is not None:
            self._probe = None
            if self._answered:
                held, self.held = self.held, []
                down, self._down = self._down, False
                return ([], held) if down else (held, [])
            if not self._down:
                self.trips += 1
            self._down = True
            self._next_probe = time.monotonic() + self.probe_every
        if time.monotonic() >= self._next_probe:
            self._probe = threading.Thread(target=self._ask, daemon=True)
            self._probe.start()
        return None

    def _ask(self) -> None:
        try:
            for url in self.urls:
                open_storage(url, get_settings()).head("pixelfleet-probe")
        except Exception:  # noqa: BLE001 - still down: probed again later
            self._answered = False
        else:
            self._answered = True


def _storage_failure(result: TaskResult) -> bool:
    failed = [e for e in result.entries if e.state == "failed"]
    if not failed:
        return result.error_type == "StorageError"
    return all(e.error_type == "StorageError" for e in failed)


class _Feed:
    """Tasks pulled from a plan in a thread of their own, so a source that blocks while it
    waits for entries (or never ends) never holds up results, retries or flushes.

    Tasks cross to the runner's thread through a deque, a few hundred at most: appending
    and taking cost a fraction of a microsecond, where a ``queue.Queue`` took a lock and a
    condition per task (a rerun of a million done tasks spent seconds there). The runner
    is woken by an event, which the plan's thread sets only when it is not set already.
    """

    def __init__(self, tasks: Iterator[Task], most: int):
        self._items: deque[Task] = deque()
        self._most = most
        #: Set when a task was added or the plan ended; cleared by the taker before it looks.
        self._ready = threading.Event()
        #: Set when tasks were taken, for a plan waiting for room.
        self._room = threading.Event()
        self._stopped = threading.Event()
        self._finished = False  # the plan ended or failed (set by the thread, then _ready)
        self._error: BaseException | None = None
        #: The plan has ended (or failed) and everything it gave has been taken.
        self.ended = False
        self._thread = threading.Thread(
            target=self._pump, args=(tasks,), name="pixelfleet-source", daemon=True
        )
        self._thread.start()

    def _pump(self, tasks: Iterator[Task]) -> None:
        items, ready, most = self._items, self._ready, self._most
        try:
            for task in tasks:
                if len(items) >= most and not self._wait_for_room():
                    return
                items.append(task)
                # The taker clears the event *before* it looks at the deque, so a task
                # appended while the event was still set is seen all the same.
                if not ready.is_set():
                    ready.set()
        except BaseException as exc:  # noqa: BLE001 - raised again in the runner's thread
            self._error = exc
        self._finished = True
        ready.set()

    def _wait_for_room(self) -> bool:
        """Wait until the runner takes tasks; False once the feed is stopped."""
        while len(self._items) >= self._most:
            if self._stopped.is_set():
                return False
            self._room.clear()
            if len(self._items) < self._most:
                break
            self._room.wait(0.2)
        return not self._stopped.is_set()

    def waiting(self) -> int:
        """How many tasks are ready to take (all of them count once the plan has ended)."""
        return len(self._items) if not self._finished else max(1, len(self._items))

    def take(self, most: int, wait: float, gather: bool = True) -> list[Task]:
        """Up to ``most`` tasks, waiting up to ``wait`` seconds for the first and then (with
        ``gather``) a moment (``_GATHER``) for more, so a fast source is taken in batches
        (one ledger look-up each) while a lone entry still goes straight on. A plan that
        failed raises its error here, in the caller's thread."""
        items = self._items
        self._ready.clear()
        if not items and not self._finished and wait > 0:
            self._ready.wait(wait)
        if gather and items and len(items) < most and not self._finished:
            deadline = time.monotonic() + _GATHER
            while len(items) < most and not self._finished:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                time.sleep(min(left, _GATHER / 10))
        out = [items.popleft() for _ in range(min(most, len(items)))]
        if out:
            self._room.set()
        elif self._finished and not items:
            self.ended = True
            if self._error is not None:
                raise self._error
        return out

    def stop(self) -> None:
        """Let the thread go (it may stay blocked in a source until that source is closed)."""
        self._stopped.set()
        self._room.set()


def source_ends(source: Source) -> bool:
    """Tell whether a source's stream ends by itself (a listing, an inventory report), so
    that planning may hold entries back to batch them. A source says so with an ``ends``
    attribute; without one, only listings and inventories are taken to end."""
    ends = getattr(source, "ends", None)
    if ends is not None:
        return bool(ends)
    from pixelfleet.sources.listing import ListingSource
    from pixelfleet.sources.s3inventory import InventorySource

    return isinstance(source, ListingSource | InventorySource)


def matches_only(group: str, only: Sequence[str]) -> bool:
    """Tell whether a task's group is one ``--only`` names: the whole group
    (``landsat/LC08...``) or its last part (the scene's name), ignoring case."""
    last = group.rsplit("/", 1)[-1].lower()
    wanted = {o.strip("/").lower() for o in only}
    return group.lower() in wanted or last in wanted


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def progress_bar(enabled: bool) -> Any:
    """A progress bar on stderr whose total grows as the source is listed (None: off)."""
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
