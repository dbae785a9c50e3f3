"""The search page, open in Chromium, shows items a watcher adds and drops them when the
watcher deletes them, without a reload (server-sent events from ``GET /live``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from catalog_helpers import chromium_path
from live_helpers import Background, photo, photo_pipeline, s3_event
from pixelfleet.events import MemoryQueue
from pixelfleet.ledger import open_ledger
from pixelfleet.live import Watcher
from pixelfleet.server import create_app
from pixelfleet.settings import Settings
from server_helpers import live_server

pytestmark = pytest.mark.browser

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def cards(page: Any) -> list[str]:
    return list(
        page.evaluate("() => [...document.querySelectorAll('.card')].map(c => c.dataset.id)")
    )


def test_page_follows_a_watcher(tmp_path: Path) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    catalog_url = f"sqlite:///{tmp_path / 'cat.db'}"
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    pipeline = photo_pipeline(f"file://{src}", f"file://{out}", catalog_url)
    queue = MemoryQueue()
    ledger = open_ledger(ledger_url)
    (src / "first.png").write_bytes(photo())
    queue.put(s3_event("created", "", "first.png"))
    watcher = Watcher(pipeline, ledger, queue, summary_every=0)
    app = create_app(Settings(), catalog_url=catalog_url, ledger_url=ledger_url)
    with Background(watcher), live_server(app) as base, playwright.sync_playwright() as p:
        deadline = time.monotonic() + 30
        while queue.pending() and time.monotonic() < deadline:
            time.sleep(0.05)
        browser = p.chromium.launch(executable_path=chromium_path(), args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(base + "/")
            page.wait_for_function("() => window.pixelfleet && window.pixelfleet.live")
            assert cards(page) == ["first.png"]

            (src / "second.png").write_bytes(photo((0, 0, 250)))
            queue.put(s3_event("created", "", "second.png"))
            page.wait_for_function(
                "() => document.querySelector('.card[data-id=\"second.png\"]')", timeout=15000
            )
            page.wait_for_function(
                "() => [...document.querySelectorAll('.card[data-id=\"second.png\"] img')]"
                ".every(i => i.complete && i.naturalWidth > 0)"
            )
            (src / "first.png").unlink()
            queue.put(s3_event("deleted", "", "first.png"))
            page.wait_for_function(
                "() => !document.querySelector('.card[data-id=\"first.png\"]')", timeout=15000
            )
            assert cards(page) == ["second.png"]
            assert page.inner_text("#unplaced-count") == "1"
            page.screenshot(path=str(tmp_path / "live.png"))
            assert errors == []
        finally:
            browser.close()
    ledger.close()
