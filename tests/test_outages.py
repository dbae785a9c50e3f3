"""Storage faults and outages (issue 12): a failed read is retried, never taken for a
corrupt file; time-outs are bounded; a storage outage pauses the run instead of failing
its tasks."""

from __future__ import annotations

import io
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

import pixelfleet.settings as settings_mod
from fault_proxy import FaultProxy
from pixelfleet.errors import CorruptInputError, StorageError
from pixelfleet.imagery.pictures import ThumbnailOptions
from pixelfleet.imagery.thumbnails import decode_thumbnail
from pixelfleet.ledger import open_ledger
from pixelfleet.pipeline import pipeline_from_dict
from pixelfleet.runner import Runner, RunSummary
from pixelfleet.storage.s3listing import BucketLister
from s3_server import S3Env


def tiff_bytes(seed: int, size: int = 96) -> bytes:
    data = np.random.default_rng(seed).integers(0, 255, (3, size, size), dtype=np.uint8)
    buf = io.BytesIO()
    profile = {"width": size, "height": size, "count": 3, "dtype": "uint8"}
    with rasterio.open(
        buf, "w", driver="GTiff", transform=Affine(1, 0, 0, 0, -1, size), **profile
    ) as dst:
        dst.write(data)
    return buf.getvalue()


class ShortReads(io.BytesIO):
    """A file whose reads past the first ``good`` bytes come back cut in half."""

    def __init__(self, data: bytes, good: int):
        super().__init__(data)
        self.good = good
        self.name = "s3://b/valid.tif"

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        if self.tell() > self.good and len(data) > 1:
            self.seek(-(len(data) - len(data) // 2), io.SEEK_CUR)
            return data[: len(data) // 2]
        return data


def test_a_short_read_is_a_storage_error_not_a_corrupt_file() -> None:
    data = tiff_bytes(1)
    with pytest.raises(StorageError, match=r"got [\d,]+ of [\d,]+ bytes"):
        decode_thumbnail(ShortReads(data, 64), ThumbnailOptions(size=32))
    # Read whole and bad: corrupt.
    bad = data[:64] + bytes(len(data) - 64)
    with pytest.raises(CorruptInputError):
        decode_thumbnail(io.BytesIO(bad), ThumbnailOptions(size=32))


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """An endpoint that accepts connections and never answers."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    server.close()
    for conn in held:
        conn.close()


def test_listing_a_silent_endpoint_fails_within_the_timeout(silent_endpoint: str) -> None:
    lister = BucketLister(
        "s3://b",
        endpoint=silent_endpoint,
        bucket="b",
        region="us-east-1",
        credentials=None,
        timeout=2.0,
    )
    started = time.monotonic()
    with pytest.raises(StorageError, match="no answer within 2 s.*PIXELFLEET_S3_TIMEOUT"):
        list(lister.list(""))
    assert time.monotonic() - started < 4.0


def test_the_s3_timeout_is_a_setting() -> None:
    assert settings_mod.Settings.from_env({}).s3.timeout == 30.0
    assert settings_mod.Settings.from_env({"PIXELFLEET_S3_TIMEOUT": "5"}).s3.timeout == 5.0


@pytest.fixture
def proxied(s3_env: S3Env, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[S3Env, FaultProxy]]:
    """The test bucket, reached through a :class:`FaultProxy`."""
    proxy = FaultProxy(s3_env.endpoint)
    monkeypatch.setenv("PIXELFLEET_S3_ENDPOINT", proxy.endpoint)
    monkeypatch.setenv("PIXELFLEET_S3_TIMEOUT", "5")
    monkeypatch.setattr(settings_mod, "_current", None)
    try:
        yield s3_env, proxy
    finally:
        proxy.close()


def run_over(env: S3Env, n: int, tmp_path: Path, threads: int = 2) -> RunSummary:
    for i in range(n):
        env.client.put_object(Bucket=env.bucket, Key=f"in/{i:03d}.tif", Body=tiff_bytes(i))
    pipeline = pipeline_from_dict(
        {
            "source": {"url": f"{env.url}/in", "partition": {"by": "object"}},
            "output": {"url": f"{env.url}/out"},
            "steps": [{"op": "thumbnail", "size": 32, "key": "{stem}.png"}],
            "run": {"executor": "local", "workers": 1, "threads": threads, "attempts": 2},
        }
    )
    with open_ledger(f"sqlite:///{tmp_path / 'l.db'}") as ledger:
        return Runner(pipeline, ledger, progress=False).run()


@pytest.mark.s3
def test_cut_bodies_are_retried_and_no_valid_file_is_marked_corrupt(
    proxied: tuple[S3Env, FaultProxy], tmp_path: Path
) -> None:
    env, proxy = proxied
    proxy.truncate = 0.3
    summary = run_over(env, 12, tmp_path)
    print(f"{proxy.truncated} bodies cut; retries {summary.counts.retries}")
    assert proxy.truncated > 0
    assert summary.counts.tasks_failed == 0, [t.error for t in summary.failures]
    assert summary.counts.tasks_done == 12


@pytest.mark.s3
def test_throttling_errors_resets_and_latency_are_ridden_out(
    proxied: tuple[S3Env, FaultProxy], tmp_path: Path
) -> None:
    """A quarter of requests answered 503 SlowDown, 500 or a reset, 20 ms added to each."""
    env, proxy = proxied
    proxy.faults, proxy.latency = 0.25, 0.02
    summary = run_over(env, 20, tmp_path)
    print(f"injected {dict(proxy.injected)}; retries {summary.counts.retries}")
    assert min(proxy.injected.values(), default=0) > 0, proxy.injected  # each kind happened
    assert summary.counts.tasks_failed == 0, [t.error for t in summary.failures]
    assert summary.counts.tasks_done == 20
    assert not {k: n for k, n in proxy.puts.items() if n > 1}
    corrupt = [t for t in summary.failures if t.error_type == "CorruptInputError"]
    assert not corrupt


#: The 2-minute outages run with PIXELFLEET_SOAK=1; ``make test`` runs the 20 s forms.
LONG_FORM = pytest.mark.skipif(
    os.environ.get("PIXELFLEET_SOAK") != "1",
    reason="the 2-minute outage runs with PIXELFLEET_SOAK=1 (make test runs the 20 s form)",
)


def outage(proxy: FaultProxy, mode: str, after: float, seconds: float) -> threading.Thread:
    def run() -> None:
        time.sleep(after)
        proxy.mode = mode
        time.sleep(seconds)
        proxy.mode = "pass"

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.s3
@pytest.mark.parametrize(
    ("mode", "seconds"),
    [
        ("refuse", 20.0),
        ("hang", 20.0),
        pytest.param("refuse", 120.0, marks=[pytest.mark.slow, LONG_FORM]),
        pytest.param("hang", 120.0, marks=[pytest.mark.slow, LONG_FORM]),
    ],
)
def test_a_storage_outage_pauses_the_run_and_it_completes(
    proxied: tuple[S3Env, FaultProxy], tmp_path: Path, mode: str, seconds: float
) -> None:
    env, proxy = proxied
    for i in range(30):  # uploaded first: the outage must hit the run, not the set-up
        env.client.put_object(Bucket=env.bucket, Key=f"in/{i:03d}.tif", Body=tiff_bytes(i))
    proxy.puts.clear()
    thread = outage(proxy, mode, after=3.0, seconds=seconds)
    started = time.monotonic()
    summary = run_over(env, 30, tmp_path)
    thread.join()
    print(f"{mode}: {time.monotonic() - started:.1f} s, retries {summary.counts.retries}")
    assert summary.counts.tasks_failed == 0, [t.error for t in summary.failures]
    assert summary.counts.tasks_done == 30
    duplicates = {k: n for k, n in proxy.puts.items() if n > 1}
    assert not duplicates
