"""Live updates: how soon an upload is searchable, and how many events a watcher keeps up with.

Everything runs here: moto's server (S3, SQS) on 127.0.0.1, a bucket whose S3 -> SQS
notification configuration sends moto's own events, the photo pipeline of the labelling
use case (a 128 px thumbnail and ``static`` labels, catalogued in SQLite), and
``pixelfleet watch``'s :class:`~pixelfleet.live.Watcher` with the local executor and 2
worker processes.

1. **Latency.** ``--uploads`` photos (200) are uploaded one at a time; after each, the
   STAC API (``/stac/search?ids=KEY``, the server app in this process) is asked every
   20 ms until it returns the item. Printed: p50 and p95 of upload -> searchable, of the
   task's own time in the worker (render, labels, writes: from the ledger), and of the
   difference (what the event path adds). Target: p95 of the difference <= 1 s.
2. **Throughput.** ``--objects`` photos (300) are uploaded while no watcher runs, so
   their events wait in the queue; then a watcher starts and the time until the catalog
   holds them all gives events per second. The baseline, in the same run: a backfill
   (``Runner.run``, same pipeline, same executor and workers) of the same objects into a
   fresh output and catalog. Both include starting the worker processes. Target: events/s
   >= 0.8x the backfill's objects/s. The same events are also run from a queue in this
   process (``MemoryQueue``), which shows the watcher's own cost without moto's SQS
   emulation (whose ReceiveMessage reads its whole queue on every call).

Wall-clock figures on a shared 2-core machine: medians over ``--repeat`` runs (3).

    .venv/bin/python benchmarks/events.py [--uploads 200] [--objects 300] [--repeat 3]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from PIL import Image  # noqa: E402

from live_helpers import s3_event  # noqa: E402
from s3_server import start_s3_server  # noqa: E402


def photo(seed: int, size: int = 256) -> bytes:
    """A JPEG of noise (so the thumbnail has work to do)."""
    import numpy as np

    rng = np.random.default_rng(abs(seed))
    pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=85)
    return out.getvalue()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


class Setup:
    """Buckets, a queue with notifications, a pipeline and its catalog and ledger."""

    def __init__(self, endpoint: str, root: Path, name: str):
        import boto3

        from pixelfleet.pipeline import pipeline_from_dict

        self.s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        self.sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1")
        self.bucket, self.out = f"src-{name}", f"out-{name}"
        for bucket in (self.bucket, self.out):
            self.s3.create_bucket(Bucket=bucket)
        dead = self.sqs.create_queue(QueueName=f"{name}-dead")["QueueUrl"]
        dead_arn = self.arn(dead)
        policy = f'{{"deadLetterTargetArn": "{dead_arn}", "maxReceiveCount": "10"}}'
        self.queue = self.sqs.create_queue(
            QueueName=name, Attributes={"VisibilityTimeout": "60", "RedrivePolicy": policy}
        )["QueueUrl"]
        self.s3.put_bucket_notification_configuration(
            Bucket=self.bucket,
            NotificationConfiguration={
                "QueueConfigurations": [
                    {"QueueArn": self.arn(self.queue), "Events": ["s3:ObjectCreated:*"]}
                ]
            },
        )
        self.catalog_url = f"sqlite:///{root / f'{name}-catalog.db'}"
        self.ledger_url = f"sqlite:///{root / f'{name}-ledger.db'}"
        self.pipeline = pipeline_from_dict(
            {
                "source": {"url": f"s3://{self.bucket}", "include": ["**/*.jpg"]},
                "output": {"url": f"s3://{self.out}"},
                "steps": [
                    {"op": "thumbnail", "size": 128, "key": "{stem}.thumb.jpg"},
                    {
                        "op": "labels",
                        "labeler": "static",
                        "options": {"labels": {"photo": 90}},
                    },
                ],
                "catalog": {"url": self.catalog_url, "collection": "photos"},
                "run": {"executor": "local", "workers": 2},
            }
        )
        self.drain_test_event()

    def arn(self, url: str) -> str:
        attrs = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        return str(attrs["Attributes"]["QueueArn"])

    def drain_test_event(self) -> None:
        answer = self.sqs.receive_message(QueueUrl=self.queue, MaxNumberOfMessages=10)
        for message in answer.get("Messages", []):
            self.sqs.delete_message(QueueUrl=self.queue, ReceiptHandle=message["ReceiptHandle"])

    def upload(self, key: str, seed: int) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=photo(seed))


def start_watcher(setup: Setup, queue: Any = None) -> tuple[Any, threading.Thread, Any, Any]:
    from pixelfleet.catalog import open_catalog
    from pixelfleet.events.sqs import SqsQueue
    from pixelfleet.ledger import open_ledger
    from pixelfleet.live import Watcher
    from pixelfleet.settings import get_settings

    ledger = open_ledger(setup.ledger_url)
    catalog = open_catalog(setup.catalog_url)
    events = queue or SqsQueue(f"sqs://{setup.queue}", get_settings())
    watcher = Watcher(setup.pipeline, ledger, events, catalog=catalog, summary_every=0)
    thread = threading.Thread(target=watcher.run, daemon=True)
    thread.start()
    return watcher, thread, ledger, catalog


def searchable(client: Any, key: str) -> bool:
    answer = client.get("/stac/search", params={"ids": key, "collections": "photos"})
    return bool(answer.status_code == 200 and answer.json()["features"])


def latency(endpoint: str, root: Path, uploads: int) -> dict[str, list[float]]:
    from fastapi.testclient import TestClient

    from pixelfleet.server import create_app

    setup = Setup(endpoint, root, f"lat-{uuid.uuid4().hex[:6]}")
    watcher, thread, ledger, catalog = start_watcher(setup)
    app = create_app(catalog_url=setup.catalog_url, ledger_url=setup.ledger_url)
    waits: list[float] = []
    tasks: list[float] = []
    with TestClient(app) as client:
        for i in range(-2, uploads):  # two first uploads warm the workers up
            key = f"up/{i + 2:05d}.jpg"
            started = time.perf_counter()
            setup.upload(key, i)
            deadline = started + 60
            while not searchable(client, key):
                if time.perf_counter() > deadline:
                    raise SystemExit(f"{key} was not searchable within 60 s")
                time.sleep(0.02)
            if i >= 0:
                waits.append(time.perf_counter() - started)
    watcher.stop()
    thread.join(60)
    run_id = watcher.summary.run_id
    for rec in ledger.find_tasks(run_id, ["done"], limit=uploads + 10):
        tasks.append(rec.seconds)
    ledger.close()
    catalog.close()
    tasks = sorted(tasks)[-uploads:] if len(tasks) > uploads else tasks
    return {"waits": waits, "tasks": tasks}


def throughput(endpoint: str, root: Path, objects: int) -> dict[str, float]:
    from pixelfleet.catalog import open_catalog
    from pixelfleet.catalog.query import parse_query
    from pixelfleet.events import MemoryQueue
    from pixelfleet.ledger import open_ledger
    from pixelfleet.pipeline import pipeline_from_dict
    from pixelfleet.runner import Runner

    setup = Setup(endpoint, root, f"tp-{uuid.uuid4().hex[:6]}")
    keys = [f"batch/{i:05d}.jpg" for i in range(objects)]
    for i, key in enumerate(keys):
        setup.upload(key, 10_000 + i)

    def held(catalog: Any) -> int:
        page = catalog.search(parse_query(collections=["photos"], limit=10))
        return int(page.matched or 0)

    def drain(queue: Any = None, fresh: bool = False) -> float:
        if fresh:  # a new output and catalog: the same objects made again from scratch
            name = f"again-{uuid.uuid4().hex[:6]}"
            setup.s3.create_bucket(Bucket=f"out-{name}")
            data = setup.pipeline.to_json_dict()
            data["output"]["url"] = f"s3://out-{name}"
            setup.catalog_url = f"sqlite:///{root / f'{name}-catalog.db'}"
            data["catalog"]["url"] = setup.catalog_url
            setup.pipeline = pipeline_from_dict(data)
        started = time.perf_counter()
        watcher, thread, ledger, catalog = start_watcher(setup, queue)
        deadline = started + 600
        while held(catalog) < objects:
            if time.perf_counter() > deadline:
                raise SystemExit("the watcher did not catch up within 600 s")
            time.sleep(0.05)
        took = time.perf_counter() - started
        watcher.stop()
        thread.join(60)
        ledger.close()
        catalog.close()
        return took

    sqs_seconds = drain()
    # The same events again, from a queue in this process, into a fresh output.
    memory = MemoryQueue(visibility=60)
    for key in keys:
        memory.put(s3_event("created", setup.bucket, key))
    memory_seconds = drain(memory, fresh=True)

    data = setup.pipeline.to_json_dict()
    name = f"backfill-{uuid.uuid4().hex[:6]}"
    setup.s3.create_bucket(Bucket=f"out-{name}")
    data["output"]["url"] = f"s3://out-{name}"
    data["catalog"]["url"] = f"sqlite:///{root / f'{name}-catalog.db'}"
    backfill = pipeline_from_dict(data)
    with open_ledger(f"sqlite:///{root / f'{name}-ledger.db'}") as ledger:
        started = time.perf_counter()
        summary = Runner(backfill, ledger, progress=False).run()
        backfill_seconds = time.perf_counter() - started
    assert summary.state == "done", summary
    with open_catalog(data["catalog"]["url"]) as catalog:
        assert held(catalog) == objects
    return {"sqs": sqs_seconds, "memory": memory_seconds, "backfill": backfill_seconds}


def moto_receive(endpoint: str) -> None:
    """What one ReceiveMessage costs moto with N messages waiting (its queue is scanned)."""
    import boto3

    sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1")
    for waiting in (30, 300, 2400):
        url = sqs.create_queue(QueueName=f"probe-{uuid.uuid4().hex[:6]}")["QueueUrl"]
        for _ in range(0, waiting, 10):
            entries = [{"Id": str(i), "MessageBody": "x" * 1000} for i in range(10)]
            sqs.send_message_batch(QueueUrl=url, Entries=entries)
        times = []
        for _ in range(5):
            started = time.perf_counter()
            sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0)
            times.append(time.perf_counter() - started)
        took = statistics.median(times)
        print(f"  moto ReceiveMessage, {waiting:>5} waiting: {took:.3f} s a call")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--uploads", type=int, default=200)
    parser.add_argument("--objects", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", default="latency,throughput,moto")
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    endpoint, stop = start_s3_server()
    os.environ["PIXELFLEET_S3_ENDPOINT"] = endpoint
    os.environ["PIXELFLEET_SQS_ENDPOINT"] = endpoint
    print(f"moto server at {endpoint}; {os.cpu_count()} cores, shared (wall-clock medians)")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            if "latency" in args.only:
                result = latency(endpoint, root, args.uploads)
                waits, tasks = result["waits"], result["tasks"]
                extra = [w - t for w, t in zip(sorted(waits), sorted(tasks), strict=False)]
                print(f"latency over {len(waits)} uploads (upload -> /stac/search returns it):")
                for label, values in (("upload -> searchable", waits), ("the task itself", tasks)):
                    p50, p95 = pct(values, 0.5), pct(values, 0.95)
                    print(f"  {label:<24}p50 {p50:.3f} s  p95 {p95:.3f} s")
                print(
                    f"  added by the event path p50 {pct(extra, 0.5):.3f} s  "
                    f"p95 {pct(extra, 0.95):.3f} s  (target p95 <= 1 s)"
                )
            if "moto" in args.only:
                moto_receive(endpoint)
            if "throughput" in args.only:
                runs = [throughput(endpoint, root, args.objects) for _ in range(args.repeat)]
                n = args.objects
                for name in ("backfill", "sqs", "memory"):
                    secs = statistics.median(r[name] for r in runs)
                    print(f"  {name:<9} {n} objects in {secs:.2f} s = {n / secs:.1f}/s")
                back = statistics.median(r["backfill"] for r in runs)
                for name in ("sqs", "memory"):
                    ratio = back / statistics.median(r[name] for r in runs)
                    print(f"  events/s vs the backfill's objects/s, {name}: {ratio:.2f}x (>= 0.8x)")
    finally:
        stop()


if __name__ == "__main__":
    main()
