"""Jobs for executor tests: :class:`ops_for_tests.ProbeOp` on tiny text files, each saying
what its job does (``x``, ``SLEEP 0.5``, ``SLEEP 0.2 KILL``); each output records the pid
and the times it ran, so tests can see what ran beside what."""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from ops_for_tests import PROBE_OP
from pixelfleet.executors import Executor, Job
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


def make_bucket(tmp_path: Path) -> Bucket:
    """Empty source, output and marker folders under ``tmp_path``, and the probe pipeline."""
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
