"""A fleet on the PostgreSQL ledger, measured against the local path on the same machine.

1. claims: 16 worker processes claim and finish tasks from one PostgreSQL ledger
   (the fleet's hot path: one claim transaction per batch, one fenced finish per batch).
   Target: >= 2,000 claims/s.
2. overhead: ledger time per task of one worker claiming and finishing tasks (batches
   of 8) on PostgreSQL and on SQLite, and of the local runner's batched ledger writes.
   Target: PostgreSQL <= 2 ms per task.
3. throughput: the same 2,000 small PNG thumbnails with the local executor (4 processes)
   and with 4 `pixelfleet worker` processes on the PostgreSQL ledger (fleet-local, the
   workers' start-up included). Target: fleet / local >= 0.9.
4. naip: a synthetic S3 Inventory of 1.3 M NAIP keys planned by `run --dry-run
   --estimate` (one task per object), and enqueued into the PostgreSQL ledger by a fleet
   run's driver (`--executor fleet --no-follow`): wall time and peak RSS of each command.
   Target: planning <= 30 s and <= 1 GB.

The machine is shared and noisy: times are medians of --repeat runs and CPU time is
printed beside wall time where it matters.

    .venv/bin/python benchmarks/fleet.py [--parts claims,overhead,throughput,naip]
        [--ledger postgresql://root@127.0.0.1:5432/postgres] [--naip 1300000]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
import json
import multiprocessing as mp
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image

from pixelfleet.ledger import FleetLedger, RunRecord, TaskRecord, open_ledger

HERE = Path(__file__).resolve().parent
PIXELFLEET = [sys.executable, "-m", "pixelfleet.cli.main"]


def fresh_url(base: str) -> str:
    return f"{base}?schema=bench_{secrets.token_hex(4)}"


def drop_schema(url: str) -> None:
    import psycopg

    from pixelfleet.ledger.postgres import split_url

    conninfo, schema, _ = split_url(url)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def task_records(n: int) -> list[TaskRecord]:
    return [
        TaskRecord(f"t{i:07d}", f"g{i % 50}", [{"key": f"k/{i}.tif", "size": 1000}])
        for i in range(n)
    ]


def new_run(ledger: FleetLedger, tasks: int) -> str:
    run_id = f"bench-{secrets.token_hex(4)}"
    ledger.save_run(RunRecord(run_id, "bench.toml", {}, "fleet", time.time()))
    ledger.enqueue(run_id, task_records(tasks))
    return run_id


def claim_until_empty(url: str, run_id: str, batch: int, out: mp.Queue, go: Any) -> None:  # type: ignore[type-arg]
    ledger = open_ledger(url)
    assert isinstance(ledger, FleetLedger)
    worker = f"w{os.getpid()}"
    ledger.state_counts(run_id)  # connected and ready
    out.put("ready")
    go.wait()
    n = 0
    while got := ledger.claim(run_id, worker, batch, 60.0):
        for t in got:
            t.state = "done"
        ledger.finish(run_id, got)
        n += len(got)
    ledger.close()
    out.put(n)


# -- 1. claims per second -------------------------------------------------------------------


def bench_claims(base: str, workers: int = 16, tasks: int = 32_000, batch: int = 8) -> None:
    url = fresh_url(base)
    try:
        with open_ledger(url) as ledger:
            assert isinstance(ledger, FleetLedger)
            run_id = new_run(ledger, tasks)
        ctx = mp.get_context("spawn")
        out: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
        go = ctx.Event()
        procs = [
            ctx.Process(target=claim_until_empty, args=(url, run_id, batch, out, go))
            for _ in range(workers)
        ]
        # Imports and connections first: time the claiming, not the process start.
        for p in procs:
            p.start()
        assert [out.get(timeout=600) for _ in procs] == ["ready"] * workers
        started = time.perf_counter()
        go.set()
        counts = [out.get(timeout=600) for _ in procs]
        wall = time.perf_counter() - started
        for p in procs:
            p.join()
        with open_ledger(url) as ledger:
            states = ledger.state_counts(run_id)
        assert sum(counts) == tasks and states == {"done": tasks}, (counts, states)
        print(
            f"claims: {workers} processes claimed and finished {tasks:,} tasks in batches of"
            f" {batch} in {wall:.2f} s: {tasks / wall:,.0f} claims/s"
            f" (target >= 2,000); every task once: {sum(counts) == tasks}"
        )
    finally:
        drop_schema(url)


# -- 2. ledger overhead per task --------------------------------------------------------------


def _claim_cycle(ledger: FleetLedger, tasks: int, batch: int = 8) -> tuple[float, float]:
    run_id = new_run(ledger, tasks)
    c0, w0 = time.process_time(), time.perf_counter()
    while got := ledger.claim(run_id, "w", batch, 60.0):
        for t in got:
            t.state = "done"
        ledger.finish(run_id, got)
    return (time.perf_counter() - w0) / tasks * 1000, (time.process_time() - c0) / tasks * 1000


def _runner_writes(ledger: FleetLedger, tasks: int) -> tuple[float, float]:
    """The local runner's ledger path: a running and a done record per task, by 500."""
    run_id = f"bench-{secrets.token_hex(4)}"
    ledger.save_run(RunRecord(run_id, "bench.toml", {}, "local", time.time()))
    records = task_records(tasks)
    c0, w0 = time.process_time(), time.perf_counter()
    for state in ("running", "done"):
        for start in range(0, tasks, 500):
            chunk = records[start : start + 500]
            for r in chunk:
                r.state = state
            ledger.save_tasks(run_id, chunk)
    return (time.perf_counter() - w0) / tasks * 1000, (time.process_time() - c0) / tasks * 1000


def bench_overhead(base: str, tasks: int = 4000, repeat: int = 3) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, url in (("postgresql", fresh_url(base)), ("sqlite", f"sqlite:///{tmp}/l.db")):
            try:
                with open_ledger(url) as ledger:
                    assert isinstance(ledger, FleetLedger)
                    claims = [_claim_cycle(ledger, tasks) for _ in range(repeat)]
                    writes = [_runner_writes(ledger, tasks) for _ in range(repeat)]
            finally:
                if name == "postgresql":
                    drop_schema(url)
            for what, runs in (("claim+finish, batches of 8", claims), ("runner writes", writes)):
                wall = statistics.median(r[0] for r in runs)
                cpu = statistics.median(r[1] for r in runs)
                rows.append((name, what, wall, cpu))
    print(f"overhead: ledger time per task, one process, {tasks:,} tasks, median of {repeat}:")
    for name, what, wall, cpu in rows:
        print(f"  {name:<11} {what:<27} {wall:6.3f} ms wall  {cpu:6.3f} ms CPU")
    pg = next(r for r in rows if r[0] == "postgresql" and r[1].startswith("claim"))
    lite = next(r for r in rows if r[0] == "sqlite" and r[1].startswith("runner"))
    print(
        f"  fleet path on PostgreSQL: {pg[2]:.3f} ms per task (target <= 2 ms);"
        f" {pg[2] / lite[2]:.1f}x the local runner's SQLite writes"
    )


# -- 3. throughput: fleet-local vs the local executor ----------------------------------------


def make_pngs(folder: Path, n: int) -> None:
    folder.mkdir(parents=True)
    for i in range(n):
        img = Image.new("RGB", (64, 64), ((i * 7) % 256, (i * 13) % 256, (i * 29) % 256))
        img.save(folder / f"p{i:05d}.png")


def pipeline_file(root: Path, out: str) -> Path:
    path = root / f"{out}.toml"
    path.write_text(
        f"""
[source]
url = "{root / "src"}"
partition = {{ by = "object" }}
[output]
url = "{root / out}"
[[steps]]
op = "thumbnail"
size = 32
key = "{{stem}}.thumb.jpg"
"""
    )
    return path


def timed(command: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds (children included) of a command."""
    before = os.times()
    w0 = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - w0
    after = os.times()
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return wall, cpu


def bench_throughput(base: str, objects: int = 2000, workers: int = 4, repeat: int = 2) -> None:
    local_runs, fleet_runs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_pngs(root / "src", objects)
        for i in range(repeat):
            p = pipeline_file(root, f"local{i}")
            ledger = f"sqlite:///{root}/local{i}.db"
            local_runs.append(
                timed([*PIXELFLEET, "run", str(p), "-e", "local", "-w", str(workers),
                       "--ledger", ledger, "--no-progress"])
            )  # fmt: skip
            url = fresh_url(base)
            try:
                p = pipeline_file(root, f"fleet{i}")
                fleet_runs.append(
                    timed([*PIXELFLEET, "run", str(p), "-e", "fleet-local", "-w", str(workers),
                           "--ledger", url, "--no-progress"])
                )  # fmt: skip
            finally:
                drop_schema(url)
    lw = statistics.median(r[0] for r in local_runs)
    fw = statistics.median(r[0] for r in fleet_runs)
    lc = statistics.median(r[1] for r in local_runs)
    fc = statistics.median(r[1] for r in fleet_runs)
    print(
        f"throughput: {objects:,} PNG thumbnails, {workers} workers, median of {repeat}:\n"
        f"  local executor (SQLite ledger)     {lw:6.2f} s wall {objects / lw:7.0f} objects/s"
        f"  {lc:6.2f} s CPU\n"
        f"  fleet-local (PostgreSQL ledger)    {fw:6.2f} s wall {objects / fw:7.0f} objects/s"
        f"  {fc:6.2f} s CPU\n"
        f"  fleet / local throughput: {lw / fw:.2f} (target >= 0.9)"
    )


# -- 4. NAIP: 1.3 M objects planned and enqueued -----------------------------------------------


def write_inventory(root: Path, n: int) -> str:
    """A CSV S3 Inventory of ``n`` NAIP-like keys; returns the manifest's path."""
    states = ["al", "ar", "az", "ca", "co", "fl", "ga", "ia", "id", "il", "in", "ks", "ky"]
    report = root / "inv" / "naip-analytic" / "cfg"  # keys are relative to root/inv
    data = report / "data"
    data.mkdir(parents=True)
    files = []
    per_file = 250_000
    for part, start in enumerate(range(0, n, per_file)):
        buf = io.StringIO()
        writer = csv.writer(buf)
        for i in range(start, min(n, start + per_file)):
            state = states[i % len(states)]
            year = 2010 + (i // len(states)) % 12
            key = f"{state}/{year}/60cm/rgbir/{i // 1000:05d}/m_{i:08d}_ne_16_060_{year}0101.tif"
            writer.writerow(
                ["naip-analytic", key, str(70_000_000 + i % 9_000_000),
                 "2026-11-19T12:00:00.000Z", hashlib.md5(key.encode()).hexdigest(), "true", "false"]
            )  # fmt: skip
        blob = gzip.compress(buf.getvalue().encode(), compresslevel=1)
        name = f"part-{part}.csv.gz"
        (data / name).write_bytes(blob)
        digest = hashlib.md5(blob).hexdigest()
        key = f"naip-analytic/cfg/data/{name}"
        files.append({"key": key, "size": len(blob), "MD5checksum": digest})
    manifest = {
        "sourceBucket": "naip-analytic",
        "destinationBucket": "arn:aws:s3:::inv",
        "version": "2016-11-30",
        "creationTimestamp": "1795132800000",
        "fileFormat": "CSV",
        "fileSchema": "Bucket, Key, Size, LastModifiedDate, ETag, IsLatest, IsDeleteMarker",
        "files": files,
    }
    raw = json.dumps(manifest).encode()
    day = report / "2026-11-20T00-00Z"
    day.mkdir()
    (day / "manifest.json").write_bytes(raw)
    (day / "manifest.checksum").write_bytes(hashlib.md5(raw).hexdigest().encode())
    return str(day / "manifest.json")


MEASURE = """
import resource, runpy, sys, time
sys.argv = ["pixelfleet", *sys.argv[1:]]
t = time.perf_counter()
try:
    runpy.run_module("pixelfleet.cli.main", run_name="__main__")
except SystemExit as exc:
    code = exc.code
else:
    code = 0
usage = resource.getrusage(resource.RUSAGE_SELF)
peak, cpu = usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime
print(f"MEASURED {time.perf_counter() - t:.2f} {peak:.0f} {code} {cpu:.2f}", file=sys.stderr)
"""


def measured(args: list[str]) -> tuple[float, float, str, float]:
    done = subprocess.run([sys.executable, "-c", MEASURE, *args], capture_output=True, text=True)
    line = [x for x in done.stderr.splitlines() if x.startswith("MEASURED")]
    if not line:
        raise SystemExit(f"pixelfleet {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    _, wall, peak, code, cpu = line[-1].split()
    if code not in ("0", "None"):
        raise SystemExit(f"pixelfleet {' '.join(args)} exited {code}:\n{done.stderr[-3000:]}")
    return float(wall), float(peak), done.stdout, float(cpu)


def bench_naip(base: str, n: int, enqueue: bool = True) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        manifest = write_inventory(root, n)
        made = time.perf_counter() - t0
        pipeline = root / "naip.toml"
        pipeline.write_text(
            f"""
[source]
url = "{root / "naip-analytic"}"
inventory = "{manifest}"
include = ["**/*.tif"]
partition = {{ by = "object" }}
[output]
url = "{root / "thumbs"}"
[[steps]]
op = "thumbnail"
size = 512
key = "{{stem}}.thumb.jpg"
"""
        )
        (root / "naip-analytic").mkdir()
        wall, peak, out, cpu = measured(
            ["run", str(pipeline), "--dry-run", "--estimate", "vcpus=96,sample=0",
             "--ledger", f"sqlite:///{root}/empty.db", "--executor", "aws-batch"]
        )  # fmt: skip
        print(f"naip: a synthetic inventory of {n:,} keys (written in {made:.1f} s)")
        print(
            f"  plan + estimate: {wall:.1f} s wall, {cpu:.1f} s CPU, peak RSS {peak:.0f} MB"
            " (target <= 30 s, 1 GB)"
        )
        print("  " + out.strip().splitlines()[0])
        if not enqueue:
            return
        url = fresh_url(base)
        try:
            wall, peak, _, _ = measured(
                ["run", str(pipeline), "--executor", "fleet", "--no-follow", "--ledger", url,
                 "--no-progress"]
            )  # fmt: skip
            print(
                f"  enqueue into PostgreSQL (a fleet run's driver, --no-follow): {wall:.1f} s wall,"
                f" peak RSS {peak:.0f} MB, {n / wall:,.0f} tasks/s"
            )
        finally:
            drop_schema(url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ledger", default="postgresql://root@127.0.0.1:5432/postgres")
    parser.add_argument("--parts", default="claims,overhead,throughput,naip")
    parser.add_argument("--naip", type=int, default=1_300_000)
    parser.add_argument("--objects", type=int, default=2000)
    args = parser.parse_args()
    parts = args.parts.split(",")
    print(f"machine: {os.cpu_count()} cores; shared and noisy: medians, CPU time beside wall")
    if "claims" in parts:
        bench_claims(args.ledger)
    if "overhead" in parts:
        bench_overhead(args.ledger)
    if "throughput" in parts:
        bench_throughput(args.ledger, args.objects)
    if "naip" in parts or "naip-plan" in parts:
        bench_naip(args.ledger, args.naip, enqueue="naip" in parts)


if __name__ == "__main__":
    main()
