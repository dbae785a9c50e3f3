"""Millions of small photos (issue 14): the guarantees the fast paths must keep.

Outputs are whole or absent even when the writer is killed mid-write; no write lands
outside the output prefix, through a symbolic link to a folder either; a changed source
is redone and only its batch; provenance survives a copy to S3 and back, and outputs
written with the older one-attribute-per-field provenance stay current; a worker
imports what its steps need and not the command line, the server or the test runner.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

import pixelfleet.storage.local as local_storage
from pixelfleet.errors import UnsafeKeyError
from pixelfleet.executors.local import LocalExecutor
from pixelfleet.ledger import open_ledger
from pixelfleet.models import Entry
from pixelfleet.ops.thumbnail import ThumbnailConfig, ThumbnailOp
from pixelfleet.pipeline import pipeline_from_dict
from pixelfleet.runner import Runner
from pixelfleet.storage import open_storage
from pixelfleet.storage.local import XATTR
from s3_server import S3Env
from test_small_objects_probe import ENVIRONMENT_PROBE, PROBE, PROBED

TESTS = Path(__file__).resolve().parent


def png(shade: int, side: int = 16) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (side, side), (shade, 255 - shade, 128)).save(out, "PNG")
    return out.getvalue()


def make_photos(root: Path, count: int, folders: int = 2) -> list[str]:
    keys = []
    for i in range(count):
        key = f"f{i % folders}/p{i:04d}.png"
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png(i % 250))
        keys.append(key)
    return sorted(keys)


def thumbnails(src: Path, out: Path, **run: object) -> object:
    return pipeline_from_dict(
        {
            "source": {"url": str(src), "include": ["**/*.png"]},
            "output": {"url": str(out)},
            "steps": [{"op": "thumbnail", "size": 8, "key": "{stem}.jpg"}],
            "run": {"executor": "inline", **run},
        }
    )


def has_user_xattrs(folder: Path) -> bool:
    probe = folder / ".xattr-probe"
    probe.write_bytes(b"")
    try:
        os.setxattr(probe, "user.pixelfleet-probe", b"1")
    except OSError:
        return False
    finally:
        probe.unlink()
    return True


# -- whole or nothing -----------------------------------------------------------------------

_WRITER = textwrap.dedent(
    """
    import os, sys, time
    import pixelfleet.storage.local
    from pixelfleet.storage.local import LocalStorage

    pixelfleet.storage.local.ANONYMOUS_WRITES = sys.argv[3] == "anonymous"
    storage = LocalStorage(sys.argv[1])
    size = int(sys.argv[2])
    for i in range(3):  # whole writes, read all along by the test
        storage.write("out/big.bin", bytes([65 + i]) * size, {"version": str(i)})
    print("whole", flush=True)
    real_write = os.write

    def half_then_hang(fd, data):  # the next write stops halfway, to be killed there
        real_write(fd, memoryview(data)[: len(data) // 2])
        print("half", flush=True)
        time.sleep(60)

    os.write = half_then_hang
    storage.write("out/big.bin", b"Z" * size, {"version": "killed"})
    """
)


@pytest.mark.parametrize("how", ["anonymous", "named"])
def test_a_reader_never_sees_a_partial_output_when_the_writer_is_killed(
    tmp_path: Path, how: str
) -> None:
    """A writer killed (SIGKILL) halfway through a write leaves the previous whole object;
    readers reading all along see only whole objects. Written through a file without a
    name (``O_TMPFILE``, where the system has it), nothing else is left; through a named
    temp file, it is never listed and ``remove_partial`` takes it away."""
    if how == "anonymous" and not local_storage.ANONYMOUS_WRITES:
        pytest.skip("no O_TMPFILE here")
    size = 4 * 1024 * 1024
    storage = open_storage(str(tmp_path))
    bad: list[str] = []
    seen: set[bytes] = set()
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                data = storage.read("out/big.bin")
            except FileNotFoundError:
                continue  # not written yet
            seen.add(data[:1])
            if len(data) != size or data.count(data[:1]) != size:
                bad.append(f"{len(data)} bytes, {len(set(data))} different")

    thread = threading.Thread(target=reader)
    thread.start()
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(tmp_path), str(size), how],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline() == "whole\n"
        assert writer.stdout.readline() == "half\n"
        time.sleep(0.2)  # readers keep reading while the write hangs halfway
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
    finally:
        stop.set()
        thread.join()
        if writer.poll() is None:
            writer.kill()
            writer.wait()
        if writer.stdout is not None:
            writer.stdout.close()
    assert not bad, bad[:3]
    assert seen and seen <= {b"A", b"B", b"C"}
    head = storage.head("out/big.bin")
    assert head is not None and head.size == size and head.metadata["version"] == "2"
    assert storage.read("out/big.bin") == b"C" * size
    assert [e.key for e in storage.scan()] == ["out/big.bin"]
    left = [p for p in (tmp_path / "out").iterdir() if p.name != "big.bin"]
    if how == "anonymous":
        assert left == [] and storage.remove_partial(["out/big.bin"]) == 0
    else:
        (temp,) = left
        assert ".pixelfleet-tmp-" in temp.name and temp.stat().st_size == size // 2
        assert storage.remove_partial(["out/big.bin"]) == 1
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["big.bin"]


def test_anonymous_writes_replace_create_and_keep_the_umask(tmp_path: Path) -> None:
    """Writes through a file without a name: a new object, one replaced (through a hidden
    temp name, renamed), a new folder; modes follow the umask; no temp file is left."""
    if not local_storage.ANONYMOUS_WRITES:
        pytest.skip("no O_TMPFILE here")
    storage = open_storage(str(tmp_path))
    old = os.umask(0o027)
    try:
        first = storage.write("new/a.jpg", b"one", {"v": "1"})
        second = storage.write("new/a.jpg", b"second", {"v": "2"})
    finally:
        os.umask(old)
    head = storage.head("new/a.jpg")
    assert head is not None and (head.size, head.etag, head.metadata) == (
        6,
        second.etag,
        {"v": "2"},
    )
    assert first.etag != second.etag and storage.read("new/a.jpg") == b"second"
    assert [p.name for p in (tmp_path / "new").iterdir()] == ["a.jpg"]
    assert (tmp_path / "new" / "a.jpg").stat().st_mode & 0o777 == 0o640
    assert local_storage.ANONYMOUS_WRITES  # still on: nothing refused


def test_a_system_that_cannot_link_anonymous_files_writes_through_named_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not local_storage.ANONYMOUS_WRITES:
        pytest.skip("no O_TMPFILE here")
    monkeypatch.setattr(local_storage, "ANONYMOUS_WRITES", True)
    real_link = os.link

    def no_proc_link(src: str, dst: str, **kwargs: object) -> None:
        if kwargs.get("src_dir_fd") is not None:
            raise PermissionError(1, "Operation not permitted")
        real_link(src, dst, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "link", no_proc_link)
    storage = open_storage(str(tmp_path))
    storage.write("d/a.jpg", b"whole", {"v": "1"})
    assert not local_storage.ANONYMOUS_WRITES  # off for the rest of the process
    storage.write("d/b.jpg", b"whole too")
    assert storage.read("d/a.jpg") == b"whole" and storage.read("d/b.jpg") == b"whole too"
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["a.jpg", "b.jpg"]


# -- never outside the prefix ---------------------------------------------------------------


def test_no_output_lands_outside_the_prefix_through_a_symlinked_folder(tmp_path: Path) -> None:
    src, out, outside = tmp_path / "src", tmp_path / "out", tmp_path / "outside"
    make_photos(src, 6, folders=2)
    out.mkdir()
    outside.mkdir()
    (out / "f1").symlink_to(outside, target_is_directory=True)
    pipeline = thumbnails(src, out)
    with open_ledger(f"sqlite:///{tmp_path / 'l.db'}") as ledger:
        summary = Runner(pipeline, ledger).run()
    assert list(outside.iterdir()) == []
    assert sorted(p.name for p in (out / "f0").iterdir()) == ["p0000.jpg", "p0002.jpg", "p0004.jpg"]
    assert summary.counts.objects_written == 3
    assert summary.counts.objects_failed == 3
    assert {f.error_type for f in summary.failures} == {"UnsafeKeyError"}


def test_a_folder_swapped_for_a_link_after_its_check_is_refused(tmp_path: Path) -> None:
    """The folder check is made once per folder, then confirmed per key: a folder that
    becomes a link to elsewhere after many writes is caught at the next one."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    storage = open_storage(str(root))
    for i in range(3):
        storage.write(f"a/{i}.jpg", b"x")
    assert storage.read("a/1.jpg") == b"x"
    (root / "a").rename(tmp_path / "old-a")
    (root / "a").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafeKeyError, match="outside"):
        storage.write("a/3.jpg", b"x")
    with pytest.raises(UnsafeKeyError, match="outside"):
        storage.read("a/1.jpg")
    with pytest.raises(UnsafeKeyError, match="outside"):
        storage.head("a/1.jpg")
    assert list(outside.iterdir()) == []


# -- a changed source is redone ------------------------------------------------------------


def test_a_changed_source_is_redone_and_only_its_batch(tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    keys = make_photos(src, 60, folders=3)
    pipeline = thumbnails(src, out)
    assert pipeline.source.partition.by == "auto"  # the default
    with open_ledger(f"sqlite:///{tmp_path / 'l.db'}") as ledger:
        first = Runner(pipeline, ledger).run()
        assert first.counts.objects_written == 60
        tasks = first.counts.tasks_done
        assert 1 < tasks < 60  # batched
        changed = keys[17]
        (src / changed).write_bytes(png(7, side=20))
        before = (out / changed.replace(".png", ".jpg")).read_bytes()
        second = Runner(pipeline, ledger).run()
    counts = second.counts
    assert counts.tasks_done == 1 and counts.tasks_skipped == tasks - 1
    # The changed photo is made again; its batch's other photos are found current; the
    # other batches are skipped as done without being looked at.
    assert counts.objects_written == 1
    assert counts.objects_written + counts.objects_current + counts.objects_skipped == 60
    after = (out / changed.replace(".png", ".jpg")).read_bytes()
    assert after != before
    with Image.open(io.BytesIO(after)) as image:
        assert image.size == (8, 8)


# -- is it current? one question per task --------------------------------------------------


def test_objects_sharing_an_output_key_in_one_task_end_with_the_last_ones(tmp_path: Path) -> None:
    """The worker asks about a task's outputs once, before rendering; an output written by
    an object of the task since is asked about again, so the object after it that shares
    its key (``a.gif`` and ``a.png`` -> ``a.jpg``) is not fooled by what was there before."""
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    (src / "a.png").write_bytes(png(10))
    Image.new("RGB", (16, 16), (200, 0, 0)).save(src / "a.gif")
    pipeline = pipeline_from_dict(
        {
            "source": {"url": str(src)},
            "output": {"url": str(out)},
            "steps": [{"op": "thumbnail", "size": 8, "key": "{stem}.jpg"}],
            "run": {"executor": "inline"},
        }
    )
    last = open_storage(str(src)).head("a.png")
    assert last is not None
    for _ in range(2):  # the second time with a new ledger: outputs there, none done
        with open_ledger("memory://") as ledger:
            summary = Runner(pipeline, ledger).run()
        assert summary.counts.tasks_done == 1 and summary.counts.objects_written == 2
        made = open_storage(str(out)).head("a.jpg")
        assert made is not None and made.metadata["source-etag"] == last.etag


def _count_s3_requests(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    from pixelfleet.storage.s3 import S3Storage
    from pixelfleet.storage.s3listing import BucketLister

    calls = {"head": 0, "list": 0}
    head, listing = S3Storage.head, BucketLister.list

    def counted_head(self: S3Storage, key: str) -> Entry | None:
        calls["head"] += 1
        return head(self, key)

    def counted_list(self: BucketLister, *args: str) -> Iterator[tuple[str, int, str, float]]:
        calls["list"] += 1
        return listing(self, *args)

    monkeypatch.setattr(S3Storage, "head", counted_head)
    monkeypatch.setattr(BucketLister, "list", counted_list)
    return calls


@pytest.mark.s3
def test_outputs_on_s3_are_asked_about_with_a_listing_per_folder(
    tmp_path: Path, s3_env: S3Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first run sends no HEAD for outputs that are not there yet (a listing of each
    task's folders says so); a rerun that lost its ledger asks each output found for its
    metadata, finds it current and rewrites nothing; a changed source is redone."""
    src = tmp_path / "src"
    keys = make_photos(src, 24, folders=2)
    pipeline = pipeline_from_dict(
        {
            "source": {
                "url": str(src),
                "include": ["**/*.png"],
                "partition": {"by": "count", "size": 6},
            },
            "output": {"url": f"{s3_env.url}/thumbs"},
            "steps": [{"op": "thumbnail", "size": 8, "key": "{stem}.jpg"}],
            "run": {"executor": "inline"},
        }
    )
    calls = _count_s3_requests(monkeypatch)
    with open_ledger("memory://") as ledger:
        first = Runner(pipeline, ledger).run()
    assert first.counts.objects_written == 24
    assert first.counts.tasks_done == 4
    assert calls == {"head": 0, "list": 4}  # each task is in one folder

    calls.update(head=0, list=0)
    (src / keys[5]).write_bytes(png(99, side=20))
    with open_ledger("memory://") as ledger:
        again = Runner(pipeline, ledger).run()
    assert again.counts.objects_written == 1 and again.counts.objects_current == 23
    assert calls["head"] == 24  # the metadata of each output, which a listing lacks


@pytest.mark.s3
def test_existing_on_s3_asks_one_by_one_what_a_listing_did_not_settle(
    s3_env: S3Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keys a listing did not reach within its pages (many other objects between them),
    and every key once listing is refused, are asked about with a HEAD each."""
    from pixelfleet.errors import StorageError
    from pixelfleet.storage.s3 import S3Storage
    from pixelfleet.storage.s3listing import BucketLister

    storage = open_storage(f"{s3_env.url}/many")
    assert isinstance(storage, S3Storage)
    for i in range(0, 40, 2):
        storage.write(f"d/{i:03d}.jpg", b"x", {"n": str(i)})
    asked = [f"d/{i:03d}.jpg" for i in range(0, 40, 5)]  # every other one exists
    expected = {k for k in asked if int(k[2:5]) % 2 == 0}
    calls = _count_s3_requests(monkeypatch)
    assert storage.existing(asked).keys() == expected
    assert calls == {"head": len(expected), "list": 1}

    storage._lister.page_size = 2  # a listing stops after 4 keys: the rest one by one
    calls.update(head=0, list=0)
    found = storage.existing(asked)
    assert found.keys() == expected
    assert {k: e.metadata["n"] for k, e in found.items()} == {k: str(int(k[2:5])) for k in expected}
    assert calls["list"] == 1 and calls["head"] > len(expected)

    def refused(self: BucketLister, *args: str) -> Iterator[tuple[str, int, str, float]]:
        raise StorageError("cannot list: HTTP 403 AccessDenied")

    monkeypatch.setattr(BucketLister, "list", refused)
    assert storage.existing(asked).keys() == expected
    assert storage._list_refused


# -- provenance -----------------------------------------------------------------------------


def _thumbnail_op() -> ThumbnailOp:
    return ThumbnailOp(ThumbnailConfig(op="thumbnail", size=8, key="{stem}.jpg"))


@pytest.mark.s3
def test_provenance_survives_a_copy_to_and_from_s3(tmp_path: Path, s3_env: S3Env) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    (key,) = make_photos(src, 1, folders=1)
    pipeline = thumbnails(src, out)
    with open_ledger("memory://") as ledger:
        Runner(pipeline, ledger).run()
    op = _thumbnail_op()
    entry = open_storage(str(src)).head(key)
    assert entry is not None
    (out_key,) = op.output_keys(entry)
    local = open_storage(str(out))
    written = local.head(out_key)
    assert written is not None and op.is_current(written, entry)

    bucket = open_storage(f"{s3_env.url}/copies")
    bucket.write(out_key, local.read(out_key), written.metadata)
    in_s3 = bucket.head(out_key)
    assert in_s3 is not None
    assert op.is_current(in_s3, entry)
    assert op.current_record(in_s3) == op.current_record(written)

    back = open_storage(str(tmp_path / "back"))
    back.write(out_key, bucket.read(out_key), in_s3.metadata)
    again = back.head(out_key)
    assert again is not None and op.is_current(again, entry)
    assert op.current_record(again) == op.current_record(written)
    # A newer source is not current, wherever the output went.
    newer = Entry(entry.key, entry.size, entry.etag + "-new")
    assert not op.is_current(in_s3, newer) and not op.is_current(again, newer)


def test_outputs_with_the_older_provenance_stay_current(tmp_path: Path) -> None:
    """Outputs written before provenance became one attribute (``user.pixelfleet.<name>``
    per field) are read as they are: a rerun with a lost ledger rewrites none of them."""
    if not has_user_xattrs(tmp_path):
        pytest.skip("this filesystem has no user extended attributes")
    src, out = tmp_path / "src", tmp_path / "out"
    make_photos(src, 4, folders=1)
    pipeline = thumbnails(src, out)
    with open_ledger(f"sqlite:///{tmp_path / 'a.db'}") as ledger:
        Runner(pipeline, ledger).run()
    outputs = sorted((out / "f0").iterdir())
    for path in outputs:  # rewrite each output's provenance in the older form
        fields = json.loads(os.getxattr(path, XATTR))
        os.removexattr(path, XATTR)
        for name, value in fields.items():
            os.setxattr(path, f"user.pixelfleet.{name}", value.encode())
    mtimes = [p.stat().st_mtime_ns for p in outputs]
    with open_ledger(f"sqlite:///{tmp_path / 'b.db'}") as ledger:
        again = Runner(pipeline, ledger).run()
    assert again.counts.objects_current == 4 and again.counts.objects_written == 0
    assert [p.stat().st_mtime_ns for p in outputs] == mtimes


# -- what a worker imports ------------------------------------------------------------------

#: Never needed to render a thumbnail: the command line, the server, the catalog,
#: progress bars, the test runner.
NOT_FOR_THUMBNAILS = (
    "click",
    "pixelfleet.cli",
    "pixelfleet.server",
    "pixelfleet.catalog",
    "pixelfleet.fleet",
    "fastapi",
    "starlette",
    "uvicorn",
    "jinja2",
    "pystac",
    "tqdm",
    "pytest",
    "_pytest",
)


def _worker_modules(out: Path) -> set[str]:
    (found,) = list(out.rglob("*.modules.json"))
    return set(json.loads(found.read_text()))


def _assert_lean(modules: set[str]) -> None:
    assert "pixelfleet.ops.thumbnail" in modules and "PIL.PngImagePlugin" in modules
    unwanted = sorted(
        m for m in modules if any(m == n or m.startswith(n + ".") for n in NOT_FOR_THUMBNAILS)
    )
    assert not unwanted, f"a thumbnail worker imported {unwanted[:10]}"


def _assert_no_gdal(modules: set[str]) -> None:
    """A worker that made only photo thumbnails never loaded rasterio (nor GDAL)."""
    gdal = sorted(m for m in modules if m.split(".")[0] in ("rasterio", "osgeo", "affine"))
    assert not gdal, f"a photo-only worker imported {gdal[:10]}"


def test_a_worker_started_by_the_command_line_does_not_import_it(tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    make_photos(src, 1, folders=1)
    (tmp_path / "p.toml").write_text(
        textwrap.dedent(
            f"""
            [source]
            url = "{src}"
            [output]
            url = "{out}"
            [[steps]]
            op = "thumbnail"
            size = 8
            [[steps]]
            op = "{PROBE}"
            [run]
            executor = "local"
            workers = 1
            """
        )
    )
    cli = Path(sys.executable).parent / "pixelfleet"
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    done = subprocess.run(
        [str(cli), "run", str(tmp_path / "p.toml"), "--no-progress"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    _assert_lean(_worker_modules(out))
    _assert_no_gdal(_worker_modules(out))


def test_a_worker_started_under_pytest_does_not_import_pytest(tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    make_photos(src, 1, folders=1)
    pipeline = pipeline_from_dict(
        {
            "source": {"url": str(src)},
            "output": {"url": str(out)},
            "steps": [{"op": "thumbnail", "size": 8}, {"op": PROBE}],
            "run": {"executor": "local", "workers": 1},
        }
    )
    with open_ledger("memory://") as ledger:
        assert Runner(pipeline, ledger).run().counts.objects_written == 1
    _assert_lean(_worker_modules(out))
    _assert_no_gdal(_worker_modules(out))


def test_a_worker_sees_the_environment_the_parent_has_when_it_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers forked from the fork server (started by the first run, or earlier) get
    the parent's environment as it is when they start, not the server's."""
    src = tmp_path / "src"
    make_photos(src, 1, folders=1)
    monkeypatch.delenv(PROBED, raising=False)
    for value in ("", "first", "second"):
        if value:
            monkeypatch.setenv(PROBED, value)
        out = tmp_path / f"out-{value or 'unset'}"
        pipeline = pipeline_from_dict(
            {
                "source": {"url": str(src)},
                "output": {"url": str(out)},
                "steps": [{"op": ENVIRONMENT_PROBE}],
                "run": {"executor": "local", "workers": 1},
            }
        )
        with open_ledger("memory://") as ledger:
            assert Runner(pipeline, ledger).run().counts.objects_written == 1
        (found,) = list(out.rglob("*.env.txt"))
        assert found.read_text() == value


def test_workers_are_spawned_when_the_fork_server_preloads_something_else(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The fork server is one per process: one started by the blocks pool (rasterio
    preloaded) is not used, so a photo worker never carries GDAL."""
    from multiprocessing import forkserver

    from pixelfleet.executors.local import PRELOAD, start_context

    if "forkserver" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork server on this system: workers are always spawned")
    server = forkserver._forkserver  # type: ignore[attr-defined]
    monkeypatch.setattr(server, "_forkserver_pid", server._forkserver_pid or 2**22)
    monkeypatch.setattr(server, "_preload_modules", ["pixelfleet.blocks.preload"])
    assert start_context().get_start_method() == "spawn"
    monkeypatch.setattr(server, "_preload_modules", list(PRELOAD))
    assert start_context().get_start_method() == "forkserver"


def test_a_rerun_with_every_task_done_starts_no_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    make_photos(src, 30, folders=3)
    pipeline = thumbnails(src, out, executor="local", workers=1)
    with open_ledger(f"sqlite:///{tmp_path / 'l.db'}") as ledger:
        Runner(pipeline, ledger).run()

        def no_start(*args: object) -> None:
            raise AssertionError("a worker was started for a run with nothing to do")

        monkeypatch.setattr(LocalExecutor, "start", no_start)
        again = Runner(pipeline, ledger).run()
    assert again.state == "done"
    assert again.counts.objects_skipped == 30 and again.counts.tasks_done == 0
