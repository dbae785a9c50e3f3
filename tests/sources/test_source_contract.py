"""The Source contract, for every source: the entries it yields, ack and close.

A new source joins by adding one factory to ``SOURCES``: it gets a folder holding the
objects in ``OBJECTS`` (what a bucket holds) and returns a source that yields exactly
the selected ones (``WANTED``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from inventory_helpers import row, write_report
from pixelfleet.models import Entry
from pixelfleet.sources import InventorySource, ListingSource, MemorySource, Source
from pixelfleet.storage import open_storage

#: What the bucket holds (key -> bytes); the sources select the images.
OBJECTS = {
    "a.jpg": b"one",
    "b/c.PNG": b"three",
    "b/d.txt": b"not an image",
    "b/e/f.jpg": b"seven bytes",
}
WANTED = ["a.jpg", "b/c.PNG", "b/e/f.jpg"]
INCLUDE = ["**/*.jpg", "**/*.png"]  # matched ignoring case, as by default


def listing(folder: Path) -> Source:
    return ListingSource(str(folder), INCLUDE)


def inventory(folder: Path) -> Source:
    store = open_storage(str(folder.parent / "inv-bucket"))
    rows = [
        row(key, size=len(data), etag=f"etag-{i}") for i, (key, data) in enumerate(OBJECTS.items())
    ]
    key = write_report(store, rows)
    return InventorySource(f"{folder.parent / 'inv-bucket'}/{key}", str(folder), INCLUDE)


def memory(folder: Path) -> Source:
    entries = [Entry(k, len(OBJECTS[k]), f"etag-{k}") for k in WANTED]
    return MemorySource(entries, end=True)


SOURCES: dict[str, Callable[[Path], Source]] = {
    "listing": listing,
    "inventory": inventory,
    "memory": memory,
}


@pytest.fixture(params=sorted(SOURCES))
def source(request: pytest.FixtureRequest, tmp_path: Path) -> Source:
    folder = tmp_path / "bucket"
    for key, data in OBJECTS.items():
        (folder / key).parent.mkdir(parents=True, exist_ok=True)
        (folder / key).write_bytes(data)
    return SOURCES[request.param](folder)


def test_yields_the_selected_objects_in_key_order(source: Source) -> None:
    entries = list(source.entries())
    assert all(isinstance(e, Entry) for e in entries)
    assert [e.key for e in entries] == WANTED
    assert [e.size for e in entries] == [len(OBJECTS[k]) for k in WANTED]
    assert all(e.etag for e in entries)


def test_every_entry_can_be_acknowledged_once_or_again(source: Source) -> None:
    entries = list(source.entries())
    for entry in entries:
        source.ack(entry)
    source.ack(entries[0])  # at least once: a repeated ack is harmless


def test_describe_and_close(source: Source) -> None:
    assert source.describe()
    source.close()
    source.close()  # safe twice


def test_context_manager_closes(source: Source) -> None:
    with source as same:
        assert same is source
        assert [e.key for e in source.entries()] == WANTED


def test_bad_filters_fail_when_the_source_is_made(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="image/nonsense"):
        ListingSource(str(tmp_path), content_types=["image/nonsense"])


# -- the reference: a stream that blocks and never ends until told -------------------------


def test_memory_source_blocks_until_an_entry_arrives_and_ends_on_close() -> None:
    source = MemorySource()
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(e.key for e in source.entries()))
    reader.start()
    source.put(Entry("late.jpg", 1, "e"))
    reader.join(timeout=0.2)
    assert reader.is_alive()  # still waiting for more: the stream has not ended
    source.close()
    reader.join(timeout=10)
    assert not reader.is_alive() and seen == ["late.jpg"]


def test_memory_source_keeps_what_was_acknowledged() -> None:
    first, second = Entry("a", 1, "e1"), Entry("b", 2, "e2")
    source = MemorySource([first, second], end=True)
    assert list(source.entries()) == [first, second]
    source.ack(second)
    assert source.acked == [second]
