"""``pixelfleet worker``: claim a fleet run's tasks from the shared ledger until none are left.

One worker process runs ``threads`` tasks at once (the same worker code as every other
executor: :func:`pixelfleet.worker.execute`). A heartbeat thread renews the leases of the
tasks in hand and the worker's own heartbeat; the main thread claims, settles results
(fenced: see :mod:`pixelfleet.ledger.fleet`), indexes items and reaps the leases of
workers that died. Before every output is written the task's lease is checked
(:data:`pixelfleet.ops.base.write_guard`): a worker paused past its lease (a "zombie")
finds its task taken and writes nothing more.

A worker ends when the run has no task pending or running (exit 0). It exits with 75
(:data:`~pixelfleet.executors.launchers.EXIT_RETRY`) when its ledger could not be
reached past the ledger's retries, or when it was told to stop (SIGTERM: a Spot
reclaim) -- then it finishes what it can within ``drain`` seconds and gives the rest
back to the queue, without counting the attempt.

The command (``cli/worker.py``) marks its process as a dedicated worker, so the memory
cap becomes its hard limit, as in every executor's workers (:mod:`pixelfleet.imagery.memory`).
"""

from __future__ import annotations

import json
import os
import random
import secrets
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from pixelfleet.catalog.indexer import ItemIndexer
from pixelfleet.errors import LedgerUnavailableError, PixelfleetError
from pixelfleet.executors.launchers import EXIT_RETRY
from pixelfleet.fleet.driver import close_run
from pixelfleet.ledger import FleetLedger, TaskRecord, WorkerRecord
from pixelfleet.ledger.fleet import LEASE_EXPIRED
from pixelfleet.models import TaskResult
from pixelfleet.ops.base import write_guard
from pixelfleet.pipeline import Pipeline, pipeline_from_dict
from pixelfleet.settings import get_settings
from pixelfleet.storage import open_storage
from pixelfleet.worker import execute

#: Seconds a claim holds a task without renewal.
LEASE = 60.0
#: Seconds between looks at the ledger while there is nothing to claim.
POLL = 1.0
#: Seconds a stopping worker waits for the tasks in hand before giving them back.
DRAIN = 25.0
#: Longest a finished task waits to be recorded with others in one ledger round trip.
_GATHER = 0.05


class LeaseLostError(PixelfleetError, RuntimeError):
    """This worker no longer holds the task's lease: another attempt owns it now."""


@dataclass
class WorkerReport:
    """What one worker did."""

    worker_id: str
    tasks_done: int = 0
    tasks_failed: int = 0
    tasks_retried: int = 0
    #: Results the ledger refused: the task had been given to a newer attempt.
    fenced: int = 0
    released: int = 0
    exit_code: int = 0
    error: str = ""


class _Lease:
    """This worker's hold on one task: renewed by the heartbeat, checked before writes."""

    def __init__(self, worker: FleetWorker, record: TaskRecord):
        self.worker = worker
        self.record = record
        self.started = time.monotonic()
        self.deadline = self.started + worker.lease - worker.margin
        self.lost = False

    def check(self) -> None:
        """Raise unless the lease is surely still held (asking the ledger once it is old)."""
        if not self.lost and time.monotonic() > self.deadline:
            self.worker.renew([self])
        if self.lost:
            raise LeaseLostError(
                f"task {self.record.task_id}: this worker's lease (attempt"
                f" {self.record.attempts}) ran out and the task was given to another attempt;"
                " nothing more is written by this one"
            )


class FleetWorker:
    """Claims and runs the tasks of one fleet run."""

    def __init__(
        self,
        ledger: FleetLedger,
        run_id: str,
        threads: int | None = None,
        lease: float = LEASE,
        poll: float = POLL,
        drain: float = DRAIN,
        worker_id: str | None = None,
        shard: str = "",
        log: Callable[[str], None] | None = None,
    ):
        self.ledger = ledger
        self.run_id = run_id
        self.lease = lease
        self.margin = min(10.0, lease / 4)
        self.poll = poll
        self.drain = drain
        host = socket.gethostname()
        self.worker_id = worker_id or f"{host}:{os.getpid()}:{secrets.token_hex(2)}"
        self.record = WorkerRecord(run_id, self.worker_id, host, os.getpid(), 0.0, 0.0, shard=shard)
        self.log = log or (lambda line: None)
        self._threads = threads
        self._stopping = threading.Event()
        self._held: dict[str, _Lease] = {}
        self._held_lock = threading.Lock()
        self._failure: BaseException | None = None
        self.report = WorkerReport(self.worker_id)

    def stop(self) -> None:
        """Take no more tasks; finish or give back those in hand (SIGTERM calls this)."""
        self._stopping.set()

    # -- leases --------------------------------------------------------------------------

    def renew(self, leases: list[_Lease]) -> None:
        """Renew leases now; mark lost those the ledger no longer gives this worker."""
        if not leases:
            return
        sent = time.monotonic()
        ids = [x.record.task_id for x in leases]
        held = self.ledger.renew(self.run_id, self.worker_id, ids, self.lease)
        for lease in leases:
            if lease.record.task_id in held:
                lease.deadline = sent + self.lease - self.margin
            else:
                lease.lost = True

    def _heartbeat(self, timeout: float) -> None:
        every = max(0.2, min(self.lease / 4, 15.0))
        while True:
            stopping = self._stopping.wait(every)
            with self._held_lock:
                leases = list(self._held.values())
            if stopping and not leases:
                return
            try:
                now = time.monotonic()
                # A task past the pipeline's timeout is let go: its lease runs out and the
                # ledger gives it to another attempt (or fails it on the last one).
                self.renew([x for x in leases if now - x.started < timeout])
                if not stopping:
                    self._save_worker("running")
            except LedgerUnavailableError as exc:
                self._failure = exc
                self._stopping.set()
                return

    def _save_worker(self, state: str) -> None:
        rec = self.record
        rec.state, rec.heartbeat = state, self.ledger.now()
        rec.tasks_done, rec.tasks_failed = self.report.tasks_done, self.report.tasks_failed
        self.ledger.save_worker(rec)

    # -- running -------------------------------------------------------------------------

    def run(self) -> WorkerReport:
        """Work until the run has nothing left (or this worker is stopped); never raises
        for a task, and reports a lost ledger as exit code 75."""
        try:
            self._run()
        except LedgerUnavailableError as exc:
            self.report.exit_code, self.report.error = EXIT_RETRY, str(exc)
        if self._failure is not None and not self.report.error:
            self.report.exit_code, self.report.error = EXIT_RETRY, str(self._failure)
        return self.report

    def _run(self) -> None:
        run = self.ledger.get_run(self.run_id)
        pipeline = pipeline_from_dict(run.pipeline, where=run.pipeline_path or run.run_id)
        context = json.dumps(run.pipeline)
        threads = self._threads or pipeline.threads
        self.record.started = self.ledger.now()
        self._save_worker("running")
        indexer = None
        if pipeline.catalog is not None:
            section = pipeline.catalog
            indexer = ItemIndexer.open(
                section.url, section.collection, section.title, section.description, run.run_id
            )
        beat = threading.Thread(
            target=self._heartbeat,
            args=(pipeline.run.timeout,),
            name="pixelfleet-lease",
            daemon=True,
        )
        beat.start()
        pool = ThreadPoolExecutor(threads, thread_name_prefix="pixelfleet-task")
        inflight: dict[Future[str], _Lease] = {}
        ready: dict[Future[str], _Lease] = {}  # finished, not yet recorded
        ready_since = 0.0
        last_reap = 0.0
        # Leases are looked at a few times per lease: a dead worker's tasks wait at most
        # about a lease and a third; thousands of workers do not all ask at once.
        reap_every = max(self.poll, self.lease / 4) * random.uniform(0.8, 1.2)
        stopped = False
        try:
            while not self._stopping.is_set():
                if time.monotonic() - last_reap > reap_every:
                    self.ledger.reap(self.run_id, pipeline.run.attempts)
                    last_reap = time.monotonic()
                # Twice as many tasks in hand as threads, claimed a batch at a time, so no
                # thread waits for a round trip to the ledger between two small tasks.
                room = 2 * threads - len(inflight)
                want = room if room >= threads or not inflight else 0
                claimed = (
                    self.ledger.claim(self.run_id, self.worker_id, want, self.lease) if want else []
                )
                for rec in claimed:
                    future = self._start(pool, pipeline, context, rec)
                    inflight[future] = self._held[rec.task_id]
                if inflight:
                    # Results are recorded in batches (a thread's worth, or every 50 ms), so
                    # small tasks do not each pay a round trip to the ledger.
                    left = _GATHER - (time.monotonic() - ready_since) if ready else self.poll
                    done, _ = wait(
                        list(inflight), timeout=max(left, 0.0), return_when=FIRST_COMPLETED
                    )
                    if done and not ready:
                        ready_since = time.monotonic()
                    ready.update((f, inflight.pop(f)) for f in done)
                    if ready and (
                        len(ready) >= threads
                        or not inflight
                        or time.monotonic() - ready_since >= _GATHER
                    ):
                        self._settle(pipeline, ready, indexer)
                        ready = {}
                elif not claimed:
                    if not self.ledger.has_tasks(self.run_id, ["pending", "running"]):
                        if self.ledger.get_run(self.run_id).state != "planning":
                            break  # the run has nothing left to do
                        self._stopping.wait(0.05)  # its driver is still writing the plan
                        continue
                    # Others' tasks run: look again (and reap them if they die) a little
                    # later, at a moment of this worker's own, so idle workers spread out.
                    self._stopping.wait(self.poll * random.uniform(0.5, 1.5))
            if self._failure is None:
                self._settle(pipeline, ready, indexer)
            stopped = self._stopping.is_set()
            if self._failure is None:  # with the ledger gone there is no one to tell
                self._drain(pipeline, inflight, indexer)
            if self._failure is None:
                self._save_worker("stopped" if stopped else "finished")
        finally:
            self._stopping.set()
            pool.shutdown(wait=False, cancel_futures=True)
            if indexer is not None:
                indexer.close()
        if not stopped and self._failure is None:
            close_run(self.ledger, self.run_id)  # the last one out records the run's end
        if stopped and self._failure is None:
            self.report.exit_code = EXIT_RETRY
            self.report.error = "stopped before the run was finished; its tasks were given back"

    def _start(
        self, pool: ThreadPoolExecutor, pipeline: Pipeline, context: str, rec: TaskRecord
    ) -> Future[str]:
        lease = _Lease(self, rec)
        with self._held_lock:
            self._held[rec.task_id] = lease
        task = rec.to_task()
        if rec.error_type == LEASE_EXPIRED:  # the last attempt's worker died mid-task
            keys = pipeline.output_keys(task)
            if keys:
                open_storage(pipeline.output.url, get_settings()).remove_partial(keys)
        payload = json.dumps(task.to_dict())

        def work() -> str:
            write_guard.set(lease.check)
            return execute(context, payload)

        return pool.submit(work)

    def _settle(
        self, pipeline: Pipeline, done: dict[Future[str], _Lease], indexer: ItemIndexer | None
    ) -> None:
        """Record finished tasks (fenced) and index the items of those recorded."""
        if not done:
            return
        records, results = [], {}
        now = time.time()  # the ledger stamps its own time on what it records
        for future, lease in done.items():
            try:
                result = TaskResult.from_dict(json.loads(future.result()))
            except Exception as exc:  # noqa: BLE001 - execute never raises; be safe anyway
                result = TaskResult.crashed(lease.record.task_id, exc, self.worker_id)
            rec = lease.record
            attempt = rec.attempts
            again = result.state == "failed" and not result.permanent
            state = "pending" if again and attempt < pipeline.run.attempts else result.state
            rec.apply(result, attempt, state, now)
            rec.worker = self.worker_id  # the fence: the claimer, not the thread's name
            records.append(rec)
            results[rec.task_id] = (result, state)
        recorded = self.ledger.finish(self.run_id, records)
        with self._held_lock:
            for rec in records:
                self._held.pop(rec.task_id, None)
        for task_id, (result, state) in results.items():
            if task_id not in recorded:
                self.report.fenced += 1
                self.log(f"task {task_id}: a newer attempt owns it; this result was dropped")
                continue
            if state == "done":
                self.report.tasks_done += 1
            elif state == "failed":
                self.report.tasks_failed += 1
            else:
                self.report.tasks_retried += 1
            if indexer is not None and state != "pending":
                indexer.add(result)
        if indexer is not None:
            indexer.flush(force=True)

    def _drain(
        self, pipeline: Pipeline, inflight: dict[Future[str], _Lease], indexer: ItemIndexer | None
    ) -> None:
        """Stopping: wait up to ``drain`` seconds for the tasks in hand, give back the rest."""
        deadline = time.monotonic() + self.drain
        while inflight and time.monotonic() < deadline:
            left = max(0.0, deadline - time.monotonic())
            done, _ = wait(list(inflight), timeout=left, return_when=FIRST_COMPLETED)
            self._settle(pipeline, {f: inflight.pop(f) for f in done}, indexer)
        if inflight:
            for lease in inflight.values():
                lease.lost = True  # whatever they still write is refused
            ids = [x.record.task_id for x in inflight.values()]
            self.report.released += len(self.ledger.release(self.run_id, self.worker_id, ids))
            with self._held_lock:
                for task_id in ids:
                    self._held.pop(task_id, None)
