"""Thumbnails per second from local files vs from S3 with added latency.

Generates NAIP-like GeoTIFFs (4-band uint8, 512x512 tiles, deflate, internal
overviews 2-16), uploads them to a moto S3 server on 127.0.0.1 that waits ``--delay``
seconds (20 ms by default) before answering each request, then makes a thumbnail of
every file through pixelfleet's real worker path, ``pixelfleet.worker.execute(context,
task)``, with ``K`` tasks (hence reads) in flight:

- from a ``file://`` source, which GDAL reads directly;
- from the ``s3://`` source, which GDAL reads through ``Storage.open()`` (a RangeFile),
  where every range request costs the added latency.

Outputs go to a local folder in both cases, so the figures compare reading only. The
target is S3 at >= 0.5x the local throughput.

By default the ``K`` tasks run on threads of this process; ``--workers N`` runs them
through the local executor instead (``N`` processes of ``K`` threads). The op is the
pipeline's ``thumbnail`` op when it can be imported, otherwise a stand-in defined here
that reads the same way (overview-aware decimated read, then a small WebP).

Columns: ``req/file`` and ``KB/file`` are the S3 reads per thumbnail, ``CPU ms/file``
this process's CPU per thumbnail, ``server CPU s`` what the moto server burnt during
the pass. The server runs on the same machine: on a small one it takes CPU from the
workers, which real S3 would not; ``--delay 0`` shows that share on its own.

    .venv/bin/python benchmarks/s3_latency.py --count 48 --threads 4,8,16 --workdir /tmp/pfb
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the moto server helper
sys.path.insert(0, str(HERE))  # so workers can load the stand-in op by reference

from rasterio.abc import FileContainer  # noqa: E402

from pixelfleet.models import Entry, OutputRecord, Task, stable_hash  # noqa: E402
from pixelfleet.ops import Op, OpConfig, OpContext, render_key  # noqa: E402
from pixelfleet.storage import Storage  # noqa: E402
from s3_server import new_bucket, start_s3_server  # noqa: E402

STAND_IN_OP = "s3_latency:StandInThumbnailOp"


# -- the stand-in op ------------------------------------------------------------------------


class StandInConfig(OpConfig):
    """Settings of :class:`StandInThumbnailOp`."""

    max_size: int = 256


class StandInThumbnailOp(Op):
    """Reads like a thumbnail op: one decimated, overview-aware read, then a small WebP."""

    name = "bench-thumbnail"
    Config = StandInConfig

    def output_keys(self, entry: Entry) -> list[str]:
        """One output per source: ``{stem}.webp``."""
        return [render_key("{stem}.webp", entry.key)]

    def run(self, ctx: OpContext, entry: Entry) -> list[OutputRecord]:
        """Read the smallest fitting overview of the first three bands and write a WebP."""
        import io

        import rasterio
        from PIL import Image
        from rasterio.enums import Resampling

        limit = self.config.max_size  # type: ignore[attr-defined]
        path = ctx.source.local_path(entry.key)
        # rasterio.open(file_object) would copy the whole object into memory first; an
        # opener lets GDAL read just the byte ranges it needs, through a RangeFile.
        opener = None if path else StorageFiles(ctx.source, entry)
        with rasterio.open(path or entry.key, opener=opener) as src:
            scale = max(src.width, src.height) / limit
            shape = (max(1, round(src.height / scale)), max(1, round(src.width / scale)))
            bands = [1, 2, 3] if src.count >= 3 else [1]
            pixels = src.read(bands, out_shape=(len(bands), *shape), resampling=Resampling.average)
        image = Image.fromarray(np.ascontiguousarray(np.moveaxis(pixels, 0, -1)).squeeze())
        buffer = io.BytesIO()
        image.save(buffer, format="WEBP", quality=80)
        key = self.output_keys(entry)[0]
        return [ctx.write(self, entry, key, buffer.getvalue(), "image/webp")]


class StorageFiles(FileContainer):
    """Serves one storage object to GDAL as a file, with no request beyond GDAL's reads.

    A plain opener function would be asked for the size by opening the object again;
    here the size comes from the entry, and probes for sidecar files get "no" at once.
    """

    def __init__(self, storage: Storage, entry: Entry):
        self.storage = storage
        self.entry = entry

    def open(self, path: str, mode: str = "rb", **kwds: Any) -> Any:
        """A RangeFile over the entry."""
        if "w" in mode or "a" in mode or "+" in mode:
            raise PermissionError(f"{path} is read-only")
        return self.storage.open(self.entry.key, size=self.entry.size)

    def isfile(self, path: str) -> bool:
        """Only the entry itself exists."""
        return path == self.entry.key

    def isdir(self, path: str) -> bool:
        """No folders."""
        return False

    def ls(self, path: str) -> list[str]:
        """Nothing to list (GDAL would look for sidecar files)."""
        return []

    def mtime(self, path: str) -> int:
        """The entry's modification time."""
        return int(self.entry.mtime)

    def size(self, path: str) -> int:
        """The entry's size, known without a request."""
        return self.entry.size

    def rm(self, path: str) -> None:
        """Refused."""
        raise PermissionError(f"{path} is read-only")


def pick_op(choice: str) -> tuple[str, bool]:
    """The op to run and whether it is the real one."""
    if choice in ("auto", "thumbnail"):
        try:
            from pixelfleet.ops.thumbnail import ThumbnailOp  # noqa: F401
        except ImportError as exc:
            if choice == "thumbnail":
                raise SystemExit(f"the thumbnail op cannot be imported: {exc}") from None
            return STAND_IN_OP, False
        return "thumbnail", True
    return STAND_IN_OP, False


# -- data -----------------------------------------------------------------------------------


def make_images(folder: Path, count: int, size: int, seed: int = 0) -> list[str]:
    """Write ``count`` NAIP-like GeoTIFFs under ``folder``; return their keys."""
    import rasterio
    from affine import Affine

    rng = np.random.default_rng(seed)
    keys = []
    for i in range(count):
        key = f"al/2013/m_{3008601 + i}_ne_16_1_20130928_{size}.tif"
        keys.append(key)
        path = folder / key
        if path.exists():  # made by an earlier run in the same --workdir
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        # Smooth fields plus noise: compresses about as well as real imagery.
        coarse = rng.integers(0, 256, (4, size // 100 + 2, size // 100 + 2)).astype(np.float32)
        fine = np.kron(coarse, np.ones((100, 100), np.float32))[:, :size, :size]
        pixels = np.clip(fine + rng.normal(0, 12, fine.shape), 0, 255).astype(np.uint8)
        profile = {
            "driver": "GTiff",
            "width": size,
            "height": size,
            "count": 4,
            "dtype": "uint8",
            "crs": "EPSG:26916",
            "transform": Affine(1.0, 0.0, 500000.0 + i * size, 0.0, -1.0, 3700000.0),
            "tiled": True,
            "blockxsize": 512,
            "blockysize": 512,
            "compress": "deflate",
            "interleave": "pixel",
        }
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(pixels)
            dst.build_overviews([2, 4, 8, 16], rasterio.enums.Resampling.average)
    return keys


def upload(folder: Path, keys: list[str], client: Any, bucket: str) -> None:
    """Put every file in the bucket under the same key, one PUT each."""

    def put(key: str) -> None:
        client.put_object(Bucket=bucket, Key=key, Body=(folder / key).read_bytes())

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, keys))


# -- measuring ------------------------------------------------------------------------------


class RequestCounter:
    """Counts the reads (range requests) S3 storages make, by patching ``S3Storage.read``."""

    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0
        self._lock = threading.Lock()

    def install(self) -> None:
        """Wrap ``S3Storage.read`` and ``S3Storage.head`` in this process."""
        from pixelfleet.storage.s3 import S3Storage

        counter = self
        read, head = S3Storage.read, S3Storage.head

        def counted_read(
            self: Any, key: str, start: int | None = None, end: int | None = None
        ) -> bytes:
            data = read(self, key, start, end)
            with counter._lock:
                counter.requests += 1
                counter.bytes += len(data)
            return data

        def counted_head(self: Any, key: str) -> Entry | None:
            with counter._lock:
                counter.requests += 1
            return head(self, key)

        S3Storage.read = counted_read  # type: ignore[method-assign]
        S3Storage.head = counted_head  # type: ignore[method-assign]

    def take(self) -> tuple[int, int]:
        """Return and reset (requests, bytes)."""
        with self._lock:
            out = (self.requests, self.bytes)
            self.requests = self.bytes = 0
        return out


def child_cpu_seconds() -> float:
    """CPU time used so far by the moto server (a child process), if psutil is here."""
    try:
        import psutil
    except ImportError:
        return float("nan")
    total = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            if not any(arg.endswith("s3_server.py") for arg in child.cmdline()):
                continue
            times = child.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


@dataclass
class Pass:
    """One measured pass over every file."""

    label: str
    threads: int
    seconds: float
    done: int
    failed: int
    requests: int
    bytes: int
    server_cpu: float
    cpu: float = float("nan")

    @property
    def rate(self) -> float:
        """Thumbnails per second."""
        return self.done / self.seconds if self.seconds else 0.0


def run_pass(
    label: str,
    source_url: str,
    output_url: str,
    entries: list[Entry],
    op: str,
    threads: int,
    counter: RequestCounter,
    workers: int = 0,
) -> Pass:
    """Make a thumbnail of every entry, ``threads`` at a time per process.

    With ``workers == 0`` the tasks run through ``worker.execute`` in this process's
    thread pool; otherwise through a :class:`LocalExecutor` of ``workers`` processes,
    whose first ``workers`` tasks (process start-up) are left out of the timing.
    """
    context = json.dumps(
        {
            "source": {"url": source_url},
            "output": {"url": output_url},
            "steps": [{"op": op}],
        }
    )
    tasks = [Task(stable_hash([label, e.key]), "", (e,)) for e in entries]
    if workers:
        seconds, results, server_cpu = _run_local_executor(context, tasks, threads, workers)
        requests = nbytes = -1  # made in the worker processes, where nothing counts them
        cpu = float("nan")
    else:
        from pixelfleet.worker import execute

        payloads = [json.dumps(t.to_dict()) for t in tasks]
        counter.take()
        server_cpu = child_cpu_seconds()
        cpu = time.process_time()
        started = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            results = [json.loads(r) for r in pool.map(lambda t: execute(context, t), payloads)]
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu
        requests, nbytes = counter.take()
        server_cpu = child_cpu_seconds() - server_cpu
    failed = [r for r in results if r["state"] != "done"]
    for r in failed[:3]:
        errors = [e for e in r["entries"] if e["state"] == "failed"]
        detail = errors[0] if errors else r
        print(f"  ! {label}: {detail.get('error_type')}: {detail.get('error')}", file=sys.stderr)
    done = len(results) - len(failed)
    return Pass(label, threads, seconds, done, len(failed), requests, nbytes, server_cpu, cpu)


def _run_local_executor(
    context: str, tasks: list[Task], threads: int, workers: int
) -> tuple[float, list[dict[str, Any]], float]:
    from pixelfleet.executors.base import Job
    from pixelfleet.executors.local import LocalExecutor

    def run_all(batch: list[Task]) -> list[dict[str, Any]]:
        for task in batch:
            executor.submit(Job(task.id, json.dumps(task.to_dict())))
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + 600
        while len(out) < len(batch) and time.monotonic() < deadline:
            out.extend(r.to_dict() for r in executor.results(wait=1.0))
        return out

    executor = LocalExecutor(workers=workers, threads=threads)
    executor.start(context, timeout=600)
    try:
        warm, timed = tasks[:workers], tasks[workers:]
        run_all(warm)
        server_cpu = child_cpu_seconds()
        started = time.perf_counter()
        results = run_all(timed)
        seconds = time.perf_counter() - started
        server_cpu = child_cpu_seconds() - server_cpu
    finally:
        executor.close()
    return seconds, results, server_cpu


def _ratio(s3: Pass, local: Pass) -> str:
    ratio = s3.rate / local.rate if local.rate else 0.0
    return f"{ratio:.2f}x ({'meets' if ratio >= 0.5 else 'misses'} the 0.5x target)"


def main() -> None:
    """Generate, upload, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--count", type=int, default=24, help="number of GeoTIFFs")
    parser.add_argument("--size", type=int, default=2000, help="width and height in pixels")
    parser.add_argument("--delay", type=float, default=0.02, help="seconds added per S3 request")
    parser.add_argument(
        "--threads", default="4,16", help="comma-separated tasks in flight (K) to try"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="0: threads in this process (worker.execute); N: the local executor, N processes",
    )
    parser.add_argument("--repeat", type=int, default=2, help="passes per setting (best kept)")
    parser.add_argument("--op", choices=["auto", "thumbnail", "stand-in"], default="auto")
    parser.add_argument("--workdir", help="keep generated files here (default: a temp folder)")
    args = parser.parse_args()
    if not 1 <= args.count <= 1000 or not 64 <= args.size <= 20000:
        parser.error("use 1-1000 files of 64-20000 pixels")
    if not 1 <= args.repeat <= 20 or not 0 <= args.delay <= 10:
        parser.error("use --repeat 1-20 and --delay 0-10 seconds")
    thread_counts = [int(k) for k in args.threads.split(",")]

    op, real = pick_op(args.op)
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="pf-bench-"))
    source = workdir / "source"
    print(f"op: {op}" + ("" if real else "  (stand-in: pixelfleet.ops.thumbnail not importable)"))
    started = time.perf_counter()
    keys = make_images(source, args.count, args.size)
    total = sum((source / k).stat().st_size for k in keys)
    print(
        f"generated {len(keys)} GeoTIFFs of {args.size}x{args.size}x4 uint8, "
        f"{total / len(keys) / 1e6:.1f} MB each, in {time.perf_counter() - started:.1f}s"
    )

    endpoint, stop = start_s3_server(args.delay)
    try:
        env = new_bucket(endpoint, prefix="bench")
        upload(source, keys, env.client, env.bucket)
        # settings.py reads these when the workers first ask for settings.
        os.environ.update(
            {
                "PIXELFLEET_S3_ENDPOINT": endpoint,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_REGION": "us-east-1",
            }
        )
        from pixelfleet.storage import open_storage

        counter = RequestCounter()
        counter.install()
        wanted = set(keys)
        local_entries = [e for e in open_storage(source.as_uri()).scan() if e.key in wanted]
        s3_entries = list(open_storage(env.url).scan())
        print(f"S3 server {endpoint} with {args.delay * 1000:.0f} ms per request")

        # Warm up imports, GDAL and the S3 client on one file, outside the timings.
        for url, entries in ((env.url, s3_entries), (source.as_uri(), local_entries)):
            warm = workdir / f"warm-{time.monotonic_ns()}"
            run_pass("warm-up", url, warm.as_uri(), entries[:1], op, 1, counter)
            shutil.rmtree(warm, ignore_errors=True)

        print(f"best of {args.repeat} passes; outputs go to a local folder in both cases")
        print(
            f"{'K':>4} {'source':>6} {'thumbs/s':>9} {'seconds':>8} {'req/file':>9} "
            f"{'KB/file':>8} {'CPU ms/file':>12} {'server CPU s':>13}"
        )
        best: dict[str, Pass] = {}
        for k in thread_counts:
            passes = {}
            for label, url, entries in (
                ("local", source.as_uri(), local_entries),
                ("s3", env.url, s3_entries),
            ):
                runs = []
                for _ in range(args.repeat):
                    out = workdir / f"out-{label}-{k}-{time.monotonic_ns()}"
                    runs.append(
                        run_pass(label, url, out.as_uri(), entries, op, k, counter, args.workers)
                    )
                    shutil.rmtree(out, ignore_errors=True)
                p = max(runs, key=lambda r: r.rate)
                passes[label] = p
                if label not in best or p.rate > best[label].rate:
                    best[label] = p
                if p.requests < 0:
                    per_file = f"{'n/a':>9} {'n/a':>8}"
                else:
                    per_file = (
                        f"{p.requests / max(1, p.done):>9.1f} "
                        f"{p.bytes / max(1, p.done) / 1024:>8.0f}"
                    )
                print(
                    f"{k:>4} {label:>6} {p.rate:>9.1f} {p.seconds:>8.2f} {per_file} "
                    f"{p.cpu * 1000 / max(1, p.done):>12.1f} {p.server_cpu:>13.2f}"
                    + (f"  ({p.failed} failed)" if p.failed else "")
                )
            print(f"{k:>4} ratio  s3/local = {_ratio(passes['s3'], passes['local'])}")
        local, s3 = best["local"], best["s3"]
        print(
            f"best local {local.rate:.1f}/s (K={local.threads}), "
            f"best s3 {s3.rate:.1f}/s (K={s3.threads}): s3/local = {_ratio(s3, local)}"
        )
    finally:
        stop()
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
