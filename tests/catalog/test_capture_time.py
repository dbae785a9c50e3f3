"""A photo's file time is not its capture time: items say which they have, and "newest
first" sorts by capture time, with objects known only by their file time after them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from pixelfleet.catalog import open_catalog, parse_query
from pixelfleet.catalog.items import NEWEST_FIRST, ItemSettings, build_item
from pixelfleet.settings import Settings
from pixelfleet.storage import open_storage

DAY = 86400
#: 2026-01-01, later than every capture date below.
RECENT = 1767225600


def make_photos(folder: Path) -> None:
    """Two photos with capture dates (EXIF 2019, a 2021 date in the name) and two with
    none, stored later (their file times in 2026)."""
    folder.mkdir()
    exif = Image.Exif()
    exif[0x0132] = "2019:05:04 03:02:01"
    Image.new("RGB", (8, 8), "red").save(folder / "exif.jpg", "JPEG", exif=exif)
    Image.new("RGB", (8, 8), "green").save(folder / "shot_20210505.png", "PNG")
    for i, name in enumerate(["upload_a.png", "upload_b.png"]):
        Image.new("RGB", (8, 8), "blue").save(folder / name, "PNG")
        os.utime(folder / name, (RECENT + i * DAY, RECENT + i * DAY))


def items_of(folder: Path) -> list[dict[str, object]]:
    storage = open_storage(str(folder))
    options = ItemSettings(collection="photos", pipeline_hash="h")
    return [
        build_item(storage, storage, entry, [], {}, options, Settings()) for entry in storage.scan()
    ]


def test_items_mark_a_file_time_and_carry_a_capture_time_only_when_there_is_one(
    tmp_path: Path,
) -> None:
    make_photos(tmp_path / "src")
    props = {i["id"]: i["properties"] for i in items_of(tmp_path / "src")}  # type: ignore[index]
    assert props["exif.jpg"]["pixelfleet:datetime_source"] == "metadata"
    assert props["exif.jpg"]["pixelfleet:captured"] == "2019-05-04T03:02:01Z"
    assert props["shot_20210505.png"]["pixelfleet:datetime_source"] == "key"
    assert props["shot_20210505.png"]["pixelfleet:captured"].startswith("2021-05-05")
    for name in ("upload_a.png", "upload_b.png"):
        assert props[name]["pixelfleet:datetime_source"] == "mtime"
        assert "pixelfleet:captured" not in props[name]
        assert props[name]["datetime"] >= "2026-01-01"  # still a datetime, as STAC needs


@pytest.mark.parametrize(
    "scheme",
    [
        "memory",
        "sqlite",
        pytest.param("pgstac", marks=pytest.mark.postgres),
    ],
)
def test_newest_first_puts_capture_times_before_file_times(
    tmp_path: Path, scheme: str, request: pytest.FixtureRequest
) -> None:
    make_photos(tmp_path / "src")
    urls = {"memory": "memory://", "sqlite": f"sqlite:///{tmp_path / 'c.db'}"}
    url = urls.get(scheme) or request.getfixturevalue("pg_url")
    with open_catalog(url) as catalog:
        catalog.ensure_collection("photos")
        catalog.delete("photos", ["exif.jpg", "shot_20210505.png", "upload_a.png", "upload_b.png"])
        catalog.upsert(items_of(tmp_path / "src"))
        by_time = [i["id"] for i in catalog.search(parse_query(sortby="-datetime")).items]
        newest = [i["id"] for i in catalog.search(parse_query(sortby=NEWEST_FIRST)).items]
    # By datetime alone the uploads' file times (2026) look newest.
    assert by_time[:2] == ["upload_b.png", "upload_a.png"]
    assert newest == ["shot_20210505.png", "exif.jpg", "upload_b.png", "upload_a.png"]


def test_the_search_page_sorts_newest_by_capture_time() -> None:
    pytest.importorskip("fastapi")
    from pixelfleet.server import ui

    assert ui.NEWEST_FIRST == NEWEST_FIRST
    assert ui.SORTS[0] == (NEWEST_FIRST, "newest first")
