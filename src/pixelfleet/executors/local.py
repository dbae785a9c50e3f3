"""Run jobs in a pool of worker processes on this machine.

Each worker is a process that never shares the parent's memory (forked from a fresh
fork server, or spawned: the parent may hold threads and GDAL state that must not be
forked) that gets the context once, then runs up to
``threads`` jobs at a time in a thread pool, which overlaps storage latency; GDAL and
Pillow release the GIL while they work. Jobs and results cross a pipe per worker as
JSON text.

The parent sends a worker at most ``threads + 1`` jobs, so a worker always has its
next job at hand, and it knows exactly which jobs each worker holds. A worker says
when it *starts* a job, which is what decides the fate of the jobs a dead worker held:

- started jobs get a ``WorkerLostError`` result naming the pid and how the process
  ended: nobody knows which of them killed it, so each is charged an attempt (the
  runner retries them with ``isolate``);
- jobs it held but had not started cannot have killed it: they go back to the front
  of the queue, silently, without a result or a charged attempt;
- a job that runs longer than the timeout gets a ``TaskTimeoutError`` result and its
  worker is killed, since a thread stuck in C code cannot be stopped any other way;
  its culprit is known, so the jobs running beside it are requeued silently.

A replacement worker is started at once. Everything happens in the caller's thread,
inside :meth:`LocalExecutor.submit` and :meth:`LocalExecutor.results`; there is no
background thread in the parent.

A worker imports only what its steps need. ``spawn`` would run the parent's main
module again in every worker (for ``pixelfleet run``, the whole command-line package
with click; under pytest, pytest), although a worker loads everything it runs by
reference; so workers are started without it, unless the pipeline names something in
``__main__`` by reference.

Where the system has one, workers are forked from ``multiprocessing``'s fork server
rather than spawned: a fresh single-threaded process (safe to fork whatever threads the
parent holds) that imports :data:`PRELOAD` once, so each worker, and each replacement of
a dead one, starts without importing the worker code again (0.17-0.25 s per worker by
``python -X importtime``: 2-4% of the CPU of a 20,000-photo run, per worker). A forked
worker takes the parent's current environment, working folder and ``sys.path``, as a
spawned one does.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import json
import multiprocessing
import os
import selectors
import signal
import socket
import sys
import threading
import time
import types
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from pixelfleet import jsontext
from pixelfleet.errors import ConfigError, TaskTimeoutError, WorkerLostError
from pixelfleet.executors.base import WORKER_FUNCTION, WORKER_PREPARE, Executor, Job
from pixelfleet.models import TaskResult

#: Workers that die before they are ready, one after another, before the run gives up.
_MAX_FAILED_STARTS = 3
#: What the fork server imports before it forks workers: what every worker imports (by
#: name: the executor itself never imports the worker's side), and the thumbnail step.
PRELOAD = [
    "pixelfleet.executors.local",
    "pixelfleet.worker",
    "pixelfleet.pipeline",
    "pixelfleet.ops.thumbnail",
]
#: Seconds ``close()`` waits for idle workers to exit before killing them.
_CLOSE_GRACE = 5.0


@dataclass
class _Held:
    """A job the parent has sent to a worker, and when the worker said it started."""

    job: Job
    started: float | None = None


@dataclass(eq=False)
class _Worker:
    """One worker process, its end of the pipe and the jobs it holds."""

    process: BaseProcess
    conn: Connection
    held: dict[int, _Held] = field(default_factory=dict)
    ready: bool = False
    #: Running an ``isolate`` job: nothing else is sent until it is done.
    isolated: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid or 0


class LocalExecutor(Executor):
    """``workers`` processes on this machine, each running up to ``threads`` jobs at once."""

    name = "local"

    def __init__(self, address: str = "", workers: int | None = None, threads: int = 4):
        if address:
            raise ConfigError(
                f"the local executor takes no address (got {address!r}); "
                "use 'local', or 'dask://host:port' for a cluster"
            )
        self.workers = workers or os.cpu_count() or 1
        self.threads = max(1, threads)
        self._limit = self.threads + 1
        self._mp = start_context()
        self._context = ""
        self._timeout = float("inf")
        self._pool: list[_Worker] = []
        self._waitables: dict[Any, _Worker] = {}
        self._selector: selectors.BaseSelector | None = None
        self._queue: deque[Job] = deque()
        self._isolate_queue: deque[Job] = deque()
        self._done: list[TaskResult] = []
        self._seq = itertools.count()
        self._failed_starts = 0
        self._started = False
        self._closed = False
        self._host = socket.gethostname()

    # -- Executor interface -------------------------------------------------------------

    def start(self, context: str, timeout: float) -> None:
        """Start the worker processes; each receives ``context`` once."""
        if self._started:
            raise RuntimeError("LocalExecutor.start() was already called")
        self._started = True
        self._context = context
        self._timeout = timeout if timeout and timeout > 0 else float("inf")
        self._pool = [self._spawn(i) for i in range(self.workers)]
        self._index_waitables()

    def submit(self, job: Job) -> None:
        """Queue a job and send it to a worker at once if one has room."""
        if not self._started or self._closed:
            raise RuntimeError("LocalExecutor.submit() needs start() first and no close()")
        (self._isolate_queue if job.isolate else self._queue).append(job)
        self._dispatch()

    def results(self, wait: float) -> list[TaskResult]:
        """Return the results that arrived, waiting up to ``wait`` seconds for the first."""
        if not self._started or self._closed:
            return []
        deadline = time.monotonic() + max(0.0, wait)
        while True:
            now = time.monotonic()
            timeout = 0.0 if self._done or not self._busy() else max(0.0, deadline - now)
            expiry = self._next_expiry()
            if expiry is not None:
                timeout = min(timeout, max(0.0, expiry - now))
            self._pump(timeout)
            self._expire()
            self._dispatch()
            if self._done or not self._busy() or time.monotonic() >= deadline:
                break
        out, self._done = self._done, []
        return out

    def close(self) -> None:
        """Stop every worker (killing those still holding jobs) and reap them."""
        if self._closed:
            return
        self._closed = True
        for worker in self._pool:
            if worker.held:
                worker.process.kill()
            else:
                try:
                    worker.conn.send(None)
                except OSError:
                    worker.process.kill()
        deadline = time.monotonic() + _CLOSE_GRACE
        for worker in self._pool:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.conn.close()
            worker.process.close()
        self._pool = []
        self._waitables = {}
        if self._selector is not None:
            self._selector.close()
            self._selector = None
        self._queue.clear()
        self._isolate_queue.clear()

    def capacity(self) -> int:
        """Two rounds of work for every worker thread, counting the one each keeps in hand."""
        return self.workers * self._limit * 2

    def describe(self) -> str:
        """E.g. ``local: 2 processes x 4 threads``."""
        processes = "process" if self.workers == 1 else "processes"
        threads = "thread" if self.threads == 1 else "threads"
        return f"local: {self.workers} {processes} x {self.threads} {threads}"

    # -- the parent's bookkeeping -------------------------------------------------------

    def _spawn(self, index: int) -> _Worker:
        parent_conn, child_conn = self._mp.Pipe(duplex=True)
        process = self._mp.Process(
            target=_serve,
            args=(
                child_conn,
                self._context,
                self.threads,
                f"pixelfleet-worker-{index}",
                dict(os.environ),
            ),
            name=f"pixelfleet-worker-{index}",
            # Daemonic: if the parent exits without close(), multiprocessing ends them.
            daemon=True,
        )
        with _main_module_hidden(self._context):
            process.start()
        child_conn.close()
        return _Worker(process=process, conn=parent_conn)

    def _index_waitables(self) -> None:
        self._waitables = {}
        for worker in self._pool:
            self._waitables[worker.conn] = worker
            self._waitables[worker.process.sentinel] = worker
        if sys.platform == "win32":
            return  # multiprocessing.connection.wait, as the pipes are not selectable there
        # One selector for as long as the pool is the same, rather than one made by every
        # wait() and poll() (what a result cost the parent, with small tasks).
        if self._selector is not None:
            self._selector.close()
        self._selector = selectors.DefaultSelector()
        for obj, worker in self._waitables.items():
            self._selector.register(obj, selectors.EVENT_READ, worker)

    def _busy(self) -> bool:
        return bool(self._queue or self._isolate_queue) or any(w.held for w in self._pool)

    def _send(self, worker: _Worker, job: Job) -> None:
        seq = next(self._seq)
        worker.held[seq] = _Held(job)
        # If the worker is gone, its sentinel will say so and the job will be requeued.
        with contextlib.suppress(OSError):
            worker.conn.send((seq, job.task_id, job.payload))

    def _dispatch(self) -> None:
        """Send queued jobs to workers with room; isolate jobs only to empty workers."""
        while self._isolate_queue:
            empty = next((w for w in self._pool if not w.held), None)
            if empty is None:
                break
            empty.isolated = True
            self._send(empty, self._isolate_queue.popleft())
        eligible = [w for w in self._pool if not w.isolated]
        if self._isolate_queue and eligible:
            # Let the least loaded workers drain so the waiting isolate jobs get one each.
            eligible.sort(key=lambda w: len(w.held))
            eligible = eligible[len(self._isolate_queue) :]
        while self._queue and eligible:
            worker = min(eligible, key=lambda w: len(w.held))
            if len(worker.held) >= self._limit:
                break
            self._send(worker, self._queue.popleft())

    def _pump(self, timeout: float) -> None:
        """Wait up to ``timeout`` for any worker to speak or die, then read all they said."""
        if self._selector is None:
            ready = wait(list(self._waitables), timeout)
            touched = {id(self._waitables[obj]): self._waitables[obj] for obj in ready}
            for worker in touched.values():
                open_pipe = self._receive(worker)
                if not open_pipe or worker.process.sentinel in ready:
                    self._lose(worker)
            return
        events = self._selector.select(timeout)
        while events:
            lost: list[_Worker] = []
            for key, _mask in events:
                worker = key.data
                if worker in lost:
                    continue
                if key.fileobj is not worker.conn or not self._receive_one(worker):
                    lost.append(worker)  # its process ended, or its pipe closed
            for worker in lost:
                self._lose(worker)  # reads what it sent before it died, first
            events = self._selector.select(0)

    def _receive_one(self, worker: _Worker) -> bool:
        """Read one message of a worker whose pipe is readable; False once it is closed."""
        try:
            message = worker.conn.recv()
        except (EOFError, OSError):
            return False
        self._handle(worker, message)
        return True

    def _receive(self, worker: _Worker) -> bool:
        """Read every message a worker has sent; False once its pipe is closed."""
        try:
            while worker.conn.poll():
                self._handle(worker, worker.conn.recv())
        except (EOFError, OSError):
            return False
        return True

    def _handle(self, worker: _Worker, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "start":
            held = worker.held.get(message[1])
            if held is not None:
                held.started = time.monotonic()
        elif kind == "done":
            held = worker.held.pop(message[1], None)
            if held is not None:
                self._done.append(_parse(held, message[2], worker))
            if not worker.held:
                worker.isolated = False
        elif kind == "ready":
            worker.ready = True
            self._failed_starts = 0

    def _next_expiry(self) -> float | None:
        if self._timeout == float("inf"):
            return None
        starts = [h.started for w in self._pool for h in w.held.values() if h.started is not None]
        return min(starts) + self._timeout if starts else None

    def _expire(self) -> None:
        """Kill the worker of every job that has run longer than the timeout."""
        if self._timeout == float("inf"):
            return
        now = time.monotonic()
        for worker in list(self._pool):
            overdue = [
                seq
                for seq, held in worker.held.items()
                if held.started is not None and now - held.started > self._timeout
            ]
            if overdue:
                worker.process.kill()
                self._lose(worker, timed_out=set(overdue))

    def _lose(self, worker: _Worker, timed_out: set[int] | None = None) -> None:
        """Account for every job a dead (or killed) worker held, then replace it."""
        pid = worker.pid
        worker.process.join(_CLOSE_GRACE)
        if worker.process.is_alive():
            # Its pipe closed but it lives on: it is of no use any more.
            worker.process.kill()
            worker.process.join()
        # Whatever it managed to send before it died still counts.
        self._receive(worker)
        how = _exit_text(worker.process.exitcode)
        now = time.monotonic()
        requeue: list[Job] = []
        for seq, held in worker.held.items():
            ran = now - held.started if held.started is not None else 0.0
            if timed_out and seq in timed_out:
                error: Exception = TaskTimeoutError(
                    f"task ran longer than the {self._timeout:g} s timeout; "
                    f"worker process {pid} was killed"
                )
            elif held.started is not None and not timed_out:
                error = WorkerLostError(
                    f"worker process {pid} died ({how}) while running this task"
                )
            else:
                requeue.append(held.job)
                continue
            result = TaskResult.crashed(held.job.task_id, error, f"{self._host}:{pid}")
            result.seconds = ran
            self._done.append(result)
        for job in reversed(requeue):
            (self._isolate_queue if job.isolate else self._queue).appendleft(job)
        if not worker.ready:
            self._failed_starts += 1
        worker.conn.close()
        worker.process.close()
        index = self._pool.index(worker)
        if self._failed_starts >= _MAX_FAILED_STARTS:
            self._pool.pop(index)
            self._index_waitables()
            raise WorkerLostError(
                f"{self._failed_starts} local worker processes in a row exited before they were "
                f"ready (last: {how}); run with --executor inline to see the error"
            )
        self._pool[index] = self._spawn(index)
        self._index_waitables()


_main_lock = threading.Lock()


@contextlib.contextmanager
def _main_module_hidden(context: str) -> Iterator[None]:
    """While a worker is spawned, show ``multiprocessing`` a main module with neither file
    nor spec, so the worker does not import and run the parent's (``spawn`` would).

    Left alone when the pipeline names ``__main__:...`` (a step defined in the script
    that runs the pipeline): that worker needs the script.
    """
    if "__main__:" in context or "__mp_main__:" in context:
        yield
        return
    with _main_lock:
        main = sys.modules.get("__main__")
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            yield
        finally:
            if main is not None:
                sys.modules["__main__"] = main


def _parse(held: _Held, text: str, worker: _Worker) -> TaskResult:
    """A worker's JSON result, or a crash result if it cannot be read."""
    try:
        return TaskResult.from_dict(jsontext.loads(text))
    except (ValueError, TypeError, KeyError) as exc:
        return TaskResult.crashed(held.job.task_id, exc, f"{socket.gethostname()}:{worker.pid}")


def _exit_text(code: int | None) -> str:
    """How a process ended, in words: ``killed by SIGKILL``, ``exit code 1``."""
    if code is None:
        return "still running"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = ", perhaps out of memory" if name == "SIGKILL" else ""
        return f"killed by {name}{hint}"
    return f"exit code {code}"


# -- the worker process ------------------------------------------------------------------


def start_context() -> Any:
    """How workers are started: forked from ``multiprocessing``'s fork server where there
    is one (Linux, macOS) and it preloads :data:`PRELOAD`, else spawned.

    The fork server is one per process, and its preload list is set by whoever starts it
    first. When it already runs with another list (the blocks pool's, which loads
    rasterio), workers are spawned: a worker never carries modules its steps do not need.
    """
    spawn = multiprocessing.get_context("spawn")
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return spawn
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    running = getattr(server, "_forkserver_pid", False)
    if running is False:  # a Python whose fork server looks otherwise: do not guess
        return spawn
    if running is not None and getattr(server, "_preload_modules", None) != PRELOAD:
        return spawn
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    atexit.unregister(stop_fork_server)  # once, however many executors start
    atexit.register(stop_fork_server)
    return context


def stop_fork_server() -> None:
    """Stop this process's fork server, if it runs, and wait for it.

    Called when the process exits: waiting for the server is what adds its CPU time, and
    that of the workers it forked and waited for, to this process's children's (what
    ``time pixelfleet run`` and ``getrusage`` report); a server left to end on its own
    would be reaped by someone else. Benchmarks call it before reading CPU times.
    """
    from multiprocessing import forkserver

    stop = getattr(getattr(forkserver, "_forkserver", None), "_stop", None)
    if stop is not None:
        with contextlib.suppress(OSError):
            stop()


def _serve(
    conn: Connection,
    context: str,
    threads: int,
    title: str,
    environment: dict[str, str] | None = None,
) -> None:
    """Body of a worker process: run the jobs that arrive until told to stop.

    ``environment`` is the parent's when it started the worker: a worker forked from the
    fork server would otherwise have the server's, from when it started.
    """
    if environment is not None and environment != os.environ:
        os.environ.clear()
        os.environ.update(environment)
    # Ctrl-C reaches the whole process group; the parent handles it and closes the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(ImportError):
        import setproctitle  # optional: shows the workers by name in ps and top

        setproctitle.setproctitle(title)

    from pixelfleet.imagery.memory import guard_this_process
    from pixelfleet.registry import load_reference

    guard_this_process()  # the worker's memory cap, as a hard limit (imagery/memory.py)

    execute: Callable[[str, str], str] = load_reference(WORKER_FUNCTION)
    lock = threading.Lock()

    def send(message: tuple[Any, ...]) -> None:
        with lock:
            conn.send(message)

    def run(seq: int, task_id: str, payload: str) -> None:
        send(("start", seq))
        try:
            text = execute(context, payload)
        except Exception as exc:  # noqa: BLE001 - execute reports its own errors; last resort
            text = json.dumps(TaskResult.crashed(task_id, exc).to_dict())
        send(("done", seq, text))

    # Parse the pipeline (imports, GDAL set-up, ops) before saying ready, so that this
    # one-off cost never counts against the first job's timeout. A pipeline that fails
    # here fails again inside each job, which reports it.
    with contextlib.suppress(Exception):
        load_reference(WORKER_PREPARE)(context)
    send(("ready", os.getpid()))
    pool = ThreadPoolExecutor(threads, thread_name_prefix=title)
    try:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break  # the parent is gone
            if message is None:
                break
            pool.submit(run, *message)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        conn.close()
