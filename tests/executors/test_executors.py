"""What only real worker processes show: lost workers, timeouts, isolation, Ctrl-C, Dask.

(What every executor must do is in test_executor_contract.py.)

Jobs run :class:`ops_for_tests.ProbeOp` on tiny text files: each file says what the
job does (``x``, ``SLEEP 0.5``, ``SLEEP 0.2 KILL``), and each output records the pid
and the times it ran, so tests can see what ran beside what.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import psutil
import pytest

from executor_helpers import Bucket, run_jobs
from pixelfleet.errors import MissingExtraError
from pixelfleet.executors import Executor, open_executor
from pixelfleet.models import TaskResult
from process_helpers import is_helper


def children() -> set[int]:
    """Pids of this process's descendants, zombies included: they were not reaped.

    Left out: the helpers ``multiprocessing`` starts once per interpreter (its resource
    tracker, and the fork server local workers are forked from) and keeps until exit.
    """
    pids = set()
    for child in psutil.Process().children(recursive=True):
        try:
            helper = is_helper(child)
        except psutil.Error:  # a zombie, or gone
            helper = False
        if not helper:
            pids.add(child.pid)
    return pids


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
