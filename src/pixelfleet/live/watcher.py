"""``Watcher``: bucket events in, outputs and catalog items made, remade or removed.

How an event is handled (``docs/DESIGN.md``, "Live"):

1. A message is read into :class:`~pixelfleet.events.BucketEvent` values; one that
   cannot be read goes to the dead-letter queue with the reason, at once.
2. Each event belongs to a *unit*: its object, or (scene partitions) its scene. Events
   for another bucket or prefix, or for keys the pipeline's include/exclude globs and
   content types leave out, are ignored.
3. Events of one unit are handled one at a time, in order: while a unit is being
   handled, later events for it wait, and are then handled together. An event whose
   S3 ``sequencer`` is older than one already applied to its unit is ignored.
4. Handling a unit asks the bucket what it holds *now* (HEAD of the object; a listing
   of the scene's folder), rather than trusting the event: so events arriving late,
   twice or out of order cannot undo a newer change, and a delete that arrives before
   the create it follows wins. An object that exists becomes a one-object task (a
   scene, a task of its band files, after a short settle time for the rest of its
   bands) run by :class:`~pixelfleet.runner.Runner` exactly as in a backfill: the
   workers skip outputs that are current, the ledger records the task, the catalog
   gets the item. An object that is gone has its outputs and catalog item removed.
5. A message is acknowledged only when every event in it is recorded (ledger, catalog,
   and the ledger's event log); an event whose task failed for good sends its message
   to the dead-letter queue with the error. A message still held when half the queue's
   visibility timeout has passed is extended.

A watcher that is killed loses nothing: messages it did not acknowledge come back,
and handling them again is harmless.
"""

from __future__ import annotations

import collections
import contextlib
import posixpath
import queue as queue_module
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

from pixelfleet import metrics
from pixelfleet.catalog import Catalog, open_catalog
from pixelfleet.errors import ItemNotFoundError, PixelfleetError, UnsafeKeyError
from pixelfleet.events import BucketEvent, EventQueue, MemoryQueue, Message, compare_sequencers
from pixelfleet.events.parse import MalformedEventError, parse_message
from pixelfleet.ledger import Ledger, RunRecord
from pixelfleet.ledger.events import EventLog, EventRecord
from pixelfleet.live.units import LiveSource, Part, Tracked, Unit, WatchSummary, show, source_bucket
from pixelfleet.models import Entry, EntryResult, Task, one_line
from pixelfleet.ops.base import scene_id
from pixelfleet.pipeline import Pipeline
from pixelfleet.plan import batch_task, make_task
from pixelfleet.runner import Runner
from pixelfleet.settings import get_settings
from pixelfleet.sources.listing import compile_globs, extensions_for
from pixelfleet.sources.scenes import ScenePattern
from pixelfleet.storage import Storage, open_storage

#: Most units whose last applied sequencer is remembered (the oldest are forgotten).
_REMEMBERED_UNITS = 1_000_000
#: Messages a watcher holds at most (received, not yet acknowledged), when its queue
#: lets several threads receive at once.
_IN_HAND = 200
#: Most objects in one task, when several wait together.
_BATCH = 20
#: Threads that ask the bucket what a unit holds and remove what is gone.
_LOOKUP_THREADS = 4


class Watcher:
    """Applies a queue's bucket events to a pipeline's outputs and catalog until stopped."""

    def __init__(
        self,
        pipeline: Pipeline,
        ledger: Ledger,
        events: EventQueue,
        *,
        catalog: Catalog | None = None,
        executor: str | None = None,
        workers: int | None = None,
        settle: float = 2.0,
        echo: Callable[[str], None] | None = None,
        summary_every: float = 60.0,
        reconcile_every: float | None = None,
        until_idle: bool = False,
    ):
        self.pipeline = pipeline
        self.ledger = ledger
        self.queue = events
        self.settle_seconds = settle
        self.echo = echo or (lambda line: None)
        self.summary_every = summary_every
        self.reconcile_every = reconcile_every
        #: Stop by itself once every queue is empty and nothing is in hand (reconcile).
        self.until_idle = until_idle
        settings = get_settings()
        self.source_storage: Storage = open_storage(pipeline.source.url, settings)
        self.output: Storage = open_storage(pipeline.output.url, settings)
        self._own_catalog = catalog is None and pipeline.catalog is not None
        self.catalog = catalog
        if self._own_catalog and pipeline.catalog is not None:
            self.catalog = open_catalog(pipeline.catalog.url or settings.catalog_url)
        self.bucket, self.prefix = source_bucket(pipeline.source.url)
        self._collection = pipeline.catalog.collection if pipeline.catalog is not None else ""
        src = pipeline.source
        self._wanted = compile_globs(src.include, src.ignore_case)
        self._unwanted = compile_globs(src.exclude, src.ignore_case)
        self._extensions = extensions_for(src.content_types) if src.content_types else None
        partition = src.partition
        self._scenes = ScenePattern(partition.pattern or []) if partition.by == "scene" else None
        #: Events found by ``reconcile`` (and by the watcher's own schedule) go here.
        self.local = MemoryQueue(visibility=3600.0)
        self._runner = Runner(
            pipeline,
            ledger,
            executor=executor,
            workers=workers,
            progress=False,
            catalog=catalog,
            source=LiveSource(self._entry_settled),
        )
        self._lock = threading.RLock()
        self._units: collections.OrderedDict[str, Unit] = collections.OrderedDict()
        self._unit_of_entry: dict[str, str] = {}
        self._tasks: queue_module.Queue[Task | Entry] = queue_module.Queue()
        self._outbox: collections.deque[tuple[str, Tracked, str]] = collections.deque()
        self._records: list[EventRecord] = []
        self._held: dict[str, Tracked] = {}  # message id -> tracked, until acked
        self._due: list[Unit] = []  # scenes settling
        self._prefetchers: list[threading.Thread] = []
        self._prefetched: collections.deque[Message] = collections.deque()
        self._prefetch_ready = threading.Event()
        self._lookups = ThreadPoolExecutor(_LOOKUP_THREADS, thread_name_prefix="pixelfleet-lookup")
        self._stopping = threading.Event()
        self._receiving_done = threading.Event()
        self.record: RunRecord | None = None
        self.summary = WatchSummary(run_id="")
        self.error: BaseException | None = None

    # -- the outside ---------------------------------------------------------------------

    def stop(self) -> None:
        """Take no more messages; finish and record those in hand, then :meth:`run`
        returns. Thread-safe (and safe from a signal handler)."""
        self._stopping.set()

    def run(self) -> WatchSummary:
        """Watch until :meth:`stop` (or, with ``until_idle``, until there is nothing left)."""
        record = self._runner.new_record(f"watch {self.queue.describe()}")
        record.state = "running"
        self.ledger.save_run(record)
        self.record = record
        self.summary.run_id = record.run_id
        receiver = threading.Thread(target=self._receive_loop, name="pixelfleet-receive")
        receiver.start()
        try:
            self._runner.run_tasks(self._task_stream(), record)
        except BaseException:
            self._stopping.set()
            raise
        finally:
            self._stopping.set()
            receiver.join()
            for thread in self._prefetchers:
                thread.join(30)
            self._lookups.shutdown(wait=True)
            with contextlib.suppress(Exception):
                self.queue.close()
            if self._own_catalog and self.catalog is not None:
                self.catalog.close()
        if self.error is not None:
            raise self.error
        return self.summary

    def counts(self) -> dict[str, int]:
        """Events settled so far, by action."""
        with self._lock:
            return dict(self.summary.counts)

    # -- receiving -----------------------------------------------------------------------

    def _receive_loop(self) -> None:
        """Take messages, send out acknowledgements, extend long holds; in one thread,
        because a queue's connection (AMQP's) may only be used from one thread."""
        last_summary = time.monotonic()
        last_reconcile = time.monotonic()
        try:
            while True:
                self._send_outbox()
                self._extend_held()
                self._start_due()
                now = time.monotonic()
                if self.summary_every and now - last_summary >= self.summary_every:
                    self.echo(f"summary   {self.summary.line()}")
                    last_summary = now
                if self.reconcile_every and now - last_reconcile >= self.reconcile_every:
                    last_reconcile = now
                    self._lookups.submit(self._reconcile_now)
                if self._stopping.is_set():
                    if not self._held and not self._outbox:
                        break
                    time.sleep(0.02)
                    continue
                local = self.local.receive(100, 0.0)
                for message in local:
                    self._take(message, self.local)
                busy = bool(local) or bool(self._held) or bool(self._outbox) or bool(self._due)
                got = self._next_messages(busy)
                for message in got:
                    self._take(message, self.queue)
                idle = not local and not got and not self._held and not self._due
                if self.until_idle and idle and not self._outbox and self.local.pending() == 0:
                    self._stopping.set()
        except BaseException as exc:  # noqa: BLE001 - raised again by run()
            self.error = exc
            self._stopping.set()
        finally:
            self._receiving_done.set()

    def _next_messages(self, busy: bool) -> list[Message]:
        """Messages from the queue: received here, or (a queue that allows receives from
        several threads) taken from what the prefetch threads received meanwhile."""
        if self.queue.concurrent_receives <= 1:
            return self.queue.receive(10, 0.05 if busy else 0.5)
        if not self._prefetchers:
            for n in range(self.queue.concurrent_receives):
                thread = threading.Thread(
                    target=self._prefetch, name=f"pixelfleet-prefetch-{n}", daemon=True
                )
                thread.start()
                self._prefetchers.append(thread)
        if not self._prefetched:
            self._prefetch_ready.wait(0.02 if busy else 0.5)
        self._prefetch_ready.clear()
        out: list[Message] = []
        while self._prefetched and len(out) < 100:
            out.append(self._prefetched.popleft())
        return out

    def _prefetch(self) -> None:
        """Keep messages coming while fewer than :data:`_IN_HAND` are held; stop with the
        watcher (messages received and not taken come back after their visibility)."""
        try:
            while not self._stopping.is_set():
                if len(self._held) + len(self._prefetched) >= _IN_HAND:
                    time.sleep(0.02)
                    continue
                got = self.queue.receive(10, 1.0)
                if got and not self._stopping.is_set():
                    self._prefetched.extend(got)
                    self._prefetch_ready.set()
        except Exception as exc:  # noqa: BLE001 - raised again by the receiver loop
            self.error = exc
            self._stopping.set()

    def _take(self, message: Message, queue: EventQueue) -> None:
        tracked = Tracked(message, queue)
        self.summary.messages += 1
        try:
            events = parse_message(message)
        except MalformedEventError as exc:
            reason = str(exc)
            self._log("dead-lettered", "", f"malformed message: {reason}", 0.0)
            self.echo(f"dead-lettered  message {message.id}: {reason}")
            self._queue_out("reject", tracked, f"malformed message: {reason}")
            return
        wanted: list[tuple[str, BucketEvent]] = []
        for event in events:
            unit, why = self._unit_of(event)
            if unit is None:
                self._log("ignored", event.key, why, 0.0)
                self.echo(f"ignored   {show(event.key)}: {why}")
                continue
            wanted.append((unit, event))
        if not wanted:
            if not events:
                self._log("ignored", "", "a test event, or no object changed", 0.0)
            self._queue_out("ack", tracked, "")
            return
        with self._lock:
            self._held[message.id] = tracked
            tracked.open = len(wanted)
            for unit_name, event in wanted:
                self._arrive(unit_name, Part(tracked, event, time.monotonic()))

    def _unit_of(self, event: BucketEvent) -> tuple[str | None, str]:
        """The unit (key or scene) an event is for, or None and why it is ignored."""
        key = event.key
        if self.bucket is not None and event.bucket and event.bucket != self.bucket:
            return None, f"bucket {event.bucket!r} is not the source's ({self.bucket!r})"
        if self.prefix:
            if not key.startswith(self.prefix):
                return None, f"outside the source prefix {self.prefix!r}"
            key = key[len(self.prefix) :]
        if not key or key.endswith("/"):
            return None, "a folder marker, not an object"
        if not self._wanted(key) or self._unwanted(key):
            return None, "not selected by the pipeline's include/exclude globs"
        if (
            self._extensions is not None
            and posixpath.splitext(key)[1].lower() not in self._extensions
        ):
            return None, "not one of the pipeline's content types"
        if self._scenes is not None:
            match = self._scenes.match(key)
            if match is None:
                return None, "matches no scene pattern"
            return "scene:" + match.group, ""
        return key, ""

    def _arrive(self, unit_name: str, part: Part) -> None:
        """Queue an event on its unit; start handling the unit if it is idle."""
        unit = self._units.get(unit_name)
        if unit is None:
            unit = self._units[unit_name] = Unit(unit_name)
            if len(self._units) > _REMEMBERED_UNITS:
                oldest = next(iter(self._units))
                if not self._units[oldest].busy and not self._units[oldest].waiting:
                    del self._units[oldest]
        self._units.move_to_end(unit_name)
        seq = part.event.sequencer
        stale = seq and unit.high and compare_sequencers(seq, unit.high) < 0
        if stale and not unit.busy and not unit.waiting:
            self._resolve_parts([part], "ignored", "older than a change already applied", unit_name)
            return
        unit.waiting.append(part)
        if unit.busy:
            return
        if unit_name.startswith("scene:"):
            # A scene waits for the rest of its band files; every event restarts the wait.
            unit.due = time.monotonic() + self.settle_seconds
            if unit not in self._due:
                self._due.append(unit)
            return
        self._start(unit)

    def _start_due(self) -> None:
        with self._lock:
            now = time.monotonic()
            ready = [u for u in self._due if u.due <= now and not u.busy]
            for unit in ready:
                self._due.remove(unit)
                self._start(unit)

    def _start(self, unit: Unit) -> None:
        """Take the unit's waiting events and look at the bucket for it (in a thread)."""
        unit.busy = True
        unit.running, unit.waiting = unit.waiting, []
        unit.results = []
        for part in unit.running:
            seq = part.event.sequencer
            if seq and (not unit.high or compare_sequencers(seq, unit.high) > 0):
                unit.high = seq
        self._lookups.submit(self._handle, unit)

    # -- handling a unit -----------------------------------------------------------------

    def _handle(self, unit: Unit) -> None:
        """Find what the unit holds now, and make or remove accordingly."""
        try:
            if unit.name.startswith("scene:"):
                group = unit.name.removeprefix("scene:")
                entries = self._scene_entries(group)
                item_id = scene_id(group, entries) if entries else group
            else:
                entry = self.source_storage.head(unit.name)
                entries = [entry] if entry is not None else []
                item_id = unit.name
            if not entries:
                removed = self._remove(unit, item_id)
                action = "deleted" if removed else "ignored"
                self._finish(
                    unit, action, "" if removed else "not in the bucket, nothing to remove"
                )
                return
            unit.existed = self._known(item_id, unit, entries)
            with self._lock:
                unit.open_entries = {e.key for e in entries}
                for e in entries:
                    self._unit_of_entry[e.key] = unit.name
            if unit.name.startswith("scene:"):
                self._tasks.put(make_task(group, entries, self.pipeline.settings_hash))
            else:
                self._tasks.put(entries[0])
        except UnsafeKeyError as exc:
            # A symbolic link (or a FIFO...) in a local bucket: never read, as a backfill
            # skips it; reported with the reason, not retried, not a dead letter.
            self._finish(unit, "ignored", f"not read: {one_line(str(exc))}")
        except Exception as exc:  # noqa: BLE001 - the bucket or catalog failed: retry later
            self._finish(unit, "failed", f"{type(exc).__name__}: {one_line(str(exc))}", retry=True)

    def _known(self, item_id: str, unit: Unit, entries: list[Entry]) -> bool:
        """Whether the unit was made before (updated, not created): its catalog item
        exists, or (no catalog) its first output does."""
        if self.catalog is not None and self.pipeline.catalog is not None:
            try:
                self.catalog.get_item(self.pipeline.catalog.collection, item_id)
            except ItemNotFoundError:
                return False
            return True
        group = unit.name.removeprefix("scene:")
        return self._has_outputs(Task(id="", group=group, entries=tuple(entries)))

    def _scene_entries(self, group: str) -> list[Entry]:
        assert self._scenes is not None
        folder = group.rsplit("/", 1)[0] + "/" if "/" in group else ""
        out = []
        for entry in self.source_storage.scan(folder):
            match = self._scenes.match(entry.key)
            if match is not None and match.group == group and self._selected(entry.key):
                out.append(entry)
        return out

    def _selected(self, key: str) -> bool:
        if not self._wanted(key) or self._unwanted(key):
            return False
        return self._extensions is None or posixpath.splitext(key)[1].lower() in self._extensions

    def _has_outputs(self, task: Task) -> bool:
        for key in sorted(self.pipeline.output_keys(task))[:1]:
            with contextlib.suppress(Exception):
                return self.output.head(key) is not None
        return False

    def _remove(self, unit: Unit, item_id: str) -> bool:
        """Delete a gone unit's outputs and catalog item; tell whether anything was there."""
        if unit.name.startswith("scene:"):
            group = unit.name.removeprefix("scene:")
            ghost = Task(id="", group=group, entries=())
        else:
            ghost = Task(id="", group=unit.name, entries=(Entry(unit.name, 0, ""),))
        removed = 0
        for key in sorted(self.pipeline.output_keys(ghost)):
            if self.output.head(key) is not None:
                self.output.delete(key)
                removed += 1
        if self.catalog is not None and self.pipeline.catalog is not None:
            removed += self.catalog.delete(self.pipeline.catalog.collection, [item_id])
        return removed > 0

    def _entry_settled(self, entry: Entry, result: EntryResult | None) -> None:
        """The runner recorded an entry of a unit's task (ledger and catalog)."""
        with self._lock:
            name = self._unit_of_entry.pop(entry.key, None)
            unit = self._units.get(name) if name is not None else None
            if unit is None or not unit.busy:
                return
            unit.open_entries.discard(entry.key)
            if result is not None:
                unit.results.append(result)
            if unit.open_entries:
                return
        results = unit.results
        failed = [r for r in results if r.state == "failed"]
        if any(r.state == "skipped-missing" for r in results):
            # Gone between the look and the work: look again (the delete path runs).
            self._finish(unit, None, "")
            return
        if failed:
            reason = f"{failed[0].error_type}: {failed[0].error}"
            if unit.name.startswith("scene:") and failed[0].permanent:
                # The scene can no longer be made from its band files: its old outputs and
                # item go, as a backfill would leave it. After a band file's deletion that
                # is the event's outcome, not a failure.
                with contextlib.suppress(Exception):
                    self._remove(unit, unit.name.removeprefix("scene:"))
                if any(p.event.action == "deleted" for p in unit.running):
                    self._finish(unit, "deleted", f"the scene can no longer be made: {reason}")
                    return
            self._finish(unit, "failed", reason)
            return
        if any(r.state == "done" for r in results):
            self._finish(unit, "updated" if unit.existed else "created", "")
        else:
            self._finish(unit, "current", "")

    def _finish(self, unit: Unit, action: str | None, detail: str, retry: bool = False) -> None:
        """Settle the events a unit's handling covered; handle it again if more came.

        ``action`` None: handle again now (the events stay open). ``retry``: the
        bucket or catalog failed; the messages are left to come back later.
        """
        with self._lock:
            parts, unit.running = unit.running, []
            if action is None:
                unit.waiting = parts + unit.waiting
            elif retry:
                for part in parts:
                    self._release(part.tracked, detail)
            else:
                self._resolve_parts(parts, action, detail, unit.name)
            unit.busy = False
            if unit.waiting:
                if unit.name.startswith("scene:") and action is not None:
                    unit.due = time.monotonic() + self.settle_seconds
                    if unit not in self._due:
                        self._due.append(unit)
                else:
                    self._start(unit)

    def _resolve_parts(self, parts: list[Part], action: str, detail: str, unit: str) -> None:
        now = time.monotonic()
        shown = unit.removeprefix("scene:")
        for part in parts:
            seconds = now - part.arrived
            self._log(action, shown, detail, seconds)
            if action == "failed":
                part.tracked.failures.append(f"{shown}: {detail}")
            part.tracked.open -= 1
            if part.tracked.open <= 0 and not part.tracked.done:
                tracked = part.tracked
                tracked.done = True
                self._held.pop(tracked.message.id, None)
                if tracked.failures:
                    reason = "; ".join(tracked.failures)[:1000]
                    self._queue_out("reject", tracked, reason)
                else:
                    self._queue_out("ack", tracked, "")
        if parts:
            first = f" ({len(parts)} events)" if len(parts) > 1 else ""
            took = now - min(p.arrived for p in parts)
            text = f"{action:<9} {show(shown)}{first}  {took:.2f} s"
            self.echo(text + (f": {detail}" if detail else ""))

    def _release(self, tracked: Tracked, reason: str) -> None:
        """Leave a message for the queue to hand out again (not acknowledged)."""
        if tracked.done:
            return
        tracked.done = True
        self._held.pop(tracked.message.id, None)
        self.echo(f"retry     message {tracked.message.id} later: {reason}")

    def _log(self, action: str, key: str, detail: str, seconds: float) -> None:
        metrics.event(action.replace("-", "_"))  # pixelfleet_events_total{action}
        with self._lock:
            counts = self.summary.counts
            counts[action] = counts.get(action, 0) + 1
            if action in ("created", "updated", "current", "deleted"):
                self.summary.latencies.append(seconds)
            run_id = self.record.run_id if self.record is not None else ""
            self._records.append(
                EventRecord(
                    run_id, time.time(), action, key, key, detail, seconds, 0, self._collection
                )
            )

    def _queue_out(self, what: str, tracked: Tracked, reason: str) -> None:
        with self._lock:
            self._outbox.append((what, tracked, reason))

    def _send_outbox(self) -> None:
        """Record the event log, then acknowledge or dead-letter what it covers."""
        with self._lock:
            records, self._records = self._records, []
            out = list(self._outbox)
            self._outbox.clear()
        if records and isinstance(self.ledger, EventLog):
            self.ledger.record_events(records)
        for what, tracked, reason in out:
            if what == "ack":
                tracked.queue.ack(tracked.message)
            else:
                tracked.queue.reject(tracked.message, reason)
                if reason and not reason.startswith("malformed"):
                    self._log("dead-lettered", "", reason, 0.0)
                    self.echo(f"dead-lettered  message {tracked.message.id}: {reason}")

    def _extend_held(self) -> None:
        visibility = self.queue.visibility
        if not visibility:
            return
        now = time.monotonic()
        with self._lock:
            held = [t for t in self._held.values() if t.queue is self.queue]
        for tracked in held:
            if now - tracked.message.received > visibility / 2:
                with contextlib.suppress(Exception):
                    self.queue.extend(tracked.message, visibility)
                tracked.message.received = now

    def _task_stream(self) -> Iterator[Task]:
        """The tasks units need, for the runner, until the watcher stops. Objects waiting
        together go into one task (up to :data:`_BATCH`), as a backfill's small objects
        do: with a backlog, a task per object would cost more than the objects."""
        batch: list[Entry] = []
        while True:
            try:
                item = self._tasks.get(timeout=0.1 if not batch else 0.0)
            except queue_module.Empty:
                if batch:
                    yield batch_task(batch, self.pipeline.settings_hash)
                    batch = []
                    continue
                if self._receiving_done.is_set() and self._tasks.empty():
                    return
                continue
            if isinstance(item, Task):
                yield item
                continue
            batch.append(item)
            if len(batch) >= _BATCH:
                yield batch_task(batch, self.pipeline.settings_hash)
                batch = []

    # -- reconcile -----------------------------------------------------------------------

    def inject(self, events: list[BucketEvent]) -> None:
        """Handle ``events`` as if a queue had delivered them (reconcile uses this)."""
        for start in range(0, len(events), 100):
            self.local.put(events=events[start : start + 100])

    def _reconcile_now(self) -> None:
        from pixelfleet.live.reconcile import compare

        try:
            report = compare(self.pipeline, self.catalog)
        except PixelfleetError as exc:
            self.echo(f"reconcile failed: {exc}")
            return
        self.echo(f"reconcile {report.line()}")
        self.inject(report.events(self.bucket or "", self.prefix))


__all__ = ["WatchSummary", "Watcher", "source_bucket"]
