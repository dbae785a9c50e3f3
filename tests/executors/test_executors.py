"""Contract tests for every executor, then what only real worker processes can show.

Jobs run :class:`ops_for_tests.ProbeOp` on tiny text files: each file says what the
job does (``x``, ``SLEEP 0.5``, ``SLEEP 0.2 KILL``), and each output records the pid
and the times it ran, so tests can see what ran beside what.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from ops_for_tests import PROBE_OP
from pixelfleet.errors import MissingExtraError
from pixelfleet.executors import Executor, Job, open_executor
from pixelfleet.models import Task, TaskResult
from pixelfleet.pipeline import pipeline_from_dict
from pixelfleet.storage.local import LocalStorage


@dataclass
class Bucket:
    """A source folder of probe files, the output folder, the markers and the context."""

    src: Path
    out: Path
    marks: Path
    context: str

    def jobs(self, files: dict[str, str], isolate: frozenset[str] = frozenset()) -> list[Job]:
        """Write ``files`` (name -> probe words) and return one job each, in that order."""
        storage = LocalStorage(f"file://{self.src}")
        jobs = []
        for name, words in files.items():
            (self.src / name).write_text(words)
            entry = storage.head(name)
            assert entry is not None
            task = Task(id=name, group="", entries=(entry,))
            jobs.append(Job(name, json.dumps(task.to_dict()), isolate=name in isolate))
        return jobs

    def record(self, name: str) -> dict[str, float]:
        """What the probe wrote for ``name``: pid, start, end."""
        return json.loads((self.out / name.replace(".txt", ".out")).read_text())  # type: ignore[no-any-return]


@pytest.fixture
def bucket(tmp_path: Path) -> Bucket:
    src, out, marks = tmp_path / "src", tmp_path / "out", tmp_path / "marks"
    for folder in (src, out, marks):
        folder.mkdir()
    pipeline = pipeline_from_dict(
        {
            "source": {"url": f"file://{src}"},
            "output": {"url": f"file://{out}"},
            "steps": [{"op": PROBE_OP, "marks_dir": str(marks)}],
        }
    )
    return Bucket(src, out, marks, json.dumps(pipeline.to_json_dict()))


def run_jobs(executor: Executor, jobs: list[Job], limit: float = 30.0) -> dict[str, TaskResult]:
    """Feed ``jobs`` as a runner would and return exactly one result per job."""
    pending = deque(jobs)
    results: dict[str, TaskResult] = {}
    in_flight = 0
    deadline = time.monotonic() + limit
    while len(results) < len(jobs):
        while pending and in_flight < executor.capacity():
            executor.submit(pending.popleft())
            in_flight += 1
        for result in executor.results(wait=0.2):
            assert isinstance(result, TaskResult)
            assert result.task_id not in results, f"two results for {result.task_id}"
            results[result.task_id] = result
            in_flight -= 1
        assert time.monotonic() < deadline, f"only {len(results)} of {len(jobs)} results came"
    assert executor.results(wait=0.2) == [], "a result came for a job that already had one"
    assert set(results) == {j.task_id for j in jobs}
    return results


def children() -> set[int]:
    """Pids of this process's descendants, zombies included: they were not reaped.

    Left out: the helper ``multiprocessing`` starts once per interpreter, with the
    first spawned process, and keeps until exit.
    """
    pids = set()
    for child in psutil.Process().children(recursive=True):
        try:
            helper = "multiprocessing.resource_tracker" in " ".join(child.cmdline())
        except psutil.Error:  # a zombie, or gone
            helper = False
        if not helper:
            pids.add(child.pid)
    return pids


@pytest.fixture(
    params=["inline", "local", pytest.param("dask", marks=pytest.mark.dask)],
)
def executor(request: pytest.FixtureRequest, bucket: Bucket) -> Iterator[Executor]:
    """Each executor, started with the bucket's context; dask on the shared cluster."""
    spec = request.param
    if spec == "dask":
        spec = f"dask://{request.getfixturevalue('dask_address')}"
    with open_executor(spec, workers=2, threads=2) as ex:
        ex.start(bucket.context, timeout=60)
        yield ex


# -- the contract ---------------------------------------------------------------------


def test_every_job_gets_exactly_one_result(executor: Executor, bucket: Bucket) -> None:
    jobs = bucket.jobs({f"f{i:02d}.txt": "x" for i in range(12)})
    results = run_jobs(executor, jobs)
    for name, result in results.items():
        assert result.state == "done", result.error
        assert [e.key for e in result.entries] == [name]
        assert result.entries[0].outputs[0].key == name.replace(".txt", ".out")
        assert result.worker
        assert bucket.record(name)["pid"] > 0


def test_results_come_back_as_they_complete(executor: Executor, bucket: Bucket) -> None:
    jobs = bucket.jobs({"slow.txt": "SLEEP 0.5", "quick.txt": "x"})
    results = run_jobs(executor, jobs)
    assert results["slow.txt"].seconds >= 0.5
    assert results["quick.txt"].state == "done"


def test_nothing_submitted_means_no_wait(executor: Executor) -> None:
    started = time.monotonic()
    assert executor.results(wait=5) == []
    assert time.monotonic() - started < 1


def test_describe_capacity_and_close_twice(executor: Executor) -> None:
    assert executor.describe().startswith(f"{executor.name}:")
    assert executor.capacity() >= 1
    executor.close()
    executor.close()


# -- local worker processes -----------------------------------------------------------


def local(bucket: Bucket, workers: int = 2, threads: int = 1, timeout: float = 60) -> Executor:
    ex = open_executor("local", workers=workers, threads=threads)
    ex.start(bucket.context, timeout)
    return ex


def test_local_describe() -> None:
    assert (
        open_executor("local", workers=2, threads=4).describe() == "local: 2 processes x 4 threads"
    )


def test_killed_worker_loses_its_running_job_only(bucket: Bucket) -> None:
    before = children()
    files = {f"f{i:02d}.txt": "SLEEP 0.05" for i in range(10)}
    files["f03.txt"] = "SLEEP 0.1 KILL"
    with local(bucket, workers=2, threads=1) as ex:
        results = run_jobs(ex, bucket.jobs(files))
        lost = results.pop("f03.txt")
        assert lost.error_type == "WorkerLostError"
        pid = int(lost.worker.rsplit(":", 1)[1])
        assert f"worker process {pid} died (killed by SIGKILL" in (lost.error or "")
        # One thread: the job it held next had not started, so it ran elsewhere, unharmed.
        assert all(r.state == "done" for r in results.values())
        assert len(children() - before) == 2, "the dead worker was not replaced"
        assert pid not in children()
    assert children() - before == set()


def test_jobs_running_beside_a_crash_are_lost_too(bucket: Bucket) -> None:
    files = {"a.txt": "STARTED SLEEP 30", "boom.txt": "AWAIT a.txt KILL", "later.txt": "x"}
    with local(bucket, workers=1, threads=2) as ex:
        results = run_jobs(ex, bucket.jobs(files))
    # Both were running: either could have been the culprit.
    assert results["a.txt"].error_type == "WorkerLostError"
    assert results["boom.txt"].error_type == "WorkerLostError"
    # Held but not started: requeued silently and run by the replacement worker.
    assert results["later.txt"].state == "done"


def test_worker_killed_from_outside(bucket: Bucket) -> None:
    before = children()
    with local(bucket, workers=1, threads=1) as ex:
        run_jobs(ex, bucket.jobs({"warm.txt": "x"}))  # the worker is up and idle
        for job in bucket.jobs({"long.txt": "STARTED SLEEP 30", "next.txt": "x"}):
            ex.submit(job)
        deadline = time.monotonic() + 20
        while not (bucket.marks / "long.txt.started").exists():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        (victim,) = children() - before
        os.kill(victim, signal.SIGKILL)
        got: dict[str, TaskResult] = {}
        while len(got) < 2 and time.monotonic() < deadline:
            got.update({r.task_id: r for r in ex.results(wait=0.2)})
    assert got["long.txt"].error_type == "WorkerLostError"
    assert f"worker process {victim} died (killed by SIGKILL" in (got["long.txt"].error or "")
    assert got["next.txt"].state == "done"


def test_timeout_kills_the_job_and_the_pool_goes_on(bucket: Bucket) -> None:
    # Two threads: stuck and quick start together; beside starts when quick is done, so
    # it is running, but not yet overdue, when stuck's time is up.
    files = {"stuck.txt": "SLEEP 60", "quick.txt": "SLEEP 0.5", "beside.txt": "STALL 60"}
    files["after.txt"] = "x"
    started = time.monotonic()
    with local(bucket, workers=1, threads=2, timeout=1.0) as ex:
        results = run_jobs(ex, bucket.jobs(files))
    assert time.monotonic() - started < 15
    stuck = results["stuck.txt"]
    assert stuck.error_type == "TaskTimeoutError"
    assert "1 s timeout" in (stuck.error or "")
    assert stuck.seconds >= 1.0
    assert all(results[name].state == "done" for name in ("quick.txt", "beside.txt", "after.txt"))
    # The culprit is known, so the job beside it was not charged: it ran again elsewhere.
    assert (bucket.marks / "beside.txt.stalled").exists()
    assert stuck.worker.rsplit(":", 1)[1] != str(bucket.record("beside.txt")["pid"])


def test_isolated_job_runs_alone_in_its_worker(bucket: Bucket) -> None:
    files = {f"n{i}.txt": "SLEEP 0.2" for i in range(8)}
    files["solo.txt"] = "SLEEP 0.3"
    order = [*sorted(files)[:4], "solo.txt", *sorted(files)[4:8]]
    with local(bucket, workers=1, threads=4) as ex:
        jobs = bucket.jobs({name: files[name] for name in order}, isolate=frozenset({"solo.txt"}))
        results = run_jobs(ex, jobs)
    assert all(r.state == "done" for r in results.values())
    solo = bucket.record("solo.txt")
    for name in files:
        if name != "solo.txt":
            other = bucket.record(name)
            apart = other["end"] <= solo["start"] or other["start"] >= solo["end"]
            assert apart, f"{name} ran beside the isolated job"


def test_workers_ignore_ctrl_c(bucket: Bucket) -> None:
    before = children()
    with local(bucket, workers=1, threads=1) as ex:
        run_jobs(ex, bucket.jobs({"warm.txt": "x"}))
        (worker,) = children() - before
        os.kill(worker, signal.SIGINT)
        results = run_jobs(ex, bucket.jobs({"after.txt": "SLEEP 0.1"}))
        assert results["after.txt"].state == "done"
        assert children() - before == {worker}


def test_close_reaps_every_worker_even_mid_job(bucket: Bucket) -> None:
    before = children()
    ex = local(bucket, workers=2, threads=2)
    for job in bucket.jobs({"a.txt": "SLEEP 30", "b.txt": "SLEEP 30", "c.txt": "x"}):
        ex.submit(job)
    ex.results(wait=0.5)
    assert len(children() - before) == 2
    started = time.monotonic()
    ex.close()
    ex.close()
    assert time.monotonic() - started < 3
    assert children() - before == set()


def test_local_takes_no_address() -> None:
    with pytest.raises(Exception, match="no address"):
        open_executor("local://somewhere")


# -- dask -----------------------------------------------------------------------------


@pytest.mark.dask
def test_dask_reruns_a_job_whose_worker_died(bucket: Bucket, dask_address: str) -> None:
    files = {f"f{i:02d}.txt": "SLEEP 0.1" for i in range(8)}
    files["boom.txt"] = "SLEEP 0.3 KILL"  # kills its dask worker process the first time only
    with open_executor(f"dask://{dask_address}", threads=2) as ex:
        ex.start(bucket.context, timeout=60)
        results = run_jobs(ex, bucket.jobs(files))
    boom = results.pop("boom.txt")
    # Dask runs it again on a live worker; were it to give up, it must still be reported.
    assert boom.state == "done" or boom.error_type == "WorkerLostError"
    assert (bucket.marks / "boom.txt.killed").exists(), "the worker was never killed"
    assert all(r.state == "done" for r in results.values())


@pytest.mark.dask
def test_dask_starts_and_stops_its_own_cluster(bucket: Bucket) -> None:
    pytest.importorskip("distributed")
    before = children()
    ex = open_executor("dask", workers=1, threads=2)
    assert ex.describe() == "dask: local cluster, 1 process x 2 threads"
    with ex:
        ex.start(bucket.context, timeout=60)
        results = run_jobs(ex, bucket.jobs({"a.txt": "x", "b.txt": "x"}))
        assert all(r.state == "done" for r in results.values())
    deadline = time.monotonic() + 5
    while children() - before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert children() - before == set()


def test_dask_missing_says_which_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'pixelfleet\[dask\]'"):
        open_executor("dask")
