"""The ``Storage`` contract, run against every implementation: local, memory and S3 (moto)."""

from __future__ import annotations

import dataclasses
import io
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from pixelfleet.errors import (
    ConfigError,
    MissingExtraError,
    ObjectNotFoundError,
    StorageError,
    UnsafeKeyError,
)
from pixelfleet.models import Entry
from pixelfleet.settings import S3Settings, Settings, get_settings
from pixelfleet.storage import Storage, check_key, open_storage
from pixelfleet.storage.memory import MemoryStorage
from s3_server import S3Env

MakeStorage = Callable[[str], Storage]

KINDS = ["local", "memory", pytest.param("s3", marks=pytest.mark.s3)]

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


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_storage(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[MakeStorage]:
    """Open storages of one kind: ``make("")`` is the root, ``make("sub/dir")`` a prefix of it."""
    if kind == "local":
        root = tmp_path / "store"
        root.mkdir()
        base = root.as_uri()
    elif kind == "memory":
        name = f"contract-{uuid.uuid4().hex}"
        base = f"memory://{name}"
        request.addfinalizer(lambda: MemoryStorage.clear(name))
    else:
        base = request.getfixturevalue("s3_env").url

    def make(prefix: str = "") -> Storage:
        url = f"{base}/{prefix}" if prefix else base
        if kind == "local" and prefix:
            (tmp_path / "store" / prefix).mkdir(parents=True, exist_ok=True)
        return open_storage(url, get_settings())

    yield make


@pytest.fixture
def storage(make_storage: MakeStorage) -> Storage:
    return make_storage("")


def keys_of(entries: Iterator[Entry]) -> list[str]:
    return [e.key for e in entries]


# -- scan ---------------------------------------------------------------------------------


def test_scan_lists_every_key_in_order(storage: Storage) -> None:
    keys = ["b.tif", "a/2.tif", "a/10.tif", "a/1/x.tif", "ab.tif", "c/d/e.tif", "a/1/y z.tif"]
    for key in keys:
        storage.write(key, key.encode())
    assert keys_of(storage.scan()) == sorted(keys)


@pytest.mark.parametrize(
    "kind",
    [
        "local",
        "memory",
        pytest.param("s3", marks=pytest.mark.s3),
    ],
)
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


# -- head -----------------------------------------------------------------------------------


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


# -- read -----------------------------------------------------------------------------------


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


# -- write and delete -----------------------------------------------------------------------


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


# -- keys -----------------------------------------------------------------------------------


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


# -- RangeFile ------------------------------------------------------------------------------


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


# -- LocalStorage ---------------------------------------------------------------------------


def test_local_refuses_writes_through_a_symlink_out_of_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "link").symlink_to(outside, target_is_directory=True)
    storage = open_storage(str(root))
    with pytest.raises(UnsafeKeyError, match="outside"):
        storage.write("link/x.tif", b"x")
    with pytest.raises(UnsafeKeyError):
        storage.write("link/deeper/x.tif", b"x")
    assert list(outside.iterdir()) == []


def test_local_write_over_a_symlinked_file_leaves_its_target_alone(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    target = tmp_path / "secret.txt"
    target.write_bytes(b"secret")
    (root / "x.tif").symlink_to(target)
    storage = open_storage(str(root))
    storage.write("x.tif", b"new")
    assert target.read_bytes() == b"secret"
    assert storage.read("x.tif") == b"new"


def test_local_scan_never_lists_temporary_files(tmp_path: Path) -> None:
    storage = open_storage(tmp_path.as_uri())
    storage.write("a/x.tif", b"x")
    (tmp_path / "a" / ".x.tif.pixelfleet-tmp-1234").write_bytes(b"partial")
    (tmp_path / ".y.tif.pixelfleet-tmp-abcd").write_bytes(b"partial")
    assert keys_of(storage.scan()) == ["a/x.tif"]


def test_local_scan_while_writing_lists_only_complete_objects(tmp_path: Path) -> None:
    storage = open_storage(tmp_path.as_uri())
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            storage.write(f"w/{i % 20:02d}.bin", b"x" * 100_000)
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(50):
            for entry in storage.scan():
                assert ".pixelfleet-tmp-" not in entry.key
                assert entry.size == 100_000
    finally:
        stop.set()
        thread.join()


# -- S3Storage ------------------------------------------------------------------------------


def _s3_settings(**changes: object) -> Settings:
    s3 = S3Settings(
        endpoint="http://127.0.0.1:9",
        region="us-east-1",
        access_key_id="testing",
        secret_access_key="testing",
        allow_http=True,
    )
    return Settings(s3=dataclasses.replace(s3, **changes))  # type: ignore[arg-type]


@pytest.mark.s3
def test_s3_write_is_visible_to_boto3_with_its_metadata(s3_env: S3Env) -> None:
    storage = open_storage(f"{s3_env.url}/out")
    storage.write(
        "al/2013/a.webp",
        b"webp-bytes",
        {"source-etag": "abc", "op": "thumbnail", "content-type": "image/webp"},
    )
    head = s3_env.client.head_object(Bucket=s3_env.bucket, Key="out/al/2013/a.webp")
    assert head["Metadata"] == {"source-etag": "abc", "op": "thumbnail"}
    assert head["ContentType"] == "image/webp"
    body = s3_env.client.get_object(Bucket=s3_env.bucket, Key="out/al/2013/a.webp")["Body"]
    assert body.read() == b"webp-bytes"


@pytest.mark.s3
def test_s3_reads_what_boto3_wrote(s3_env: S3Env) -> None:
    s3_env.client.put_object(
        Bucket=s3_env.bucket, Key="src/m_1.tif", Body=b"tiff", Metadata={"Origin": "naip"}
    )
    storage = open_storage(f"{s3_env.url}/src/")
    [entry] = storage.scan()
    assert entry.key == "m_1.tif" and entry.size == 4
    head = storage.head("m_1.tif")
    assert head is not None and head.metadata["origin"] == "naip"
    assert storage.read("m_1.tif", 1, 3) == b"if"


@pytest.mark.s3
def test_s3_scan_of_a_missing_bucket(s3_env: S3Env) -> None:
    storage = open_storage(f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}")
    with pytest.raises(ObjectNotFoundError, match="does not exist"):
        list(storage.scan())


@pytest.mark.s3
def test_s3_scan_keeps_keys_obstore_would_refuse(s3_env: S3Env) -> None:
    odd = ["../evil.jpg", "a//b.tif", "x/./y.tif", "ctrl\x01.tif", "q?x#y.tif", "sp ace+plus.tif"]
    fine = ["ok.tif", "ünï/código.tif", "folder/inside.tif"]
    for key in odd + fine:
        s3_env.client.put_object(Bucket=s3_env.bucket, Key=f"src/{key}", Body=key.encode())
    # A folder marker, as the S3 console makes them: not an object.
    s3_env.client.put_object(Bucket=s3_env.bucket, Key="src/folder/", Body=b"")
    storage = open_storage(f"{s3_env.url}/src")
    assert keys_of(storage.scan()) == sorted(odd + fine)
    assert keys_of(storage.scan("a/")) == ["a//b.tif"]
    for key in fine + ["q?x#y.tif", "sp ace+plus.tif"]:
        assert storage.read(key) == key.encode()
    for key in ["../evil.jpg", "a//b.tif", "x/./y.tif", "ctrl\x01.tif"]:
        with pytest.raises(UnsafeKeyError):
            storage.read(key)


@pytest.mark.s3
def test_s3_keys_reach_the_bucket_unchanged(s3_env: S3Env) -> None:
    key = "chars/ !\"$&'()*+,;=@[]^`{|}~%41#?é.tif"
    storage = open_storage(s3_env.url)
    storage.write(key, b"x")
    listed = s3_env.client.list_objects_v2(Bucket=s3_env.bucket)["Contents"]
    assert [o["Key"] for o in listed] == [key]
    assert keys_of(storage.scan()) == [key]


@pytest.mark.s3
def test_s3_refuses_metadata_http_headers_cannot_carry(s3_env: S3Env) -> None:
    storage = open_storage(s3_env.url)
    with pytest.raises(ConfigError, match="ASCII"):
        storage.write("a.bin", b"x", {"source-key": "é.tif"})
    with pytest.raises(ConfigError, match="not allowed"):
        storage.write("a.bin", b"x", {"bad name": "v"})
    with pytest.raises(ConfigError, match="reserved"):
        storage.write("a.bin", b"x", {"cache-control": "no-store"})
    assert storage.head("a.bin") is None


@pytest.mark.s3
def test_s3_scan_follows_pages(s3_env: S3Env) -> None:
    keys = [f"p/{i:03d}.tif" for i in range(7)]
    for key in keys:
        s3_env.client.put_object(Bucket=s3_env.bucket, Key=key, Body=b"x")
    storage = open_storage(s3_env.url)
    storage._lister.page_size = 2  # type: ignore[attr-defined]
    assert keys_of(storage.scan("p/")) == keys


@pytest.mark.s3
def test_s3_anonymous_access(s3_env: S3Env) -> None:
    s3_env.client.put_object(
        Bucket=s3_env.bucket, Key="pub/a.tif", Body=b"public", ACL="public-read"
    )
    settings = _s3_settings(endpoint=s3_env.endpoint, access_key_id=None, skip_signature=True)
    storage = open_storage(f"{s3_env.url}/pub", settings)
    assert keys_of(storage.scan()) == ["a.tif"]
    assert storage.read("a.tif") == b"public"


def test_s3_failures_name_the_url_and_key() -> None:
    pytest.importorskip("obstore")
    # Nothing listens on port 9 (discard) of 127.0.0.1: every request is refused.
    storage = open_storage("s3://bucket/pre", _s3_settings())
    with pytest.raises(StorageError, match=r"s3://bucket/pre/some/key\.tif"):
        storage.read("some/key.tif")
    with pytest.raises(StorageError, match=r"cannot list s3://bucket/pre"):
        list(storage.scan())


def test_s3_needs_credentials_or_anonymous_access() -> None:
    pytest.importorskip("obstore")
    with pytest.raises(ConfigError, match="PIXELFLEET_S3_ANONYMOUS"):
        open_storage("s3://bucket", _s3_settings(access_key_id=None))
    anonymous = open_storage("s3://bucket", _s3_settings(access_key_id=None, skip_signature=True))
    assert anonymous.url == "s3://bucket"


@pytest.mark.s3
def test_s3_without_keys_uses_the_sdk_credential_chain(
    s3_env: S3Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A profile file stands in for what a role gives on EC2, ECS or AWS Batch.
    profile = tmp_path / "credentials"
    profile.write_text("[default]\naws_access_key_id = fromprofile\naws_secret_access_key = x\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(profile))
    settings = _s3_settings(endpoint=s3_env.endpoint, access_key_id=None, secret_access_key=None)
    storage = open_storage(f"{s3_env.url}/via-profile", settings)
    storage.write("a.txt", b"hello")
    assert [e.key for e in storage.scan()] == ["a.txt"]
    assert storage.read("a.txt") == b"hello"


def test_s3_passes_every_setting_explicitly() -> None:
    pytest.importorskip("obstore")
    storage = open_storage(
        "s3://bucket/a/b",
        _s3_settings(
            endpoint="https://minio.example:9000/", requester_pays=True, region="eu-west-1"
        ),
    )
    config = storage._store.config  # type: ignore[attr-defined]
    assert config["endpoint"] == "https://minio.example:9000"
    assert config["region"] == "eu-west-1"
    assert config["request_payer"] in (True, "true")
    assert config["virtual_hosted_style_request"] in (False, "false")
    assert storage._store.prefix == "a/b"  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="PIXELFLEET_S3_ALLOW_HTTP"):
        open_storage("s3://bucket", _s3_settings(allow_http=False))
    aws = open_storage("s3://bucket", _s3_settings(endpoint=None, region="us-west-2"))
    assert aws._store.config["endpoint"] == "https://s3.us-west-2.amazonaws.com"  # type: ignore[attr-defined]


@pytest.mark.parametrize("url", ["s3://", "s3:///prefix", "s3://bucket/../x", "s3://bucket/a//b"])
def test_s3_refuses_bad_urls(url: str) -> None:
    pytest.importorskip("obstore")
    with pytest.raises((ConfigError, UnsafeKeyError)):
        open_storage(url, _s3_settings())


def test_s3_without_obstore_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from pixelfleet.storage import s3

    monkeypatch.setitem(sys.modules, "obstore", None)
    monkeypatch.setitem(sys.modules, "obstore.store", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'pixelfleet\[s3\]'"):
        s3.S3Storage("s3://bucket", _s3_settings())


# -- write_file (big outputs such as scene composites) ------------------------------------


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
