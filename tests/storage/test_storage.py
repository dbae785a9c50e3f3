"""What only one storage does: local files (symlinks, temp files) and S3 (moto, boto3, settings)."""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pixelfleet.errors import (
    ConfigError,
    MissingExtraError,
    ObjectNotFoundError,
    StorageError,
    UnsafeKeyError,
)
from pixelfleet.models import Entry
from pixelfleet.settings import S3Settings, Settings
from pixelfleet.storage import open_storage
from s3_server import S3Env


def keys_of(entries: Iterator[Entry]) -> list[str]:
    return [e.key for e in entries]


# -- scan ---------------------------------------------------------------------------------


# -- head -----------------------------------------------------------------------------------


# -- read -----------------------------------------------------------------------------------


# -- write and delete -----------------------------------------------------------------------


# -- keys -----------------------------------------------------------------------------------


# -- RangeFile ------------------------------------------------------------------------------


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


# -- LocalStorage: the write path of many small objects ------------------------------------


def _user_xattrs(folder: Path) -> bool:
    import os

    probe = folder / ".probe"
    probe.write_bytes(b"")
    try:
        os.setxattr(probe, "user.probe", b"1")
    except OSError:
        return False
    finally:
        probe.unlink()
    return True


def test_local_metadata_is_one_json_attribute(tmp_path: Path) -> None:
    import json
    import os

    if not _user_xattrs(tmp_path):
        pytest.skip("no user extended attributes here")
    storage = open_storage(str(tmp_path))
    metadata = {"source-etag": "abc", "settings": "s1", "title": "A%20title", "op": "thumbnail"}
    written = storage.write("a/x.jpg", b"jpeg", metadata)
    path = tmp_path / "a" / "x.jpg"
    assert os.listxattr(path) == ["user.pixelfleet"]
    assert json.loads(os.getxattr(path, "user.pixelfleet")) == metadata
    head = storage.head("a/x.jpg")
    assert head is not None and head.metadata == metadata
    # The entry written is the entry read: size and etag from the open file.
    assert (head.size, head.etag, head.mtime) == (written.size, written.etag, written.mtime)
    storage.write("a/y.jpg", b"no metadata")
    assert os.listxattr(tmp_path / "a" / "y.jpg") == []


def test_local_reads_metadata_written_one_attribute_per_field(tmp_path: Path) -> None:
    import os

    if not _user_xattrs(tmp_path):
        pytest.skip("no user extended attributes here")
    path = tmp_path / "old.jpg"
    path.write_bytes(b"jpeg")
    for name, value in {"source-etag": "abc", "settings": "s1", "op": "thumbnail"}.items():
        os.setxattr(path, f"user.pixelfleet.{name}", value.encode())
    os.setxattr(path, "user.other.tool", b"ignored")
    head = open_storage(str(tmp_path)).head("old.jpg")
    assert head is not None
    assert head.metadata == {"source-etag": "abc", "settings": "s1", "op": "thumbnail"}


def test_local_write_makes_folders_and_gives_files_the_usual_mode(tmp_path: Path) -> None:
    import os
    import stat

    storage = open_storage(str(tmp_path))
    old = os.umask(0o022)
    try:
        storage.write("new/deeper/x.jpg", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new/deeper/x.jpg").stat().st_mode) == 0o644
    assert storage.read("new/deeper/x.jpg") == b"x"


def test_local_folder_check_is_made_once_per_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    import pixelfleet.storage.local as local

    calls: list[str] = []
    real = os.path.realpath

    def counting(path: str, *args: object, **kwargs: object) -> str:
        calls.append(path)
        return real(path, *args, **kwargs)  # type: ignore[arg-type]

    storage = open_storage(str(tmp_path))
    storage.write("a/0.jpg", b"x")  # makes the folder
    monkeypatch.setattr(local.os.path, "realpath", counting)
    for i in range(50):
        storage.write(f"a/{i}.jpg", b"x")
        storage.head(f"a/{i}.jpg")
        storage.read(f"a/{i}.jpg")
    assert len(calls) == 1


def test_local_reads_in_a_missing_folder_need_no_check(tmp_path: Path) -> None:
    storage = open_storage(str(tmp_path))
    assert storage.head("nowhere/x.jpg") is None
    with pytest.raises(ObjectNotFoundError):
        storage.read("nowhere/x.jpg")
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (outside / "x.jpg").write_bytes(b"secret")
    (tmp_path / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafeKeyError):
        storage.head("link/x.jpg")
    with pytest.raises(UnsafeKeyError):
        storage.write("link/new/x.jpg", b"x")  # a folder to make, through the link
    assert sorted(p.name for p in outside.iterdir()) == ["x.jpg"]


def test_local_temp_names_are_unique_across_threads(tmp_path: Path) -> None:
    storage = open_storage(str(tmp_path))

    def writer(n: int) -> None:
        for i in range(100):
            storage.write(f"t/{n}-{i}.bin", bytes([n]) * 10)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(keys_of(storage.scan())) == 400
    assert all(".pixelfleet-tmp-" not in p.name for p in (tmp_path / "t").iterdir())
