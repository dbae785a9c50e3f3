"""FolderQueue: a local folder's changes as bucket events, and `watch` on a file:// source."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from live_helpers import Background, keys_under, local_photos, photo, wait_for
from pixelfleet.events import BucketEvent, Message, compare_sequencers

pytest.importorskip("watchfiles")


def events_until(queue, check: Callable[[list[BucketEvent]], bool]) -> list[BucketEvent]:  # type: ignore[no-untyped-def]
    seen: list[BucketEvent] = []
    deadline = time.monotonic() + 10
    while not check(seen):
        assert time.monotonic() < deadline, f"timed out; saw {seen}"
        for message in queue.receive(10, 0.2):
            assert message.events is not None and len(message.events) == 1
            seen += message.events
    return seen


def test_changes_become_events(tmp_path: Path) -> None:
    from pixelfleet.events.folder import FolderQueue

    queue = FolderQueue(str(tmp_path))
    try:
        (tmp_path / "sub").mkdir()
        (tmp_path / "sub" / "a.png").write_bytes(b"1")
        (tmp_path / ".b.png.pixelfleet-tmp-1234abcd0").write_bytes(b"temp")  # our own temp
        seen = events_until(queue, lambda s: any(e.key == "sub/a.png" for e in s))
        created = [e for e in seen if e.key == "sub/a.png"][-1]
        assert created.action == "created" and created.bucket == "" and created.size == 1
        assert created.origin == "folder" and created.etag

        (tmp_path / "sub" / "a.png").unlink()
        seen += events_until(queue, lambda s: any(e.action == "deleted" for e in s))
        assert [e.action for e in seen if e.key == "sub/a.png"][-1] == "deleted"
        assert not any("pixelfleet-tmp" in e.key for e in seen)
        # One process's sequencers go up: the delete is newer than the create.
        deleted = [e for e in seen if e.action == "deleted"][-1]
        assert compare_sequencers(created.sequencer, deleted.sequencer) < 0
        queue.reject(Message(id="x"), "why")  # no dead-letter queue: kept in a list
        assert queue.dead[-1][1] == "why"
    finally:
        queue.close()


def test_open_queue_without_a_queue(tmp_path: Path) -> None:
    from pixelfleet.errors import ConfigError
    from pixelfleet.events.queues import open_queue
    from pixelfleet.settings import get_settings

    queue = open_queue(None, f"file://{tmp_path}", get_settings())
    assert queue.describe() == f"folder {tmp_path}" and queue.visibility is None
    queue.close()
    with pytest.raises(ConfigError, match="--queue"):
        open_queue(None, "s3://bucket/photos", get_settings())
    with pytest.raises(ConfigError, match="sqs://QUEUE-NAME"):
        open_queue("kafka://broker/topic", "s3://bucket", get_settings())
    with pytest.raises(ConfigError, match="not a folder"):
        open_queue(None, f"file://{tmp_path}/missing", get_settings())


def test_sqs_https_urls_are_recognised() -> None:
    from pixelfleet.events.queues import _is_sqs_https

    assert _is_sqs_https("https://sqs.eu-west-1.amazonaws.com/123456789012/photos")
    assert _is_sqs_https("https://eu-west-1.queue.amazonaws.com/123456789012/photos")
    assert not _is_sqs_https("https://example.com/123456789012/photos")


def test_watch_a_folder(tmp_path: Path) -> None:
    from pixelfleet.catalog.query import parse_query
    from pixelfleet.events.queues import open_queue
    from pixelfleet.live import Watcher
    from pixelfleet.settings import get_settings

    src, out, catalog_url, pipeline, ledger, catalog = local_photos(tmp_path)

    def items() -> set[str]:
        page = catalog.search(parse_query(collections=["photos"], limit=100))
        return {f["id"] for f in page.items}

    queue = open_queue(None, pipeline.source.url, get_settings())
    watcher = Watcher(pipeline, ledger, queue, catalog=catalog, summary_every=0)
    try:
        with Background(watcher):
            (src / "a.png").write_bytes(photo())
            wait_for(lambda: items() == {"a.png"} and keys_under(out) == {"a.thumb.jpg"})
            first = (out / "a.thumb.jpg").read_bytes()
            (src / "a.png").write_bytes(photo((10, 200, 10)))
            wait_for(lambda: (out / "a.thumb.jpg").read_bytes() != first)
            (src / "a.png").unlink()
            wait_for(lambda: items() == set() and keys_under(out) == set())
    finally:
        catalog.close()
        ledger.close()
