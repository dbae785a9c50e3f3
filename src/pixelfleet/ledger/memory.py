"""The in-memory ledger (``memory://``): the reference behaviour every ledger must match.

``memory://name`` ledgers with the same name share their records within one process
(as ``memory://name`` storages share objects), so a reader opened after a run sees
it; ``memory://`` alone is a fresh ledger of its own. Nothing outlives the process.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from typing_extensions import override

from pixelfleet.errors import ConfigError
from pixelfleet.ledger.base import RunRecord, TaskRecord
from pixelfleet.ledger.events import EventLog, EventRecord
from pixelfleet.ledger.fleet import FleetLedger, WorkerRecord, expire


@dataclass
class _Book:
    """What one memory ledger holds, and the lock that guards it."""

    runs: dict[str, RunRecord] = field(default_factory=dict)
    #: run id -> task id -> task
    tasks: dict[str, dict[str, TaskRecord]] = field(default_factory=dict)
    #: task id -> runs that hold it as done: the index ``done_ids`` answers from.
    done: dict[str, set[str]] = field(default_factory=dict)
    #: run id -> worker id -> worker
    workers: dict[str, dict[str, WorkerRecord]] = field(default_factory=dict)
    events: list[EventRecord] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


_BOOKS: dict[str, _Book] = {}
_BOOKS_LOCK = threading.Lock()


def memory_name(url: str) -> str:
    """The name in ``memory://name`` (empty for ``memory://`` or ``memory``)."""
    scheme, sep, rest = url.partition("://")
    if scheme.lower() != "memory" or (not sep and url.lower() != "memory"):
        raise ConfigError(f"ledger URL {url!r} is not a memory URL; use memory:// or memory://name")
    return rest.strip("/")


class MemoryLedger(FleetLedger, EventLog):
    """Runs and tasks in dicts of this process."""

    def __init__(self, url: str = "memory://"):
        self.url = url
        name = memory_name(url)
        if name:
            with _BOOKS_LOCK:
                self._book = _BOOKS.setdefault(name, _Book())
        else:
            self._book = _Book()

    @override
    def save_run(self, run: RunRecord) -> None:
        book = self._book
        with book.lock:
            old = book.runs.get(run.run_id)
            new = copy.deepcopy(run)
            if old is not None:
                new.created, new.pipeline_path = old.created, old.pipeline_path
                new.pipeline = old.pipeline
            book.runs[run.run_id] = new

    @override
    def save_tasks(self, run_id: str, tasks: Sequence[TaskRecord]) -> None:
        book = self._book
        copies = copy.deepcopy(list(tasks))
        with book.lock:
            held = book.tasks.setdefault(run_id, {})
            for task in copies:
                self._put(run_id, held, task)

    def _put(self, run_id: str, held: dict[str, TaskRecord], task: TaskRecord) -> None:
        """Store one task (the book's lock held) and keep the done index."""
        book = self._book
        held[task.task_id] = task
        runs = book.done.setdefault(task.task_id, set())
        if task.state == "done":
            runs.add(run_id)
        else:
            runs.discard(run_id)
            if not runs:
                del book.done[task.task_id]

    @override
    def beat(self, run_id: str) -> float:
        now = self.now()
        with self._book.lock:
            run = self._book.runs.get(run_id)
            if run is not None:
                run.heartbeat = now
        return now

    # -- a fleet -------------------------------------------------------------------------

    @override
    def enqueue(self, run_id: str, tasks: Sequence[TaskRecord]) -> int:
        book = self._book
        added = 0
        with book.lock:
            held = book.tasks.setdefault(run_id, {})
            for task in tasks:
                if task.task_id in held:
                    continue
                new = copy.deepcopy(task)
                new.state, new.lease_until = "pending", None
                self._put(run_id, held, new)
                added += 1
        return added

    @override
    def claim(self, run_id: str, worker_id: str, most: int, lease: float) -> list[TaskRecord]:
        now = self.now()
        with self._book.lock:
            pending = [t for t in self._book.tasks.get(run_id, {}).values() if t.state == "pending"]
            pending.sort(key=lambda t: (t.group, t.task_id))
            taken = pending[: max(most, 0)]
            for task in taken:
                task.state, task.attempts, task.worker = "running", task.attempts + 1, worker_id
                task.lease_until, task.updated = now + lease, now
            return copy.deepcopy(taken)

    @override
    def renew(self, run_id: str, worker_id: str, task_ids: Sequence[str], lease: float) -> set[str]:
        now = self.now()
        held: set[str] = set()
        with self._book.lock:
            tasks = self._book.tasks.get(run_id, {})
            for task_id in task_ids:
                task = tasks.get(task_id)
                if task is not None and task.state == "running" and task.worker == worker_id:
                    task.lease_until = now + lease
                    held.add(task_id)
        return held

    @override
    def finish(self, run_id: str, records: Sequence[TaskRecord]) -> set[str]:
        now = self.now()
        recorded: set[str] = set()
        with self._book.lock:
            held = self._book.tasks.setdefault(run_id, {})
            for rec in records:
                task = held.get(rec.task_id)
                if (
                    task is None
                    or task.state != "running"
                    or task.attempts != rec.attempts
                    or task.worker != rec.worker
                ):
                    continue
                new = copy.deepcopy(rec)
                new.lease_until, new.updated = None, now
                self._put(run_id, held, new)
                recorded.add(rec.task_id)
        return recorded

    @override
    def release(self, run_id: str, worker_id: str, task_ids: Sequence[str]) -> set[str]:
        released: set[str] = set()
        with self._book.lock:
            tasks = self._book.tasks.get(run_id, {})
            for task_id in task_ids:
                task = tasks.get(task_id)
                if task is not None and task.state == "running" and task.worker == worker_id:
                    task.state, task.attempts, task.lease_until = "pending", task.attempts - 1, None
                    released.add(task_id)
        return released

    @override
    def reap(self, run_id: str, max_attempts: int) -> list[TaskRecord]:
        now = self.now()
        reaped: list[TaskRecord] = []
        with self._book.lock:
            held = self._book.tasks.get(run_id, {})
            for task in held.values():
                if task.state != "running" or task.lease_until is None or task.lease_until > now:
                    continue
                reaped.append(copy.deepcopy(expire(task, max_attempts, now)))
        return reaped

    @override
    def save_worker(self, worker: WorkerRecord) -> None:
        with self._book.lock:
            runs = self._book.workers.setdefault(worker.run_id, {})
            runs[worker.worker_id] = copy.deepcopy(worker)

    @override
    def find_workers(self, run_id: str) -> list[WorkerRecord]:
        with self._book.lock:
            found = list(self._book.workers.get(run_id, {}).values())
        return copy.deepcopy(sorted(found, key=lambda w: (-w.started, w.worker_id)))

    @override
    def find_runs(self, prefix: str | None = None, limit: int = 20) -> list[RunRecord]:
        with self._book.lock:
            runs = [
                r for r in self._book.runs.values() if prefix is None or r.run_id.startswith(prefix)
            ]
            runs.sort(key=lambda r: (r.run_id != prefix, -r.created))
            return copy.deepcopy(runs[: max(limit, 0)])

    @override
    def find_tasks(
        self, run_id: str, states: Sequence[str] | None = None, limit: int | None = None
    ) -> list[TaskRecord]:
        wanted = None if states is None else set(states)
        with self._book.lock:
            tasks = [
                t
                for t in self._book.tasks.get(run_id, {}).values()
                if wanted is None or t.state in wanted
            ]
            tasks.sort(key=lambda t: (t.state != "failed", t.group, t.task_id))
            return copy.deepcopy(tasks if limit is None else tasks[: max(limit, 0)])

    @override
    def done_ids(self, task_ids: Sequence[str]) -> set[str]:
        with self._book.lock:
            return {i for i in task_ids if i in self._book.done}

    @staticmethod
    def clear(name: str | None = None) -> None:
        """Forget every record of one named memory ledger, or of all of them."""
        with _BOOKS_LOCK:
            if name is None:
                _BOOKS.clear()
            else:
                _BOOKS.pop(name, None)

    # -- event log ---------------------------------------------------------------------

    @override
    def record_events(self, records: Sequence[EventRecord]) -> None:
        book = self._book
        with book.lock:
            for record in records:
                record.seq = len(book.events) + 1
                book.events.append(copy.copy(record))

    @override
    def events(
        self,
        run_id: str | None = None,
        since: int = 0,
        actions: Sequence[str] = (),
        limit: int = 100,
        newest_first: bool = False,
    ) -> list[EventRecord]:
        book = self._book
        with book.lock:
            out = []
            held = book.events[max(0, since) :]
            for record in reversed(held) if newest_first else held:
                if (run_id is None or record.run_id == run_id) and (
                    not actions or record.action in actions
                ):
                    out.append(copy.copy(record))
                    if len(out) >= limit:
                        break
            return out
