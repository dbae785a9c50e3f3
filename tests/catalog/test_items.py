"""Item building: dates, hrefs, EXIF GPS, and the hooks ops use to add assets and properties."""

from __future__ import annotations

import io
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from PIL import Image

import ops_for_tests
from pixelfleet.catalog import open_catalog, parse_query
from pixelfleet.catalog.facts import parse_tag_datetime, read_facts
from pixelfleet.catalog.items import key_date, key_year, output_href
from pixelfleet.ledger import open_ledger
from pixelfleet.pipeline import pipeline_from_dict
from pixelfleet.runner import Runner
from pixelfleet.settings import Settings
from pixelfleet.storage import open_storage

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "demo" / "bucket"


def test_dates_from_keys_and_tags() -> None:
    assert key_date("va/2016/m_3607824_se_17_1_20160620_sub.tif") == datetime(
        2016, 6, 20, tzinfo=UTC
    )
    assert key_date("x/20161340_bad_month.tif") is None
    assert key_date("x/120160620.tif") is None  # part of a longer number
    assert key_year("al/2013/x.tif") == 2013
    assert key_year("2013.tif") is None and key_year("a/3013/x.tif") is None
    assert parse_tag_datetime("2003:12:14 12:01:44") == datetime(
        2003, 12, 14, 12, 1, 44, tzinfo=UTC
    )
    assert parse_tag_datetime("2016-06-20T10:00:00+02:00").isoformat() == (  # type: ignore[union-attr]
        "2016-06-20T10:00:00+02:00"
    )
    assert parse_tag_datetime("garbage") is None and parse_tag_datetime(None) is None


def test_output_hrefs(tmp_path: Path) -> None:
    storage = open_storage(str(tmp_path))
    assert (
        output_href(storage, "a b/x.jpg", "https://cdn/{key}?v=1") == "https://cdn/a%20b/x.jpg?v=1"
    )
    assert output_href(storage, "a/x.jpg", "https://cdn/t/") == "https://cdn/t/a/x.jpg"
    assert output_href(storage, "a/x.jpg", None) == str(tmp_path / "a" / "x.jpg")


def test_exif_gps_becomes_a_point(tmp_path: Path) -> None:
    image = Image.new("RGB", (64, 48), "red")
    exif = Image.Exif()
    exif[0x0132] = "2019:05:04 03:02:01"
    gps = exif.get_ifd(0x8825)
    gps.update({1: "N", 2: (47.0, 30.0, 0.0), 3: "W", 4: (122.0, 15.0, 36.0)})
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif)
    (tmp_path / "p.jpg").write_bytes(out.getvalue())
    storage = open_storage(str(tmp_path))
    entry = storage.head("p.jpg")
    assert entry is not None
    facts = read_facts(storage, entry, Settings())
    assert facts.geometry == {"type": "Point", "coordinates": [-122.26, 47.5]}
    assert facts.bbox == [-122.26, 47.5, -122.26, 47.5]
    assert facts.when == datetime(2019, 5, 4, 3, 2, 1, tzinfo=UTC)
    (tmp_path / "notes.txt").write_text("not an image")
    text = storage.head("notes.txt")
    assert text is not None and read_facts(storage, text, Settings()).geometry is None


def test_ops_add_assets_and_searchable_properties(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("rocket.jpg", "flower.jpg"):
        shutil.copy(DEMO / "photos" / name, src / name)
    url = f"sqlite:///{tmp_path / 'cat.db'}"
    p = pipeline_from_dict(
        {
            "source": {"url": str(src)},
            "output": {"url": str(tmp_path / "out")},
            "steps": [{"op": "thumbnail", "size": 32}, {"op": "ops_for_tests:LabelOp"}],
            "run": {"executor": "inline"},
            "catalog": {"url": url, "collection": "photos"},
        }
    )
    ops_for_tests.LabelOp.runs = 0
    for ledger_name in ("a.db", "b.db"):  # the second run finds every output current
        with open_ledger(f"sqlite:///{tmp_path / ledger_name}") as ledger:
            Runner(p, ledger, progress=False).run()
    assert ops_for_tests.LabelOp.runs == 2
    with open_catalog(url) as catalog:
        found = catalog.search(parse_query(q="glacier"))
        assert [i["id"] for i in found.items] == ["rocket.jpg"]
        item = found.items[0]
    assert item["properties"]["labels"] == [{"name": "glacier", "confidence": 90.0}]
    assert "glacier" in item["properties"]["keywords"]
    labels = item["assets"]["labels"]
    assert labels["roles"] == ["metadata"] and labels["type"] == "application/json"
    assert labels["title"] == "Labels"
    assert item["assets"]["thumbnail"]["roles"] == ["thumbnail"]


def test_landsat_scene_ids_give_their_acquisition_day() -> None:
    from datetime import UTC, datetime

    from pixelfleet.catalog.items import key_date

    assert key_date("LC81070352015122LGN00/LC81070352015122LGN00_B4.tif") == datetime(
        2015, 5, 2, tzinfo=UTC
    )
    assert key_date("LC81070352015999LGN00_B4.tif") is None  # day 999 is no day


def test_raster_facts_datetime_tag_and_no_crs(tmp_path: Path) -> None:
    import numpy as np
    import rasterio
    from affine import Affine
    from rasterio.errors import NotGeoreferencedWarning

    data = np.zeros((1, 16, 16), "uint8")
    with rasterio.open(
        tmp_path / "tagged.tif", "w", driver="GTiff", width=16, height=16, count=1,
        dtype="uint8", crs="EPSG:4326", transform=Affine(0.1, 0, 10, 0, -0.1, 50), nodata=0,
    ) as dst:  # fmt: skip
        dst.write(data)
        dst.update_tags(TIFFTAG_DATETIME="2019:01:02 03:04:05")
    with (
        pytest.warns(NotGeoreferencedWarning),
        rasterio.open(
            tmp_path / "plain.tif", "w", driver="GTiff", width=16, height=16, count=1,
            dtype="uint8",
        ) as dst,
    ):  # fmt: skip
        dst.write(data)
    storage = open_storage(str(tmp_path))
    tagged = storage.head("tagged.tif")
    plain = storage.head("plain.tif")
    assert tagged is not None and plain is not None
    facts = read_facts(storage, tagged, Settings())
    assert facts.when == datetime(2019, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert facts.bbox == pytest.approx([10.0, 48.4, 11.6, 50.0])
    assert facts.properties["proj:code"] == "EPSG:4326"
    assert facts.asset_fields["raster:bands"] == [
        {"data_type": "uint8", "nodata": 0.0, "spatial_resolution": 0.1}
    ]
    bare = read_facts(storage, plain, Settings())
    assert bare.geometry is None and bare.bbox is None and "proj:code" not in bare.properties
