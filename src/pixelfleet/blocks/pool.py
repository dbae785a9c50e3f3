"""Where a run's strips are computed: in this thread, on threads, on worker processes,
or on a Dask cluster.

| executor | strips run |
| --- | --- |
| ``inline`` | one after another in the calling thread (for debugging, and inside pipeline tasks) |
| ``threads`` | on ``workers`` threads of this process (GDAL and numpy release the GIL) |
| ``local`` | on ``workers`` processes (see :func:`start_context`), one strip at a time |
| ``dask``, ``dask://host:port`` | on a Dask cluster started for the run, or an existing one |

A strip whose worker died (a process killed, a Dask worker lost) or that failed with an
error retrying may cure (storage, network) is run again, up to ``attempts`` times in
all; an error in the user's function or in an input is not retried. Worker processes
get the strip as JSON and call :data:`~pixelfleet.blocks.process.STRIP_FUNCTION` by
reference; so does Dask.
"""

from __future__ import annotations

import base64
import contextlib
import json
import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_for
from multiprocessing.process import BaseProcess
from typing import Any

from pixelfleet.blocks.process import STRIP_FUNCTION, serve
from pixelfleet.blocks.strips import (
    BlockFunction,
    RunPlan,
    StripJob,
    raise_error,
    run_strip,
)
from pixelfleet.errors import PERMANENT_ERRORS, ConfigError, MissingExtraError, WorkerLostError
from pixelfleet.registry import load_reference
from pixelfleet.storage import Storage

EXECUTORS = ("inline", "threads", "local", "dask")


def parse_executor(spec: str) -> tuple[str, str]:
    """``"dask://host:8786"`` -> ``("dask", "host:8786")``; unknown names raise."""
    name, _, address = spec.partition("://")
    if name not in EXECUTORS:
        raise ConfigError(
            f"executor {spec!r} is not known for block processing; choose one of: "
            f"{', '.join(EXECUTORS)} (dask also as dask://host:port)"
        )
    if address and name != "dask":
        raise ConfigError(f"executor {name!r} takes no address (got {spec!r})")
    return name, address


@dataclass
class StripRunner:
    """Runs every strip of a plan on one executor and returns their results in order."""

    plan: RunPlan
    jobs: Sequence[StripJob]
    executor: str
    workers: int
    attempts: int
    #: The function and its arguments, for executors that run in this process.
    function: BlockFunction
    args: Any
    on_blocks: Callable[[int], None] | None = None
    #: Storages lent to strips that run in this process (see ``Opened``).
    roots: Mapping[str, Storage] | None = None

    def run(self) -> list[dict[str, Any]]:
        """Compute every strip; raise the first error no retry can cure."""
        name, address = parse_executor(self.executor)
        results: dict[int, dict[str, Any]] = {}
        if name == "inline":
            for job in self.jobs:
                results[job.index] = self._in_process(job)
        elif name == "threads":
            self._threads(results)
        elif name == "local":
            self._processes(results)
        else:
            self._dask(address, results)
        return [results[job.index] for job in self.jobs]

    # -- in this process ---------------------------------------------------------------

    def _in_process(self, job: StripJob) -> dict[str, Any]:
        for attempt in range(1, self.attempts + 1):
            try:
                return run_strip(self.plan, job, self.function, self.args, self._count, self.roots)
            except Exception as exc:
                if isinstance(exc, PERMANENT_ERRORS) or attempt == self.attempts:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _count(self, n: int) -> None:
        if self.on_blocks is not None:
            self.on_blocks(n)

    def _threads(self, results: dict[int, dict[str, Any]]) -> None:
        with ThreadPoolExecutor(self.workers, thread_name_prefix="pixelfleet-strip") as pool:
            futures: dict[Future[dict[str, Any]], StripJob] = {
                pool.submit(self._in_process, job): job for job in self.jobs
            }
            pending = set(futures)
            try:
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        results[futures[future].index] = future.result()
            finally:
                for future in pending:
                    future.cancel()

    # -- worker processes --------------------------------------------------------------

    def _payload(self, job: StripJob, plan_json: str) -> str:
        job_json = json.dumps({"index": job.index, "row0": job.row0, "row1": job.row1})
        return f'{{"plan": {plan_json}, "job": {job_json}}}'

    def _accept(
        self, job: StripJob, text: str, tries: dict[int, int], results: dict[int, dict[str, Any]]
    ) -> bool:
        """Record a worker's answer; False when the strip should run again."""
        data = json.loads(text)
        error = data.get("error")
        if error is not None:
            tries[job.index] += 1
            if error.get("permanent") or tries[job.index] >= self.attempts:
                raise_error(error)
            return False
        if data.pop("files", None) is not None:
            raise ConfigError("a worker sent files back to a driver that shares its disk")
        self._count(int(data["blocks"]))
        results[job.index] = data
        return True

    def _processes(self, results: dict[int, dict[str, Any]]) -> None:
        plan_json = json.dumps(self.plan.to_dict())
        queue = deque(self.jobs)
        tries = dict.fromkeys((j.index for j in self.jobs), 0)
        context = start_context()
        pool: list[_Process] = []
        try:
            while queue or any(p.job for p in pool):
                while queue and len(pool) < min(self.workers, len(self.jobs)):
                    pool.append(_Process.start(context))
                for process in pool:
                    if process.job is None and queue:
                        job = queue.popleft()
                        process.send(job, self._payload(job, plan_json))
                ready = wait_for([p.conn for p in pool] + [p.process.sentinel for p in pool])
                for process in list(pool):
                    message = process.receive() if process.conn in ready else None
                    if message is not None:
                        job, text = message
                        if not self._accept(job, text, tries, results):
                            queue.appendleft(job)
                    elif process.process.sentinel in ready or not process.alive():
                        pool.remove(process)
                        lost = process.lost()
                        if lost is not None:
                            job, how = lost
                            tries[job.index] += 1
                            if tries[job.index] >= self.attempts:
                                raise WorkerLostError(
                                    f"a worker process died ({how}) while computing rows "
                                    f"{job.row0}-{job.row1}, {tries[job.index]} time(s); "
                                    + _hint(how)
                                )
                            queue.appendleft(job)
        finally:
            for process in pool:
                process.stop()

    # -- Dask --------------------------------------------------------------------------

    def _dask(self, address: str, results: dict[int, dict[str, Any]]) -> None:
        try:
            import distributed
        except ImportError as exc:
            raise MissingExtraError(
                "the dask executor needs Dask's distributed scheduler: "
                "pip install 'pixelfleet[dask]'"
            ) from exc
        plan = self.plan
        if address:
            plan = RunPlan.from_dict({**plan.to_dict(), "return_files": True})
        plan_json = json.dumps(plan.to_dict())
        with _dask_client(distributed, address, self.workers) as client:
            target = load_reference(STRIP_FUNCTION)
            tries = dict.fromkeys((j.index for j in self.jobs), 0)

            def submit(job: StripJob) -> Any:
                future = client.submit(
                    target,
                    self._payload(job, plan_json),
                    key=f"pixelfleet-strip-{os.getpid()}-{id(self)}-{job.index}-{tries[job.index]}",
                    pure=False,
                )
                jobs_of[future.key] = job
                return future

            jobs_of: dict[str, StripJob] = {}
            first = [submit(job) for job in self.jobs]
            running = distributed.as_completed(first, loop=client.loop)  # type: ignore[no-untyped-call]
            for future in running:
                job = jobs_of.pop(future.key)
                try:
                    text = future.result()
                except Exception as exc:  # noqa: BLE001 - a lost worker (KilledWorker) and such
                    tries[job.index] += 1
                    if isinstance(exc, PERMANENT_ERRORS) or tries[job.index] >= self.attempts:
                        raise WorkerLostError(
                            f"Dask could not compute rows {job.row0}-{job.row1}: "
                            f"{type(exc).__name__}: {exc}"
                        ) from exc
                    running.add(submit(job))  # type: ignore[no-untyped-call]
                    continue
                if address:
                    text = self._unpack_files(text)
                if not self._accept(job, text, tries, results):
                    running.add(submit(job))  # type: ignore[no-untyped-call]

    def _unpack_files(self, text: str) -> str:
        """Write the files a remote worker sent back into the workdir; fix their paths."""
        data = json.loads(text)
        files = data.pop("files", None)
        if files is None:
            return text
        for name, encoded in files.items():
            with open(os.path.join(self.plan.workdir, name), "wb") as f:
                f.write(base64.b64decode(encoded))
        for output in data["outputs"].values():
            output["path"] = os.path.join(self.plan.workdir, os.path.basename(output["path"]))
            output["levels"] = {
                f: os.path.join(self.plan.workdir, os.path.basename(p))
                for f, p in output["levels"].items()
            }
        return json.dumps(data)


#: The module the fork server imports before it forks workers.
PRELOAD = "pixelfleet.blocks.preload"


def start_context() -> Any:
    """How ``local`` workers are started: forked from ``multiprocessing``'s fork server
    where there is one (Linux, macOS), else spawned.

    The fork server is a fresh, single-threaded process (so forking it is safe even when
    the driver holds threads) started once per driver process; it imports
    :data:`PRELOAD` (numpy, rasterio, the strip code) once, so a second worker, and the
    workers of later runs, start without paying those imports again. The fork server's
    preload list is process-wide: this sets it to pixelfleet's module (it takes effect
    only if the server is not already running).
    """
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([PRELOAD])
        return context
    return multiprocessing.get_context("spawn")


def _hint(how: str) -> str:
    """What to try after a worker process died ``how``."""
    if "SIGKILL" in how:
        return "out of memory? try fewer workers or a smaller block_size"
    return (
        "its error is printed above; a script that uses executor='local' must run its "
        "code under `if __name__ == '__main__':`"
    )


@contextlib.contextmanager
def _dask_client(distributed: Any, address: str, workers: int) -> Iterator[Any]:
    if address:
        url = address if "://" in address else f"tcp://{address}"
        try:
            client = distributed.Client(url, set_as_default=False)
        except OSError as exc:
            raise ConfigError(f"cannot reach the Dask scheduler at {url}: {exc}") from exc
        with client:
            yield client
        return
    with (
        distributed.LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
        ) as cluster,
        distributed.Client(cluster, set_as_default=False) as client,
    ):
        yield client


@dataclass(eq=False)
class _Process:
    """One worker process and the strip it holds."""

    process: BaseProcess
    conn: Connection
    job: StripJob | None = None

    @classmethod
    def start(cls, context: Any) -> _Process:
        parent, child = context.Pipe(duplex=True)
        process = context.Process(
            target=serve, args=(child,), name="pixelfleet-blocks", daemon=True
        )
        process.start()
        child.close()
        return cls(process, parent)

    def send(self, job: StripJob, payload: str) -> None:
        self.job = job
        with contextlib.suppress(OSError):  # a dead worker is noticed by its sentinel
            self.conn.send(payload)

    def alive(self) -> bool:
        return self.process.is_alive()

    def receive(self) -> tuple[StripJob, str] | None:
        try:
            text = self.conn.recv()
        except (EOFError, OSError):
            return None
        job, self.job = self.job, None
        assert job is not None
        return job, text

    def lost(self) -> tuple[StripJob, str] | None:
        """After the process ended: the strip it held, and how it ended."""
        self.process.join(5)
        code = self.process.exitcode
        job, self.job = self.job, None
        with contextlib.suppress(OSError):
            self.conn.close()
        if job is None:
            return None
        if code is not None and code < 0:
            with contextlib.suppress(ValueError):
                return job, f"killed by {signal.Signals(-code).name}"
            return job, f"killed by signal {-code}"
        return job, f"exit code {code}"

    def stop(self) -> None:
        if self.job is None and self.process.is_alive():
            with contextlib.suppress(OSError):
                self.conn.send(None)
            self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        with contextlib.suppress(OSError):
            self.conn.close()
