"""What pixelfleet costs around the work itself: tiny tasks, small photos, reruns.

1. **No-op tasks.** Each task has one entry and one step that does nothing (``NoOp``
   below), so what is measured is the executor: pipes, JSON, bookkeeping, the worker's
   thread pool. The same tasks also run in this process through the worker function
   (the baseline). Per-task overhead = (wall time x workers - time spent inside the
   tasks) / tasks, i.e. worker-process time that did not go to the work itself; the
   target is 0.5 ms or less. Then the same tasks through ``Runner`` (listing, planning,
   ledger) and a rerun that skips them all.
2. **Small photos** (``--photos``, 20,000 PNGs of 64 x 64 by default), side by side in
   one run on the same files: a bare ``multiprocessing.Pool`` (Pillow ``thumbnail`` and a
   plain file write per photo, listing with ``os.walk``) against a pixelfleet run of the
   ``thumbnail`` step with the local executor and the pipeline's default partition
   (``auto``), listing, ledger and provenance included; then a rerun that skips them
   all. CPU is the whole process tree's (this process and its reaped children, from
   ``getrusage``), so worker start-up and the runner's own work count. The bare pool runs
   before and after pixelfleet and counts as the mean of the two (the disk's cost of a new
   file drifts). Targets: CPU per photo <= 1.5x the bare pool's, throughput >= 0.7x,
   rerun < 0.5 s.
3. **Reruns of done tasks** (``--rerun-tasks``): a ledger holding N done one-object tasks
   and a source listing the same N objects (in memory: no files), then a timed
   ``Runner.run()`` that must skip them all. Targets: 20,000 in < 0.5 s, 1,000,000 in < 10 s.

    .venv/bin/python benchmarks/overhead.py [--tasks 10000] [--workers 2] [--threads 4]
        [--photos 20000] [--photo-rounds 3] [--rerun-tasks 20000,1000000] [--only noop,photos,rerun]
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import resource
import statistics
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from pixelfleet.executors import open_executor
from pixelfleet.executors.base import Executor, Job
from pixelfleet.executors.local import stop_fork_server
from pixelfleet.models import Entry, OutputRecord, Task, TaskResult
from pixelfleet.ops import Op, OpConfig, OpContext
from pixelfleet.pipeline import pipeline_from_dict
from pixelfleet.sources.base import Source
from pixelfleet.worker import execute

#: Executor overhead per no-op task (was 5 ms before issue 14).
TARGET_MS = 0.5
#: Small photos: pixelfleet's CPU per photo at most this times the bare pool's ...
CPU_RATIO_TARGET = 1.5
#: ... and its throughput at least this fraction of the bare pool's.
THROUGHPUT_TARGET = 0.7
#: Reruns skipping every task: seconds allowed per number of done tasks.
RERUN_TARGETS = {20_000: 0.5, 1_000_000: 10.0}
#: Side of the source photos and of their thumbnails, in pixels.
PHOTO_SIDE = 64
THUMB_SIDE = 32


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
    parser.add_argument("--photos", type=int, default=20_000, help="small PNGs to compare on")
    parser.add_argument(
        "--photo-rounds", type=int, default=3, help="rounds of the photo comparison (medians)"
    )
    parser.add_argument(
        "--photo-threads", type=int, default=0, help="threads per worker (0: the default)"
    )
    parser.add_argument(
        "--rerun-tasks",
        default="20000,1000000",
        help="comma-separated numbers of done tasks to rerun (0: none)",
    )
    parser.add_argument(
        "--only", default="noop,photos,rerun", help="sections to run: noop, photos, rerun"
    )
    args = parser.parse_args()
    sections = set(args.only.split(","))
    print(f"machine             {os.cpu_count()} cores; load average {_load()} at start")
    if "noop" in sections:
        no_op_tasks(args.tasks, args.workers, args.threads)
        through_runner(args.tasks, args.workers, args.threads)
    if "photos" in sections and args.photos:
        small_photos(args.photos, args.workers, args.photo_threads, args.photo_rounds)
    if "rerun" in sections:
        for n in (int(x) for x in args.rerun_tasks.split(",") if int(x)):
            rerun_done(n)
    print(f"load average        {_load()} at the end")


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and of its children that were reaped."""
    return sum(cpu_split())


def cpu_split() -> tuple[float, float]:
    """CPU time (user + system) of this process, and of its children that were reaped.

    The local executor forks its workers from a fork server, which waits for them: the
    server is stopped (and waited for) first, so that its CPU and theirs count.
    """
    stop_fork_server()
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def no_op_tasks(n: int, workers: int, threads: int) -> None:
    """No-op tasks through the executor alone, against the worker function in this process."""
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
        jobs = make_jobs(n)

        started = time.perf_counter()
        for job in jobs:
            TaskResult.from_dict(json.loads(execute(context, job.payload)))
        inline = time.perf_counter() - started

        executor = open_executor("local", workers=workers, threads=threads)
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
    assert len({r.task_id for r in results}) == n

    w = workers
    in_task = sum(r.seconds for r in results)
    total = finished - started
    steady = finished - warm
    overhead_ms = (total * w - in_task) / n * 1000
    steady_ms = (steady * w - sum(r.seconds for r in rest)) / len(rest) * 1000
    print()
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


def through_runner(n: int, workers: int, threads: int) -> None:
    """The same tiny tasks the way a user runs them: listing, planning, ledger, executor.

    One task per object (``by = "object"``), so that there are ``n`` tasks to pay for.
    """
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
                "source": {"url": f"file://{tmp}/src", "partition": {"by": "object"}},
                "output": {"url": f"file://{tmp}/out"},
                "steps": [{"op": "overhead:NoOp"}],
                "run": {"executor": "local", "workers": workers, "threads": threads},
            }
        )
        with open_ledger(f"sqlite:///{tmp}/ledger.db") as ledger:
            cpu = cpu_seconds()
            started = time.perf_counter()
            summary = Runner(pipeline, ledger, progress=False).run()
            first = time.perf_counter() - started
            first_cpu = cpu_seconds() - cpu
            started = time.perf_counter()
            again = Runner(pipeline, ledger, progress=False).run()
            rerun = time.perf_counter() - started
    assert summary.counts.tasks_done == n, summary.counts
    assert again.counts.tasks_skipped == n, again.counts
    per_task = (first * workers) / n * 1000
    print(f"runner, first run   {first:.2f} s for {n} tasks, listing + ledger included")
    print(f"  per task          {per_task:.3f} ms of worker time (wall x {workers} / tasks)")
    print(f"  CPU per task      {first_cpu / n * 1000:.3f} ms (this process and its workers)")
    print(f"runner, rerun       {rerun:.2f} s: all {n} tasks skipped as done")
    verdict = "OK" if per_task <= TARGET_MS else "OVER"
    print(f"target              <= {TARGET_MS:g} ms per task end to end: {verdict}")


# -- small photos: pixelfleet against a bare process pool ------------------------------------


def make_photos(root: str, n: int) -> None:
    """``n`` PNGs of PHOTO_SIDE x PHOTO_SIDE in folders of 1,000 (64 different pictures)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(14)
    ramp = np.linspace(0, 200, PHOTO_SIDE, dtype=np.float32)
    blobs = []
    for _ in range(64):
        noise = rng.integers(0, 56, (PHOTO_SIDE, PHOTO_SIDE, 3))
        pixels = (ramp[None, :, None] + ramp[:, None, None] / 2 + noise).clip(0, 255)
        out = io.BytesIO()
        Image.fromarray(pixels.astype(np.uint8), "RGB").save(out, "PNG")
        blobs.append(out.getvalue())
    for i in range(n):
        folder = os.path.join(root, f"{i // 1000:02d}")
        if i % 1000 == 0:
            os.makedirs(folder)
        with open(os.path.join(folder, f"{i:06d}.png"), "wb") as f:
            f.write(blobs[i % len(blobs)])


def bare_thumbnail(job: tuple[str, str]) -> int:
    """What a hand-written script does per photo: Pillow thumbnail, JPEG, a plain write."""
    from PIL import Image

    source, dest = job
    with Image.open(source) as image:
        image.thumbnail((THUMB_SIDE, THUMB_SIDE))
        picture = image.convert("RGB")
    out = io.BytesIO()
    picture.save(out, "JPEG", quality=85)
    with open(dest, "wb") as f:
        f.write(out.getvalue())
    return 1


def bare_pool(src: str, out: str, workers: int) -> tuple[float, float, int]:
    """Thumbnails of every PNG below ``src`` with a bare ``multiprocessing.Pool``:
    returns wall seconds, CPU seconds (the whole process tree) and photos made."""
    cpu, system = cpu_split(), children_system()
    started = time.perf_counter()
    jobs = []
    for folder, _dirs, names in os.walk(src):
        dest = os.path.join(out, os.path.relpath(folder, src))
        os.makedirs(dest, exist_ok=True)
        for name in names:
            if name.endswith(".png"):
                jobs.append((os.path.join(folder, name), os.path.join(dest, name[:-4] + ".jpg")))
    with multiprocessing.Pool(workers) as pool:
        made = sum(pool.imap_unordered(bare_thumbnail, jobs, chunksize=64))
        pool.close()
        pool.join()
    wall = time.perf_counter() - started
    _print_split("bare Pool", cpu, system)
    return wall, cpu_seconds() - sum(cpu), made


def _print_split(name: str, before: tuple[float, float], system: float) -> None:
    """Print the CPU this process and its children used since ``before`` (:func:`cpu_split`),
    and the children's system time since it was ``system``."""
    me, kids = (now - then for now, then in zip(cpu_split(), before, strict=True))
    print(
        f"  {name}: CPU {me:.2f} s in this process, {kids:.2f} s in its workers"
        f" ({children_system() - system:.2f} s of it in the kernel)"
    )


def children_system() -> float:
    """System CPU time of the reaped children of this process (the fork server's too)."""
    stop_fork_server()
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_stime


def small_photos(n: int, workers: int, threads: int = 0, rounds: int = 3) -> None:
    """Pixelfleet's thumbnail step against a bare pool, on the same ``n`` small PNGs.

    ``rounds`` rounds, each ``bare, pixelfleet, bare`` into new folders and a new ledger:
    a round's ratios are against the mean of its two bare runs (the cost of creating a
    file on a shared disk drifts within minutes), and the verdicts use the medians of the
    rounds' ratios, so that one round disturbed by another program decides nothing.
    """
    with tempfile.TemporaryDirectory() as tmp:
        src = f"{tmp}/src"
        made_in = time.perf_counter()
        make_photos(src, n)
        made_in = time.perf_counter() - made_in
        print(
            f"\nsmall photos        {n} PNGs of {PHOTO_SIDE}x{PHOTO_SIDE} (made in {made_in:.1f} s)"
            f" -> {THUMB_SIDE} px JPEG; bare: Pool({workers}); {rounds} rounds of"
            " bare, pixelfleet, bare"
        )
        results = [_photo_round(src, f"{tmp}/round{r}", n, workers, threads) for r in range(rounds)]
    print(
        f"{'':20}{'wall s':>8}{'photos/s':>10}{'CPU s':>8}{'CPU ms/photo':>14}"
        f"{'CPU x':>7}{'rate x':>7}"
    )
    for r, got in enumerate(results, 1):
        for name, wall, cpu_s in got["rows"]:
            print(
                f"{f'{r}: {name}':20}{wall:8.2f}{n / wall:10.0f}{cpu_s:8.2f}"
                f"{cpu_s / n * 1000:14.3f}",
                end="",
            )
            if name == "pixelfleet":
                print(f"{got['cpu_ratio']:7.2f}{got['rate_ratio']:7.2f}", end="")
            print()
    cpu_ratio = statistics.median(got["cpu_ratio"] for got in results)
    rate_ratio = statistics.median(got["rate_ratio"] for got in results)
    rerun = statistics.median(got["rerun"] for got in results)
    print(
        f"pixelfleet tasks    {results[0]['tasks']} ({n / max(1, results[0]['tasks']):.0f} photos"
        f" per task; partition {results[0]['partition']!r}; {results[0]['executor']})"
    )
    ok = "OK" if cpu_ratio <= CPU_RATIO_TARGET else "OVER"
    print(
        f"CPU per photo       {cpu_ratio:.2f}x the bare pool, median of {rounds}"
        f" (target <= {CPU_RATIO_TARGET}): {ok}"
    )
    ok = "OK" if rate_ratio >= THROUGHPUT_TARGET else "UNDER"
    print(
        f"throughput          {rate_ratio:.2f}x the bare pool, median of {rounds}"
        f" (target >= {THROUGHPUT_TARGET}): {ok}"
    )
    ok = "OK" if rerun < 0.5 else "OVER"
    print(
        f"rerun               {rerun:.2f} s, median: all {n} photos skipped as done"
        f" (target < 0.5 s): {ok}"
    )


def _photo_round(src: str, tmp: str, n: int, workers: int, threads: int) -> dict[str, Any]:
    """One round of :func:`small_photos`: bare, pixelfleet and its rerun, bare."""
    from pixelfleet.ledger import open_ledger
    from pixelfleet.runner import Runner

    os.makedirs(tmp)
    before = bare_pool(src, f"{tmp}/bare-before", workers)
    pipeline = pipeline_from_dict(
        {
            "source": {"url": f"file://{src}", "include": ["**/*.png"]},
            "output": {"url": f"file://{tmp}/out"},
            "steps": [{"op": "thumbnail", "size": THUMB_SIDE, "key": "{stem}.jpg"}],
            # threads: the pipeline's default unless --photo-threads says
            "run": {"executor": "local", "workers": workers, "threads": threads or None},
        }
    )
    with open_ledger(f"sqlite:///{tmp}/ledger.db") as ledger:
        split, system = cpu_split(), children_system()
        started = time.perf_counter()
        summary = Runner(pipeline, ledger, progress=False).run()
        pf_wall = time.perf_counter() - started
        _print_split("pixelfleet", split, system)
        pf_cpu = cpu_seconds() - sum(split)
        started = time.perf_counter()
        again = Runner(pipeline, ledger, progress=False).run()
        rerun = time.perf_counter() - started
    written = sum(len(names) for _, _, names in os.walk(f"{tmp}/out"))
    after = bare_pool(src, f"{tmp}/bare-after", workers)
    assert before[2] == after[2] == n, (before, after)
    counts = summary.counts
    assert counts.objects_written == n and written == n, (counts, written)
    assert again.counts.objects_skipped == n and again.counts.tasks_done == 0, again.counts
    bare_wall, bare_cpu = (before[0] + after[0]) / 2, (before[1] + after[1]) / 2
    return {
        "rows": (
            ("bare Pool, before", before[0], before[1]),
            ("bare Pool, after", after[0], after[1]),
            ("pixelfleet", pf_wall, pf_cpu),
        ),
        "cpu_ratio": pf_cpu / bare_cpu,
        "rate_ratio": bare_wall / pf_wall,
        "rerun": rerun,
        "tasks": counts.tasks_done,
        "partition": pipeline.source.partition.by,
        "executor": summary.executor,
    }


# -- reruns of many done tasks -------------------------------------------------------------


class _Listed(Source):
    """``n`` objects, as a listing would give them, without files behind them."""

    name = "benchmark"

    def __init__(self, n: int):
        self.n = n

    def entries(self) -> Iterator[Entry]:
        """The same ``n`` entries every time."""
        for i in range(self.n):
            yield Entry(f"p/{i // 1000:04d}/{i:07d}.png", 10_000, f"{i:x}", 1.0)


def rerun_done(n: int) -> None:
    """A rerun of ``n`` one-object tasks the ledger holds as done: wall and CPU time."""
    from pixelfleet.ledger import RunRecord, TaskRecord, open_ledger
    from pixelfleet.plan import plan
    from pixelfleet.runner import Runner

    with tempfile.TemporaryDirectory() as tmp:
        pipeline = pipeline_from_dict(
            {
                "source": {"url": f"file://{tmp}/src", "partition": {"by": "object"}},
                "output": {"url": f"file://{tmp}/out"},
                "steps": [{"op": "thumbnail", "size": THUMB_SIDE}],
                "run": {"executor": "local", "workers": 2},
            }
        )
        with open_ledger(f"sqlite:///{tmp}/ledger.db") as ledger:
            filled = time.perf_counter()
            record = RunRecord("filled", "", pipeline.to_json_dict(), "none", time.time())
            ledger.save_run(record)
            batch: list[TaskRecord] = []
            tasks = plan(_Listed(n).entries(), pipeline.source.partition, pipeline.settings_hash)
            for task in tasks:
                rec = TaskRecord.pending(task)
                rec.state = "done"
                batch.append(rec)
                if len(batch) == 10_000:
                    ledger.save_tasks(record.run_id, batch)
                    batch = []
            ledger.save_tasks(record.run_id, batch)
            filled = time.perf_counter() - filled
            walls, cpus = [], []
            for _ in range(3 if n <= 100_000 else 1):
                cpu = time.process_time()
                started = time.perf_counter()
                summary = Runner(pipeline, ledger, progress=False, source=_Listed(n)).run()
                walls.append(time.perf_counter() - started)
                cpus.append(time.process_time() - cpu)
                assert summary.counts.tasks_skipped == n, summary.counts
    wall, cpu_s = statistics.median(walls), statistics.median(cpus)
    target = RERUN_TARGETS.get(n)
    verdict = (
        "" if target is None else f" (target < {target:g} s): {'OK' if wall < target else 'OVER'}"
    )
    runs = ", ".join(f"{w:.2f}" for w in walls)
    print()
    print(f"rerun of {n} done tasks (ledger of {n} done tasks filled in {filled:.1f} s)")
    print(f"  wall              {wall:.2f} s (median of {runs}){verdict}")
    print(f"  CPU               {cpu_s:.2f} s ({cpu_s / n * 1e6:.1f} us per task)")


if __name__ == "__main__":
    main()
