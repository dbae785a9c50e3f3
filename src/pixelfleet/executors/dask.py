"""Run jobs on a Dask cluster: one started for the run on this machine, or one at ``host:port``.

Each job is one Dask task calling :data:`~pixelfleet.executors.base.WORKER_FUNCTION`
with two strings, the context and the task, both JSON; the function travels by
reference, so the workers need pixelfleet (and any plug-in op) installed. Dask
imports only when this executor is built.

What Dask does differently from the local executor:

- a worker that dies: Dask itself runs its tasks again elsewhere, up to
  ``distributed.scheduler.allowed-failures`` times; after that the future fails
  with ``KilledWorker``, reported as a ``WorkerLostError`` result. Any other error
  of a future is reported under its own type name.
- ``isolate`` is not honoured: Dask places tasks itself, and its own count of
  failures (above) already singles out a task that keeps killing workers.
- the timeout is soft: a running Dask task cannot be stopped from outside, so it is
  not enforced here. Bound slow reads in the op instead (e.g. GDAL's HTTP timeouts).

As in the local executor, each worker gets the memory cap as a hard limit
(``RLIMIT_DATA``, see :mod:`pixelfleet.imagery.memory`): a worker plugin
(:class:`~pixelfleet.executors.dask_guard.MemoryGuard`) marks every worker, those that
join later too, and its first decode sets the limit from the settings the task runs
under. A cluster given by address is taken to be there for pixelfleet's tasks while
the run lasts; the plugin is removed when the executor closes, and each worker gets
back the limit it had.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import secrets
import time
from typing import Any

from pixelfleet.errors import ConfigError, MissingExtraError, WorkerLostError
from pixelfleet.executors.base import WORKER_FUNCTION, Executor, Job
from pixelfleet.models import TaskResult
from pixelfleet.registry import load_reference

#: Seconds between two asks of the scheduler for its number of worker threads.
_CAPACITY_REFRESH = 10.0


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise MissingExtraError(
            "the dask executor needs Dask's distributed scheduler: pip install 'pixelfleet[dask]'"
        ) from exc
    return distributed


class DaskExecutor(Executor):
    """Jobs as Dask tasks; ``address`` empty starts a local cluster for the run."""

    name = "dask"

    def __init__(self, address: str = "", workers: int | None = None, threads: int = 4):
        self._distributed = _import_distributed()
        self.address = address
        self.workers = workers or os.cpu_count() or 1
        self.threads = max(1, threads)
        self._client: Any = None
        self._cluster: Any = None
        self._context = ""
        self._execute = load_reference(WORKER_FUNCTION)
        self._jobs: dict[str, tuple[Job, Any]] = {}
        # Futures land here from Dask's callback thread as they finish, err or are cancelled.
        self._finished: queue.Queue[Any] = queue.Queue()
        self._seq = itertools.count()
        self._nthreads = self.workers * self.threads
        self._nthreads_at = 0.0
        self._closed = False
        self._guard = ""  # the name of the memory guard plugin, once registered

    def start(self, context: str, timeout: float) -> None:
        """Connect to the cluster (or start a local one); ``timeout`` is not enforced."""
        distributed = self._distributed
        self._context = context
        if self.address:
            url = self.address if "://" in self.address else f"tcp://{self.address}"
            try:
                self._client = distributed.Client(url, set_as_default=False)
            except OSError as exc:
                raise ConfigError(
                    f"cannot reach the Dask scheduler at {url}: {exc}; check the address "
                    "(dask://host:port) and that the scheduler is running"
                ) from exc
        else:
            self._cluster = distributed.LocalCluster(
                n_workers=self.workers,
                threads_per_worker=self.threads,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
                # No dashboard, and its HTTP server (kept for metrics) on a free port, not 8787.
                scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
            )
            self._client = distributed.Client(self._cluster, set_as_default=False)
        from pixelfleet.executors.dask_guard import MemoryGuard

        # A name of its own: two runs sharing a cluster each release only their hold.
        self._guard = f"pixelfleet-memory-guard-{secrets.token_hex(4)}"
        self._client.register_plugin(MemoryGuard(), name=self._guard)

    def submit(self, job: Job) -> None:
        """Submit the job as one Dask task under a key unique to this attempt."""
        if self._client is None or self._closed:
            raise RuntimeError("DaskExecutor.submit() needs start() first and no close()")
        key = f"pixelfleet-{job.task_id}-{next(self._seq)}"
        future = self._client.submit(
            self._execute, self._context, job.payload, key=key, pure=False, retries=0
        )
        self._jobs[future.key] = (job, future)
        future.add_done_callback(self._finished.put)

    def results(self, wait: float) -> list[TaskResult]:
        """Return the results of the futures that finished, waiting up to ``wait`` for one."""
        if not self._jobs:
            return []
        try:
            batch = [self._finished.get(timeout=wait) if wait > 0 else self._finished.get_nowait()]
        except queue.Empty:
            return []
        with contextlib.suppress(queue.Empty):
            while True:
                batch.append(self._finished.get_nowait())
        done = []
        for future in batch:
            entry = self._jobs.pop(future.key, None)
            if entry is not None:
                done.append(entry)
        return self._collect(done)

    def close(self) -> None:
        """Disconnect, and stop the local cluster if this executor started one."""
        if self._closed:
            return
        self._closed = True
        self._jobs.clear()
        if self._client is not None:
            if self._guard and self._cluster is None:  # a cluster that outlives the run
                with contextlib.suppress(Exception):  # a scheduler gone: nothing to undo
                    self._client.unregister_worker_plugin(self._guard)
            self._client.close()
        if self._cluster is not None:
            self._cluster.close()

    def capacity(self) -> int:
        """Twice the cluster's worker threads, asked of the scheduler now and then."""
        now = time.monotonic()
        if self._client is not None and now - self._nthreads_at > _CAPACITY_REFRESH:
            self._nthreads_at = now
            with contextlib.suppress(Exception):  # a busy scheduler: keep the last figure
                self._nthreads = sum(self._client.nthreads().values()) or self._nthreads
        return max(2, self._nthreads * 2)

    def describe(self) -> str:
        """E.g. ``dask: local cluster, 2 processes x 4 threads`` or ``dask: tcp://host:8786``."""
        if self.address:
            url = self.address if "://" in self.address else f"tcp://{self.address}"
            return f"dask: {url}"
        processes = "process" if self.workers == 1 else "processes"
        threads = "thread" if self.threads == 1 else "threads"
        return f"dask: local cluster, {self.workers} {processes} x {self.threads} {threads}"

    def _collect(self, done: list[tuple[Job, Any]]) -> list[TaskResult]:
        """Turn finished futures into results, fetching successful ones in one round trip."""
        ok = [(job, f) for job, f in done if f.status == "finished"]
        texts: list[Any] = []
        if ok:
            try:
                texts = self._client.gather([f for _, f in ok])
            except Exception:  # noqa: BLE001 - a result lost since; fetched one by one below
                texts = [None] * len(ok)
        fetched = {f.key: text for (_, f), text in zip(ok, texts, strict=True)}
        out = []
        for job, future in done:
            out.append(self._result(job, future, fetched.get(future.key)))
            future.release()
        return out

    def _result(self, job: Job, future: Any, text: str | None) -> TaskResult:
        try:
            if text is None:
                text = future.result()
            return TaskResult.from_dict(json.loads(text))
        except self._distributed.KilledWorker as exc:
            return TaskResult.crashed(job.task_id, WorkerLostError(f"Dask gave up: {exc}"))
        except Exception as exc:  # noqa: BLE001 - whatever failed is this task's failure
            return TaskResult.crashed(job.task_id, exc)
