"""The item page of a scene with a composite: its picture, and a histogram of its channels
drawn from the ``raster:bands`` stored at composite time, with the numbers as text
(issue 13)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from pixelfleet.server import create_app
from pixelfleet.server.composites import channel_rows, histogram_chart, histogram_of, step_path
from pixelfleet.settings import Settings
from server_helpers import LANDSAT, fill_composite_catalog

PAGE = f"/items/landsat/{LANDSAT}"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    catalog_url, ledger_url = fill_composite_catalog(tmp_path_factory.mktemp("composite"))
    app = create_app(Settings(), catalog_url=catalog_url, ledger_url=ledger_url)
    with TestClient(app) as c:
        yield c


def test_the_composite_assets_carry_statistics_and_a_histogram(client: TestClient) -> None:
    item = client.get(f"/stac/collections/landsat/items/{LANDSAT}").json()
    assert "https://stac-extensions.github.io/raster/v1.1.0/schema.json" in item["stac_extensions"]
    image, cog = item["assets"]["true-color-image"], item["assets"]["true-color-cog"]
    assert image["raster:bands"] == cog["raster:bands"]
    red, green, blue = image["raster:bands"]
    assert [b["name"] for b in (red, green, blue)] == ["red", "green", "blue"]
    assert red["description"].startswith("band 4, percentile stretch ")
    hist = red["histogram"]
    assert (hist["count"], hist["min"], hist["max"]) == (64, -0.5, 255.5)
    assert len(hist["buckets"]) == 64 and all(isinstance(n, int) for n in hist["buckets"])
    stats = red["statistics"]
    assert 0 <= stats["minimum"] <= stats["mean"] <= stats["maximum"] <= 255
    assert 0 < stats["valid_percent"] <= 100
    # The band files' own raster:bands have no histogram: they are not composites.
    assert all(
        "histogram" not in b
        for b in item["assets"]["data-LC81070352015122LGN00_B4"]["raster:bands"]
    )


def test_the_item_page_draws_each_composite_with_its_histogram(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import PIL.Image
    import rasterio

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a page request opened an image")

    # Everything the page shows comes from the item: no raster or picture is opened.
    monkeypatch.setattr(rasterio, "open", refuse)
    monkeypatch.setattr(PIL.Image, "open", refuse)
    page = client.get(PAGE)
    assert page.status_code == 200
    html = page.text
    item = client.get(f"/stac/collections/landsat/items/{LANDSAT}").json()
    bands = item["assets"]["true-color-image"]["raster:bands"]

    assert "<h2>Composites</h2>" in html
    section = html.split("<h2>Composites</h2>", 1)[1].split("<h2>Assets</h2>", 1)[0]
    # The picture, with a text alternative that says what its channels show.
    picture = re.search(r'<img src="([^"]+)" alt="([^"]+)"', section)
    assert picture is not None
    assert "/assets/landsat/true-color-image/" in picture[1]
    assert picture[2].startswith("The true-color composite of LC81070352015122LGN00 (red = band 4")
    assert client.get(picture[1]).content[:8] == b"\x89PNG\r\n\x1a\n"
    # The histogram: an SVG image with a title and a description in words.
    svg = re.search(r'<svg [^>]*role="img" aria-labelledby="([^"]+)"', section)
    assert svg is not None
    title_id, desc_id = svg[1].split()
    assert f'<title id="{title_id}">Histogram of the true-color composite</title>' in section
    desc = re.search(rf'<desc id="{desc_id}">([^<]+)</desc>', section)
    assert desc is not None
    assert "pixels per output value, 0 to 255, in 64 buckets" in desc[1]
    assert f"mean {bands[0]['statistics']['mean']:,.1f}" in desc[1]
    assert section.count("<path d=") == 3
    # The numbers as text: a row per channel, and every bucket's count.
    for band in bands:
        stats = band["statistics"]
        row = re.search(rf"{band['name']}</th><td>([^<]+)</td>(.*?)</tr>", section)
        assert row is not None
        assert row[1] == band["description"]
        cells = re.findall(r'<td class="num">([^<]+)</td>', row[2])
        assert cells == [
            f"{stats['mean']:,.1f}",
            f"{stats['stddev']:,.1f}",
            f"{stats['minimum']}–{stats['maximum']}",
            f"{stats['valid_percent']:,.1f}%",
        ]
    counts = section.split("<summary>Histogram counts</summary>", 1)[1]
    rows = re.findall(
        r'<tr><th scope="row">(\d+)–(\d+)</th>((?:<td class="num">[^<]+</td>)+)</tr>', counts
    )
    assert len(rows) == 64 and rows[0][:2] == ("0", "3") and rows[-1][:2] == ("252", "255")
    first = re.findall(r">([^<]+)<", rows[0][2])
    assert first == [f"{b['histogram']['buckets'][0]:,}" for b in bands]
    assert "Full histogram plot" in section
    assert "None" not in section


def test_an_item_without_composites_has_no_composite_section(client: TestClient) -> None:
    item = client.get(f"/stac/collections/landsat/items/{LANDSAT}").json()
    for name in ("true-color-image", "true-color-cog"):
        item["assets"].pop(name)
    # The page reads the catalog: store the item without its composite assets.
    catalog = client.app.state.catalog  # type: ignore[attr-defined]
    item["id"] = "bare"
    for link in ("links",):
        item.pop(link, None)
    catalog.upsert([item])
    html = client.get("/items/landsat/bare").text
    assert "Composites" not in html
    assert "<svg" not in html


@pytest.mark.parametrize(
    "histogram",
    [
        None,
        "not a histogram",
        {"count": 3, "min": -0.5, "max": 255.5, "buckets": [1, 2, 3]},  # 3 does not divide 256
        {"count": 4, "min": 0, "max": 1000, "buckets": [1, 2, 3, 4]},  # not 8-bit output values
        {"count": 4, "min": -0.5, "max": 255.5, "buckets": [1, -2, 3, 4]},
        {"count": 4, "min": -0.5, "max": 255.5, "buckets": ["1", "2", "3", "4"]},
    ],
)
def test_histograms_the_page_cannot_draw_are_left_out(histogram: Any) -> None:
    band = {"name": "red", "histogram": histogram}
    assert histogram_of(band) is None
    rows = channel_rows([band])
    assert rows[0]["counts"] is None and rows[0]["mean"] == "—"
    assert histogram_chart(rows) is None


def test_a_histogram_path_steps_over_the_plot() -> None:
    path = step_path([0, 10, 5, 10], 10)
    assert path == "M16,116V116.0H80V16.0H144V66.0H208V16.0H272V116Z"
    band = {"name": "grey", "histogram": {"min": -0.5, "max": 255.5, "buckets": [0, 10, 5, 10]}}
    rows = channel_rows([band])
    assert rows[0]["peak"] == "64–127"
    chart = histogram_chart(rows)
    assert chart is not None and chart["top"] == "10" and chart["buckets"] == 4
    assert [r["span"] for r in chart["bucket_rows"]] == ["0–63", "64–127", "128–191", "192–255"]
