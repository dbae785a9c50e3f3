"""The ``FleetLedger`` interface: one run shared by many workers on many machines.

A driver writes a run's tasks as ``pending`` (:meth:`FleetLedger.enqueue`); workers
anywhere take them with :meth:`~FleetLedger.claim`, which turns a task ``running``,
counts an attempt and gives the worker a *lease* until a time. A worker renews its
leases while it works (:meth:`~FleetLedger.renew`) and reports each result with
:meth:`~FleetLedger.finish`. Anyone may call :meth:`~FleetLedger.reap`: tasks whose lease
ran out (the worker died, lost its network, or was paused) go back to ``pending``, or to
``failed`` once they used all their attempts.

Results are *fenced* by attempt: ``finish`` records a result only while the task is
still ``running`` under the same attempt and worker that claimed it. A worker that was
paused past its lease (a "zombie") comes back to find its task reclaimed, and its
result is refused, so it can never overwrite the outcome of a newer attempt.

Times are the ledger's own clock (the database server's, for PostgreSQL), so workers on
machines whose clocks disagree still agree on when a lease ends.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from pixelfleet.ledger.base import Ledger, TaskRecord

#: How a lease that ran out is recorded on its task.
LEASE_EXPIRED = "WorkerLostError"


@dataclass
class WorkerRecord:
    """A worker of a fleet run: where it runs and what it did."""

    run_id: str
    worker_id: str
    host: str
    pid: int
    started: float
    heartbeat: float
    state: str = "running"  # running | finished | stopped | failed
    tasks_done: int = 0
    tasks_failed: int = 0
    shard: str = ""


def expired_error(worker: str, attempts: int) -> str:
    """The error recorded on a task whose lease ran out."""
    return (
        f"worker {worker or '?'} stopped renewing its lease during attempt {attempts}"
        " (killed, lost its connection, or paused); the task was given back to the queue"
    )


def expire(task: TaskRecord, max_attempts: int, now: float) -> TaskRecord:
    """Fold a lease that ran out into its task: back to ``pending`` (the attempt counted),
    or ``failed`` on the last attempt, with every object failed. Returns the task."""
    task.state = "failed" if task.attempts >= max_attempts else "pending"
    task.error_type = LEASE_EXPIRED
    task.error = expired_error(task.worker, task.attempts)
    task.lease_until, task.updated = None, now
    if task.state == "failed":
        task.n_failed = len(task.entries)
    return task


class FleetLedger(Ledger):
    """A ledger that many workers share: claims, leases, fenced results and reaping.

    :class:`~pixelfleet.ledger.memory.MemoryLedger` is the reference behaviour; the
    contract test ``tests/ledger/test_fleet_contract.py`` holds every implementation to it.
    """

    @abstractmethod
    def enqueue(self, run_id: str, tasks: Sequence[TaskRecord]) -> int:
        """Add tasks to a run as ``pending``; a task id the run already holds is left as it
        is. Returns how many were added."""

    @abstractmethod
    def claim(self, run_id: str, worker_id: str, most: int, lease: float) -> list[TaskRecord]:
        """Take up to ``most`` pending tasks of a run, in (group, id) order: each turns
        ``running`` with one more attempt, ``worker`` set and a lease of ``lease`` seconds.

        No task is ever given to two claims at once. Returns copies, with ``attempts``
        set to the attempt this claim is.
        """

    @abstractmethod
    def renew(self, run_id: str, worker_id: str, task_ids: Sequence[str], lease: float) -> set[str]:
        """Extend by ``lease`` seconds from now the leases this worker still holds among
        ``task_ids``; returns those ids (a task reaped or finished is not among them)."""

    @abstractmethod
    def finish(self, run_id: str, records: Sequence[TaskRecord]) -> set[str]:
        """Record results, each only if its task is ``running`` with the record's
        ``attempts`` and ``worker`` (fenced); the lease ends. A record whose state is
        ``pending`` gives the task back for another attempt. Returns the ids recorded."""

    @abstractmethod
    def release(self, run_id: str, worker_id: str, task_ids: Sequence[str]) -> set[str]:
        """Give back tasks this worker holds without a result (it is stopping): they turn
        ``pending`` and the attempt is not counted. Returns the ids given back."""

    @abstractmethod
    def reap(self, run_id: str, max_attempts: int) -> list[TaskRecord]:
        """Return tasks whose lease ran out to ``pending`` (their attempt counted), or mark
        them ``failed`` when they used ``max_attempts``; returns the tasks reaped."""

    @abstractmethod
    def save_worker(self, worker: WorkerRecord) -> None:
        """Insert or update a worker of a run (its heartbeat, state and counts)."""

    @abstractmethod
    def find_workers(self, run_id: str) -> list[WorkerRecord]:
        """The workers of a run, the most recently started first."""

    def leases(self, run_id: str) -> list[tuple[str, str, int, float]]:
        """``(task_id, worker, attempt, seconds left)`` of each running task, soonest to
        end first: what ``pixelfleet status`` shows of a fleet."""
        now = self.now()
        out = [
            (t.task_id, t.worker, t.attempts, (t.lease_until or now) - now)
            for t in self.find_tasks(run_id, ["running"])
        ]
        return sorted(out, key=lambda row: row[3])
