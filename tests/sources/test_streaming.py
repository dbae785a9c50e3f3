"""A source that never ends: each entry's work is done, recorded, indexed and acknowledged
as soon as it arrives, without waiting for more entries or for the source to end."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pixelfleet.catalog import open_catalog
from pixelfleet.errors import ItemNotFoundError
from pixelfleet.ledger import open_ledger
from pixelfleet.models import Entry
from pixelfleet.pipeline import pipeline_from_dict
from pixelfleet.runner import Runner
from pixelfleet.sources.memory import MemorySource

DATA = Path(__file__).resolve().parents[1] / "data"
NAMES = ["flower.jpg", "chelsea.png"]


def wait_for(what: str, check: Callable[[], bool], limit: float = 30.0) -> float:
    """Seconds until ``check()`` holds (a generous bound only guards against a hang)."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > limit:
            raise AssertionError(f"{what}: not seen within {limit} s")
        time.sleep(0.01)
    return time.monotonic() - start


def has_item(catalog_url: str, key: str) -> bool:
    with open_catalog(catalog_url) as catalog:
        try:
            catalog.get_item("live", key)
        except ItemNotFoundError:
            return False
        return True


@pytest.mark.parametrize("executor", ["inline", "local"])
def test_each_entry_is_done_indexed_and_acked_before_the_next_arrives(
    tmp_path: Path, executor: str
) -> None:
    bucket, out = tmp_path / "bucket", tmp_path / "out"
    bucket.mkdir()
    catalog_url = f"sqlite:///{tmp_path / 'catalog.db'}"
    pipeline = pipeline_from_dict(
        {
            "source": {"url": str(bucket)},
            "output": {"url": str(out)},
            "steps": [{"op": "thumbnail", "size": 64}],
            "catalog": {"url": catalog_url, "collection": "live"},
            "run": {"executor": executor, "workers": 1},
        }
    )
    source = MemorySource()  # never ended by the test: only runner.stop() ends the run
    with open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}") as ledger:
        runner = Runner(pipeline, ledger, progress=False, source=source)
        summary = []
        thread = threading.Thread(target=lambda: summary.append(runner.run()), daemon=True)
        thread.start()
        latencies = []
        for n, name in enumerate(NAMES, 1):
            shutil.copy(DATA / name, bucket / name)
            stat = (bucket / name).stat()
            entry = Entry(name, stat.st_size, f"etag-{name}", stat.st_mtime)
            source.put(entry)
            thumb = out / (Path(name).stem + ".thumb.jpg")
            seconds = wait_for(f"{name} recorded", lambda n=n: len(source.acked) == n)
            # Acknowledged means recorded in the ledger and the catalog, outputs written.
            assert thumb.is_file()
            assert has_item(catalog_url, name)
            assert source.acked[-1] == entry
            latencies.append(seconds)
            # The source has not ended, and the run goes on waiting for it.
            assert thread.is_alive()
        runner.stop()
        thread.join(timeout=60)
        assert not thread.is_alive()
    (result,) = summary
    assert result.state == "done"
    assert result.counts.tasks_done == len(NAMES)
    assert result.counts.items_indexed == len(NAMES)
    # Measured, not asserted (the machine is shared): printed with -s.
    print(f"{executor}: put -> acknowledged in " + ", ".join(f"{s:.3f} s" for s in latencies))


def test_an_entry_already_done_is_acknowledged_without_running(tmp_path: Path) -> None:
    bucket, out = tmp_path / "bucket", tmp_path / "out"
    bucket.mkdir()
    shutil.copy(DATA / "flower.jpg", bucket / "flower.jpg")
    pipeline = pipeline_from_dict(
        {
            "source": {"url": str(bucket)},
            "output": {"url": str(out)},
            "steps": [{"op": "thumbnail", "size": 64}],
            "run": {"executor": "inline"},
        }
    )
    stat = (bucket / "flower.jpg").stat()
    entry = Entry("flower.jpg", stat.st_size, "e1", stat.st_mtime)
    with open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}") as ledger:
        first = MemorySource([entry], end=True)
        assert Runner(pipeline, ledger, progress=False, source=first).run().counts.tasks_done == 1
        assert first.acked == [entry]
        again = MemorySource([entry, entry], end=True)  # a duplicate event, too
        summary = Runner(pipeline, ledger, progress=False, source=again).run()
    assert summary.counts.tasks_skipped == 2 and summary.counts.tasks_done == 0
    assert again.acked == [entry, entry]


def test_a_failing_source_interrupts_the_run_with_its_error(tmp_path: Path) -> None:
    class Broken(MemorySource):
        def entries(self):  # type: ignore[no-untyped-def]
            yield from super().entries()
            raise OSError("the queue went away")

    bucket = tmp_path / "bucket"
    bucket.mkdir()
    pipeline = pipeline_from_dict(
        {
            "source": {"url": str(bucket)},
            "output": {"url": str(tmp_path / "out")},
            "steps": [{"op": "thumbnail", "size": 64}],
            "run": {"executor": "inline"},
        }
    )
    with open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}") as ledger:
        with pytest.raises(OSError, match="the queue went away"):
            Runner(pipeline, ledger, progress=False, source=Broken(end=True)).run()
        assert ledger.get_run().state == "interrupted"
