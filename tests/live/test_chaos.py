"""Chaos: many events over few keys, duplicated, shuffled, some malformed, the watcher
stopped and started again midway: afterwards catalog == bucket and outputs == bucket."""

from __future__ import annotations

import time
from pathlib import Path

from live_helpers import Background, apply_changes, chaos_script, keys_under, photo_pipeline
from pixelfleet.catalog import open_catalog
from pixelfleet.catalog.query import parse_query
from pixelfleet.events import MemoryQueue
from pixelfleet.ledger import open_ledger
from pixelfleet.live import Watcher


def test_shuffled_duplicated_events_converge(tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    changes, messages = chaos_script(keys=60, events=400, seed=7, malformed=9)
    apply_changes(src, changes)
    catalog_url = f"sqlite:///{tmp_path / 'cat.db'}"
    pipeline = photo_pipeline(f"file://{src}", f"file://{out}", catalog_url)
    queue = MemoryQueue(visibility=5)
    for body in messages:
        queue.put(body)
    with open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}") as ledger:
        for _ in range(2):  # stopped midway, then started again
            watcher = Watcher(pipeline, ledger, queue, summary_every=0)
            with Background(watcher):
                time.sleep(1.0)
        watcher = Watcher(pipeline, ledger, queue, summary_every=0)
        with Background(watcher):
            deadline = time.monotonic() + 120
            while queue.pending() and time.monotonic() < deadline:
                time.sleep(0.1)
    assert queue.pending() == 0
    bucket = {p.relative_to(src).as_posix() for p in src.rglob("*.png")}
    with open_catalog(catalog_url) as catalog:
        items = catalog.search(parse_query(collections=["photos"], limit=1000)).items
    assert {i["id"] for i in items} == bucket
    assert keys_under(out) == {k.replace(".png", ".thumb.jpg") for k in bucket}
    for item in items:  # each item describes the object's last version
        assert item["properties"]["pixelfleet:size"] == (src / item["id"]).stat().st_size
    assert len(queue.dead) == 9
    assert all("malformed" in reason for _, reason in queue.dead)
