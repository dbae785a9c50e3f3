"""Pipelines fill the catalog: items from real files, reruns in place, index, search CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import rasterio
from click.testing import CliRunner
from rasterio.warp import transform_bounds

from pixelfleet.catalog import open_catalog, parse_query
from pixelfleet.cli.main import cli
from pixelfleet.ledger import open_ledger
from pixelfleet.pipeline import load_pipeline, pipeline_from_dict
from pixelfleet.reindex import reindex
from pixelfleet.runner import Runner

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "demo" / "bucket"
NAIP = "va/2016/m_3607824_se_17_1_20160620_sub.tif"


def pipeline(src: Path, out: Path, catalog: str, **output: Any) -> Any:
    return pipeline_from_dict(
        {
            "source": {"url": str(src), "include": ["**/*.tif", "**/*.jpg", "**/*.png"]},
            "output": {"url": str(out), **output},
            "steps": [{"op": "thumbnail", "size": 64}],
            "run": {"executor": "inline"},
            "catalog": {"url": catalog, "collection": "demo", "title": "Demo bucket"},
        }
    )


@pytest.fixture
def small_bucket(tmp_path: Path) -> Path:
    src = tmp_path / "bucket"
    for key in (NAIP, "photos/flower.jpg", "photos/chelsea.png", "al/2013/cogeo.tif"):
        (src / key).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(DEMO / key, src / key)
    return src


def test_a_run_fills_the_catalog_and_a_rerun_updates_in_place(
    small_bucket: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'cat.db'}"
    p = pipeline(small_bucket, tmp_path / "out", url, public_url="https://cdn.test/t/{key}")
    with open_ledger(f"sqlite:///{tmp_path / 'l.db'}") as ledger:
        first = Runner(p, ledger, progress=False).run()
        assert first.counts.items_indexed == 4
        with open_catalog(url) as catalog:
            page = catalog.search(parse_query(limit=100))
            assert page.matched == 4
            naip = catalog.get_item("demo", NAIP)
            photo = catalog.get_item("demo", "photos/flower.jpg")
            year = catalog.get_item("demo", "al/2013/cogeo.tif")
            assert catalog.get_collection("demo")["title"] == "Demo bucket"
        # A fresh ledger runs everything again: outputs are current, items replaced.
        with open_ledger(f"sqlite:///{tmp_path / 'l2.db'}") as fresh:
            again = Runner(p, fresh, progress=False).run()
        assert again.counts.objects_current == 4 and again.counts.items_indexed == 4
    with open_catalog(url) as catalog:
        assert catalog.search(parse_query(limit=100)).matched == 4
        assert catalog.get_item("demo", NAIP)["properties"]["pixelfleet:run_id"] == again.run_id

    # Georeferenced: bbox is the file's bounds in WGS84; the geometry is a polygon.
    with rasterio.open(small_bucket / NAIP) as src:
        want = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
    assert naip["bbox"] == pytest.approx(list(want), abs=1e-5)
    assert naip["geometry"]["type"] == "Polygon"
    props = naip["properties"]
    assert props["datetime"] == "2016-06-20T00:00:00Z"
    assert props["pixelfleet:datetime_source"] == "key"
    assert props["proj:code"] == "EPSG:26917"
    assert props["proj:shape"] == [src.height, src.width]
    assert props["pixelfleet:version"] and props["pixelfleet:pipeline"] == p.settings_hash
    assert props["pixelfleet:run_id"] == first.run_id
    data = naip["assets"]["data"]
    assert data["roles"] == ["data"] and data["href"] == str(small_bucket / NAIP)
    assert data["raster:bands"][0]["data_type"] == "uint8"
    thumb = naip["assets"]["thumbnail"]
    assert thumb["roles"] == ["thumbnail"] and thumb["type"] == "image/jpeg"
    assert thumb["href"] == "https://cdn.test/t/va/2016/m_3607824_se_17_1_20160620_sub.thumb.jpg"

    # A photo: no georeference, so no geometry; EXIF says when.
    assert photo["geometry"] is None and "bbox" not in photo
    assert photo["properties"]["pixelfleet:datetime_source"] == "metadata"
    assert photo["properties"]["datetime"] == "2003-12-14T12:01:44Z"
    # A year folder and no other date: the whole year.
    assert year["properties"]["datetime"] is None
    assert year["properties"]["start_datetime"] == "2013-01-01T00:00:00Z"

    import pystac

    for item in (naip, photo, year):
        assert pystac.Item.from_dict(item).id == item["id"]


def test_index_rebuilds_items_without_rendering(small_bucket: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    url = f"sqlite:///{tmp_path / 'cat.db'}"
    p = pipeline(small_bucket, out, url)
    no_catalog = pipeline_from_dict({**p.to_json_dict(), "catalog": None})
    with open_ledger(f"sqlite:///{tmp_path / 'l.db'}") as ledger:
        Runner(no_catalog, ledger, progress=False).run()
    stamps = {f: f.stat().st_mtime_ns for f in out.rglob("*.jpg")}
    (small_bucket / "photos" / "new.jpg").write_bytes((DEMO / "photos/rocket.jpg").read_bytes())
    summary = reindex(p, threads=2)
    assert summary.indexed == 5 and not summary.failed
    assert summary.without_outputs == 1
    assert {f: f.stat().st_mtime_ns for f in out.rglob("*.jpg")} == stamps  # nothing rendered
    with open_catalog(url) as catalog:
        assert "thumbnail" in catalog.get_item("demo", NAIP)["assets"]
        assert list(catalog.get_item("demo", "photos/new.jpg")["assets"]) == ["data"]


def test_cli_search_and_index(small_bucket: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cat.db'}"
    toml = tmp_path / "p.toml"
    toml.write_text(
        f'[source]\nurl = "{small_bucket}"\ninclude = ["**/*.tif", "**/*.jpg"]\n'
        f'[output]\nurl = "{tmp_path / "out"}"\n[[steps]]\nop = "thumbnail"\nsize = 32\n'
        f'[run]\nexecutor = "inline"\n[catalog]\nurl = "{url}"\ncollection = "naip"\n'
    )
    runner = CliRunner()
    result = runner.invoke(cli, ["run", str(toml), "--no-progress"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        cli,
        ["search", "--catalog", url, "--collection", "naip", "--bbox", "-79,36,-77,37",
         "--datetime", "2016-01-01/2016-12-31", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert [f["id"] for f in body["features"]] == [NAIP]
    result = runner.invoke(cli, ["search", "--catalog", url, "flower", "--limit", "5"])
    assert result.exit_code == 0 and "photos/flower.jpg" in result.output
    assert "thumbnail: " in result.output
    result = runner.invoke(cli, ["search", "--catalog", url, "--bbox", "1,2,3"])
    assert result.exit_code == 1 and "bbox" in result.output
    result = runner.invoke(cli, ["index", str(toml)])
    assert result.exit_code == 0 and "indexed 3 items" in result.output
    missing = f"sqlite:///{tmp_path / 'nope.db'}"
    for command in (["search", "--catalog", missing, "x"], ["serve", "--catalog", missing]):
        result = runner.invoke(cli, command)
        assert result.exit_code == 1 and "no catalog at" in result.output
        assert not (tmp_path / "nope.db").exists()


def test_pipeline_catalog_section_is_validated(tmp_path: Path) -> None:
    toml = tmp_path / "p.toml"
    base = '[source]\nurl = "x"\n[output]\nurl = "y"\n[[steps]]\nop = "thumbnail"\n'
    toml.write_text(base + '[catalog]\ncollection = "bad name!"\n')
    with pytest.raises(ValueError, match="collection"):
        load_pipeline(str(toml))
    toml.write_text(base + '[catalog]\ncollection = "ok"\nurl = "nosuch://x"\n')
    with pytest.raises(ValueError, match="scheme"):
        load_pipeline(str(toml))
    toml.write_text(base + '[catalog]\ncollection = "ok"\nurl = "sqlite:///rel.db"\n')
    assert load_pipeline(str(toml)).catalog.url == f"sqlite:///{tmp_path / 'rel.db'}"  # type: ignore[union-attr]


@pytest.mark.postgres
def test_a_pipeline_writes_to_pgstac(small_bucket: Path, tmp_path: Path, pg_url: str) -> None:
    p = pipeline(small_bucket, tmp_path / "out", pg_url)
    with open_ledger(f"sqlite:///{tmp_path / 'l.db'}") as ledger:
        summary = Runner(p, ledger, progress=False).run()
    assert summary.counts.items_indexed == 4
    with open_catalog(pg_url) as catalog:
        page = catalog.search(parse_query(collections=["demo"], q="flower"))
        assert [i["id"] for i in page.items] == ["photos/flower.jpg"]
        page = catalog.search(parse_query(collections=["demo"], bbox="-79,36,-77,37"))
        assert [i["id"] for i in page.items] == [NAIP]


def test_an_unreachable_catalog_interrupts_the_run(small_bucket: Path, tmp_path: Path) -> None:
    from pixelfleet.errors import CatalogError

    bad = tmp_path / "not-a-folder"
    bad.write_text("a file where the catalog's folder should be")
    p = pipeline(small_bucket, tmp_path / "out", f"sqlite:///{bad / 'cat.db'}")
    with open_ledger(f"sqlite:///{tmp_path / 'l.db'}") as ledger:
        with pytest.raises(CatalogError, match="cannot open the catalog"):
            Runner(p, ledger, progress=False).run()
        assert ledger.get_run().state == "interrupted"
