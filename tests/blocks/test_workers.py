"""Strips on worker processes and Dask: the same bytes as inline, errors carried back,
a worker killed mid-run retried, a killed run leaving nothing that looks finished."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from blocks_helpers import HERE, NIR, RED

from pixelfleet import blocks
from pixelfleet.errors import WorkerLostError

INPUTS = {"red": str(RED), "nir": str(NIR)}


def output(path: Path) -> dict[str, blocks.Output]:
    return {
        "ndvi": blocks.Output(
            str(path), dtype="float32", nodata=-9999, tile_size=32, overviews=[2, 4]
        )
    }


@pytest.fixture
def reference(tmp_path: Path) -> bytes:
    """The NDVI written inline, the bytes every other way must reproduce."""
    path = tmp_path / "reference.tif"
    blocks.apply("blocks_testfns:ndvi", INPUTS, output(path), block_size=32, executor="inline")
    return path.read_bytes()


def kill_first_worker(marks: Path, timeout: float = 20.0) -> dict[str, int]:
    """Once a worker has started a block, SIGKILL it; returns ``{"pid": ...}``."""
    killed: dict[str, int] = {}

    def watch() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = sorted(marks.iterdir())
            if found:
                pid = int(found[0].name.split("-")[0])
                os.kill(pid, signal.SIGKILL)
                killed["pid"] = pid
                return
            time.sleep(0.01)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    killed["thread"] = id(thread)
    return killed


def test_a_worker_killed_mid_run_is_replaced_and_the_output_is_the_same(
    tmp_path: Path, reference: bytes
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    killed = kill_first_worker(marks)
    result = blocks.apply(
        "blocks_testfns:slow_ndvi",
        INPUTS,
        output(tmp_path / "ndvi.tif"),
        args={"marks": str(marks), "sleep": 0.1},
        block_size=32,
        executor="local",
        workers=2,
        attempts=2,
    )
    assert "pid" in killed
    assert killed["pid"] not in {t["pid"] for t in result.timings}
    assert (tmp_path / "ndvi.tif").read_bytes() == reference


def test_a_strip_whose_worker_keeps_dying_fails_the_run_and_writes_nothing(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    killed = kill_first_worker(marks)
    with pytest.raises(WorkerLostError, match="killed by SIGKILL"):
        blocks.apply(
            "blocks_testfns:slow_ndvi",
            INPUTS,
            output(tmp_path / "ndvi.tif"),
            args={"marks": str(marks), "sleep": 0.1},
            block_size=32,
            executor="local",
            workers=2,
            attempts=1,
        )
    assert "pid" in killed
    assert not (tmp_path / "ndvi.tif").exists()


def test_errors_in_worker_processes_come_back_with_the_block(tmp_path: Path) -> None:
    with pytest.raises(blocks.BlockFunctionError, match=r"failed on block \(2, 0\) \(rows 64-96"):
        blocks.apply(
            "blocks_testfns:raise_on_block",
            {"red": str(RED)},
            {"out": str(tmp_path / "o.tif")},
            args={"index": [2, 0]},
            block_size=32,
            executor="local",
            workers=2,
        )
    assert not (tmp_path / "o.tif").exists()


SCRIPT = """
import sys
sys.path.insert(0, {here!r})
from pixelfleet import blocks
blocks.apply(
    "blocks_testfns:slow_ndvi",
    {inputs!r},
    {{"ndvi": blocks.Output({out!r}, dtype="float32", nodata=-9999, tile_size=32,
                             overviews=[2, 4])}},
    args={{"marks": {marks!r}, "sleep": 0.05}},
    block_size=32,
    executor="inline",
    workdir={work!r},
)
"""


def test_a_killed_run_leaves_no_output_and_the_rerun_writes_the_same_bytes(
    tmp_path: Path, reference: bytes
) -> None:
    marks, work, out = tmp_path / "marks", tmp_path / "work", tmp_path / "out" / "ndvi.tif"
    marks.mkdir()
    work.mkdir()
    out.parent.mkdir()
    code = SCRIPT.format(
        here=str(HERE), inputs=INPUTS, out=str(out), marks=str(marks), work=str(work)
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        deadline = time.monotonic() + 60
        while len(list(marks.iterdir())) < 5 and time.monotonic() < deadline:
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert list(out.parent.iterdir()) == []  # nothing that looks like an output
    blocks.apply("blocks_testfns:ndvi", INPUTS, output(out), block_size=32, executor="inline")
    assert out.read_bytes() == reference


@pytest.mark.dask
def test_dask_writes_the_same_bytes(tmp_path: Path, reference: bytes, dask_address: str) -> None:
    result = blocks.apply(
        "blocks_testfns:ndvi",
        INPUTS,
        output(tmp_path / "ndvi.tif"),
        block_size=32,
        executor=f"dask://{dask_address}",
    )
    assert (tmp_path / "ndvi.tif").read_bytes() == reference
    assert result.strips == 4
    with pytest.raises(blocks.BlockFunctionError, match="no good at"):
        blocks.apply(
            "blocks_testfns:raise_on_block",
            {"red": str(RED)},
            {"out": str(tmp_path / "o.tif")},
            args={"index": [0, 1]},
            block_size=32,
            executor=f"dask://{dask_address}",
        )


def test_local_processes_write_the_same_bytes(tmp_path: Path, reference: bytes) -> None:
    kw: dict[str, Any] = {"block_size": 32, "executor": "local", "workers": 2}
    blocks.apply("blocks_testfns:ndvi", INPUTS, output(tmp_path / "ndvi.tif"), **kw)
    assert (tmp_path / "ndvi.tif").read_bytes() == reference


def test_worker_processes_reuse_freed_block_memory(tmp_path: Path) -> None:
    """A worker maps block-sized arrays once, not anew for every block: ten rounds of four
    2 MiB arrays cost about one round's page faults (2,048 pages of 4 KiB), where glibc
    gave the freed heap back and faulted it in again every round before (about 20,000)."""
    out = {"faults": blocks.Output(str(tmp_path / "faults.tif"), dtype="float32", tile_size=32)}
    blocks.apply(
        "blocks_testfns:worker_memory_faults",
        {"red": str(RED)},
        out,
        block_size=32,
        executor="local",
        workers=1,
    )
    import rasterio

    with rasterio.open(tmp_path / "faults.tif") as src:
        faults = src.read(1)
    # The first block may still grow the heap; every later one reuses it.
    assert float(np.median(faults)) < 6_000, np.unique(faults)


def test_strips_give_gdal_a_block_cache_in_bytes(tmp_path: Path) -> None:
    """rasterio passes an integer GDAL_CACHEMAX to GDAL as bytes: a strip's cache must be
    megabytes, or every tile an overlapping window touches is decoded again per window."""
    out = {"cache": blocks.Output(str(tmp_path / "cache.tif"), dtype="float32", tile_size=32)}
    blocks.apply(
        "blocks_testfns:gdal_cache_bytes",
        {"red": str(RED)},
        out,
        block_size=32,
        overlap=2,
        executor="inline",
    )
    import rasterio

    with rasterio.open(tmp_path / "cache.tif") as src:
        assert src.read(1).min() >= 8  # MiB (the default is 64)
