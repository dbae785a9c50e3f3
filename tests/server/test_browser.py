"""The pages in headless Chromium (Debian's, driven by playwright): search, thumbnails, item.

Screenshots of each page go to a temporary folder (a test run changes no tracked file);
``make screenshots`` runs these tests with ``--screenshots docs/screenshots`` to refresh
the ones the docs show.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from catalog_helpers import chromium_path
from pixelfleet.server import create_app
from pixelfleet.settings import Settings
from server_helpers import fill_demo_catalog, live_server

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


@pytest.fixture(scope="module")
def shots(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go: ``--screenshots DIR`` if given, else a temporary folder."""
    chosen = request.config.getoption("--screenshots")
    return Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    catalog_url, ledger_url = fill_demo_catalog(tmp_path_factory.mktemp("browser"))
    app = create_app(Settings(), catalog_url=catalog_url, ledger_url=ledger_url)
    with live_server(app) as url:
        yield url


@pytest.fixture(scope="module")
def page(base: str) -> Iterator[Any]:
    playwright = pytest.importorskip("playwright.sync_api")
    path = chromium_path()
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            yield context.new_page()
        finally:
            browser.close()


def loaded_images(page: Any) -> tuple[int, int]:
    """(images shown, images broken) among result thumbnails."""
    return tuple(
        page.evaluate(
            """() => {
          const imgs = [...document.querySelectorAll('.thumb img, .big img')];
          return [imgs.filter(i => i.complete && i.naturalWidth > 0).length,
                  imgs.filter(i => i.complete && i.naturalWidth === 0).length];
        }"""
        )
    )


def test_search_shows_thumbnails_and_opens_an_item(page: Any, base: str, shots: Path) -> None:
    shots.mkdir(parents=True, exist_ok=True)
    page.goto(f"{base}/")
    page.wait_for_load_state("networkidle")
    cards = page.locator(".card")
    assert cards.count() == 15
    shown, broken = loaded_images(page)
    assert (shown, broken) == (15, 0)
    assert page.locator(".none").count() == 0
    page.screenshot(path=str(shots / "search.png"), full_page=True)

    page.fill("input[name=q]", "cat")
    page.click("button[type=submit]")
    page.wait_for_load_state("networkidle")
    assert page.locator(".card").count() == 1
    assert "chelsea.png" in page.locator(".card").inner_text()
    assert loaded_images(page) == (1, 0)
    page.screenshot(path=str(shots / "search-cat.png"), full_page=True)

    page.goto(f"{base}/?collection=demo&start=2016-01-01&end=2016-12-31&bbox=-79,36,-77,37")
    page.wait_for_load_state("networkidle")
    assert page.locator(".card").count() == 1
    page.locator(".card").first.click()
    page.wait_for_load_state("networkidle")
    assert "m_3607824_se_17_1_20160620_sub.tif" in page.locator("h1").inner_text()
    assert loaded_images(page) == (1, 0)
    assert page.locator("svg.outline polygon").count() == 1
    assert "EPSG:26917" in page.content()
    page.screenshot(path=str(shots / "item.png"), full_page=True)


def test_bad_input_and_runs_page(page: Any, base: str, shots: Path) -> None:
    page.goto(f"{base}/?bbox=1,2")
    assert "bbox" in page.locator(".error").inner_text()
    page.goto(f"{base}/items/demo/photos/chelsea.png")
    page.wait_for_load_state("networkidle")
    assert "cat" in page.locator(".chips").inner_text()
    assert "no georeference" in page.content()
    page.screenshot(path=str(shots / "item-photo.png"), full_page=True)
    page.goto(f"{base}/runs")
    assert page.locator("table.runs tr.done").count() == 1
    assert "100%" in page.locator("table.runs").inner_text()
    assert page.locator("table.runs tr.done td").nth(4).inner_text() == "15"
    page.screenshot(path=str(shots / "runs.png"), full_page=True)
