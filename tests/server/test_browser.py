"""The pages in headless Chromium (Debian's, driven by playwright): the map-first search,
thumbnails drawn on their footprints, drawing an area, the item page, phone width.

Screenshots of each page go to a temporary folder (a test run changes no tracked file);
``make screenshots`` runs these tests with ``--screenshots docs/screenshots`` to refresh
the ones the docs show.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from catalog_helpers import chromium_path
from pixelfleet.server import create_app
from pixelfleet.settings import Settings
from server_helpers import LANDSAT, fill_composite_catalog, fill_demo_catalog, live_server

pytestmark = pytest.mark.browser

ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
NAIP = "va/2016/m_3607824_se_17_1_20160620_sub.tif"
GREENLAND = "ca/2014/riotiler_cog.tif"
HIGHLIGHT = "#c2410c"


@pytest.fixture(scope="module")
def shots(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go: ``--screenshots DIR`` if given, else a temporary folder."""
    chosen = request.config.getoption("--screenshots")
    folder = Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    catalog_url, ledger_url = fill_demo_catalog(tmp_path_factory.mktemp("browser"))
    app = create_app(Settings(), catalog_url=catalog_url, ledger_url=ledger_url)
    with live_server(app) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    playwright = pytest.importorskip("playwright.sync_api")
    path = chromium_path()
    with playwright.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=path, args=ARGS, headless=True)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Any, base: str) -> Iterator[Any]:
    """A desktop-sized page (1400 px) that fails the test on any script error or any
    request that leaves the test server (the pages must work with no internet)."""
    yield from open_page(browser, base, 1400, 900)


def open_page(browser: Any, base: str, width: int, height: int) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": width, "height": height})
    errors: list[str] = []
    outside: list[str] = []
    opened = context.new_page()
    opened.errors = errors  # a test that expects an error removes it
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    opened.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    opened.on(
        "request",
        lambda req: None if req.url.startswith((base, "data:")) else outside.append(req.url),
    )
    try:
        yield opened
    finally:
        context.close()
    assert errors == [], errors
    assert outside == [], f"requests left the server: {outside}"


def goto(page: Any, url: str) -> None:
    page.goto(url)
    page.wait_for_load_state("networkidle")


def card_images(page: Any) -> tuple[int, int]:
    """(thumbnails shown, thumbnails broken) among the list's and the item's pictures."""
    return tuple(
        page.evaluate(
            """() => {
          const imgs = [...document.querySelectorAll('.thumb img, .big img')];
          return [imgs.filter(i => i.complete && i.naturalWidth > 0).length,
                  imgs.filter(i => i.complete && i.naturalWidth === 0).length];
        }"""
        )
    )


def overlay_widths(page: Any) -> list[int]:
    """naturalWidth of every thumbnail drawn on the map (0: not loaded)."""
    page.wait_for_function(
        "() => [...document.querySelectorAll('img.thumb-overlay')].every(i => i.complete)"
    )
    return list(
        page.evaluate(
            "() => [...document.querySelectorAll('img.thumb-overlay')].map(i => i.naturalWidth)"
        )
    )


def highlighted_paths(page: Any) -> int:
    return int(
        page.evaluate(
            f"""() => [...document.querySelectorAll('.leaflet-overlay-pane path')]
                 .filter(p => p.getAttribute('stroke') === '{HIGHLIGHT}').length"""
        )
    )


def point_of(page: Any, lon: float, lat: float) -> tuple[float, float]:
    """Where (lon, lat) is on the page, in CSS pixels."""
    x, y = page.evaluate(
        """([lon, lat]) => {
          const map = window.pixelfleet.map, box = map.getContainer().getBoundingClientRect();
          const p = map.latLngToContainerPoint([lat, lon]);
          return [box.left + p.x, box.top + p.y];
        }""",
        [lon, lat],
    )
    return float(x), float(y)


def test_search_map_shows_footprints_and_thumbnails(page: Any, base: str, shots: Path) -> None:
    goto(page, f"{base}/")
    assert page.locator(".card").count() == 15
    assert page.locator("#results .card").count() == 9  # georeferenced: on the map
    assert page.locator("#unplaced .card").count() == 6  # photos: listed beside it
    assert card_images(page) == (15, 0)
    widths = overlay_widths(page)
    assert len(widths) == 9 and all(w > 0 for w in widths), widths
    # The world outline is drawn (Natural Earth countries, served from the package).
    page.wait_for_function("() => document.querySelectorAll('.leaflet-world-pane path').length")
    assert page.locator(".leaflet-world-pane path").count() >= 1
    # Every image has a text alternative.
    assert page.locator("img:not([alt]), img[alt='']").count() == 0
    page.screenshot(path=str(shots / "search.png"))

    # List -> map: hovering a result highlights its footprint.
    assert highlighted_paths(page) == 0
    page.hover(f'.card[data-id="{NAIP}"]')
    assert highlighted_paths(page) >= 1
    page.mouse.move(5, 5)
    assert highlighted_paths(page) == 0
    # Map -> list: hovering a footprint highlights its result.
    west, south, east, north = -61.29, 72.23, -52.30, 74.66
    page.mouse.move(*point_of(page, (west + east) / 2, (south + north) / 2))
    page.wait_for_selector(f'.card.hl[data-id="{GREENLAND}"]')
    assert page.locator(".card.hl").count() == 1

    # A result opens the item page: the map with the footprint and the whole thumbnail.
    page.click(f'.card[data-id="{NAIP}"] a.title')
    page.wait_for_load_state("networkidle")
    assert NAIP.rsplit("/", 1)[1] in page.locator("h1").inner_text()
    assert card_images(page) == (1, 0)
    assert [w > 0 for w in overlay_widths(page)] == [True]
    assert page.locator("#item-map .leaflet-overlay-pane path").count() == 1
    assert "EPSG:26917" in page.content()
    assert "None" not in page.locator("table.props").inner_text()
    page.screenshot(path=str(shots / "item.png"), full_page=True)


def test_drawing_an_area_filters_the_results(page: Any, base: str, shots: Path) -> None:
    goto(page, f"{base}/?q=tif")
    page.evaluate("() => window.pixelfleet.map.setView([37, -90], 4)")
    # Around the eastern United States: the NAIP tile (Virginia) and cog_cmap (Maryland).
    start = point_of(page, -81.0, 35.0)
    end = point_of(page, -75.0, 41.0)
    page.click("#draw-area")
    assert page.get_attribute("#draw-area", "aria-pressed") == "true"
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(*end, steps=8)
    with page.expect_navigation():
        page.mouse.up()
    page.wait_for_load_state("networkidle")
    query = urllib.parse.parse_qs(urllib.parse.urlparse(page.url).query)
    west, south, east, north = (float(v) for v in query["bbox"][0].split(","))
    assert -81.5 < west < -80.5 and 34.5 < south < 35.5 and -75.5 < east < -74.5
    assert 40.5 < north < 41.5
    assert query["q"] == ["tif"]  # the other filters stay
    ids = {page.locator(".card").nth(i).get_attribute("data-id") for i in range(2)}
    assert page.locator(".card").count() == 2
    assert ids == {NAIP, "ca/2014/cog_cmap.tif"}
    assert [w > 0 for w in overlay_widths(page)] == [True, True]
    assert page.locator(".chip.filter.area").count() == 1
    page.screenshot(path=str(shots / "search-area.png"))

    # Shift-drag draws too (no button); then the area chip's × removes the filter.
    page.evaluate("() => window.pixelfleet.map.setView([37, -90], 4)")
    page.keyboard.down("Shift")
    page.mouse.move(*point_of(page, -80.0, 39.0))
    page.mouse.down()
    page.mouse.move(*point_of(page, -78.5, 40.5), steps=5)
    with page.expect_navigation():
        page.mouse.up()
    page.keyboard.up("Shift")
    page.wait_for_load_state("networkidle")
    assert [c.get_attribute("data-id") for c in page.locator(".card").all()] == [
        "ca/2014/cog_cmap.tif"
    ]
    page.click(".chip.filter.area a.remove")
    page.wait_for_load_state("networkidle")
    assert "bbox" not in page.url and page.locator(".card").count() == 9


def test_chips_paging_and_live_update_hooks(page: Any, base: str, shots: Path) -> None:
    goto(page, f"{base}/?collection=demo&start=2013-01-01&end=2015-12-31&limit=4&sort=id")
    chips = page.locator(".active .chip.filter")
    assert chips.count() == 2  # the collection and the date range
    assert "2013-01-01" in chips.nth(1).inner_text()
    assert page.locator(".card").count() == 4
    assert "1–4" in page.locator("#count").inner_text()
    first = [c.get_attribute("data-id") for c in page.locator(".card").all()]
    page.click("a[rel=next]")
    page.wait_for_load_state("networkidle")
    assert "5–8" in page.locator("#count").inner_text()
    second = [c.get_attribute("data-id") for c in page.locator(".card").all()]
    assert not set(first) & set(second) and second == sorted(second)
    page.click("a[rel=prev]")
    page.wait_for_load_state("networkidle")
    assert [c.get_attribute("data-id") for c in page.locator(".card").all()] == first
    page.click(".chip.filter.dates a.remove")
    page.wait_for_load_state("networkidle")
    assert "start=" not in page.url and "collection=demo" in page.url

    # A label chip on a result narrows the search to that label.
    goto(page, f"{base}/")
    page.click('.card[data-id="photos/chelsea.png"] .chips a')
    page.wait_for_load_state("networkidle")
    assert [c.get_attribute("data-id") for c in page.locator(".card").all()] == [
        "photos/chelsea.png"
    ]
    assert page.locator(".chip.filter.label").inner_text().split() == ["label", "cat", "×"]
    page.screenshot(path=str(shots / "search-cat.png"))

    # What a live-update stream would call: removeItem and addItem keep map and list in step.
    goto(page, f"{base}/")
    feature = page.evaluate(
        f"() => fetch('/stac/collections/demo/items/{NAIP}').then(r => r.json())"
    )
    page.evaluate(f"() => window.pixelfleet.removeItem('{NAIP}')")
    assert page.locator("#results .card").count() == 8
    assert len(overlay_widths(page)) == 8
    assert page.locator("#placed-count").inner_text() == "8"
    page.evaluate("(f) => window.pixelfleet.addItem(f)", feature)
    assert page.locator("#results .card").first.get_attribute("data-id") == NAIP
    assert page.locator("#placed-count").inner_text() == "9"
    widths = overlay_widths(page)
    assert len(widths) == 9 and all(w > 0 for w in widths)
    page.hover(f'.card[data-id="{NAIP}"]')
    assert highlighted_paths(page) >= 1


def test_keyboard_reaches_results_and_opens_an_item(page: Any, base: str) -> None:
    goto(page, f"{base}/")
    # Tab first reaches the footprints on the map: focus highlights the result, Enter opens.
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.matches('.leaflet-overlay-pane path')"):
            break
    else:
        pytest.fail("Tab never reached a footprint")
    assert page.locator(".card.hl").count() == 1
    page.keyboard.press("Tab")
    assert page.locator(".card.hl").count() == 1
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.matches('.card a.title')"):
            break
    else:
        pytest.fail("Tab never reached a result")
    focused = page.evaluate("() => document.activeElement.closest('.card').dataset.id")
    assert page.locator(f'.card.hl[data-id="{focused}"]').count() == 1  # its footprint too
    assert highlighted_paths(page) >= 1
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert urllib.parse.unquote(page.url).endswith(focused)


def test_item_page_copies_stac_json(browser: Any, base: str) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
    try:
        page = context.new_page()
        goto(page, f"{base}/items/demo/{NAIP}")
        page.click("#copy-json")
        page.wait_for_selector("#copy-status:has-text('Copied')")
        copied = page.evaluate("() => navigator.clipboard.readText()")
        assert f'"id": "{NAIP}"' in copied and "/assets/demo/" in copied
        assert "from pystac_client import Client" in page.locator("#snippet").inner_text()
        href = page.get_attribute("table.assets a[download]", "href")
        assert href is not None and page.request.get(href).status == 200
    finally:
        context.close()


@pytest.mark.parametrize("width", [390, 1400])
def test_pages_fit_the_screen(browser: Any, base: str, shots: Path, width: int) -> None:
    for page in open_page(browser, base, width, 844 if width < 800 else 900):
        for name, url, maps in [
            ("search", "/", 1),
            ("item", f"/items/demo/{NAIP}", 2),  # the footprint and the locator
            ("item-photo", "/items/demo/photos/chelsea.png", 0),
        ]:
            goto(page, f"{base}{url}")
            overflow = page.evaluate(
                "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0, f"{url} is {overflow} px wider than {width} px"
            assert page.locator(".leaflet-container").count() == maps
            if width < 800:
                page.screenshot(path=str(shots / f"{name}-phone.png"), full_page=True)


def test_bad_input_and_runs_page(page: Any, base: str, shots: Path) -> None:
    goto(page, f"{base}/?bbox=1,2")
    assert "bbox" in page.locator(".error").inner_text()
    assert [e for e in page.errors if "status of 400" in e] == page.errors[:1]
    page.errors.clear()
    assert page.locator(".chip.filter.area").count() == 1  # removable, to recover
    goto(page, f"{base}/items/demo/photos/chelsea.png")
    assert "cat" in page.locator("ul.labels").inner_text()
    assert "93%" in page.locator("ul.labels").inner_text()
    assert "no georeference" in page.content()
    assert "file's time" in page.content()  # not presented as a capture date
    page.screenshot(path=str(shots / "item-photo.png"), full_page=True)
    goto(page, f"{base}/runs")
    assert page.locator("table.runs tr.done").count() == 1
    assert "100%" in page.locator("table.runs").inner_text()
    assert page.locator("table.runs tr.done td").nth(4).inner_text() == "15"
    page.screenshot(path=str(shots / "runs.png"), full_page=True)


@pytest.fixture(scope="module")
def composite_base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server over the demo's Landsat scene with its true-colour composite."""
    catalog_url, ledger_url = fill_composite_catalog(tmp_path_factory.mktemp("composite"))
    app = create_app(Settings(), catalog_url=catalog_url, ledger_url=ledger_url)
    with live_server(app) as url:
        yield url


@pytest.mark.parametrize("width", [1400, 390])
def test_item_page_shows_the_composite_and_its_histogram(
    browser: Any, composite_base: str, shots: Path, width: int
) -> None:
    for page in open_page(browser, composite_base, width, 900 if width > 800 else 844):
        goto(page, f"{composite_base}/items/landsat/{LANDSAT}")
        composite = page.locator(".composite")
        assert composite.count() == 1
        picture = composite.locator("img")
        picture.scroll_into_view_if_needed()
        page.wait_for_function("() => document.querySelector('.composite img').complete")
        assert picture.evaluate("i => i.naturalWidth") > 0
        assert "true-color composite" in (picture.get_attribute("alt") or "")
        # The histogram: three channel outlines, read out by its title and description.
        chart = composite.get_by_role("img", name="Histogram of the true-color composite")
        assert chart.is_visible()
        assert chart.locator("path").count() == 3
        box = chart.bounding_box()
        assert box is not None and box["width"] >= 300 and box["height"] >= 120
        assert [t.strip() for t in chart.locator("text").all_text_contents()][:5] == [
            "0", "64", "128", "192", "255"
        ]  # fmt: skip
        rows = composite.locator("table.channels tbody tr")
        assert rows.count() == 3
        assert rows.nth(0).inner_text().startswith("red")
        # The counts behind the chart open from the keyboard.
        counts = composite.locator("details.buckets")
        assert not counts.locator("table").is_visible()
        counts.locator("summary").focus()
        page.keyboard.press("Enter")
        assert counts.locator("table").is_visible()
        assert counts.locator("tbody tr").count() == 64
        overflow = page.evaluate(
            "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"the page is {overflow} px wider than {width} px"
        suffix = "" if width > 800 else "-phone"
        page.screenshot(path=str(shots / f"item-composite{suffix}.png"), full_page=True)
        composite.screenshot(path=str(shots / f"composite-histogram{suffix}.png"))
