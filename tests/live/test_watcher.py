"""The watcher on a local bucket with events from a memory queue: create, update, delete,
duplicates, reordering, dead letters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from live_helpers import (
    Background,
    item_ids,
    keys_under,
    local_photos,
    photo,
    photo_pipeline,
    s3_event,
    wait_for,
)
from pixelfleet.events import MemoryQueue
from pixelfleet.ledger import open_ledger
from pixelfleet.live import Watcher


@pytest.fixture
def setup(tmp_path: Path):  # type: ignore[no-untyped-def]
    src, out, catalog_url, pipeline, ledger, catalog = local_photos(tmp_path)
    queue = MemoryQueue(visibility=30)
    watcher = Watcher(pipeline, ledger, queue, catalog=catalog, summary_every=0)
    yield src, out, catalog, queue, watcher, ledger
    catalog.close()
    ledger.close()


def test_create_update_delete(setup) -> None:  # type: ignore[no-untyped-def]
    src, out, catalog, queue, watcher, ledger = setup
    with Background(watcher):
        (src / "a b.png").write_bytes(photo())
        queue.put(s3_event("created", "", "a b.png"))
        wait_for(lambda: "a b.png" in item_ids(catalog) and queue.pending() == 0)
        assert keys_under(out) == {"a b.thumb.jpg"}
        first = (out / "a b.thumb.jpg").read_bytes()

        (src / "a b.png").write_bytes(photo((10, 200, 10)))
        queue.put(s3_event("created", "", "a b.png"))
        wait_for(lambda: queue.pending() == 0 and watcher.counts().get("updated") == 1)
        assert (out / "a b.thumb.jpg").read_bytes() != first

        (src / "a b.png").unlink()
        queue.put(s3_event("deleted", "", "a b.png"))
        wait_for(lambda: queue.pending() == 0 and watcher.counts().get("deleted") == 1)
        assert keys_under(out) == set()
        assert item_ids(catalog) == set()
    assert len(queue.acked) == 3 and not queue.dead
    logged = [e.action for e in ledger.events(watcher.summary.run_id)]
    assert logged == ["created", "updated", "deleted"]


def test_a_delete_that_arrives_first_wins(setup) -> None:  # type: ignore[no-untyped-def]
    src, out, catalog, queue, watcher, _ = setup
    # The object was created (sequencer 1) and then deleted (sequencer 2): the delete's
    # event arrives first, the create's late, twice.
    queue.put(s3_event("deleted", "", "x.png", sequencer="0002"))
    with Background(watcher):
        wait_for(lambda: queue.pending() == 0)
        queue.put(s3_event("created", "", "x.png", sequencer="0001"))
        queue.put(s3_event("created", "", "x.png", sequencer="0001"))
        wait_for(lambda: queue.pending() == 0)
    assert keys_under(out) == set() and item_ids(catalog) == set()
    assert watcher.counts()["ignored"] >= 2


def test_malformed_and_failed_messages_are_dead_lettered(setup) -> None:  # type: ignore[no-untyped-def]
    src, out, catalog, queue, watcher, ledger = setup
    (src / "bad.png").write_bytes(b"not a png at all")
    (src / "good.png").write_bytes(photo())
    queue.put("{not json")
    queue.put('{"hello": "world"}')
    queue.put(s3_event("created", "", "bad.png"))
    queue.put(s3_event("created", "", "good.png"))
    queue.put('{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"b"}')
    with Background(watcher):
        wait_for(lambda: queue.pending() == 0)
    reasons = [reason for _, reason in queue.dead]
    assert len(reasons) == 3, reasons
    assert any("not JSON" in r for r in reasons)
    assert any("not an S3, SNS, EventBridge or MinIO notification" in r for r in reasons)
    assert any("bad.png" in r for r in reasons)
    assert item_ids(catalog) == {"good.png"}
    dead = ledger.events(watcher.summary.run_id, actions=["dead-lettered"])
    assert len(dead) == 3
    from click.testing import CliRunner

    from pixelfleet.cli.main import cli

    shown = CliRunner().invoke(cli, ["status", watcher.summary.run_id, "--ledger", ledger.url])
    assert shown.exit_code == 0, shown.output
    assert "events:   created 1, dead-lettered 3, failed 1, ignored 1" in shown.output
    assert "not JSON" in shown.output and "bad.png" in shown.output
    as_json = CliRunner().invoke(
        cli, ["status", watcher.summary.run_id, "--ledger", ledger.url, "--json"]
    )
    facts = json.loads(as_json.output)
    assert facts["events"]["dead-lettered"] == 3
    assert len(facts["dead_letters"]) == 3

    from fastapi.testclient import TestClient

    from pixelfleet.server import create_app

    with TestClient(create_app(catalog=catalog, ledger_url=ledger.url)) as client:
        page = client.get("/runs").text
        run_id = watcher.summary.run_id
        assert f'href="/runs/{run_id}"' in page
        one = client.get(f"/runs/{run_id}")
        missing = client.get("/runs/no-such-run")
    assert "dead-lettered <strong>3</strong>" in page and "bad.png" in page
    from pixelfleet.metrics.exposition import make_registry, render

    scraped = render(make_registry())[0].decode()
    (line,) = [
        x
        for x in scraped.splitlines()
        if x.startswith('pixelfleet_events_total{action="dead_lettered"}')
    ]
    assert float(line.split()[-1]) >= 3
    assert one.status_code == 200
    assert "UnsupportedFormatError" in one.text and "bad.png" in one.text
    assert "<svg" in one.text or "nothing to chart" in one.text
    assert missing.status_code == 404 and "no-such-run" in missing.text


def test_other_buckets_and_unselected_keys_are_ignored(tmp_path: Path) -> None:
    from pixelfleet.events import BucketEvent

    pipeline = photo_pipeline("memory://w1/photos", "memory://w1out", "memory://w1cat")
    ledger = open_ledger("memory://")
    queue = MemoryQueue()
    watcher = Watcher(pipeline, ledger, queue, summary_every=0)
    for key in ("other/a.png", "photos/a.txt", "photos/"):
        queue.put(events=[BucketEvent("created", "w1", key)])
    queue.put(events=[BucketEvent("created", "w2", "photos/a.png")])
    with Background(watcher):
        wait_for(lambda: queue.pending() == 0)
    assert watcher.counts() == {"ignored": 4}
    assert len(queue.acked) == 4


def test_a_symbolic_link_is_not_read_and_not_retried(setup, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """As a backfill skips it: acknowledged as ignored with the reason, nothing made, no
    retry and no dead letter (it was retried as a bucket failure before)."""
    src, out, catalog, queue, watcher, ledger = setup
    outside = tmp_path / "outside.png"
    outside.write_bytes(photo())
    (src / "link.png").symlink_to(outside)
    with Background(watcher):
        queue.put(s3_event("created", "", "link.png"))
        wait_for(lambda: queue.pending() == 0 and watcher.counts().get("ignored") == 1)
    assert keys_under(out) == set() and item_ids(catalog) == set()
    assert len(queue.acked) == 1 and not queue.dead
    (event,) = ledger.events(watcher.summary.run_id)
    assert event.action == "ignored" and "symbolic link" in event.detail
    assert watcher.counts().get("failed") is None
