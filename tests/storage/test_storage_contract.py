"""The ``Storage`` contract: every storage behaves as the memory reference does.

A new storage joins by adding one line to ``STORAGES``: a function that gives the root
URL of an empty storage of its kind. (test_storage.py holds more of the contract over
the same three kinds, and what only one kind does.)
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from pixelfleet.errors import ObjectNotFoundError
from pixelfleet.settings import get_settings
from pixelfleet.storage import Storage, open_storage
from pixelfleet.storage.memory import MemoryStorage

RootUrl = Callable[[pytest.FixtureRequest, Path], str]


def _file_root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    root = tmp_path / "store"
    root.mkdir()
    return root.as_uri()


def _memory_root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    name = f"contract-{uuid.uuid4().hex}"
    request.addfinalizer(lambda: MemoryStorage.clear(name))
    return f"memory://{name}"


def _s3_root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return str(request.getfixturevalue("s3_env").url)


STORAGES = [
    pytest.param(_file_root, id="file"),
    pytest.param(_memory_root, id="memory"),
    pytest.param(_s3_root, id="s3", marks=pytest.mark.s3),
]


@pytest.fixture(params=STORAGES)
def root_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty storage of each kind."""
    make: RootUrl = request.param
    return make(request, tmp_path)


@pytest.fixture
def storage(root_url: str) -> Storage:
    return open_storage(root_url, get_settings())


def keys(storage: Storage, prefix: str = "") -> list[str]:
    return [e.key for e in storage.scan(prefix)]


def test_an_empty_storage(storage: Storage) -> None:
    assert keys(storage) == []
    assert storage.head("a.tif") is None
    assert not storage.exists("a.tif")
    with pytest.raises(ObjectNotFoundError):
        storage.read("a.tif")
    with pytest.raises(ObjectNotFoundError):
        storage.open("a.tif")
    storage.delete("a.tif")


def test_write_head_and_scan_tell_the_same_story(storage: Storage) -> None:
    data = os.urandom(3000)
    written = storage.write("w/a.bin", data, {"op": "thumbnail", "source-etag": "e1"})
    head = storage.head("w/a.bin")
    (scanned,) = storage.scan()
    assert head is not None
    for entry in (written, head, scanned):
        assert (entry.key, entry.size, entry.etag) == ("w/a.bin", 3000, written.etag)
    assert written.metadata == {"op": "thumbnail", "source-etag": "e1"}
    assert storage.exists("w/a.bin")
    assert storage.describe("w/a.bin") == f"{storage.url.rstrip('/')}/w/a.bin"


def test_a_rewrite_keeps_only_the_new_metadata(storage: Storage) -> None:
    storage.write("m.bin", b"one", {"op": "thumbnail", "settings": "s1"})
    storage.write("m.bin", b"two", {"op": "labels"})
    head = storage.head("m.bin")
    assert head is not None
    assert head.metadata.get("op") == "labels"
    assert "settings" not in head.metadata
    storage.write("m.bin", b"three")
    head = storage.head("m.bin")
    assert head is not None
    assert "op" not in head.metadata
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in head.metadata.items())


def test_folders_are_not_objects(storage: Storage, request: pytest.FixtureRequest) -> None:
    storage.write("d/x.bin", b"x")
    assert storage.head("d") is None
    assert not storage.exists("d")
    with pytest.raises(ObjectNotFoundError):
        storage.read("d")
    storage.delete("d")  # not an object: nothing to remove
    assert keys(storage) == ["d/x.bin"]


def test_deleted_objects_leave_the_listing(storage: Storage) -> None:
    for key in ("a.bin", "b/c.bin", "b/d.bin"):
        storage.write(key, key.encode())
    storage.delete("b/c.bin")
    assert keys(storage) == ["a.bin", "b/d.bin"]
    assert keys(storage, "b/") == ["b/d.bin"]


def test_every_handle_on_a_url_sees_the_same_objects(root_url: str) -> None:
    first = open_storage(root_url, get_settings())
    first.write("shared/x.bin", b"x", {"op": "t"})
    second = open_storage(root_url, get_settings())
    assert second.read("shared/x.bin") == b"x"
    head = second.head("shared/x.bin")
    assert head is not None and head.metadata.get("op") == "t"
    second.delete("shared/x.bin")
    assert first.head("shared/x.bin") is None


def test_a_local_path_holds_the_object(storage: Storage) -> None:
    data = os.urandom(100)
    storage.write("p/x.bin", data)
    path = storage.local_path("p/x.bin")
    if path is not None:  # remote storages have none
        with open(path, "rb") as f:
            assert f.read() == data


def test_open_reads_the_whole_object(storage: Storage) -> None:
    data = os.urandom(70_000)
    storage.write("o.bin", data)
    with storage.open("o.bin", block_size=4096) as f:
        assert f.read() == data
    with storage.open("o.bin", size=len(data)) as f:
        f.seek(-10, os.SEEK_END)
        assert f.read() == data[-10:]


def test_remove_partial_leaves_whole_objects_alone(storage: Storage) -> None:
    storage.write("r/x.bin", b"whole")
    assert storage.remove_partial(["r/x.bin", "r/never.bin", "elsewhere/y.bin"]) == 0
    assert storage.read("r/x.bin") == b"whole"
    assert keys(storage) == ["r/x.bin"]
