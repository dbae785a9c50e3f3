"""``pixelfleet run PIPELINE --dry-run --estimate vcpus=96``: what a run would cost.

The plan is made as for a run (listing or S3 Inventory, partitions, tasks already done
skipped) but only counted, with a random sample of the tasks to do kept aside (reservoir
sampling: memory stays flat however large the plan). The sample is then run for real, in
this process, against the real sources but into a temporary output folder, with every
storage request counted; its per-object CPU time, wall time and requests are multiplied
out to the whole plan. Request costs use S3 Standard's list price, printed as an
assumption.
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from typing_extensions import override

from pixelfleet.errors import ConfigError
from pixelfleet.executors.batch import MAX_ARRAY
from pixelfleet.models import Entry, Task
from pixelfleet.runner import Runner
from pixelfleet.storage.base import RangeFile, Storage

#: S3 Standard in us-east-1, USD per 1,000 requests (the list price when this was written).
PRICE_PUT_LIST = 0.005
PRICE_GET_HEAD = 0.0004
#: Keys in one page of an S3 listing.
LIST_PAGE = 1000


def parse_estimate(text: str) -> dict[str, int]:
    """``vcpus=96,sample=20`` -> ``{"vcpus": 96, "sample": 20}``, with clear refusals."""
    out = {"vcpus": 0, "sample": 20, "threads": 0}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or name not in out:
            raise ConfigError(
                f"--estimate {text!r}: expected NAME=NUMBER items from vcpus, sample, threads"
                " (e.g. --estimate vcpus=96 or --estimate vcpus=96,sample=50)"
            )
        try:
            out[name] = int(value)
        except ValueError:
            raise ConfigError(f"--estimate {name}={value!r} is not a whole number") from None
        if out[name] < (0 if name == "sample" else 1):
            raise ConfigError(f"--estimate {name}={value} is too small")
    if not out["vcpus"]:
        raise ConfigError(f"--estimate {text!r} needs vcpus=N (the vCPUs of the fleet)")
    return out


@dataclass
class Requests:
    """Storage requests counted while the sample ran."""

    get: int = 0
    head: int = 0
    put: int = 0
    list: int = 0
    bytes_read: int = 0


@dataclass
class Estimate:
    """The plan's size and what running it would take."""

    tasks: int = 0
    objects: int = 0
    bytes: int = 0
    already_done: int = 0
    sampled_tasks: int = 0
    sampled_objects: int = 0
    failed_in_sample: int = 0
    cpu_per_object: float = 0.0
    wall_per_object: float = 0.0
    requests: Requests = field(default_factory=Requests)
    plan_seconds: float = 0.0
    vcpus: int = 1
    threads: int = 1
    from_inventory: bool = False

    def per_object(self, count: int) -> float:
        """A sampled count per sampled object."""
        return count / self.sampled_objects if self.sampled_objects else 0.0

    @property
    def hours(self) -> float:
        """Hours on ``vcpus``: CPU-bound, or latency-bound when a thread waits more than it
        computes (``threads`` tasks in flight per vCPU)."""
        per = max(self.cpu_per_object, self.wall_per_object / max(self.threads, 1))
        return self.objects * per / max(self.vcpus, 1) / 3600

    def totals(self) -> dict[str, float]:
        """Requests for the whole plan: the sample's per object, plus the listing."""
        listing = 0 if self.from_inventory else -(-(self.objects + self.already_done) // LIST_PAGE)
        r = self.requests
        return {
            "GET": self.per_object(r.get) * self.objects,
            "HEAD": self.per_object(r.head) * self.objects,
            "PUT": self.per_object(r.put) * self.objects,
            "LIST": self.per_object(r.list) * self.objects + listing,
            "bytes read": self.per_object(r.bytes_read) * self.objects,
        }

    def cost(self) -> float:
        """USD of the requests at S3 Standard's list price."""
        t = self.totals()
        return (t["PUT"] + t["LIST"]) / 1000 * PRICE_PUT_LIST + (
            t["GET"] + t["HEAD"]
        ) / 1000 * PRICE_GET_HEAD


class CountingStorage(Storage):
    """A storage that counts the requests made through it (and passes them on)."""

    def __init__(self, inner: Storage, counts: Requests):
        self.inner = inner
        self.counts = counts
        self.url = getattr(inner, "url", "")

    @override
    def scan(self, prefix: str = "") -> Iterator[Entry]:
        self.counts.list += 1
        return self.inner.scan(prefix)

    @override
    def head(self, key: str) -> Entry | None:
        self.counts.head += 1
        return self.inner.head(key)

    @override
    def read(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        data = self.inner.read(key, start, end)
        self.counts.get += 1
        self.counts.bytes_read += len(data)
        return data

    @override
    def write(self, key: str, data: bytes, metadata: dict[str, str] | None = None) -> Entry:
        self.counts.put += 1
        return self.inner.write(key, data, metadata)

    @override
    def write_file(
        self, key: str, path: str, metadata: dict[str, str] | None = None, consume: bool = False
    ) -> Entry:
        self.counts.put += 1
        return self.inner.write_file(key, path, metadata, consume=consume)

    @override
    def delete(self, key: str) -> None:
        self.inner.delete(key)

    @override
    def local_path(self, key: str) -> str | None:
        # GDAL reads a local file itself; count it as the one GET an object store would need.
        path = self.inner.local_path(key)
        if path is not None:
            self.counts.get += 1
        return path

    @override
    def open(self, key: str, size: int | None = None, block_size: int = 256 * 1024) -> RangeFile:
        if size is None:
            found = self.head(key)
            size = found.size if found is not None else 0
        return RangeFile(self, key, size, block_size)

    @override
    def describe(self, key: str) -> str:
        return self.inner.describe(key)


def estimate(runner: Runner, vcpus: int, sample: int = 20, threads: int = 0) -> Estimate:
    """Count the plan, run a random sample of it, and size the whole run from it."""
    report = Estimate(vcpus=vcpus, threads=threads or runner.pipeline.threads)
    report.from_inventory = bool(runner.pipeline.source.inventory)
    rng = random.Random(0)
    kept: list[Task] = []
    seen = 0
    started = time.monotonic()
    for chunk in _chunks(runner.planned_tasks(), 2048):
        done = runner.ledger.done_ids([t.id for t in chunk])
        for task in chunk:
            if task.id in done:
                report.already_done += 1
                continue
            report.tasks += 1
            report.objects += len(task.entries)
            report.bytes += task.size
            if not sample:
                continue
            seen += 1
            if len(kept) < sample:
                kept.append(task)
            elif (j := int(rng.random() * seen)) < sample:
                kept[j] = task
    report.plan_seconds = time.monotonic() - started
    if kept:
        _run_sample(runner, kept, report)
    return report


def _run_sample(runner: Runner, tasks: list[Task], report: Estimate) -> None:
    from pixelfleet.worker import prepare, run_task

    pipeline = runner.pipeline
    with tempfile.TemporaryDirectory(prefix="pixelfleet-estimate-") as scratch:
        data = pipeline.to_json_dict()
        data["output"] = {**data["output"], "url": scratch}
        data["catalog"] = None  # items are built (that is part of the cost), not stored
        if pipeline.catalog is not None:
            data["catalog"] = {**pipeline.catalog.model_dump(mode="json"), "url": "memory://"}
        context = json.dumps(data)
        prepared = prepare(context)
        ctx = prepared.ctx
        ctx.source = CountingStorage(ctx.source, report.requests)
        ctx.output = CountingStorage(ctx.output, report.requests)
        cpu = wall = 0.0
        for task in tasks:
            c0, w0 = time.process_time(), time.perf_counter()
            result = run_task(context, task)
            cpu += time.process_time() - c0
            wall += time.perf_counter() - w0
            report.sampled_tasks += 1
            report.sampled_objects += len(task.entries)
            report.failed_in_sample += sum(1 for e in result.entries if e.state == "failed")
    objects = max(report.sampled_objects, 1)
    report.cpu_per_object, report.wall_per_object = cpu / objects, wall / objects


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def children(tasks: int, array_size: int | None) -> int:
    """How many workers an aws-batch run of ``tasks`` would start."""
    return max(1, min(tasks, array_size or MAX_ARRAY))
