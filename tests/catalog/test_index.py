"""``pixelfleet index`` checks inputs exactly as ``pixelfleet run`` does, and decodes nothing."""

from __future__ import annotations

import io
import json
import shutil
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from PIL import Image, ImageFile, PngImagePlugin

from pixelfleet.catalog import open_catalog
from pixelfleet.catalog.facts import header_exif, read_facts
from pixelfleet.cli.main import cli
from pixelfleet.errors import ImageTooLargeError
from pixelfleet.ledger import open_ledger
from pixelfleet.models import Task
from pixelfleet.pipeline import load_pipeline
from pixelfleet.reindex import reindex
from pixelfleet.runner import Runner
from pixelfleet.settings import Settings
from pixelfleet.storage import open_storage
from pixelfleet.worker import run_task

DATA = Path(__file__).resolve().parents[1] / "data"
BAD = ["empty.jpg", "huge.png", "mosaic.tif", "notes.png"]


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR declaring ``width`` x ``height`` RGB, with a tiny IDAT:
    the file is a few dozen bytes, its pixels would take gigabytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + png_chunk(b"IEND", b"")
    )


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """The sizes of every image Pillow decodes from now on (``ImageFile.load``)."""
    sizes: list[tuple[int, int]] = []
    load = ImageFile.ImageFile.load

    def spy(self: ImageFile.ImageFile) -> Any:
        sizes.append(self.size)
        return load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    return sizes


@pytest.fixture
def bucket(tmp_path: Path) -> Path:
    """A source folder with four objects ``run`` refuses and one good photo."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "huge.png").write_bytes(png_header_only(25_000, 25_000))
    (src / "mosaic.tif").write_text(
        '<VRTDataset rasterXSize="10" rasterYSize="10">\n'
        '  <VRTRasterBand dataType="Byte" band="1"><SimpleSource>'
        "<SourceFilename>/etc/passwd</SourceFilename></SimpleSource></VRTRasterBand>\n"
        "</VRTDataset>\n"
    )
    (src / "empty.jpg").write_bytes(b"")
    (src / "notes.png").write_text("shopping list: milk, eggs\n")
    shutil.copy(DATA / "flower.jpg", src / "flower.jpg")
    return src


def pipeline_file(tmp_path: Path, src: Path) -> Path:
    path = tmp_path / "p.toml"
    path.write_text(
        f'[source]\nurl = "{src}"\n'
        f'[output]\nurl = "{tmp_path / "out"}"\n'
        '[[steps]]\nop = "thumbnail"\nsize = 32\n'
        '[run]\nexecutor = "inline"\n'
        f'[catalog]\nurl = "sqlite:///{tmp_path / "cat.db"}"\ncollection = "photos"\n'
    )
    return path


def run_failures(toml: Path, ledger_path: Path) -> dict[str, str]:
    """``key: "Type: message"`` of every object ``pixelfleet run`` refused."""
    with open_ledger(f"sqlite:///{ledger_path}") as ledger:
        summary = Runner(load_pipeline(str(toml)), ledger, progress=False).run()
    return {
        row["key"]: f"{row['error_type']}: {row['error']}"
        for task in summary.failures
        for row in task.failures
    }


def test_index_refuses_what_run_refuses_with_the_same_messages(
    bucket: Path, tmp_path: Path, decoded: list[tuple[int, int]]
) -> None:
    toml = pipeline_file(tmp_path, bucket)
    summary = reindex(load_pipeline(str(toml)), threads=2)
    failed = dict(summary.failed)
    assert sorted(failed) == BAD
    for key, reason in failed.items():
        assert "\n" not in reason and str(bucket / key) in reason, reason
    assert failed["huge.png"].startswith("ImageTooLargeError: ")
    assert "25000x25000" in failed["huge.png"]
    assert "a GDAL VRT (XML) file" in failed["mosaic.tif"]
    assert "an empty object" in failed["empty.jpg"]
    assert "an unknown format" in failed["notes.png"]
    for key in ("mosaic.tif", "empty.jpg", "notes.png"):
        assert failed[key].startswith("UnsupportedFormatError: ")
    assert summary.indexed == 1 and summary.without_outputs == 1
    # Header reads only: not one image was decoded, let alone the 25000 x 25000 one.
    assert decoded == []
    with open_catalog(f"sqlite:///{tmp_path / 'cat.db'}") as catalog:
        item = catalog.get_item("photos", "flower.jpg")
        assert item["properties"]["datetime"].startswith("2003-12-14")
        for key in BAD:
            with pytest.raises(LookupError):
                catalog.get_item("photos", key)

    assert run_failures(toml, tmp_path / "ledger.db") == failed


def test_cli_index_reports_one_line_per_refused_object(bucket: Path, tmp_path: Path) -> None:
    toml = pipeline_file(tmp_path, bucket)
    runner = CliRunner()
    result = runner.invoke(cli, ["index", str(toml)])
    assert result.exit_code == 1, result.output
    assert "indexed 1 items" in result.output
    assert f"  {len(BAD)} objects could not be indexed" in result.output
    index_lines = {line.strip() for line in result.output.splitlines()}
    ran = runner.invoke(cli, ["run", str(toml), "--no-progress"])
    assert ran.exit_code == 1, ran.output
    run_lines = {line.strip() for line in ran.output.splitlines()}
    for key in BAD:
        [line] = [x for x in index_lines if x.startswith(f"{key}: ")]
        assert str(bucket / key) in line
        assert line in run_lines  # word for word what `run` says


def test_index_mode_task_renders_nothing(bucket: Path, tmp_path: Path) -> None:
    """The worker's index mode, as the runner will call it: checks, no outputs."""
    pipeline = load_pipeline(str(pipeline_file(tmp_path, bucket)))
    context = json.dumps(pipeline.to_json_dict())
    storage = open_storage(str(bucket))
    entries = tuple(e for e in (storage.head(k) for k in [*BAD, "flower.jpg"]) if e is not None)
    result = run_task(context, Task(id="t", group="", entries=entries), "index")
    assert result.state == "failed" and result.permanent
    states = {e.key: (e.state, e.permanent) for e in result.entries}
    assert states == {**{k: ("failed", True) for k in BAD}, "flower.jpg": ("skipped", False)}
    [good] = [e for e in result.entries if e.key == "flower.jpg"]
    assert good.item is not None and list(good.item["assets"]) == ["data"]
    assert not (tmp_path / "out").exists()


def test_photo_over_the_byte_limit_is_refused_as_run_refuses_it(tmp_path: Path) -> None:
    shutil.copy(DATA / "flower.jpg", tmp_path / "flower.jpg")
    storage = open_storage(str(tmp_path))
    entry = storage.head("flower.jpg")
    assert entry is not None
    small = Settings(max_object_bytes=100)
    with pytest.raises(ImageTooLargeError, match="PIXELFLEET_MAX_OBJECT_BYTES"):
        read_facts(storage, entry, small, check=True)
    # Items built by `run` (whose steps checked the object) keep going without facts.
    assert read_facts(storage, entry, small).properties == {}


def png_with_exif_after_pixels() -> bytes:
    exif = Image.Exif()
    exif[0x0132] = "2021:07:08 09:10:11"
    exif[0x0112] = 6
    out = io.BytesIO()
    Image.new("RGB", (40, 30), "blue").save(out, "PNG")
    data = out.getvalue()
    end = data.rindex(b"IEND") - 4
    return data[:end] + png_chunk(b"eXIf", exif.tobytes()) + data[end:]


@pytest.mark.parametrize("source", ["imagemagick", "exif-chunk"])
def test_png_exif_after_the_pixels_is_read_without_decoding(
    source: str, tmp_path: Path, decoded: list[tuple[int, int]]
) -> None:
    if source == "imagemagick":  # EXIF in a text chunk after the pixel data
        data = (DATA / "exif_imagemagick_orientation.png").read_bytes()
    else:
        data = png_with_exif_after_pixels()
    with Image.open(io.BytesIO(data)) as image:
        expected = dict(image.getexif())  # Pillow's way: decodes the whole image first
    assert decoded and expected
    decoded.clear()
    with PngImagePlugin.PngImageFile(io.BytesIO(data)) as image:
        assert dict(header_exif(image, data)) == expected
    assert decoded == []
    if source == "exif-chunk":
        (tmp_path / "p.png").write_bytes(data)
        storage = open_storage(str(tmp_path))
        entry = storage.head("p.png")
        assert entry is not None
        facts = read_facts(storage, entry, Settings(), check=True)
        assert facts.when is not None and facts.when.isoformat() == "2021-07-08T09:10:11+00:00"
        assert decoded == []
