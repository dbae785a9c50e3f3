"""Dask workers get the memory cap as a hard limit (``RLIMIT_DATA``), as local workers do
(issue 12): asked of each worker of a real cluster, before, during and after a run."""

from __future__ import annotations

import json
import resource
import shutil
from pathlib import Path

import pytest

from bomb_helpers import write_zero_tiff
from memory_helpers import data_limit, worker_memory
from pixelfleet.executors import Job, open_executor
from pixelfleet.imagery.memory import MIN_BUDGET
from pixelfleet.models import Task
from pixelfleet.pipeline import pipeline_from_dict
from pixelfleet.storage.local import LocalStorage
from pixelfleet.worker import execute

pytestmark = pytest.mark.dask

DATA = Path(__file__).resolve().parents[1] / "data"
CAP = 700 * 1024**2


def payload(src: Path, key: str) -> str:
    entry = LocalStorage(str(src)).head(key)
    assert entry is not None
    return json.dumps(Task(id=key, group="", entries=(entry,)).to_dict())


def test_dask_workers_run_under_the_memory_cap_and_get_their_limit_back(
    tmp_path: Path, dask_address: str
) -> None:
    distributed = pytest.importorskip("distributed")
    src = tmp_path / "src"
    src.mkdir()
    for i in range(2):  # one each: a worker finding the other's output current decodes nothing
        shutil.copy(DATA / "flower.jpg", src / f"flower-{i}.jpg")
    write_zero_tiff(src / "bomb.tif", 16384, 16384, 1, "float64")  # 2 GiB decoded
    pipeline = pipeline_from_dict(
        {
            "source": {"url": str(src)},
            "output": {"url": str(tmp_path / "out")},
            "steps": [{"op": "thumbnail", "size": 64}],
            "run": {"memory_cap": "700M"},  # the pipeline's cap, not the default
        }
    )
    context = json.dumps(pipeline.to_json_dict())
    with distributed.Client(f"tcp://{dask_address}", set_as_default=False) as client:
        before = client.run(data_limit)
        assert len(before) == 2
        executor = open_executor(f"dask://{dask_address}", threads=2)
        with executor:
            executor.start(context, timeout=60)
            # A decode on each worker (the limit is set by a worker's first decode).
            for i, address in enumerate(before):
                job = payload(src, f"flower-{i}.jpg")
                done = client.submit(execute, context, job, workers=[address], pure=False)
                done = done.result(timeout=60)
                assert json.loads(done)["state"] == "done", done
            during = client.run(worker_memory)
            executor.submit(Job("bomb.tif", payload(src, "bomb.tif")))
            (bomb,) = executor.results(wait=60)
            survived = client.run(worker_memory)
        after = client.run(data_limit)
    for address, memory in during.items():
        print(
            f"dask worker {memory['pid']}: RLIMIT_DATA {memory['limit'] / 1024**2:.0f} MiB,"
            f" data {memory['data'] / 1024**2:.0f} MiB, peak RSS"
            f" {memory['peak_rss'] / 1024**2:.0f} MiB"
        )
        assert memory["limit"] == CAP, (address, memory)
        assert memory["data"] + MIN_BUDGET < CAP  # the worker itself fits well under it
    assert bomb.state == "failed" and bomb.entries[0].error_type == "ImageTooLargeError"
    assert "bomb.tif" in (bomb.entries[0].error or "")
    assert {m["pid"] for m in survived.values()} == {m["pid"] for m in during.values()}
    assert after == before  # closing the executor gave the cluster its workers back as they were
    assert set(before.values()) == {resource.getrlimit(resource.RLIMIT_DATA)[0]}
