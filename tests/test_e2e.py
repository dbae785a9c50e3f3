"""End to end: real thumbnails on local disk, S3 (moto) and Dask; crashes and bad input."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from PIL import Image

from fleet_helpers import make_fleet_bucket, worker_env
from pixelfleet.ledger import open_ledger
from pixelfleet.pipeline import pipeline_from_dict
from pixelfleet.runner import Runner
from pixelfleet.storage import open_storage
from process_helpers import is_helper, is_worker

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "demo" / "bucket"
BAD = REPO / "tests" / "data" / "bad"

#: Bad samples that must fail (the others in bad/ are mis-named but valid images).
MUST_FAIL = {
    "crash-0e16d3bfb83be87356d026d66919deaefca44dac.tif",
    "crash-2020-10-test.tif",
    "seek_too_large.tif",
    "truncated_jpeg.jpg",
    "truncated_image.png",
    "broken_data_stream.png",
    "decompression_bomb.gif",
    "reallybig.bmp",
    "png_decompression_dos.png",
}


def pipeline(src: str, out: str, executor: str = "local", **run: Any) -> Any:
    return pipeline_from_dict(
        {
            "source": {
                "url": src,
                "include": ["**/*"],
                "partition": {"by": "object"},
            },
            "output": {"url": out},
            "steps": [{"op": "thumbnail", "size": 128, "key": "{stem}.thumb.jpg"}],
            "run": {"executor": executor, "workers": 2, **run},
        }
    )


def thumbs(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*.thumb.jpg"))


def expected_thumbs(src: Path) -> list[str]:
    return sorted(
        str(p.relative_to(src).with_name(p.stem + ".thumb.jpg"))
        for p in src.rglob("*")
        if p.is_file()
    )


def test_local_run_makes_one_thumbnail_per_object_and_rerun_rewrites_nothing(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    p = pipeline(str(DEMO), str(out))
    with open_ledger(f"sqlite:///{tmp_path / 'l.db'}") as ledger:
        summary = Runner(p, ledger).run()
        assert summary.state == "done", summary.failures
        assert thumbs(out) == expected_thumbs(DEMO)
        for rel in thumbs(out):
            with Image.open(out / rel) as im:
                assert im.format == "JPEG"
                # The 13 x 12 float raster is enlarged 5 times to reach min_size (64).
                small = "float_raster_with_nodata" in rel
                assert (im.size == (65, 60)) if small else (max(im.size) == 128)
        before = {rel: (out / rel).stat().st_mtime_ns for rel in thumbs(out)}
        again = Runner(p, ledger).run()
        assert again.counts.tasks_skipped == len(before)
        assert {rel: (out / rel).stat().st_mtime_ns for rel in thumbs(out)} == before


def test_bad_files_fail_alone_and_the_run_finishes(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(BAD, src / "bad")
    shutil.copy(DEMO / "photos" / "flower.jpg", src / "flower.jpg")
    out = tmp_path / "out"
    with open_ledger(f"sqlite:///{tmp_path / 'l.db'}") as ledger:
        summary = Runner(pipeline(str(src), str(out)), ledger).run()
        assert summary.state == "failed"
        failures = {
            f["key"]: f for t in ledger.find_tasks(summary.run_id, ["failed"]) for f in t.failures
        }
        tasks = ledger.find_tasks(summary.run_id)
    assert {Path(k).name for k in failures} >= MUST_FAIL
    for failure in failures.values():
        assert failure["error"] and "\n" not in failure["error"]
        assert failure["error_type"].endswith("Error")
    # Bad input is permanent: one attempt each, no retries.
    assert all(t.attempts == 1 for t in tasks)
    assert (out / "flower.thumb.jpg").exists()
    # Every object is accounted for: a thumbnail or a failure.
    done = {Path(k).name for t in tasks if t.state == "done" for k in [t.entries[0]["key"]]}
    assert len(done) + len(failures) == len(list(src.rglob("*.*")))


def test_hostile_keys_never_write_outside_the_output(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(DEMO / "photos" / "flower.jpg", src / "ok.jpg")
    shutil.copy(DEMO / "photos" / "flower.jpg", src / "..\\..\\evil.jpg")
    out = tmp_path / "deep" / "out"
    with open_ledger(f"sqlite:///{tmp_path / 'l.db'}") as ledger:
        summary = Runner(pipeline(str(src), str(out), executor="inline"), ledger).run()
        [failed] = ledger.find_tasks(summary.run_id, ["failed"])
    assert failed.error_type == "UnsafeKeyError"
    assert "backslash" in (failed.error or "")
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert [w for w in written if not w.startswith(("src", "l.db"))] == ["deep/out/ok.thumb.jpg"]


def _workers() -> list[psutil.Process]:
    """The local executor's worker processes (not multiprocessing's helpers)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if is_worker(child):
                found.append(child)
        except psutil.Error:
            continue
    return found


def _kill_a_busy_worker(out: Path, killed: list[int]) -> None:
    """Once outputs appear, SIGKILL a worker that has a source open: a task is mid-run."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not killed:
        if out.exists() and any(out.rglob("slow*.thumb.jpg")):
            for worker in _workers():
                try:
                    if any("slow" in f.path for f in worker.open_files()):
                        os.kill(worker.pid, signal.SIGKILL)
                        killed.append(worker.pid)
                        return
                except psutil.Error:
                    continue
        time.sleep(0.005)


def _slow_raster(path: Path) -> None:
    """A striped raster without overviews: each thumbnail takes a while to decode."""
    import numpy as np
    import rasterio
    from affine import Affine

    rng = np.random.default_rng(0)
    data = rng.integers(0, 255, (3, 3000, 3000), dtype="uint8")
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=3000,
        height=3000,
        count=3,
        dtype="uint8",
        compress="deflate",
        crs="EPSG:32617",
        transform=Affine(1, 0, 500000, 0, -1, 4000000),
    ) as dst:
        dst.write(data)


@pytest.mark.slow
def test_sigkill_a_local_worker_mid_run(tmp_path: Path) -> None:
    src = tmp_path / "src"
    master = tmp_path / "slow.tif"
    _slow_raster(master)
    for i in range(32):
        dest = src / f"s{i // 8}" / f"slow{i:02d}.tif"
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.link(master, dest)
    shutil.copytree(DEMO / "photos", src / "z_photos")  # after the slow ones, in key order
    out = tmp_path / "out"
    killed: list[int] = []
    killer = threading.Thread(target=_kill_a_busy_worker, args=(out, killed))
    killer.start()
    with open_ledger(f"sqlite:///{tmp_path / 'l.db'}") as ledger:
        summary = Runner(pipeline(str(src), str(out), attempts=3, threads=2), ledger).run()
        killer.join()
        assert killed, "the test did not manage to kill a busy worker"
        assert summary.state == "done", summary.failures
        tasks = ledger.find_tasks(summary.run_id)
    # Every object has exactly one thumbnail, and no partial file is left behind.
    assert thumbs(out) == expected_thumbs(src)
    assert not [p for p in out.rglob("*") if ".pixelfleet-tmp-" in p.name]
    # The ledger agrees: every task done once; the lost ones took a second attempt.
    assert len(tasks) == len(expected_thumbs(src))
    assert all(t.state == "done" for t in tasks)
    assert summary.counts.retries >= 1, (killed, summary.counts)
    assert sum(t.attempts - 1 for t in tasks) == summary.counts.retries


def test_sigkill_the_fork_server_mid_run(tmp_path: Path) -> None:
    """The local executor forks its workers from multiprocessing's fork server; with the
    server killed mid-run, workers that were busy count as lost (their tasks retried),
    new workers come from a new server, every object still gets its one output, the
    run ends done, and no worker is left behind. In a `pixelfleet run` process of its own,
    whose fork server is its own."""
    bucket = make_fleet_bucket(tmp_path, 40, words="SLEEP 0.05")
    ledger_url = f"sqlite:///{tmp_path / 'l.db'}"
    command = [sys.executable, "-m", "pixelfleet.cli.main", "run", str(bucket.pipeline)]
    command += ["-e", "local", "--workers", "2", "--no-progress", "--ledger", ledger_url]
    with open(tmp_path / "run.log", "w") as log:
        run = subprocess.Popen(command, env=worker_env(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        server, workers = None, []
        while time.monotonic() < deadline and run.poll() is None:
            servers = [c for c in psutil.Process(run.pid).children() if is_helper(c)]
            servers = [c for c in servers if "forkserver" in " ".join(c.cmdline())]
            if servers and len(bucket.writes()) >= 4:
                server = servers[0]
                workers = server.children()
                server.kill()
                break
            time.sleep(0.01)
        assert server is not None and workers, "the run ended before the fork server was killed"
        assert run.wait(timeout=120) == 0, (tmp_path / "run.log").read_text()
    assert sorted(p.name for p in bucket.out.glob("*.out")) == sorted(
        key.replace(".txt", ".out") for key in bucket.keys
    )
    with open_ledger(ledger_url) as ledger:
        record = ledger.get_run()
        tasks = ledger.find_tasks(record.run_id)
    assert record.state == "done" and len(tasks) == 40
    assert all(t.state == "done" for t in tasks)
    alive = psutil.wait_procs(workers, timeout=10)[1]
    assert not alive, f"workers of the killed fork server still run: {alive}"


@pytest.mark.s3
def test_s3_to_s3(s3_env: Any, tmp_path: Path) -> None:
    client = s3_env.client
    names = ["va/2016/m_3607824_se_17_1_20160620_sub.tif", "al/2013/cogeo.tif", "photos/rocket.jpg"]
    for key in names:
        client.put_object(Bucket=s3_env.bucket, Key=f"src/{key}", Body=(DEMO / key).read_bytes())
    client.put_object(
        Bucket=s3_env.bucket, Key="src/../evil.jpg", Body=(DEMO / names[2]).read_bytes()
    )
    p = pipeline(f"{s3_env.url}/src", f"{s3_env.url}/thumbs", threads=4)
    with open_ledger(f"sqlite:///{tmp_path / 'l.db'}") as ledger:
        summary = Runner(p, ledger).run()
        failed = ledger.find_tasks(summary.run_id, ["failed"])
        listed = client.list_objects_v2(Bucket=s3_env.bucket, Prefix="thumbs/")
        keys = sorted(o["Key"] for o in listed.get("Contents", []))
        assert keys == sorted(f"thumbs/{k.rsplit('.', 1)[0]}.thumb.jpg" for k in names)
        head = client.head_object(Bucket=s3_env.bucket, Key=keys[0])
        assert head["Metadata"]["op"] == "thumbnail"
        assert head["Metadata"]["source-etag"]
        # Everything outside thumbs/ is what the test put there.
        everything = client.list_objects_v2(Bucket=s3_env.bucket)["Contents"]
        assert {o["Key"] for o in everything} - set(keys) == {f"src/{k}" for k in names} | {
            "src/../evil.jpg"
        }
        assert [t.error_type for t in failed] == ["UnsafeKeyError"]
        etags = {k: client.head_object(Bucket=s3_env.bucket, Key=k)["ETag"] for k in keys}
        # A rerun with a fresh ledger finds every output current and writes nothing.
        with open_ledger(f"sqlite:///{tmp_path / 'fresh.db'}") as fresh:
            again = Runner(p, fresh).run()
        assert again.counts.objects_current == len(names)
        assert again.counts.objects_written == 0
        storage = open_storage(f"{s3_env.url}/thumbs")
        assert {k: f'"{storage.head(k.removeprefix("thumbs/")).etag}"' for k in keys} == etags


@pytest.mark.dask
def test_dask_cluster_with_two_workers(tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    out = tmp_path / "out"
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=2,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    ) as cluster:
        address = cluster.scheduler_address.removeprefix("tcp://")
        p = pipeline(str(DEMO), str(out), executor=f"dask://{address}")
        with open_ledger(f"sqlite:///{tmp_path / 'l.db'}") as ledger:
            summary = Runner(p, ledger).run()
            workers = {t.worker for t in ledger.find_tasks(summary.run_id)}
    assert summary.state == "done", summary.failures
    assert thumbs(out) == expected_thumbs(DEMO)
    assert len(workers) == 2
