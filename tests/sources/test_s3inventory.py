"""S3 Inventory input: manifests, checksums, URL-encoded keys, Parquet, missing objects."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from inventory_helpers import row, write_report
from pixelfleet.cli.main import cli
from pixelfleet.errors import InventoryError
from pixelfleet.sources.s3inventory import inventory_entries, read_manifest, report_root
from pixelfleet.storage import open_storage

ROWS = [
    row("photos/my+cat%281%29.png"),  # "photos/my cat(1).png"
    row("photos/caf%C3%A9.jpg", etag='"e2"'),  # "photos/café.jpg", quotes dropped
    row("photos/"),  # a folder marker
    row("photos/old.jpg", latest="false"),
    row("photos/gone.jpg", deleted="true"),
    row("docs/readme.txt"),
    row("photos/raster.tif"),
]


def entries(tmp_path: Path, fmt: str = "CSV", **kw: Any) -> list[Any]:
    store = open_storage(str(tmp_path / "inv-bucket"))
    key = write_report(store, ROWS, fmt)
    manifest, root = read_manifest(f"{tmp_path / 'inv-bucket'}/{key}")
    assert manifest.source_bucket == "src-bucket" and manifest.file_format == fmt
    return list(inventory_entries(manifest, root, kw.pop("source", str(tmp_path / "src")), **kw))


def test_csv_keys_are_url_decoded_and_filtered(tmp_path: Path) -> None:
    got = entries(tmp_path)
    assert [e.key for e in got] == [
        "docs/readme.txt",
        "photos/café.jpg",
        "photos/my cat(1).png",
        "photos/raster.tif",
    ]
    assert got[1].etag == "e2" and got[1].size == 10 and got[1].mtime > 1.7e9
    images = entries(tmp_path, content_types=["image/jpeg", "image/png"])
    assert [e.key for e in images] == ["photos/café.jpg", "photos/my cat(1).png"]
    tifs = entries(tmp_path, include=["**/*.tif"])
    assert [e.key for e in tifs] == ["photos/raster.tif"]


def test_source_prefix_and_bucket_are_checked(tmp_path: Path) -> None:
    got = entries(tmp_path, source="s3://src-bucket/photos")
    assert [e.key for e in got] == ["café.jpg", "my cat(1).png", "raster.tif"]
    with pytest.raises(InventoryError, match="lists bucket 'src-bucket'"):
        entries(tmp_path, source="s3://other-bucket")


def test_parquet_keys_are_taken_as_they_are(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    got = entries(tmp_path, "Parquet")
    # Parquet reports are not URL-encoded: the key is what is stored.
    assert "photos/my+cat%281%29.png" in [e.key for e in got]
    assert len(got) == 4


def test_bad_manifest_checksum_is_refused(tmp_path: Path) -> None:
    store = open_storage(str(tmp_path / "inv-bucket"))
    key = write_report(store, ROWS)
    checksum = key.replace("manifest.json", "manifest.checksum")
    store.write(checksum, b"0123456789abcdef0123456789abcdef")
    url = f"{tmp_path / 'inv-bucket'}/{key}"
    with pytest.raises(InventoryError, match="fails its checksum") as info:
        read_manifest(url)
    assert isinstance(info.value, ValueError)
    (tmp_path / "inv-bucket" / checksum).unlink()
    with pytest.raises(InventoryError, match="no manifest.checksum"):
        read_manifest(url)


def test_damaged_data_file_is_refused(tmp_path: Path) -> None:
    store = open_storage(str(tmp_path / "inv-bucket"))
    key = write_report(store, ROWS)
    store.write("inv/src-bucket/daily/data/part-0.csv.gz", gzip.compress(b"x,y\n"))
    manifest, root = read_manifest(f"{tmp_path / 'inv-bucket'}/{key}")
    with pytest.raises(InventoryError, match="fails its MD5"):
        list(inventory_entries(manifest, root, "s3://src-bucket"))


def test_report_root() -> None:
    assert (
        report_root("s3://inv/pre/src/cfg/2026-11-20T00-00Z", ["pre/src/cfg/data/x.csv.gz"])
        == "s3://inv"
    )
    assert report_root("/a/b/src/cfg/2026", ["src/cfg/data/x.csv.gz"]) == "/a/b"


@pytest.mark.s3
def test_run_with_inventory_on_s3_counts_missing_objects(s3_env: Any, tmp_path: Path) -> None:
    from s3_server import new_bucket

    src = s3_env
    inv = new_bucket(src.endpoint, "inv")
    from PIL import Image

    png = io.BytesIO()
    Image.new("RGB", (32, 24), (200, 30, 30)).save(png, "PNG")
    present = ["photos/a b.jpg", "photos/c.png", "photos/d.jpg"]
    rows = []
    for key in [*present, "photos/deleted-1.jpg", "photos/deleted-2.png"]:
        src.client.put_object(Bucket=src.bucket, Key=key, Body=png.getvalue())
        head = src.client.head_object(Bucket=src.bucket, Key=key)
        quoted = key.replace(" ", "+")
        size = str(head["ContentLength"])
        rows.append(
            [
                src.bucket,
                quoted,
                size,
                "2026-11-19T12:00:00.000Z",
                head["ETag"].strip('"'),
                "true",
                "false",
            ]
        )
    for key in ("photos/deleted-1.jpg", "photos/deleted-2.png"):
        src.client.delete_object(Bucket=src.bucket, Key=key)
    inv_store = open_storage(inv.url)
    key = write_report(
        inv_store, [[src.bucket, *r[1:]] for r in rows], prefix=f"{src.bucket}/daily"
    )
    text = json.loads(inv_store.read(key))
    text["sourceBucket"] = src.bucket
    raw = json.dumps(text).encode()
    inv_store.write(key, raw)
    inv_store.write(
        key.replace("manifest.json", "manifest.checksum"), hashlib.md5(raw).hexdigest().encode()
    )

    pipeline = tmp_path / "p.toml"
    pipeline.write_text(
        f"""
[source]
url = "{src.url}"
content_types = ["image/jpeg", "image/png"]
partition = {{ by = "count", size = 2 }}
[output]
url = "{tmp_path / "out"}"
[[steps]]
op = "thumbnail"
size = 16
[[steps]]
op = "labels"
labeler = "static"
options = {{ labels = {{ photo = 100 }} }}
[run]
executor = "inline"
ledger = "sqlite:///{tmp_path / "l.db"}"
"""
    )
    result = CliRunner().invoke(
        cli, ["run", str(pipeline), "--inventory", f"{inv.url}/{key}", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    assert "3 written" in result.output and "0 failed" in result.output
    assert "2 objects skipped-missing" in result.output
    assert (tmp_path / "out" / "photos" / "a b.labels.json").exists()
    status = CliRunner().invoke(cli, ["status", "--ledger", f"sqlite:///{tmp_path / 'l.db'}"])
    assert "2 skipped-missing" in status.output
    inv.client.close()
