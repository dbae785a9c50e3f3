"""A hostile local bucket: names that are not UTF-8, symbolic links, FIFOs; file modes.

Each odd file becomes one failed object with a reason that names it and says what to
do; the good files are all processed, and a rerun behaves the same (issue 12).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from pixelfleet.cli.main import cli
from pixelfleet.errors import ObjectNotFoundError, UnsafeKeyError
from pixelfleet.sources.listing import ListingSource
from pixelfleet.storage import open_storage
from pixelfleet.storage.base import check_key
from pixelfleet.storage.local import key_part

REPO = Path(__file__).resolve().parents[1]
FLOWER = REPO / "tests" / "data" / "flower.jpg"
BAD_NAME = b"bad\xff.png"  # latin-1 "ÿ": not valid UTF-8


def write_pipeline(tmp_path: Path, bucket: Path, include: str = "**/*") -> str:
    path = tmp_path / "p.toml"
    path.write_text(
        f"""
[source]
url = "{bucket}"
include = ["{include}"]
partition = {{ by = "object" }}
[output]
url = "{tmp_path / "out"}"
[[steps]]
op = "thumbnail"
size = 32
key = "{{stem}}.thumb.jpg"
[run]
executor = "inline"
attempts = 2
"""
    )
    return str(path)


@pytest.fixture
def bucket(tmp_path: Path) -> Path:
    root = tmp_path / "bucket"
    (root / "sub").mkdir(parents=True)
    shutil.copy(FLOWER, root / "a.jpg")
    shutil.copy(FLOWER, root / "sub" / "b.jpg")
    return root


# -- names that are not valid UTF-8 --------------------------------------------------------


def test_key_part_escapes_only_undecodable_names() -> None:
    assert key_part("plain é.tif") == "plain é.tif"
    assert key_part(os.fsdecode(BAD_NAME)) == "bad\\xff.png"
    assert key_part(os.fsdecode(b"caf\xe9 \xc3\xa9.tif")) == "caf\\xe9 é.tif"


def test_scan_lists_undecodable_names_escaped_in_key_order(bucket: Path) -> None:
    with open(os.path.join(os.fsencode(bucket), BAD_NAME), "wb") as f:
        f.write(b"x")
    os.mkdir(os.path.join(os.fsencode(bucket), b"dir\xfe"))
    with open(os.path.join(os.fsencode(bucket), b"dir\xfe", b"in.jpg"), "wb") as f:
        f.write(b"y")
    keys = [e.key for e in open_storage(str(bucket)).scan()]
    assert keys == ["a.jpg", "bad\\xff.png", "dir\\xfe/in.jpg", "sub/b.jpg"]
    json.dumps(keys).encode("utf-8")  # no lone surrogate reaches a ledger or a catalog
    for key in keys[1:3]:
        with pytest.raises(UnsafeKeyError, match="not valid UTF-8.*rename the file"):
            check_key(key)


def test_a_name_that_is_not_utf8_fails_alone_and_a_rerun_too(tmp_path: Path, bucket: Path) -> None:
    with open(os.path.join(os.fsencode(bucket), BAD_NAME), "wb") as f:
        f.write(FLOWER.read_bytes())
    pipeline = write_pipeline(tmp_path, bucket)
    runner = CliRunner()
    for attempt in ("first", "rerun"):
        result = runner.invoke(cli, ["run", pipeline])
        assert result.exit_code == 1, (attempt, result.output)
        assert isinstance(result.exception, SystemExit), result.exception
        assert "1 failed" in result.output  # one object, tried once: the error is permanent
        assert "0 retries" in result.output
        line = next(x for x in result.output.splitlines() if "bad\\xff.png:" in x)
        assert "UnsafeKeyError" in line and "not valid UTF-8" in line and "rename" in line
    assert (tmp_path / "out" / "a.thumb.jpg").is_file()
    assert (tmp_path / "out" / "sub" / "b.thumb.jpg").is_file()
    status = runner.invoke(cli, ["status"])
    assert status.exit_code == 0, status.output
    assert "bad\\xff.png: UnsafeKeyError" in status.output
    as_json = runner.invoke(cli, ["status", "--json"])
    assert json.loads(as_json.output)["failures"][0]["objects"][0]["key"] == "bad\\xff.png"


# -- symbolic links and other files that are not regular files -----------------------------


def test_symlinks_are_listed_as_themselves_and_never_followed(tmp_path: Path, bucket: Path) -> None:
    secret = tmp_path / "secret.jpg"
    shutil.copy(FLOWER, secret)
    (bucket / "out.jpg").symlink_to(secret)  # leads out of the bucket
    (bucket / "in.jpg").symlink_to(bucket / "a.jpg")  # stays inside, still not followed
    (bucket / "loop.jpg").symlink_to(bucket / "loop.jpg")
    (bucket / "linked").symlink_to(tmp_path, target_is_directory=True)
    storage = open_storage(str(bucket))
    keys = [e.key for e in storage.scan()]
    assert keys == ["a.jpg", "in.jpg", "linked", "loop.jpg", "out.jpg", "sub/b.jpg"]
    for key in ("out.jpg", "in.jpg", "loop.jpg", "linked"):
        for call in (storage.head, storage.read, storage.local_path):
            with pytest.raises(UnsafeKeyError, match=r"symbolic link .*exclude glob"):
                call(key)
    with pytest.raises(UnsafeKeyError, match=f"to {secret}"):
        storage.read("out.jpg")
    with pytest.raises(UnsafeKeyError, match="outside"):
        storage.read("linked/secret.jpg")  # a key through the linked folder


def test_a_run_reports_each_symlink_with_its_reason(tmp_path: Path, bucket: Path) -> None:
    secret = tmp_path / "secret.jpg"
    shutil.copy(FLOWER, secret)
    (bucket / "sub" / "out.jpg").symlink_to(secret)
    (bucket / "in.jpg").symlink_to("a.jpg")
    result = CliRunner().invoke(cli, ["run", write_pipeline(tmp_path, bucket, "**/*.jpg")])
    assert result.exit_code == 1, result.output
    assert "2 written" in result.output and "2 failed" in result.output
    reasons = [x for x in result.output.splitlines() if "symbolic link" in x]
    assert len(reasons) == 2
    assert any(x.strip().startswith("in.jpg: UnsafeKeyError") for x in reasons)
    assert any(x.strip().startswith("sub/out.jpg: UnsafeKeyError") for x in reasons)
    assert sorted(p.name for p in (tmp_path / "out").rglob("*.jpg")) == [
        "a.thumb.jpg",
        "b.thumb.jpg",
    ]


def test_a_fifo_is_refused_without_blocking(tmp_path: Path, bucket: Path) -> None:
    os.mkfifo(bucket / "pipe.jpg")
    storage = open_storage(str(bucket))
    assert "pipe.jpg" in [e.key for e in storage.scan()]
    done = threading.Event()

    def read() -> None:
        with pytest.raises(UnsafeKeyError, match=r"named pipe \(FIFO\).*exclude glob"):
            storage.read("pipe.jpg")
        done.set()

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    thread.join(5)
    assert done.is_set(), "reading a FIFO blocked"


def test_listing_source_passes_odd_names_on_for_their_tasks_to_fail(bucket: Path) -> None:
    with open(os.path.join(os.fsencode(bucket), BAD_NAME), "wb") as f:
        f.write(b"x")
    (bucket / "link.png").symlink_to("/etc/hostname")
    keys = [e.key for e in ListingSource(str(bucket), ["**/*.png"]).entries()]
    assert keys == ["bad\\xff.png", "link.png"]


def test_missing_objects_and_folders_are_still_not_objects(bucket: Path) -> None:
    storage = open_storage(str(bucket))
    assert storage.head("nothing.jpg") is None
    assert storage.head("sub") is None
    assert storage.head("a.jpg/x") is None
    with pytest.raises(ObjectNotFoundError):
        storage.read("sub")


# -- file modes ----------------------------------------------------------------------------


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("umask")
def test_written_files_get_the_umask_mode(tmp_path: Path) -> None:
    storage = open_storage(str(tmp_path / "out"))
    storage.write("a/x.jpg", b"x", {"k": "v"})
    assert mode(tmp_path / "out" / "a" / "x.jpg") == 0o644
    os.umask(0o027)
    storage.write("a/y.jpg", b"y")
    assert mode(tmp_path / "out" / "a" / "y.jpg") == 0o640
    assert storage.read("a/y.jpg") == b"y"


@pytest.mark.usefixtures("umask")
@pytest.mark.parametrize("consume", [False, True])
def test_write_file_gives_the_umask_mode_to_a_private_file(tmp_path: Path, consume: bool) -> None:
    private = tmp_path / "work.tif"
    private.write_bytes(b"cog")
    private.chmod(0o600)
    storage = open_storage(str(tmp_path / "out"))
    storage.write_file("x.tif", str(private), consume=consume)
    assert mode(tmp_path / "out" / "x.tif") == 0o644
    assert private.exists() is not consume
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


@pytest.mark.usefixtures("umask")
def test_thumbnails_of_a_run_are_readable_by_others(tmp_path: Path, bucket: Path) -> None:
    result = CliRunner().invoke(cli, ["run", write_pipeline(tmp_path, bucket)])
    assert result.exit_code == 0, result.output
    made = sorted((tmp_path / "out").rglob("*.thumb.jpg"))
    assert len(made) == 2
    assert {mode(p) for p in made} == {0o644}
