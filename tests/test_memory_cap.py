"""The memory cap (issue 12): decoded bytes, not pixels, are limited; bombs fail alone
with a message naming the size, the cap and the setting; large tiled rasters still
render in bounded windows; and no worker goes past the cap (its peak RSS measured)."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from bomb_helpers import ISSUE_BOMBS, write_issue_bombs, write_zero_tiff
from memory_helpers import PeakRss
from pixelfleet.errors import ConfigError, ImageTooLargeError, MemoryCapError
from pixelfleet.imagery.memory import DecodeBudget, budget_bytes, over_budget_message
from pixelfleet.imagery.pictures import ThumbnailOptions
from pixelfleet.imagery.reading import unreadable_raster
from pixelfleet.imagery.thumbnails import decode_thumbnail
from pixelfleet.ledger import open_ledger
from pixelfleet.pipeline import pipeline_from_dict
from pixelfleet.runner import Runner
from pixelfleet.settings import Settings, parse_bytes

DATA = Path(__file__).resolve().parent / "data"
GIB = 1024**3


def test_sizes_parse_with_units_and_refuse_nonsense() -> None:
    assert parse_bytes("1G", "X") == GIB
    assert parse_bytes("512M", "X") == 512 * 1024**2
    assert parse_bytes("1.5GiB", "X") == 3 * GIB // 2
    assert parse_bytes("1000", "X") == 1000
    assert Settings.from_env({"PIXELFLEET_MEMORY_CAP": "2G"}).memory_cap == 2 * GIB
    assert Settings.from_env({}).memory_cap == GIB
    with pytest.raises(ConfigError, match="PIXELFLEET_MEMORY_CAP='lots'.*512M"):
        Settings.from_env({"PIXELFLEET_MEMORY_CAP": "lots"})


def test_the_pipeline_may_set_the_cap_for_its_workers() -> None:
    pipeline = pipeline_from_dict(
        {
            "source": {"url": "/in"},
            "output": {"url": "/out"},
            "steps": [{"op": "thumbnail"}],
            "run": {"memory_cap": "3G"},
        }
    )
    assert pipeline.run.worker_settings(Settings()).memory_cap == 3 * GIB
    with pytest.raises(ValueError, match="run.memory_cap"):
        pipeline_from_dict(
            {
                "source": {"url": "/in"},
                "output": {"url": "/o"},
                "steps": [{"op": "thumbnail"}],
                "run": {"memory_cap": "x"},
            }
        )


@pytest.mark.parametrize(("name", "width", "height", "bands", "dtype"), ISSUE_BOMBS)
def test_each_bomb_of_the_issue_is_refused_before_decoding(
    tmp_path: Path, name: str, width: int, height: int, bands: int, dtype: str
) -> None:
    path = write_zero_tiff(tmp_path / name, width, height, bands, dtype)
    assert path.stat().st_size < 9 * 1024**2
    started = time.monotonic()
    with pytest.raises(ImageTooLargeError) as caught:
        decode_thumbnail(path, ThumbnailOptions(size=64), Settings())
    message = str(caught.value)
    assert time.monotonic() - started < 5
    assert message.startswith(str(path))
    assert f"{width}x{height} block x {bands if bands > 1 else 1} band(s) of {dtype}" in message
    assert "memory cap of 1.0 GB" in message and "PIXELFLEET_MEMORY_CAP" in message


def test_a_raised_cap_lets_a_bomb_decode(tmp_path: Path) -> None:
    path = write_zero_tiff(tmp_path / "b.tif", 4096, 4096, 3, "uint8")  # one 48 MiB tile
    small = Settings(memory_cap=320 * 1024**2)  # a 64 MiB budget
    with pytest.raises(ImageTooLargeError, match="decoding it needs"):
        decode_thumbnail(path, ThumbnailOptions(size=64), small)
    image = decode_thumbnail(path, ThumbnailOptions(size=64), Settings(memory_cap=GIB))
    assert image.size == (64, 64)


def test_the_budget_is_shared_by_the_threads_of_a_worker() -> None:
    budget = DecodeBudget(100)
    settings = Settings()
    order: list[str] = []
    with budget.hold(70, "a", "a", settings):
        waiter = threading.Thread(
            target=lambda: budget.hold(50, "b", "b", settings).__enter__() or order.append("b")
        )
        waiter.start()
        time.sleep(0.2)
        order.append("a done")  # b waits while a holds 70 of 100
    waiter.join(5)
    assert order == ["a done", "b"]
    with (
        pytest.raises(ImageTooLargeError, match="needs 200 B at once"),
        budget.hold(200, "c", "c", settings),
    ):
        pass
    assert budget_bytes(Settings(memory_cap=GIB)) == GIB - 256 * 1024**2 - 64 * 1024**2
    assert "raise PIXELFLEET_MEMORY_CAP" in over_budget_message("x", 10, "y", settings)


def test_out_of_memory_from_gdal_is_a_memory_cap_error_not_a_corrupt_file() -> None:
    from rasterio._err import CPLE_AppDefinedError, CPLE_OutOfMemoryError

    for exc in (
        CPLE_OutOfMemoryError(2, 2, "gdalrasterblock.cpp, 1102: cannot allocate 2147483648 bytes"),
        CPLE_AppDefinedError(1, 1, "IReadBlock failed: cannot allocate 1x805306368 bytes"),
    ):
        error = unreadable_raster("s3://b/k.tif", "/fake", exc)
        assert isinstance(error, MemoryCapError), error
        assert "ran out of memory" in str(error) and "PIXELFLEET_MEMORY_CAP" in str(error)


def test_the_hard_limit_fails_the_object_not_the_process(tmp_path: Path) -> None:
    """The backstop alone (a budget set far too high): GDAL's allocation fails under
    RLIMIT_DATA and the read raises MemoryCapError; the process carries on."""
    import subprocess
    import sys

    write_zero_tiff(tmp_path / "b.tif", 16384, 16384, 1, "float64")
    script = f"""
from pixelfleet.settings import Settings
from pixelfleet.imagery.memory import limit_process_memory
from pixelfleet.imagery.pictures import ThumbnailOptions
from pixelfleet.imagery.thumbnails import decode_thumbnail
limit_process_memory(Settings(memory_cap=600 * 1024**2))
huge = Settings(memory_cap=64 * 1024**3)
try:
    decode_thumbnail({str(tmp_path / "b.tif")!r}, ThumbnailOptions(size=64), huge)
except Exception as exc:
    print(type(exc).__name__, exc)
print("alive")
"""
    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", script], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("MemoryCapError"), out.stdout
    assert "600.0 MB" in out.stdout and out.stdout.strip().endswith("alive")


def test_a_run_over_the_bombs_keeps_every_worker_under_the_cap(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    write_issue_bombs(src)
    # Large but genuine: 1 GiB decoded in 512 x 512 tiles, read in bounded swaths.
    write_zero_tiff(src / "large-tiled.tif", 8192, 8192, 2, "float64", tile=512)
    shutil.copy(DATA / "chelsea.png", src / "chelsea.png")
    rgb = np.random.default_rng(0).integers(0, 255, (3, 300, 400), dtype=np.uint8)
    profile = {"width": 400, "height": 300, "count": 3, "dtype": "uint8"}
    transform = Affine(1, 0, 0, 0, -1, 300)
    with rasterio.open(
        src / "small.tif", "w", driver="GTiff", transform=transform, **profile
    ) as dst:
        dst.write(rgb)
    pipeline = pipeline_from_dict(
        {
            "source": {"url": str(src), "include": ["**/*"], "partition": {"by": "object"}},
            "output": {"url": str(tmp_path / "out")},
            "steps": [{"op": "thumbnail", "size": 128, "key": "{stem}.png"}],
            "run": {"executor": "local", "workers": 2, "threads": 2, "attempts": 2},
        }
    )
    with PeakRss() as rss, open_ledger("memory://") as ledger:
        summary = Runner(pipeline, ledger, progress=False).run()
        found = ledger.find_tasks(summary.run_id, ["done", "failed"])
        tasks = {t.entries[0]["key"]: t for t in found}
    peak = max(rss.peaks.values())
    print(f"peak worker RSS {peak / 1024**2:.0f} MiB over {len(rss.peaks)} processes")
    assert rss.peaks and peak < GIB
    assert summary.counts.tasks_done == 3, summary.failures
    assert summary.counts.tasks_failed == 3
    for name, *_ in ISSUE_BOMBS:
        task = tasks[name]
        assert task.failures[0]["error_type"] == "ImageTooLargeError", task.failures
        assert "memory cap" in task.failures[0]["error"]
        assert task.attempts == 1  # permanent: not retried
    assert all(f.get("error_type") != "WorkerLostError" for t in tasks.values() for f in t.failures)
    assert {p.name for p in (tmp_path / "out").iterdir()} == {
        "large-tiled.png",
        "chelsea.png",
        "small.png",
    }
