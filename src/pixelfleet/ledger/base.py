"""The ``Ledger`` interface: what runs happened and what became of every task.

The runner is the only writer: workers report results to it and it records them in
batches. Readers (``pixelfleet status``, ``retry``, the web UI) query it at any time.
"""

from __future__ import annotations

import json
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pixelfleet.errors import LedgerError
from pixelfleet.models import RunCounts, Task, TaskResult

#: Task states, in the order a task passes through them.
TASK_STATES = ("pending", "running", "done", "failed")
#: A process driving a run (a runner, a fleet's driver or worker) records that it is
#: alive this often, in seconds; a ``running`` run with no heartbeat for
#: :data:`STALE_SECONDS` (by the ledger's clock) is dead: see :func:`effective_state`.
HEARTBEAT_SECONDS = 10.0
STALE_SECONDS = 3 * HEARTBEAT_SECONDS + 5


@dataclass
class RunRecord:
    """One execution of a pipeline (and its retries)."""

    run_id: str
    pipeline_path: str
    pipeline: dict[str, Any]
    executor: str
    created: float
    state: str = "running"
    finished: float | None = None
    counts: RunCounts = field(default_factory=RunCounts)
    #: Where the process that drives the run lives, and when it last said it was alive
    #: (``heartbeat``, epoch seconds): a ``running`` run whose heartbeat stopped is dead.
    host: str = ""
    pid: int = 0
    heartbeat: float | None = None


@dataclass
class TaskRecord:
    """A task as the ledger holds it: its entries, state, attempts and outcome."""

    task_id: str
    group: str
    entries: list[dict[str, Any]]
    state: str = "pending"
    attempts: int = 0
    error_type: str | None = None
    error: str | None = None
    seconds: float = 0.0
    worker: str = ""
    n_done: int = 0
    n_skipped: int = 0
    n_failed: int = 0
    outputs: list[str] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)
    updated: float = 0.0
    #: Objects listed but gone when read (``skipped-missing``): neither done nor failed.
    n_missing: int = 0
    #: While ``running`` in a fleet: when the worker's lease on it ends (ledger clock).
    lease_until: float | None = None

    @classmethod
    def pending(cls, task: Task) -> TaskRecord:
        """A new task, not yet run."""
        return cls(task.id, task.group, [e.to_dict() for e in task.entries])

    def to_task(self) -> Task:
        """The task, to run it again."""
        return Task.from_dict({"id": self.task_id, "group": self.group, "entries": self.entries})

    def apply(self, result: TaskResult, attempts: int, state: str, now: float) -> None:
        """Fold a worker's result into this record."""
        self.state = state
        self.attempts = attempts
        self.seconds = result.seconds
        self.worker = result.worker
        self.updated = now
        self.n_done = sum(1 for e in result.entries if e.state == "done")
        self.n_skipped = sum(1 for e in result.entries if e.state == "skipped")
        self.n_failed = sum(1 for e in result.entries if e.state == "failed")
        self.n_missing = sum(1 for e in result.entries if e.state == "skipped-missing")
        self.outputs = [o.key for e in result.entries for o in e.outputs]
        self.failures = [
            {"key": e.key, "error_type": e.error_type or "", "error": e.error or ""}
            for e in result.entries
            if e.state == "failed"
        ]
        if result.error_type:
            self.error_type, self.error = result.error_type, result.error
        elif self.failures:
            first = self.failures[0]
            self.error_type = first["error_type"]
            self.error = f"{first['key']}: {first['error']}"
            if len(self.failures) > 1:
                self.error += f" (and {len(self.failures) - 1} more objects)"
        else:
            self.error_type = self.error = None


@dataclass
class TaskStats:
    """How a run's settled (done or failed) tasks went: task wall time percentiles
    (seconds, nearest rank; None without settled tasks) and error kinds with counts
    (failed objects by error type, or the task's error when it failed as a whole)."""

    settled: int = 0
    p50_seconds: float | None = None
    p95_seconds: float | None = None
    errors: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"settled", "p50_seconds", "p95_seconds", "errors"}``."""
        return {
            "settled": self.settled,
            "p50_seconds": self.p50_seconds,
            "p95_seconds": self.p95_seconds,
            "errors": dict(sorted(self.errors.items(), key=lambda kv: (-kv[1], kv[0]))),
        }


def rank(count: int, quantile: float) -> int:
    """The 0-based index of the nearest-rank ``quantile`` among ``count`` sorted values."""
    return max(0, min(count - 1, math.ceil(quantile * count) - 1))


#: A task's columns in SQL ledgers, in the order :func:`task_row` and :func:`task_from_row`
#: use (``grp``: ``group`` is a reserved word).
TASK_COLUMNS = (
    "task_id, grp, entries, state, attempts, error_type, error, seconds, worker, "
    "n_done, n_skipped, n_failed, outputs, failures, updated, n_missing, lease_until"
)


#: A run's columns in SQL ledgers, in the order :func:`run_from_row` reads them.
RUN_COLUMNS = (
    "run_id, pipeline_path, pipeline, executor, created, state, finished, counts, host, pid,"
    " heartbeat"
)


def run_from_row(r: Sequence[Any]) -> RunRecord:
    """A run from a row of :data:`RUN_COLUMNS`."""
    return RunRecord(
        run_id=r[0],
        pipeline_path=r[1],
        pipeline=json.loads(r[2]),
        executor=r[3],
        created=r[4],
        state=r[5],
        finished=r[6],
        counts=RunCounts.from_dict(json.loads(r[7])),
        host=r[8],
        pid=r[9],
        heartbeat=r[10],
    )


def task_row(t: TaskRecord) -> tuple[Any, ...]:
    """A task as a row of :data:`TASK_COLUMNS` (lists as JSON text)."""
    return (
        t.task_id,
        t.group,
        json.dumps(t.entries),
        t.state,
        t.attempts,
        t.error_type,
        t.error,
        t.seconds,
        t.worker,
        t.n_done,
        t.n_skipped,
        t.n_failed,
        json.dumps(t.outputs),
        json.dumps(t.failures),
        t.updated,
        t.n_missing,
        t.lease_until,
    )


def task_from_row(r: Sequence[Any]) -> TaskRecord:
    """A task from a row of :data:`TASK_COLUMNS`."""
    return TaskRecord(
        task_id=r[0],
        group=r[1],
        entries=json.loads(r[2]),
        state=r[3],
        attempts=r[4],
        error_type=r[5],
        error=r[6],
        seconds=r[7],
        worker=r[8],
        n_done=r[9],
        n_skipped=r[10],
        n_failed=r[11],
        outputs=json.loads(r[12]),
        failures=json.loads(r[13]),
        updated=r[14],
        n_missing=r[15],
        lease_until=r[16],
    )


def effective_state(run: RunRecord, now: float, heartbeats: Sequence[float] = ()) -> str:
    """A run's state as a reader should see it: ``running`` only while the run's driver
    (or, for a fleet, one of its workers: ``heartbeats``) was heard from lately; a run
    whose processes all died (SIGKILL, a lost machine) is ``interrupted``.

    Runs recorded before heartbeats existed stay as recorded."""
    if run.state not in ("running", "planning") or run.heartbeat is None:
        return run.state
    latest = max([run.heartbeat, *heartbeats])
    return run.state if now - latest <= STALE_SECONDS else "interrupted"


class Ledger(ABC):
    """Runs and task states, kept by one runner and read by anyone.

    Implementations store and find records; the conveniences below build on that.
    Records handed out are copies: changing one changes nothing until it is saved.
    :class:`~pixelfleet.ledger.memory.MemoryLedger` is the reference behaviour.

    The six abstract methods are the least a ledger can be: three writes and three
    look-ups, each answered by an index. ``done_ids`` in particular stays abstract: a
    rerun asks it for every chunk of planned tasks, across every run ever recorded, and
    building it from the other look-ups would read every task of every run each time.
    """

    @abstractmethod
    def save_run(self, run: RunRecord) -> None:
        """Insert a run, or update one saved before.

        An update changes the run's state, finish time, executor, counts, host, pid and
        heartbeat; its creation time, pipeline path and pipeline stay as first saved.
        """

    @abstractmethod
    def save_tasks(self, run_id: str, tasks: Sequence[TaskRecord]) -> None:
        """Insert or replace a run's tasks (by task id), all in one transaction.

        The same task id in another run is another record.
        """

    @abstractmethod
    def find_runs(self, prefix: str | None = None, limit: int = 20) -> list[RunRecord]:
        """At most ``limit`` runs whose id starts with ``prefix`` (all for None).

        The run whose id is ``prefix`` exactly comes first, then the newest (latest
        ``created``) first. ``prefix`` is plain text: no character in it is a wildcard.
        """

    @abstractmethod
    def find_tasks(
        self, run_id: str, states: Sequence[str] | None = None, limit: int | None = None
    ) -> list[TaskRecord]:
        """At most ``limit`` (all for None) of a run's tasks in ``states`` (any for None).

        Failed tasks come first, then the others; each part by group, then task id.
        An unknown run has no tasks.
        """

    @abstractmethod
    def done_ids(self, task_ids: Sequence[str]) -> set[str]:
        """Which of ``task_ids`` some run holds as ``done``, whatever other runs hold.

        Ids the ledger does not know are left out.
        """

    def close(self) -> None:  # noqa: B027 - optional: most ledgers hold a connection
        """Release connections."""

    def now(self) -> float:
        """The ledger's clock, in epoch seconds (the database server's where there is one):
        heartbeats and leases are told by it, so machines whose clocks disagree agree."""
        return time.time()

    @abstractmethod
    def beat(self, run_id: str) -> float:
        """Record that a run's driver is alive: set its heartbeat to :meth:`now`, changing
        nothing else of the run (a driver's thread beats while the driver saves). Returns
        the heartbeat written; an unknown run is left alone."""

    def get_run(self, run_id: str | None = None) -> RunRecord:
        """A run by id or unique id prefix; the latest run for None."""
        found = self.find_runs(run_id, limit=2)
        if not found:
            if run_id is None:
                raise LedgerError("the ledger has no runs yet; start one with: pixelfleet run FILE")
            raise LedgerError(f"no run {run_id!r} in the ledger; list runs with: pixelfleet status")
        if len(found) > 1 and run_id is not None and found[0].run_id != run_id:
            raise LedgerError(
                f"run id prefix {run_id!r} is ambiguous "
                f"({found[0].run_id}, {found[1].run_id}, ...);"
                " give more characters"
            )
        return found[0]

    def has_tasks(self, run_id: str, states: Sequence[str]) -> bool:
        """Tell whether a run has a task in any of ``states`` (cheap: what an idle fleet
        worker asks every few seconds)."""
        return bool(self.find_tasks(run_id, states, limit=1))

    def task_totals(self, run_id: str) -> dict[str, int]:
        """Sums over a run's settled tasks: ``done``, ``failed`` (tasks), ``retries``
        (attempts beyond the first), ``written``, ``current``, ``objects_failed`` and
        ``missing`` (objects)."""
        totals = dict.fromkeys(
            ("done", "failed", "retries", "written", "current", "objects_failed", "missing"), 0
        )
        for task in self.find_tasks(run_id, ["done", "failed"]):
            totals[task.state] += 1
            totals["retries"] += max(0, task.attempts - 1)
            totals["written"] += task.n_done
            totals["current"] += task.n_skipped
            totals["objects_failed"] += task.n_failed
            totals["missing"] += task.n_missing
        return totals

    def task_stats(self, run_id: str) -> TaskStats:
        """Task time percentiles and error kinds of a run's settled tasks. This default
        reads every settled task; SQL ledgers answer it in the database."""
        stats = TaskStats()
        seconds = []
        for task in self.find_tasks(run_id, ["done", "failed"]):
            seconds.append(task.seconds)
            if task.state != "failed":
                continue
            kinds = [f.get("error_type") or "Error" for f in task.failures] or [
                task.error_type or "Error"
            ]
            for kind in kinds:
                stats.errors[kind] = stats.errors.get(kind, 0) + 1
        seconds.sort()
        stats.settled = len(seconds)
        if seconds:
            stats.p50_seconds = seconds[rank(len(seconds), 0.5)]
            stats.p95_seconds = seconds[rank(len(seconds), 0.95)]
        return stats

    def state_counts(self, run_id: str) -> dict[str, int]:
        """Number of tasks per state in a run."""
        counts: dict[str, int] = {}
        for task in self.find_tasks(run_id):
            counts[task.state] = counts.get(task.state, 0) + 1
        return counts

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
