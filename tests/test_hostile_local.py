"""A hostile local bucket: names that are not UTF-8, symbolic links, FIFOs; file modes.

A name that is not UTF-8 becomes one failed object, and a symbolic link or a FIFO one
skipped object, each with a reason that names it and says what to do; the good files
are all processed, and a rerun behaves the same (issue 12).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from bomb_helpers import make_nested
from fleet_helpers import make_fleet_bucket
from pixelfleet.cli.main import cli
from pixelfleet.errors import ObjectNotFoundError, UnsafeKeyError
from pixelfleet.executors.launchers import ExternalLauncher
from pixelfleet.fleet.driver import FleetDriver
from pixelfleet.ledger import open_ledger
from pixelfleet.models import Entry
from pixelfleet.pipeline import Partition, load_pipeline
from pixelfleet.plan import plan, skip_reason
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
    listed = {e.key: e.skip for e in storage.scan()}
    assert list(listed) == ["a.jpg", "in.jpg", "linked", "loop.jpg", "out.jpg", "sub/b.jpg"]
    assert listed["a.jpg"] is None and listed["sub/b.jpg"] is None
    assert listed["out.jpg"] == (
        f"symbolic link to {secret} (not followed: it could point outside the bucket;"
        " put the file itself there to process it)"
    )
    assert listed["linked"] is not None and f"symbolic link to {tmp_path} " in listed["linked"]
    assert listed["loop.jpg"] is not None and listed["in.jpg"] is not None
    for key in ("out.jpg", "in.jpg", "loop.jpg", "linked"):
        for call in (storage.head, storage.read, storage.local_path):
            with pytest.raises(UnsafeKeyError, match=r"symbolic link .*exclude glob"):
                call(key)
    with pytest.raises(UnsafeKeyError, match=f"to {secret}"):
        storage.read("out.jpg")
    with pytest.raises(UnsafeKeyError, match="outside"):
        storage.read("linked/secret.jpg")  # a key through the linked folder


@pytest.mark.parametrize("partition", ["object", "auto"])
def test_a_run_skips_each_symlink_with_its_reason(
    tmp_path: Path, bucket: Path, partition: str
) -> None:
    secret = tmp_path / "secret.jpg"
    shutil.copy(FLOWER, secret)
    (bucket / "sub" / "out.jpg").symlink_to(secret)
    (bucket / "in.jpg").symlink_to("a.jpg")
    pipeline = write_pipeline(tmp_path, bucket, "**/*.jpg")
    Path(pipeline).write_text(
        Path(pipeline).read_text().replace('by = "object"', f'by = "{partition}"')
    )
    runner = CliRunner()
    for attempt in ("first", "rerun"):
        result = runner.invoke(cli, ["run", pipeline])
        assert result.exit_code == 0, (attempt, result.output)  # skipped is not failed
        assert "0 failed" in result.output, result.output
        assert "skipped: 2 objects not read" in result.output
        reasons = [x.strip() for x in result.output.splitlines() if "symbolic link" in x]
        assert reasons == [
            "in.jpg: symbolic link to a.jpg (not followed: it could point outside the bucket;"
            " put the file itself there to process it)",
            f"sub/out.jpg: symbolic link to {secret} (not followed: it could point outside the"
            " bucket; put the file itself there to process it)",
        ]
    assert sorted(p.name for p in (tmp_path / "out").rglob("*.jpg")) == [
        "a.thumb.jpg",
        "b.thumb.jpg",
    ]
    status = runner.invoke(cli, ["status"])
    assert status.exit_code == 0, status.output
    assert "skipped: 2 objects not read" in status.output
    assert f"sub/out.jpg: symbolic link to {secret}" in status.output
    shown = json.loads(runner.invoke(cli, ["status", "--json"]).output)
    assert shown["counts"]["objects_refused"] == 2 and shown["counts"]["objects_failed"] == 0
    assert shown["tasks"]["skipped"] == 2 and shown["failures"] == []
    assert [(s["key"], s["reason"].split(" (")[0]) for s in shown["skipped"]] == [
        ("in.jpg", "symbolic link to a.jpg"),
        ("sub/out.jpg", f"symbolic link to {secret}"),
    ]
    dry = runner.invoke(cli, ["run", pipeline, "--dry-run"])
    assert "2 objects would be skipped unread" in dry.output, dry.output


@pytest.mark.parametrize(
    "partition",
    [
        Partition(by="object"),
        Partition(by="auto", size=4),
        Partition(by="prefix", depth=1),
        Partition(by="count", size=2),
        Partition(by="scene", pattern="{scene}_B{band}.TIF"),
    ],
    ids=lambda p: p.by,
)
def test_planning_puts_each_skipped_entry_in_a_task_of_its_own(partition: Partition) -> None:
    keys = ["a/s1_B1.TIF", "a/s1_B2.TIF", "a/s2_B1.TIF", "b/s3_B1.TIF", "b/s3_B2.TIF"]
    readable = [Entry(k, 10, f"e{i}") for i, k in enumerate(keys)]
    links = [Entry("a/s1_B3.TIF", 9, "l1", skip="link"), Entry("b/z_B1.TIF", 9, "l2", skip="l")]
    mixed = sorted([*readable, *links], key=lambda e: e.key)
    tasks = list(plan(mixed, partition, "s"))
    alone = [t for t in tasks if skip_reason(t) is not None]
    assert [(t.group, t.entries) for t in alone] == [(e.key, (e,)) for e in links]
    assert [t for t in tasks if t not in alone] == list(plan(readable, partition, "s"))


def test_a_fleet_plan_records_a_symlink_as_skipped_not_as_work(tmp_path: Path) -> None:
    bucket = make_fleet_bucket(tmp_path, 3)
    (tmp_path / "src" / "obj-link.txt").symlink_to(tmp_path / "p.toml")
    url = f"sqlite:///{tmp_path / 'l.db'}"
    with open_ledger(url) as ledger:
        run_id = FleetDriver(
            load_pipeline(str(bucket.pipeline)), ledger, url, ExternalLauncher(), "fleet-local",
            follow=False, progress=False,
        ).run().run_id  # fmt: skip
        assert ledger.state_counts(run_id) == {"pending": 3, "skipped": 1}
        (skipped,) = ledger.find_tasks(run_id, ["skipped"])
        assert skipped.group == "obj-link.txt"
        assert skipped.error is not None and skipped.error.startswith("symbolic link to ")
        counts = ledger.get_run(run_id).counts
        assert counts.objects_refused == 1 and counts.tasks_planned == 3


def test_a_fifo_is_refused_without_blocking(tmp_path: Path, bucket: Path) -> None:
    os.mkfifo(bucket / "pipe.jpg")
    storage = open_storage(str(bucket))
    listed = {e.key: e.skip for e in storage.scan()}
    assert listed["pipe.jpg"] == "a named pipe (FIFO), not a regular file (never read)"
    done = threading.Event()

    def read() -> None:
        with pytest.raises(UnsafeKeyError, match=r"named pipe \(FIFO\).*exclude glob"):
            storage.read("pipe.jpg")
        done.set()

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    thread.join(5)
    assert done.is_set(), "reading a FIFO blocked"


def test_listing_source_passes_odd_names_on_for_the_runner_to_report(bucket: Path) -> None:
    with open(os.path.join(os.fsencode(bucket), BAD_NAME), "wb") as f:
        f.write(b"x")
    (bucket / "link.png").symlink_to("/etc/hostname")
    (bucket / "excluded.png").symlink_to("/etc/hostname")
    source = ListingSource(str(bucket), ["**/*.png"], exclude=["excluded.*"])
    listed = [(e.key, e.skip is not None) for e in source.entries()]
    assert listed == [("bad\\xff.png", False), ("link.png", True)]  # the first fails its task


def test_a_bucket_thousands_of_folders_deep_is_listed(tmp_path: Path) -> None:
    bucket = tmp_path / "deep"
    bucket.mkdir()
    make_nested(bucket, ["d"] * 1900, "leaf.jpg", b"x")  # once a RecursionError ended the run
    try:
        (entry,) = open_storage(str(bucket)).scan()
        assert entry.key == "d/" * 1900 + "leaf.jpg" and entry.skip is None
    finally:
        # shutil.rmtree recurses once per level (a RecursionError at 1,900), and pytest's
        # clean-up of old temp folders then failed later tests at random (its unclosed
        # scandir iterator, under filterwarnings = error): rm removes it without recursing.
        subprocess.run(["rm", "-rf", str(bucket)], check=True)


def test_a_folder_whose_path_is_too_long_is_one_skipped_entry(tmp_path: Path) -> None:
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    shutil.copy(FLOWER, bucket / "a.jpg")
    make_nested(bucket, [f"{i:02d}" + "x" * 98 for i in range(60)], "leaf.jpg", b"x")  # > PATH_MAX
    listed = list(ListingSource(str(bucket), ["**/*.jpg"]).entries())  # once an OSError
    folder, good = listed
    assert good.key == "a.jpg" and good.skip is None
    assert folder.key.endswith("x/") and folder.key.count("/") < 60
    assert folder.skip is not None and folder.skip.startswith(
        "folder that cannot be listed (File name too long: its path is longer than this system"
    )
    first = folder.key.split("/")[0]
    assert [e.key for e in ListingSource(str(bucket), exclude=[f"{first}/**"]).entries()] == [
        "a.jpg"
    ]


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
