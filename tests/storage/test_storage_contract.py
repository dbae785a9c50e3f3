"""The ``Storage`` contract: every storage behaves as the memory reference does.

A new storage joins by adding one line to ``STORAGES``: a function that gives the root
URL of an empty storage of its kind. (test_storage.py holds what only one kind does.)
"""

from __future__ import annotations

import io
import os
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from pixelfleet.errors import ObjectNotFoundError, UnsafeKeyError
from pixelfleet.models import Entry
from pixelfleet.settings import get_settings
from pixelfleet.storage import Storage, check_key, open_storage
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


MakeStorage = Callable[[str], Storage]


@pytest.fixture
def make_storage(root_url: str) -> MakeStorage:
    """Open storages of one kind: ``make("")`` is the root, ``make("sub/dir")`` a prefix of it."""

    def make(prefix: str = "") -> Storage:
        url = f"{root_url}/{prefix}" if prefix else root_url
        if prefix and url.startswith("file://"):
            Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).mkdir(
                parents=True, exist_ok=True
            )
        return open_storage(url, get_settings())

    return make


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


# -- more of the contract: scan, head, read, write, keys, ranged files ---------------


UNSAFE_KEYS = [
    "",
    "../x",
    "a/../../x",
    "/abs",
    "/etc/passwd",
    "a\\b",
    "..\\x",
    "a//b",
    "a/",
    "./a",
    "a/./b",
    "C:x",
    "a\x00b",
    "a\nb",
    "a\tb",
    "a\x7fb",
]


def keys_of(entries: Iterator[Entry]) -> list[str]:
    return [e.key for e in entries]


def test_scan_lists_every_key_in_order(storage: Storage) -> None:
    keys = ["b.tif", "a/2.tif", "a/10.tif", "a/1/x.tif", "ab.tif", "c/d/e.tif", "a/1/y z.tif"]
    for key in keys:
        storage.write(key, key.encode())
    assert keys_of(storage.scan()) == sorted(keys)


def test_scan_order_is_key_order_across_folders(storage: Storage) -> None:
    keys = ["a.tif", "a/x.tif", "a-b/y.tif", "a b.tif", "a0.tif"]
    for key in keys:
        storage.write(key, b"x")
    assert keys_of(storage.scan()) == sorted(keys)


def test_scan_filters_by_prefix_as_a_string(storage: Storage) -> None:
    for key in ["a/1.tif", "a/10/x.tif", "a/2.tif", "ab.tif", "b/1.tif"]:
        storage.write(key, b"x")
    assert keys_of(storage.scan("a/")) == ["a/1.tif", "a/10/x.tif", "a/2.tif"]
    assert keys_of(storage.scan("a")) == ["a/1.tif", "a/10/x.tif", "a/2.tif", "ab.tif"]
    assert keys_of(storage.scan("a/1")) == ["a/1.tif", "a/10/x.tif"]
    assert keys_of(storage.scan("a/10/")) == ["a/10/x.tif"]
    assert keys_of(storage.scan("zzz")) == []


def test_scan_entries_describe_the_objects(storage: Storage) -> None:
    before = time.time()
    written = storage.write("x/y.bin", b"12345")
    [entry] = storage.scan()
    assert entry.key == "x/y.bin"
    assert entry.size == 5
    assert entry.etag == written.etag
    assert entry.etag and '"' not in entry.etag
    assert before - 5 <= entry.mtime <= time.time() + 5


def test_scan_sees_only_its_own_prefix(make_storage: MakeStorage) -> None:
    root = make_storage("")
    for key in ["pre/x.tif", "pre/sub/y.tif", "prefix2/z.tif", "pre.tif", "other.tif"]:
        root.write(key, b"x")
    inner = make_storage("pre")
    assert keys_of(inner.scan()) == ["sub/y.tif", "x.tif"]
    assert inner.read("x.tif") == b"x"
    assert inner.head("other.tif") is None
    inner.write("new.tif", b"n")
    assert root.read("pre/new.tif") == b"n"


def test_head_of_a_missing_object_is_none(storage: Storage) -> None:
    assert storage.head("missing.tif") is None
    assert storage.head("no/such/folder/missing.tif") is None
    assert not storage.exists("missing.tif")
    storage.write("file.tif", b"x")
    assert storage.head("file.tif/below") is None


def test_head_returns_the_metadata_written(storage: Storage) -> None:
    metadata = {"source-etag": "abc123", "source-key": "al/2013/m%20x.tif", "op": "thumbnail"}
    written = storage.write("thumbs/a.webp", b"webp-bytes", metadata)
    entry = storage.head("thumbs/a.webp")
    assert entry is not None
    assert entry.key == "thumbs/a.webp"
    assert entry.size == len(b"webp-bytes")
    assert entry.etag == written.etag
    assert written.metadata == metadata
    # Stores may add facts of their own (S3 reports the content type), never lose ours.
    assert entry.metadata.items() >= metadata.items()


def test_head_reports_a_content_type_written_as_metadata(storage: Storage) -> None:
    storage.write("a.webp", b"x", {"content-type": "image/webp", "op": "thumbnail"})
    entry = storage.head("a.webp")
    assert entry is not None
    assert entry.metadata.get("content-type") == "image/webp"
    assert entry.metadata.get("op") == "thumbnail"


def _same(found: Entry, head: Entry | None) -> bool:
    assert head is not None
    return (found.key, found.size, found.etag, found.metadata) == (
        head.key,
        head.size,
        head.etag,
        head.metadata,
    )


def test_existing_gives_the_head_of_each_key_that_exists(storage: Storage) -> None:
    for name in ("t/a1.jpg", "t/a2.jpg", "t/b.jpg", "t/a4.jpg", "t/sub/a3.jpg", "u/1.jpg", "r.jpg"):
        storage.write(name, name.encode(), {"source-etag": name, "settings": "s1"})
    asked = [
        "t/a0.jpg",  # missing, before the first that exists
        "t/a1.jpg",
        "t/a2.jpg",
        "t/a3.jpg",  # missing (a key of that name is in a subfolder)
        "t/a4.jpg",
        "t/a5.jpg",  # missing, after the last
        "u/1.jpg",
        "u/2.jpg",
        "r.jpg",
        "no/such/folder/x.jpg",
    ]
    found = storage.existing(asked)
    assert set(found) == {"t/a1.jpg", "t/a2.jpg", "t/a4.jpg", "u/1.jpg", "r.jpg"}
    for key, entry in found.items():
        assert _same(entry, storage.head(key))
        assert entry.metadata["source-etag"] == key
    assert storage.existing([]) == {}
    assert storage.existing(["t/a1.jpg", "t/a1.jpg"]).keys() == {"t/a1.jpg"}


def test_existing_sees_only_its_own_prefix(make_storage: MakeStorage) -> None:
    root, inner = make_storage(""), make_storage("pre")
    for i in range(4):
        root.write(f"pre/f/{i}.jpg", b"in")
        root.write(f"f/{i}.jpg", b"out")
    assert set(inner.existing([f"f/{i}.jpg" for i in range(6)])) == {f"f/{i}.jpg" for i in range(4)}
    assert root.existing(["f/5.jpg", "pre/f/5.jpg", "pre/f/0.jpg"]).keys() == {"pre/f/0.jpg"}


def test_existing_refuses_unsafe_keys(storage: Storage) -> None:
    with pytest.raises(UnsafeKeyError):
        storage.existing(["a.jpg", "../escape.jpg"])


def test_existing_sees_a_rewrite(storage: Storage) -> None:
    storage.write("x/1.jpg", b"one", {"settings": "s1"})
    storage.write("x/1.jpg", b"two!", {"settings": "s2"})
    (entry,) = storage.existing(["x/0.jpg", "x/1.jpg", "x/2.jpg"]).values()
    assert (entry.size, entry.metadata["settings"]) == (4, "s2")


def test_read_whole_objects_and_ranges(storage: Storage) -> None:
    data = os.urandom(1000)
    storage.write("r/data.bin", data)
    assert storage.read("r/data.bin") == data
    assert storage.read("r/data.bin", 0, 10) == data[:10]
    assert storage.read("r/data.bin", 10) == data[10:]
    assert storage.read("r/data.bin", 100, 250) == data[100:250]
    assert storage.read("r/data.bin", 990, 2000) == data[990:]
    assert storage.read("r/data.bin", 999, 1000) == data[999:]
    assert storage.read("r/data.bin", 5, 5) == b""
    assert storage.read("r/data.bin", 2000, 3000) == b""


def test_read_an_empty_object(storage: Storage) -> None:
    storage.write("empty", b"")
    assert storage.read("empty") == b""
    assert storage.read("empty", 0, 10) == b""
    entry = storage.head("empty")
    assert entry is not None and entry.size == 0


def test_reading_a_missing_object_raises_object_not_found(storage: Storage) -> None:
    with pytest.raises(ObjectNotFoundError, match="missing.tif"):
        storage.read("missing.tif")
    with pytest.raises(ObjectNotFoundError):
        storage.read("missing.tif", 0, 10)
    with pytest.raises(FileNotFoundError):  # what a caller who knows no pixelfleet catches
        storage.read("folder/missing.tif", 5, 5)


def test_write_replaces_an_object(storage: Storage) -> None:
    storage.write("k.bin", b"first version", {"v": "1"})
    entry = storage.write("k.bin", b"second", {"v": "2"})
    assert entry.size == 6
    assert storage.read("k.bin") == b"second"
    head = storage.head("k.bin")
    assert head is not None and head.size == 6 and head.metadata["v"] == "2"
    assert keys_of(storage.scan()) == ["k.bin"]


def test_etag_changes_when_content_changes(storage: Storage) -> None:
    first = storage.write("k.bin", b"aaaa")
    # Same size on purpose; local etags come from the file's mtime, which some
    # filesystems only advance every few milliseconds.
    time.sleep(0.05)
    second = storage.write("k.bin", b"bbbb")
    assert first.etag != second.etag
    head = storage.head("k.bin")
    assert head is not None and head.etag == second.etag


def test_delete(storage: Storage) -> None:
    storage.write("d/x.bin", b"x")
    storage.delete("d/x.bin")
    assert storage.head("d/x.bin") is None
    with pytest.raises(ObjectNotFoundError):
        storage.read("d/x.bin")
    storage.delete("d/x.bin")
    storage.delete("never/existed.bin")


def test_a_reader_never_sees_a_partial_object(storage: Storage) -> None:
    size = 1 << 20
    versions = [bytes([i]) * size for i in range(1, 5)]
    storage.write("big.bin", versions[0])
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            i = 0
            while not stop.is_set():
                i += 1
                storage.write("big.bin", versions[i % len(versions)])
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    seen = set()
    try:
        deadline = time.monotonic() + 1.0
        reads = 0
        while time.monotonic() < deadline or len(seen) < 2:
            data = storage.read("big.bin")
            reads += 1
            assert len(data) == size, f"read {len(data)} bytes of a {size}-byte object"
            assert data == bytes([data[0]]) * size, "read a mix of two versions"
            seen.add(data[0])
    finally:
        stop.set()
        thread.join()
    assert not errors, errors
    assert len(seen) >= 2 and seen <= {1, 2, 3, 4}


@pytest.mark.parametrize("key", UNSAFE_KEYS)
def test_check_key_refuses_unsafe_keys(key: str) -> None:
    with pytest.raises(UnsafeKeyError):
        check_key(key)


@pytest.mark.parametrize("key", ["a", "a/b.tif", "al/2013/m_30086 x.tif", "a..b/c", ".hidden"])
def test_check_key_accepts_relative_keys(key: str) -> None:
    assert check_key(key) == key


@pytest.mark.parametrize("key", UNSAFE_KEYS)
def test_storages_refuse_unsafe_keys(storage: Storage, key: str) -> None:
    with pytest.raises(UnsafeKeyError):
        storage.write(key, b"x")
    with pytest.raises(UnsafeKeyError):
        storage.read(key)
    with pytest.raises(UnsafeKeyError):
        storage.head(key)
    with pytest.raises(UnsafeKeyError):
        storage.delete(key)


def test_unusual_but_safe_keys_round_trip(storage: Storage) -> None:
    keys = ["sp ace/x.tif", "pct%20/y.tif", "brackets[1]~/z.tif", "ünïcode/ä.tif"]
    for key in keys:
        storage.write(key, key.encode())
    assert keys_of(storage.scan()) == sorted(keys)
    for key in keys:
        assert storage.read(key) == key.encode()


@pytest.mark.parametrize("block_size", [64, 1000, 256 * 1024])
def test_range_file_reads_like_a_file(storage: Storage, block_size: int) -> None:
    data = os.urandom(5000)
    storage.write("rf.bin", data)
    f = storage.open("rf.bin", block_size=block_size)
    ref = io.BytesIO(data)
    assert f.readable() and f.seekable()
    steps = [
        (0, io.SEEK_SET, 10),
        (0, io.SEEK_CUR, 100),
        (-5, io.SEEK_END, 100),
        (4990, io.SEEK_SET, 5),
        (60, io.SEEK_SET, 3000),
        (-100, io.SEEK_CUR, 7),
        (9000, io.SEEK_SET, 10),
        (0, io.SEEK_SET, -1),
        (123, io.SEEK_SET, 0),
    ]
    for offset, whence, size in steps:
        assert f.seek(offset, whence) == ref.seek(offset, whence)
        assert f.read(size) == ref.read(size), (offset, whence, size)
        assert f.tell() == ref.tell()
    f.seek(10)
    buffer = bytearray(20)
    assert f.readinto(buffer) == 20
    assert bytes(buffer) == data[10:30]
    f.close()


def test_range_file_fetches_a_read_across_blocks_in_one_request(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(10_000)
    storage.write("rf.bin", data)
    calls: list[tuple[int | None, int | None]] = []
    real = storage.read

    def counting(key: str, start: int | None = None, end: int | None = None) -> bytes:
        calls.append((start, end))
        return real(key, start, end)

    monkeypatch.setattr(storage, "read", counting)
    f = storage.open("rf.bin", size=len(data), block_size=1000)
    f.seek(900)
    assert f.read(200) == data[900:1100]
    assert calls == [(0, 2000)]
    f.seek(950)
    assert f.read(100) == data[950:1050]
    assert len(calls) == 1  # both blocks are kept
    f.seek(1500)
    assert f.read(1000) == data[1500:2500]
    assert calls[1:] == [(2000, 3000)]  # only the block it lacked
    f.seek(9500)
    assert f.read(1000) == data[9500:]
    assert calls[2:] == [(9000, 10_000)]


def test_range_file_of_a_missing_object(storage: Storage) -> None:
    with pytest.raises(ObjectNotFoundError):
        storage.open("missing.tif")


def test_range_file_serves_rasterio(storage: Storage) -> None:
    rasterio = pytest.importorskip("rasterio")
    from affine import Affine

    pixels = np.arange(4 * 300 * 300, dtype=np.uint16).reshape(4, 300, 300)
    memfile = rasterio.MemoryFile()
    with memfile.open(
        driver="GTiff",
        width=300,
        height=300,
        count=4,
        dtype="uint16",
        crs="EPSG:26916",
        transform=Affine(1.0, 0.0, 500000.0, 0.0, -1.0, 3700000.0),
        tiled=True,
        blockxsize=128,
        blockysize=128,
        compress="deflate",
    ) as dst:
        dst.write(pixels)
    storage.write("img/a.tif", memfile.read())
    memfile.close()
    with storage.open("img/a.tif", block_size=4096) as f, rasterio.open(f) as src:
        assert (src.count, src.width, src.height) == (4, 300, 300)
        assert np.array_equal(src.read(), pixels)


def test_write_file_stores_a_local_file(
    storage: Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pixelfleet.storage.s3 as s3_module

    # Small enough thresholds that S3 takes the multipart path with two parts.
    monkeypatch.setattr(s3_module, "_SINGLE_PUT_BYTES", 1024 * 1024)
    monkeypatch.setattr(s3_module, "_PART_BYTES", 5 * 1024 * 1024)
    data = bytes(range(256)) * (6 * 4096)  # 6 MB
    path = tmp_path / "composite.tif"
    path.write_bytes(data)
    written = storage.write_file("scenes/x.tif", str(path), {"source-etag": "e1"})
    assert written.size == len(data)
    assert storage.read("scenes/x.tif") == data
    head = storage.head("scenes/x.tif")
    assert head is not None and head.metadata["source-etag"] == "e1"
    assert path.read_bytes() == data  # the caller's file is left as it was


def test_write_file_may_move_a_file_it_is_given(storage: Storage, tmp_path: Path) -> None:
    path = tmp_path / "given.tif"
    path.write_bytes(b"x" * 1000)
    storage.write_file("given.tif", str(path), {"op": "t"}, consume=True)
    assert storage.read("given.tif") == b"x" * 1000
    head = storage.head("given.tif")
    assert head is not None and head.metadata["op"] == "t"
