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
from pathlib import Path

import pytest

from ops_for_tests import PROBE_OP
from pixelfleet.executors import Executor, Job, open_executor
from pixelfleet.models import Task, TaskResult
from pixelfleet.pipeline import pipeline_from_dict
from pixelfleet.storage.local import LocalStorage

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


@pytest.fixture
def src(tmp_path: Path) -> Path:
    """The source folder the probe files go in."""
    folder = tmp_path / "src"
    folder.mkdir()
    return folder


@pytest.fixture(params=EXECUTORS)
def executor(request: pytest.FixtureRequest, src: Path, tmp_path: Path) -> Iterator[Executor]:
    """Each executor, started with a pipeline that runs the probe from ``src``."""
    pipeline = pipeline_from_dict(
        {
            "source": {"url": f"file://{src}"},
            "output": {"url": f"file://{tmp_path / 'out'}"},
            "steps": [{"op": PROBE_OP, "marks_dir": str(tmp_path)}],
        }
    )
    make: MakeExecutor = request.param
    with make(request) as ex:
        ex.start(json.dumps(pipeline.to_json_dict()), timeout=60)
        yield ex


def probe_jobs(src: Path, files: dict[str, str], isolate: bool = False) -> list[Job]:
    """Write probe files (name -> words) and return one job each, in that order."""
    storage = LocalStorage(f"file://{src}")
    jobs = []
    for name, words in files.items():
        (src / name).write_text(words)
        entry = storage.head(name)
        assert entry is not None
        task = Task(id=name, group="", entries=(entry,))
        jobs.append(Job(name, json.dumps(task.to_dict()), isolate=isolate))
    return jobs


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


def test_a_failing_job_gets_a_failed_result(executor: Executor, src: Path) -> None:
    jobs = probe_jobs(src, {"bad.txt": "SLEEP not-a-number", "good.txt": "x"})
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


def test_jobs_beyond_capacity_wait_their_turn(executor: Executor, src: Path) -> None:
    count = 2 * executor.capacity() + 3
    jobs = probe_jobs(src, {f"j{n:03d}.txt": "x" for n in range(count)})
    for job in jobs:
        started = time.monotonic()
        executor.submit(job)
        assert time.monotonic() - started < 2, "submit blocked"
    results = collect(executor, count, limit=60)
    assert sorted(results) == sorted(j.task_id for j in jobs)
    assert all(r.state == "done" for r in results.values())


def test_isolated_jobs_get_their_result(executor: Executor, src: Path) -> None:
    jobs = probe_jobs(src, {"alone.txt": "x"}, isolate=True)
    jobs += probe_jobs(src, {"beside.txt": "x"})
    for job in jobs:
        executor.submit(job)
    results = collect(executor, 2)
    assert {r.task_id: r.state for r in results.values()} == {
        "alone.txt": "done",
        "beside.txt": "done",
    }


def test_close_with_jobs_in_flight_is_prompt(executor: Executor, src: Path) -> None:
    for job in probe_jobs(src, {"a.txt": "SLEEP 5", "b.txt": "SLEEP 5", "c.txt": "x"}):
        executor.submit(job)
    started = time.monotonic()
    executor.close()
    executor.close()
    assert time.monotonic() - started < 4
