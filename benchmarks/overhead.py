"""What the local executor costs per task: many tiny tasks, with and without the pool.

Each task has one entry and one step that does nothing (``NoOp`` below), so what is
measured is the executor: pipes, JSON, bookkeeping, the worker's thread pool. The same
tasks also run in this process through the worker function (the baseline).

Per-task overhead = (wall time x workers - time spent inside the tasks) / tasks, i.e.
worker-process time that did not go to the work itself; the target is 5 ms or less.

    .venv/bin/python benchmarks/overhead.py [--tasks 10000] [--workers 2] [--threads 4]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import deque

from pixelfleet.executors import open_executor
from pixelfleet.executors.base import Executor, Job
from pixelfleet.models import Entry, OutputRecord, Task, TaskResult
from pixelfleet.ops import Op, OpConfig, OpContext
from pixelfleet.pipeline import pipeline_from_dict
from pixelfleet.worker import execute

TARGET_MS = 5.0


class NoOp(Op):
    """A step that writes nothing and does nothing."""

    name = "no-op"
    Config = OpConfig

    def output_keys(self, entry: Entry) -> list[str]:
        """No outputs, so the worker never asks the storage whether they exist."""
        return []

    def run(self, ctx: OpContext, entry: Entry) -> list[OutputRecord]:
        """Nothing to do."""
        return []


def make_jobs(n: int) -> list[Job]:
    """``n`` one-entry tasks; the entries need not exist, since NoOp never reads them."""
    jobs = []
    for i in range(n):
        entry = Entry(key=f"tiles/{i // 1000:02d}/{i:06d}.tif", size=1, etag=f"{i:x}")
        task = Task(id=f"t{i:06d}", group="", entries=(entry,))
        jobs.append(Job(task.id, json.dumps(task.to_dict())))
    return jobs


def drive(executor: Executor, jobs: list[Job]) -> list[TaskResult]:
    """Keep the executor fed as the runner does and collect every result."""
    pending = deque(jobs)
    results: list[TaskResult] = []
    in_flight = 0
    capacity = executor.capacity()
    while len(results) < len(jobs):
        while pending and in_flight < capacity:
            executor.submit(pending.popleft())
            in_flight += 1
        got = executor.results(wait=1.0)
        in_flight -= len(got)
        results.extend(got)
    return results


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        pipeline = pipeline_from_dict(
            {
                "source": {"url": f"file://{tmp}/src"},
                "output": {"url": f"file://{tmp}/out"},
                # Loaded by reference: spawned workers import this file as "overhead".
                "steps": [{"op": "overhead:NoOp"}],
            }
        )
        context = json.dumps(pipeline.to_json_dict())
        jobs = make_jobs(args.tasks)

        started = time.perf_counter()
        for job in jobs:
            TaskResult.from_dict(json.loads(execute(context, job.payload)))
        inline = time.perf_counter() - started

        executor = open_executor("local", workers=args.workers, threads=args.threads)
        started = time.perf_counter()
        with executor:
            executor.start(context, timeout=600)
            first = drive(executor, jobs[:100])  # warm-up: workers spawned and ready
            warm = time.perf_counter()
            rest = drive(executor, jobs[100:])
            finished = time.perf_counter()
        results = first + rest

    failed = [r for r in results if r.state != "done"]
    assert not failed, f"{len(failed)} tasks failed, e.g. {failed[0]}"
    assert len({r.task_id for r in results}) == args.tasks

    n, w = args.tasks, args.workers
    in_task = sum(r.seconds for r in results)
    total = finished - started
    steady = finished - warm
    overhead_ms = (total * w - in_task) / n * 1000
    steady_ms = (steady * w - sum(r.seconds for r in rest)) / len(rest) * 1000
    print(f"executor            {executor.describe()}")
    print(f"tasks               {n}")
    print(f"inline baseline     {inline:.2f} s  ({inline / n * 1000:.3f} ms per task)")
    print(f"local wall time     {total:.2f} s  ({total / n * 1000:.3f} ms per task, with start)")
    print(f"  after warm-up     {steady:.2f} s for {len(rest)} tasks")
    print(f"time inside tasks   {in_task:.2f} s  ({in_task / n * 1000:.3f} ms per task)")
    print(f"overhead per task   {overhead_ms:.3f} ms (wall x {w} workers - in-task) / {n}")
    print(f"  after warm-up     {steady_ms:.3f} ms")
    verdict = "OK" if overhead_ms <= TARGET_MS else "OVER"
    print(f"target              <= {TARGET_MS:g} ms per task: {verdict}")
    through_runner(args.tasks, args.workers, args.threads)


def through_runner(n: int, workers: int, threads: int) -> None:
    """The same tiny tasks the way a user runs them: listing, planning, ledger, executor."""
    from pixelfleet.ledger import open_ledger
    from pixelfleet.runner import Runner

    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n):
            folder = f"{tmp}/src/{i // 1000:02d}"
            if i % 1000 == 0:
                os.makedirs(folder)
            with open(f"{folder}/{i:06d}.tif", "wb") as f:
                f.write(b"x")
        pipeline = pipeline_from_dict(
            {
                "source": {"url": f"file://{tmp}/src"},
                "output": {"url": f"file://{tmp}/out"},
                "steps": [{"op": "overhead:NoOp"}],
                "run": {"executor": "local", "workers": workers, "threads": threads},
            }
        )
        with open_ledger(f"sqlite:///{tmp}/ledger.db") as ledger:
            started = time.perf_counter()
            summary = Runner(pipeline, ledger, progress=False).run()
            first = time.perf_counter() - started
            started = time.perf_counter()
            again = Runner(pipeline, ledger, progress=False).run()
            rerun = time.perf_counter() - started
    assert summary.counts.tasks_done == n, summary.counts
    assert again.counts.tasks_skipped == n, again.counts
    per_task = (first * workers) / n * 1000
    print(f"runner, first run   {first:.2f} s for {n} tasks, listing + ledger included")
    print(f"  per task          {per_task:.3f} ms of worker time (wall x {workers} / tasks)")
    print(f"runner, rerun       {rerun:.2f} s: all {n} tasks skipped as done")
    verdict = "OK" if per_task <= TARGET_MS else "OVER"
    print(f"target              <= {TARGET_MS:g} ms per task end to end: {verdict}")


if __name__ == "__main__":
    main()
