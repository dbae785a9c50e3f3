"""The ``Executor`` contract: whatever a job does, it gets exactly one result, on every
executor. (test_executors.py holds more of the contract, and what only real worker
processes can show.)

A new executor joins by adding one line to ``EXECUTORS``. Jobs run
:class:`ops_for_tests.ProbeOp` on tiny text files that say what the job does.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import pytest

from executor_helpers import Bucket, run_jobs
from pixelfleet.executors import Executor, Job, open_executor
from pixelfleet.models import TaskResult

MakeExecutor = Callable[[pytest.FixtureRequest], Executor]

EXECUTORS = [
    pytest.param(lambda request: open_executor("inline"), id="inline"),
    pytest.param(lambda request: open_executor("local", workers=2, threads=2), id="local"),
    pytest.param(
        lambda request: open_executor(f"dask://{request.getfixturevalue('dask_address')}"),
        id="dask",
        marks=pytest.mark.dask,
    ),
]


@pytest.fixture(params=EXECUTORS)
def executor(request: pytest.FixtureRequest, bucket: Bucket) -> Iterator[Executor]:
    """Each executor, started with the probe pipeline."""
    make: MakeExecutor = request.param
    with make(request) as ex:
        ex.start(bucket.context, timeout=60)
        yield ex


def collect(executor: Executor, expected: int, limit: float = 30.0) -> dict[str, TaskResult]:
    """Results until ``expected`` came, one per job id; then check no more come."""
    results: dict[str, TaskResult] = {}
    deadline = time.monotonic() + limit
    while len(results) < expected:
        for result in executor.results(wait=0.2):
            assert isinstance(result, TaskResult)
            assert result.task_id not in results, f"two results for {result.task_id}"
            results[result.task_id] = result
        assert time.monotonic() < deadline, f"only {len(results)} of {expected} results came"
    assert executor.results(wait=0.2) == [], "a result came for a job that already had one"
    return results


def test_a_failing_job_gets_a_failed_result(executor: Executor, bucket: Bucket) -> None:
    jobs = bucket.jobs({"bad.txt": "SLEEP not-a-number", "good.txt": "x"})
    for job in jobs:
        executor.submit(job)
    results = collect(executor, len(jobs))
    assert results["good.txt"].state == "done"
    bad = results["bad.txt"]
    assert bad.state == "failed"
    assert [(e.key, e.state, e.error_type) for e in bad.entries] == [
        ("bad.txt", "failed", "ValueError")
    ]


def test_a_job_the_worker_cannot_read_gets_a_failed_result(
    executor: Executor, request: pytest.FixtureRequest
) -> None:
    executor.submit(Job("not-json", "{not json"))
    executor.submit(Job("no-entries", json.dumps({"id": "no-entries"})))
    results = collect(executor, 2)
    assert {r.task_id: r.state for r in results.values()} == {
        "not-json": "failed",
        "no-entries": "failed",
    }
    assert all(r.error_type for r in results.values())


def test_jobs_beyond_capacity_wait_their_turn(executor: Executor, bucket: Bucket) -> None:
    count = 2 * executor.capacity() + 3
    jobs = bucket.jobs({f"j{n:03d}.txt": "x" for n in range(count)})
    for job in jobs:
        started = time.monotonic()
        executor.submit(job)
        assert time.monotonic() - started < 2, "submit blocked"
    results = collect(executor, count, limit=60)
    assert sorted(results) == sorted(j.task_id for j in jobs)
    assert all(r.state == "done" for r in results.values())


def test_isolated_jobs_get_their_result(executor: Executor, bucket: Bucket) -> None:
    jobs = bucket.jobs({"alone.txt": "x"}, isolate=frozenset({"alone.txt"}))
    jobs += bucket.jobs({"beside.txt": "x"})
    for job in jobs:
        executor.submit(job)
    results = collect(executor, 2)
    assert {r.task_id: r.state for r in results.values()} == {
        "alone.txt": "done",
        "beside.txt": "done",
    }


def test_close_with_jobs_in_flight_is_prompt(executor: Executor, bucket: Bucket) -> None:
    for job in bucket.jobs({"a.txt": "SLEEP 5", "b.txt": "SLEEP 5", "c.txt": "x"}):
        executor.submit(job)
    started = time.monotonic()
    executor.close()
    executor.close()
    assert time.monotonic() - started < 4


# -- more of the contract ---------------------------------------------------------------------


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
