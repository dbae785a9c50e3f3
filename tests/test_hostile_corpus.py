"""A hostile bucket, generated here (nothing of it is stored), run by the real command
line with the local executor and two workers (issue 12).

It holds decompression bombs of every sample type, images whose headers claim absurd
sizes, PNG text-chunk bombs, VRTs pointing at local files outside the bucket and at
URLs, empty and text files named as images, folders 60 levels deep and one whose path
is longer than the system allows, odd names, symbolic links out of the bucket (to a file
and to a folder), a FIFO, and good files. Each hostile file must be exactly one failure
or one skip, with a message naming it and saying why; no worker may die or go past the
memory cap (each one's peak resident size measured); the good files, odd but valid
names included, are all processed; nothing outside the output folder is written, no
file outside the bucket is read and no URL is fetched.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner

from bomb_helpers import (
    DTYPE_BOMBS,
    ISSUE_BOMBS,
    itxt,
    make_nested,
    text,
    vrt_to,
    write_bmp_header,
    write_gif_header,
    write_jpeg_header,
    write_png,
    write_tiled_giant,
    write_zero_tiff,
    ztxt,
)
from memory_helpers import PeakRss, measured
from pixelfleet.cli.display import printable
from pixelfleet.cli.main import cli
from pixelfleet.ledger import open_ledger

DATA = Path(__file__).resolve().parent / "data"
CAP = 1024**3  # the default memory cap
MIB = 1024**2


@dataclass(frozen=True)
class Outcome:
    """What must become of one object: ``done``, or ``failed`` with an error type, or
    ``skipped``; ``why`` is a part of the message."""

    state: str
    error_type: str = ""
    why: str = ""


DONE = Outcome("done")
TOO_LARGE = Outcome("failed", "ImageTooLargeError", "")
VRT = Outcome("failed", "UnsupportedFormatError", "is a GDAL VRT (XML) file")
LINK = Outcome("skipped", why="symbolic link to ")


class Trap:
    """A TCP listener on 127.0.0.1 that counts the connections made to it."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def trap() -> Iterator[Trap]:
    listener = Trap()
    try:
        yield listener
    finally:
        listener.close()


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def small_geotiff(path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 255, (3, 120, 160), dtype=np.uint8)
    profile = {"driver": "GTiff", "width": 160, "height": 120, "count": 3, "dtype": "uint8"}
    with rasterio.open(path, "w", transform=Affine(1, 0, 0, 0, -1, 120), **profile) as dst:
        dst.write(rgb)


def build_corpus(root: Path, outside: Path, trap: Trap) -> dict[str, Outcome]:
    """Write the hostile bucket under ``root``; what must become of each key."""
    expect: dict[str, Outcome] = {}
    flower = (DATA / "flower.jpg").read_bytes()

    def put(key: str, outcome: Outcome, data: bytes | str | None = None) -> Path:
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            path.write_text(data)
        elif data is not None:
            path.write_bytes(data)
        expect[key] = outcome
        return path

    # Good files, and valid images under odd but legal names.
    put("good/flower.jpg", DONE, flower)
    put("good/chelsea.png", DONE, (DATA / "chelsea.png").read_bytes())
    put("good/naip.tif", DONE, (DATA / "naip_m_3607824_se_17_1_20160620_sub.tif").read_bytes())
    small_geotiff(put("good/small.tif", DONE))
    for name in ("sp ace.jpg", "per%cent.jpg", "plus+sign.jpg", "hash#tag.jpg", "what?.jpg"):
        put(f"odd/{name}", DONE, flower)
    deep = make_nested(root, [f"d{i:02d}" for i in range(60)], "deep.jpg", flower)
    expect[deep] = DONE

    # Names no key may hold: control characters, bytes that are not UTF-8.
    control = Outcome("failed", "UnsafeKeyError", "contains a control character")
    put("odd/new\nline.jpg", control, flower)
    put("odd/tab\tbed.jpg", control, flower)
    with open(os.path.join(os.fsencode(root / "odd"), b"bad\xff.jpg"), "wb") as f:
        f.write(flower)
    expect["odd/bad\\xff.jpg"] = Outcome("failed", "UnsafeKeyError", "is not valid UTF-8")
    # A folder whose path is longer than the system allows: one skip, not a crashed listing.
    names = [f"{i:02d}" + "x" * 98 for i in range(45)]
    make_nested(root, names, "lost.jpg", flower)
    listed = "/".join(names[:40]) + "/"  # the first folder whose path is too long
    expect[listed] = Outcome("skipped", why="folder that cannot be listed (File name too long")

    # Decompression bombs of every sample type, and the issue's own.
    for name, width, height, bands, dtype in [*DTYPE_BOMBS, *ISSUE_BOMBS[::2]]:
        write_zero_tiff(put(f"bombs/{name}", TOO_LARGE), width, height, bands, dtype)
    write_png(put("bombs/zeros-16000-rgba.png", TOO_LARGE), 16000, 16000, colour=6)  # 1 GiB
    # Dimension bombs: headers that claim billions of pixels.
    write_tiled_giant(put("bombs/giant-200000.tif", TOO_LARGE), 200_000)
    stub = ztxt(b"x", 0)[8:-4]  # a tiny zlib stream as the only pixel data
    write_png(put("bombs/header-100000.png", TOO_LARGE), 100_000, 100_000, idat=stub)
    write_jpeg_header(put("bombs/header-65000.jpg", TOO_LARGE), 65_000, 65_000)
    write_gif_header(put("bombs/screen-65535.gif", TOO_LARGE), 65_535, 65_535)
    write_bmp_header(put("bombs/header-100000.bmp", TOO_LARGE), 100_000, 100_000)

    # PNG text-chunk bombs: one huge zTXt or iTXt, many zTXt, many tEXt.
    chunk_bomb = Outcome("failed", "CorruptInputError", "metadata chunk decompresses to more")
    write_png(put("chunks/ztxt-1gib.png", chunk_bomb), 8, 8, before=[ztxt(b"Comment", 1 << 30)])
    write_png(put("chunks/itxt-1gib.png", chunk_bomb), 8, 8, before=[itxt(b"XML", 1 << 30)])
    many_z = [ztxt(b"k%d" % i, 1_000_000) for i in range(80)]  # 80 MB of text in 80 KB
    write_png(put("chunks/ztxt-80x1mb.png", chunk_bomb), 8, 8, before=many_z)
    many_t = [text(b"k%d" % i, 1_000_000) for i in range(70)]  # 70 MB of text
    write_png(put("chunks/text-70x1mb.png", chunk_bomb), 8, 8, before=many_t)

    # VRTs in disguise, pointing out of the bucket and at URLs: refused unread.
    small_geotiff(outside / "outside.tif")
    put("vrt/local-absolute.tif", VRT, vrt_to(str(outside / "outside.tif")))
    put("vrt/local-relative.vrt", VRT, vrt_to("../../outside/outside.tif", relative=True))
    put("vrt/http.tif", VRT, vrt_to(f"http://127.0.0.1:{trap.port}/x.tif"))
    put("vrt/closed-port.tif", VRT, vrt_to(f"http://127.0.0.1:{closed_port()}/x.tif"))
    put("vrt/vsicurl.tif", VRT, vrt_to(f"/vsicurl/http://127.0.0.1:{trap.port}/x.tif"))
    put("vrt/vsis3.vrt", VRT, vrt_to("/vsis3/bucket/x.tif"))  # GDAL's S3 endpoint: the trap

    # Empty files and text named as images.
    for ext in ("tif", "jpg", "png"):
        put(
            f"junk/empty.{ext}", Outcome("failed", "UnsupportedFormatError", "an empty object"), b""
        )
        words = f"hello, I am not a .{ext}\n"
        put(
            f"junk/text.{ext}", Outcome("failed", "UnsupportedFormatError", "unknown format"), words
        )

    # Symbolic links out of the bucket (to a file and to a folder), and a FIFO.
    shutil.copy(DATA / "flower.jpg", outside / "secret.jpg")
    (outside / "folder").mkdir()
    shutil.copy(DATA / "flower.jpg", outside / "folder" / "inner.jpg")
    put("links/secret.jpg", LINK).symlink_to(outside / "secret.jpg")
    put("links/folder", LINK).symlink_to(outside / "folder", target_is_directory=True)
    os.mkfifo(put("links/pipe.tif", Outcome("skipped", why="a named pipe (FIFO)")))
    return expect


def snapshot(root: Path, skip: set[Path], unread: Path) -> dict[str, tuple[int, ...]]:
    """Every file below ``root`` (outside ``skip``) with its size and mtime, and for those
    below ``unread`` its access time too."""
    found = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if Path(folder, d) not in skip]
        for name in files:
            path = Path(folder, name)
            if path not in skip:
                st = path.lstat()
                found[str(path)] = (st.st_size, st.st_mtime_ns)
                if path.is_relative_to(unread):
                    found[str(path)] += (st.st_atime_ns,)
    return found


def test_a_hostile_bucket_fails_or_skips_each_bad_file_alone(tmp_path: Path, trap: Trap) -> None:
    bucket, outside, out = tmp_path / "bucket", tmp_path / "outside", tmp_path / "out"
    bucket.mkdir()
    outside.mkdir()
    began = time.monotonic()
    expect = build_corpus(bucket, outside, trap)
    print(f"corpus built in {time.monotonic() - began:.1f} s")
    # Outside the bucket, an access time older than the file: reading it would move it on.
    for path in outside.rglob("*"):
        if path.is_file():
            st = path.stat()
            os.utime(path, ns=(st.st_mtime_ns - 10**9, st.st_mtime_ns))
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    pipeline = tmp_path / "hostile.toml"
    pipeline.write_text(
        f"""
[source]
url = "{bucket}"
include = ["**/*"]
partition = {{ by = "object" }}
[output]
url = "{out}"
[[steps]]
op = "thumbnail"
size = 64
key = "{{stem}}.thumb.png"
[run]
executor = "local"
workers = 2
threads = 2
attempts = 2
[catalog]
url = "sqlite:///{tmp_path / "catalog.db"}"
collection = "hostile"
"""
    )
    written_by_run = {out, tmp_path / "ledger.db", tmp_path / "catalog.db"}
    peak = tmp_path / "peak"
    written_by_run |= {tmp_path / "stdout", tmp_path / "stderr", peak}
    before = snapshot(tmp_path, written_by_run, outside)
    env = {
        **os.environ,
        "PIXELFLEET_LEDGER": ledger_url,
        # Were GDAL to follow /vsis3/, it would knock at the trap.
        "AWS_S3_ENDPOINT": f"127.0.0.1:{trap.port}",
        "AWS_HTTPS": "NO",
        "AWS_VIRTUAL_HOSTING": "FALSE",
        "AWS_NO_SIGN_REQUEST": "YES",
    }
    command = [sys.executable, "-m", "pixelfleet.cli.main", "run", str(pipeline), "--no-progress"]
    started = time.monotonic()
    with (
        PeakRss() as rss,
        open(tmp_path / "stdout", "w") as stdout,
        open(tmp_path / "stderr", "w") as stderr,
    ):
        # The kernel's figure for the runner and its workers, from a small launcher.
        run = subprocess.Popen(measured(command, peak), env=env, stdout=stdout, stderr=stderr)
        code = run.wait()
        tree_peak = int(peak.read_text())
    took = time.monotonic() - started
    output = (tmp_path / "stdout").read_text()
    assert code == 1, output + (tmp_path / "stderr").read_text()  # 1: some objects failed

    # Each process's peak, by pid: the runner, its two workers, multiprocessing's helpers.
    workers = {p: peak for p, peak in rss.peaks.items() if p in rss.workers}
    shown = ", ".join(f"{rss.peaks[p] / MIB:.0f} MiB" for p in sorted(workers))
    print(
        f"{len(expect)} objects in {took:.1f} s; peak RSS per worker: {shown};"
        f" largest process of the run (wait4): {tree_peak / MIB:.0f} MiB"
    )
    assert len(workers) == 2, rss.names  # no worker died and was replaced
    assert all(peak < CAP for peak in workers.values())
    assert tree_peak < CAP
    assert took < 60

    with open_ledger(ledger_url) as ledger:
        record = ledger.get_run()
        tasks = ledger.find_tasks(record.run_id)
    counts = record.counts
    by_key: dict[str, list[tuple[str, str, str]]] = {}
    for task in tasks:
        rows = task.failures or [{"key": task.group, "error_type": "", "error": task.error or ""}]
        for row in rows:
            by_key.setdefault(row["key"], []).append((task.state, row["error_type"], row["error"]))
    assert sorted(by_key) == sorted(expect)
    for key, outcome in expect.items():
        (state, error_type, message), *more = by_key[key]
        assert not more, (key, by_key[key])  # exactly one outcome per object
        assert state == outcome.state, (key, state, message)
        if outcome.state == "done":
            continue
        assert error_type == outcome.error_type, (key, error_type, message)
        assert outcome.why in message, (key, message)
        if outcome.state == "failed":  # the message names the file (skips are listed by key)
            assert printable(key.rsplit("/", 1)[-1]) in printable(message), (key, message)
    failed = [k for k, o in expect.items() if o.state == "failed"]
    skipped = [k for k, o in expect.items() if o.state == "skipped"]
    good = [k for k, o in expect.items() if o.state == "done"]
    assert counts.objects_failed == len(failed) and counts.objects_refused == len(skipped)
    assert counts.objects_written == len(good) and counts.items_indexed == len(good)
    assert counts.retries == 0  # every failure is permanent and clear: no worker died

    # Every good file has its thumbnail, mirrored under the output; nothing else is there.
    made = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert made == {k.rsplit(".", 1)[0] + ".thumb.png" for k in good}
    # Nothing outside the output was written, and nothing outside the bucket was read.
    assert snapshot(tmp_path, written_by_run, outside) == before
    assert trap.connections == 0  # no URL an input named was fetched

    # The summary and `status` report the skips with their reasons, one line each.
    assert f"skipped: {len(skipped)} objects not read" in output
    assert "links/secret.jpg: symbolic link to" in output and "\n\t" not in output
    status = CliRunner().invoke(cli, ["status", "--ledger", ledger_url, "--limit", "100"])
    assert status.exit_code == 0, status.output
    assert "links/folder: symbolic link to" in status.output
    assert "odd/new\\nline.jpg: UnsafeKeyError" in status.output
    as_json = json.loads(
        CliRunner().invoke(cli, ["status", "--ledger", ledger_url, "--json"]).output
    )
    assert {s["key"] for s in as_json["skipped"]} == set(skipped)
