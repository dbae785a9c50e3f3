"""Helpers for the watcher's tests: a bucket of photos, a pipeline, S3-shaped events."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path
from typing import Any

from PIL import Image

from pixelfleet.pipeline import Pipeline, pipeline_from_dict


def photo(colour: tuple[int, int, int] = (200, 30, 30), size: int = 48) -> bytes:
    """A small PNG of one colour."""
    out = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(out, "PNG")
    return out.getvalue()


def photo_pipeline(src: str, out: str, catalog: str, **extra: Any) -> Pipeline:
    """Thumbnails of PNGs, catalogued."""
    source: dict[str, Any] = {"url": src, "include": ["**/*.png"]}
    source.update(extra.pop("source", {}))
    return pipeline_from_dict(
        {
            "source": source,
            "output": {"url": out},
            "steps": [{"op": "thumbnail", "size": 32, "key": "{stem}.thumb.jpg"}],
            "catalog": {"url": catalog, "collection": "photos"},
            "run": {"executor": "inline", "attempts": 2, **extra.pop("run", {})},
        }
    )


def local_photos(tmp_path: Path, folder: str = "src") -> tuple[Path, Path, str, Pipeline, Any, Any]:
    """A local bucket and output folder, the photo pipeline over them, and an open SQLite
    ledger and catalog: ``(src, out, catalog_url, pipeline, ledger, catalog)``."""
    from pixelfleet.catalog import open_catalog
    from pixelfleet.ledger import open_ledger

    src, out = tmp_path / folder, tmp_path / "out"
    src.mkdir()
    out.mkdir()
    catalog_url = f"sqlite:///{tmp_path / 'catalog.db'}"
    pipeline = photo_pipeline(f"file://{src}", f"file://{out}", catalog_url)
    ledger = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    return src, out, catalog_url, pipeline, ledger, open_catalog(catalog_url)


def s3_event(
    action: str, bucket: str, key: str, etag: str = "e", size: int = 1, sequencer: str = ""
) -> str:
    """An S3 notification as AWS sends it (key URL-encoded, with a sequencer)."""
    from urllib.parse import quote_plus

    name = "ObjectCreated:Put" if action == "created" else "ObjectRemoved:Delete"
    obj: dict[str, Any] = {"key": quote_plus(key), "size": size, "eTag": etag}
    if sequencer:
        obj["sequencer"] = sequencer
    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "eventName": name,
        "eventTime": "2026-12-03T10:00:00.000Z",
        "s3": {"bucket": {"name": bucket}, "object": obj},
    }
    return json.dumps({"Records": [record]})


class Background:
    """Run a watcher in a thread; stop and join it on exit."""

    def __init__(self, watcher: Any):
        self.watcher = watcher
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.watcher.run()
        except BaseException as exc:  # noqa: BLE001 - reported by __exit__
            self.error = exc

    def __enter__(self) -> Background:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.watcher.stop()
        self.thread.join(60)
        assert not self.thread.is_alive(), "the watcher did not stop within 60 s"
        if self.error is not None:
            raise self.error


def wait_for(check: Any, timeout: float = 30.0) -> None:
    """Wait until ``check()`` is true, or fail after ``timeout`` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def item_ids(catalog: Any, collection: str = "photos") -> set[str]:
    """The ids of a catalog's items in ``collection`` (up to 1,000)."""
    from pixelfleet.catalog.query import parse_query

    page = catalog.search(parse_query(collections=[collection], limit=1000))
    return {f["id"] for f in page.items}


def keys_under(root: Path) -> set[str]:
    """Every file under ``root``, as keys."""
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def chaos_script(
    keys: int, events: int, seed: int, duplicates: float = 0.2, malformed: int = 10
) -> tuple[list[tuple[str, str, int]], list[str]]:
    """A history of bucket changes and the messages describing it, shuffled.

    Returns ``(changes, messages)``: ``changes`` is the order to apply to the bucket,
    as ``(action, key, version)``; ``messages`` are S3-shaped notification bodies (each
    with the key's own increasing sequencer), with ``duplicates`` of them sent twice,
    ``malformed`` bodies that are no notification at all, all shuffled, so that deletes
    arrive before and after the creates they follow.
    """
    import random

    rng = random.Random(seed)
    names = [f"k{i:03d}/photo {i}.png" for i in range(keys)]
    changes: list[tuple[str, str, int]] = []
    messages: list[str] = []
    counters = dict.fromkeys(names, 0)
    exists = dict.fromkeys(names, False)
    for _ in range(events):
        key = rng.choice(names)
        counters[key] += 1
        action = "deleted" if exists[key] and rng.random() < 0.35 else "created"
        exists[key] = action == "created"
        changes.append((action, key, counters[key]))
        seq = f"{counters[key]:016X}"
        messages.append(s3_event(action, "", key, etag=f"v{counters[key]}", sequencer=seq))
    messages += rng.sample(messages, int(len(messages) * duplicates))
    bad = ["{oops", '{"Records": "none"}', '{"Records": [{"eventName": "ObjectCreated:Put"}]}']
    messages += [bad[i % len(bad)] for i in range(malformed)]
    rng.shuffle(messages)
    return changes, messages


def apply_changes(root: Path, changes: list[tuple[str, str, int]]) -> None:
    """Apply a chaos script's changes to a local bucket (each version a distinct photo)."""
    for action, key, version in changes:
        path = root / key
        if action == "deleted":
            path.unlink(missing_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(photo(((version * 37) % 256, (version * 11) % 256, 90), size=24))
