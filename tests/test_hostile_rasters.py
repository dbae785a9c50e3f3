"""Rasters that broke things: another planet's CRS, complex SAR data, the antimeridian,
GCP-only georeferencing, and the shared bad samples (issue 12)."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image
from rasterio.control import GroundControlPoint
from rasterio.errors import NotGeoreferencedWarning

from pixelfleet.catalog import Catalog, open_catalog
from pixelfleet.catalog.facts import read_facts
from pixelfleet.catalog.query import SearchQuery
from pixelfleet.errors import PERMANENT_ERRORS, UnsupportedFormatError
from pixelfleet.imagery.composite import BandFile, CompositeSpec, make_composite
from pixelfleet.ledger import open_ledger
from pixelfleet.pipeline import pipeline_from_dict
from pixelfleet.runner import Runner, RunSummary
from pixelfleet.settings import Settings
from pixelfleet.storage import open_storage

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
#: The workplace's shared samples, beside the checkout when they are there; a copy of the
#: ones the tests need lives in tests/data (see its PROVENANCE.md).
SAMPLES = REPO.parent / "shared" / "samples"
MARS = DATA / "cog_hirise_mars.tif"


def write_tif(path: Path, data: np.ndarray, **profile: Any) -> Path:
    count, height, width = data.shape
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": data.dtype.name,
        **profile,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # GCP-only files
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data.astype(np.complex64) if "complex" in profile["dtype"] else data)
    return path


def run_pipeline(
    src: Path, out: Path, catalog: str, given: Catalog | None = None, **step: Any
) -> RunSummary:
    pipeline = pipeline_from_dict(
        {
            "source": {"url": str(src), "include": ["**/*"], "partition": {"by": "object"}},
            "output": {"url": str(out)},
            "steps": [{"op": "thumbnail", "size": 64, "key": "{stem}.thumb.png", **step}],
            "run": {"executor": "inline", "attempts": 2},
            "catalog": {"url": catalog, "collection": "hostile"},
        }
    )
    with open_ledger("memory://") as ledger:
        return Runner(pipeline, ledger, progress=False, catalog=given).run()


def items_of(catalog_url: str) -> dict[str, dict[str, Any]]:
    with open_catalog(catalog_url) as catalog:
        page = catalog.search(SearchQuery(collections=["hostile"], limit=100))
        return {item["id"]: item for item in page.items}


# -- another planet --------------------------------------------------------------------------


def test_a_mars_cog_gets_its_thumbnail_and_an_item_without_footprint(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(MARS, src / "mars.tif")
    catalog = f"sqlite:///{tmp_path / 'catalog.db'}"
    summary = run_pipeline(src, tmp_path / "out", catalog)
    assert summary.state == "done", [t.failures for t in summary.failures]
    with Image.open(tmp_path / "out" / "mars.thumb.png") as thumb:
        assert max(thumb.size) == 64
    item = items_of(catalog)["mars.tif"]
    assert item["geometry"] is None and "bbox" not in item
    props = item["properties"]
    assert props["proj:code"] is None
    assert "MARS" in props["proj:wkt2"] and props["proj:wkt2"].startswith("PROJCRS[")
    assert props["proj:shape"] == [1683, 1118]
    assert props["proj:transform"][0] == pytest.approx(5.0, abs=0.01)


# -- complex data (SAR) ------------------------------------------------------------------------


def sar(path: Path, dtype: str = "complex_int16") -> Path:
    rows, cols = np.mgrid[0:48, 0:64]
    data = ((rows * 10) + 1j * (cols * 10 - 300))[None]
    return write_tif(
        path, data, dtype=dtype, crs="EPSG:32633", transform=Affine(10, 0, 5e5, 0, -10, 4e6)
    )


def test_complex_int16_sar_gets_an_amplitude_thumbnail_and_an_item(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    sar(src / "sar.tif")
    catalog = f"sqlite:///{tmp_path / 'catalog.db'}"
    summary = run_pipeline(src, tmp_path / "out", catalog)
    assert summary.state == "done", [t.failures for t in summary.failures]
    assert summary.counts.retries == 0
    with Image.open(tmp_path / "out" / "sar.thumb.png") as thumb:
        grey = np.asarray(thumb.convert("L")).astype(int)
    # Amplitude |10 r + (10 c - 300) j|: brightest at the bottom corners, darkest top middle.
    assert grey[-1, 0] > grey[0, 32] and grey[-1, -1] > grey[0, 32]
    bands = items_of(catalog)["sar.tif"]["assets"]["data"]["raster:bands"]
    assert bands[0]["data_type"] == "cint16"


def test_a_complex_band_in_a_composite_fails_once_as_unsupported(tmp_path: Path) -> None:
    path = sar(tmp_path / "sar.tif")
    spec = CompositeSpec(channels=["1"], stretch=["percentile"], image_size=None)
    with pytest.raises(UnsupportedFormatError, match="unsupported data type complex_int16"):
        make_composite([BandFile("1", "sar.tif", str(path))], spec, str(tmp_path))
    assert issubclass(UnsupportedFormatError, PERMANENT_ERRORS)


# -- the antimeridian and GCPs ----------------------------------------------------------------


def facts_of(path: Path) -> Any:
    storage = open_storage(str(path.parent))
    entry = storage.head(path.name)
    assert entry is not None
    return read_facts(storage, entry, Settings())


def test_a_footprint_across_the_antimeridian_is_split(tmp_path: Path) -> None:
    path = write_tif(
        tmp_path / "am.tif",
        np.ones((1, 200, 300), np.uint8),
        crs="EPSG:4326",
        transform=Affine(0.01, 0, 179.5, 0, -0.01, 10),
    )
    facts = facts_of(path)
    assert facts.bbox == [179.5, 8.0, -177.5, 10.0]  # west > east (RFC 7946, 5.2)
    assert facts.geometry["type"] == "MultiPolygon"
    parts = facts.geometry["coordinates"]
    assert len(parts) == 2
    east_part, west_part = sorted(parts, key=lambda p: -p[0][0][0])
    assert {x for x, _ in east_part[0]} == {179.5, 180.0}
    assert {x for x, _ in west_part[0]} == {-180.0, -177.5}


def test_a_utm_zone_60_scene_across_the_antimeridian(tmp_path: Path) -> None:
    path = write_tif(
        tmp_path / "utm.tif",
        np.ones((1, 100, 300), np.uint8),
        crs="EPSG:32660",
        transform=Affine(200, 0, 780000, 0, -200, 1000000),
    )
    facts = facts_of(path)
    west, south, east, north = facts.bbox
    assert 179 < west < 180 and -180 < east < -179.5 and west > east
    assert facts.geometry["type"] == "MultiPolygon"
    for polygon in facts.geometry["coordinates"]:
        assert all(-180 <= x <= 180 and south <= y <= north for x, y in polygon[0])


def test_ordinary_and_whole_world_footprints_stay_simple(tmp_path: Path) -> None:
    plain = write_tif(
        tmp_path / "plain.tif",
        np.ones((1, 20, 30), np.uint8),
        crs="EPSG:4326",
        transform=Affine(0.1, 0, 10, 0, -0.1, 50),
    )
    facts = facts_of(plain)
    assert facts.bbox == [10.0, 48.0, 13.0, 50.0]
    assert facts.geometry == {
        "type": "Polygon",
        "coordinates": [[[10.0, 50.0], [10.0, 48.0], [13.0, 48.0], [13.0, 50.0], [10.0, 50.0]]],
    }
    world = write_tif(
        tmp_path / "world.tif",
        np.ones((1, 18, 36), np.uint8),
        crs="EPSG:4326",
        transform=Affine(10, 0, -180, 0, -10, 90),
    )
    facts = facts_of(world)
    assert facts.bbox == [-180.0, -90.0, 180.0, 90.0]
    assert facts.geometry["type"] == "Polygon"


def test_a_footprint_round_the_north_pole_reaches_it(tmp_path: Path) -> None:
    path = write_tif(
        tmp_path / "arctic.tif",
        np.ones((1, 30, 30), np.uint8),
        crs="EPSG:3413",
        transform=Affine(1e5, 0, -1.5e6, 0, -1e5, 1.5e6),
    )
    facts = facts_of(path)
    assert facts.bbox[0] == -180.0 and facts.bbox[2] == 180.0 and facts.bbox[3] == 90.0
    assert facts.geometry["type"] == "Polygon"


def test_gcps_alone_give_a_footprint(tmp_path: Path) -> None:
    gcps = [
        GroundControlPoint(0, 0, 179.5, 10),
        GroundControlPoint(0, 300, 182.5, 10),
        GroundControlPoint(200, 0, 179.5, 8),
        GroundControlPoint(200, 300, 182.5, 8),
    ]
    path = write_tif(
        tmp_path / "gcps.tif", np.ones((1, 200, 300), np.uint8), gcps=gcps, crs="EPSG:4326"
    )
    facts = facts_of(path)
    assert facts.bbox == pytest.approx([179.5, 8.0, -177.5, 10.0])
    assert facts.geometry["type"] == "MultiPolygon"
    simple = [GroundControlPoint(r, c, 10 + c / 100, 50 - r / 100) for r, c in gcps_grid()]
    path = write_tif(
        tmp_path / "gcps2.tif", np.ones((1, 200, 300), np.uint8), gcps=simple, crs="EPSG:4326"
    )
    facts = facts_of(path)
    assert facts.bbox == pytest.approx([10.0, 48.0, 13.0, 50.0])
    assert facts.geometry["type"] == "Polygon"


def gcps_grid() -> list[tuple[int, int]]:
    return [(0, 0), (0, 300), (200, 0), (200, 300), (100, 150)]


def test_items_across_the_antimeridian_are_indexed_and_found(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    write_tif(
        src / "am.tif",
        np.ones((1, 200, 300), np.uint8),
        crs="EPSG:4326",
        transform=Affine(0.01, 0, 179.5, 0, -0.01, 10),
    )
    for url in (f"sqlite:///{tmp_path / 'catalog.db'}", "memory://"):
        catalog = open_catalog(url)
        summary = run_pipeline(src, tmp_path / "out", url, catalog)
        assert summary.state == "done", [t.failures for t in summary.failures]
        assert summary.counts.items_indexed == 1
        with catalog:
            for box in ((-178.5, 8.5, -177.9, 9.5), (179.6, 8.5, 179.9, 9.5)):
                page = catalog.search(SearchQuery(bbox=box, limit=10))
                assert [i["id"] for i in page.items] == ["am.tif"], (url, box)


# -- the shared bad samples -------------------------------------------------------------------


# The worker ignores this warning once per process; pytest restores the filters per test.
@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_no_shared_sample_crashes_a_run_with_a_catalog(tmp_path: Path) -> None:
    src = tmp_path / "src"
    if (SAMPLES / "bad").is_dir() and (SAMPLES / "geo").is_dir():
        for folder in ("bad", "geo"):
            shutil.copytree(SAMPLES / folder, src / folder)
    else:  # a checkout without the shared samples beside it: the copies in tests/data
        shutil.copytree(DATA / "bad", src / "bad")
        (src / "geo").mkdir()
        for name in ("cog_cmap.tif", "cog_rgba.tif", "cog_hirise_mars.tif", "RGBA.uint16.tif"):
            shutil.copy(DATA / name, src / "geo" / name)
    for path in src.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    summary = run_pipeline(src, tmp_path / "out", f"sqlite:///{tmp_path / 'catalog.db'}")
    assert summary.counts.retries == 0  # every failure is a permanent, named input error
    failures = [row for task in summary.failures for row in task.failures]
    permanent = {cls.__name__ for cls in PERMANENT_ERRORS} | {
        "CorruptInputError",
        "UnsupportedFormatError",
        "ImageTooLargeError",
    }
    for row in failures:
        assert row["error_type"] in permanent, row
        assert row["key"].rsplit("/", 1)[-1] in row["error"], row
    failed = {row["key"] for row in failures}
    assert not {k for k in failed if k.startswith("geo/")}, failed
    assert summary.counts.items_indexed == summary.counts.objects_written
