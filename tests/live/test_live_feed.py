"""``GET /live``: items a watcher adds and removes reach an open page as server-sent
events, from the ledger's event log."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn

from pixelfleet.catalog import open_catalog
from pixelfleet.ledger import open_ledger
from pixelfleet.ledger.events import EventRecord
from pixelfleet.server import create_app
from pixelfleet.server import live as live_module


def made(action: str, key: str) -> EventRecord:
    return EventRecord("r", time.time(), action, key, key, "", 0.1, 0, "photos")


def serve(app: object) -> tuple[str, uvicorn.Server, threading.Thread]:
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    return f"http://127.0.0.1:{port}", server, thread


def test_changes_stream_to_a_client_and_resume_after_reconnect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live_module, "POLL_SECONDS", 0.05)
    monkeypatch.setattr(live_module, "STREAM_SECONDS", 3.0)
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    catalog = open_catalog(f"sqlite:///{tmp_path / 'cat.db'}")
    ledger = open_ledger(ledger_url)
    ledger.record_events([EventRecord("r", time.time(), "created", "old.png", "old.png")])
    app = create_app(catalog=catalog, ledger_url=ledger_url)
    base, server, thread = serve(app)
    got: list[tuple[str, dict[str, str]]] = []
    try:

        def write_later() -> None:
            time.sleep(0.5)
            ledger.record_events(
                [
                    made("created", "a.png"),
                    EventRecord("r", time.time(), "ignored", "b.txt", "b.txt"),
                    made("deleted", "c.png"),
                ]
            )

        threading.Thread(target=write_later, daemon=True).start()
        with httpx.stream("GET", f"{base}/live", timeout=10) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            kind, last_id = "", ""
            for line in response.iter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("id: "):
                    last_id = line[4:]
                elif line.startswith("data: ") and kind in ("item", "removed"):
                    got.append((kind, json.loads(line[6:])))
                    if len(got) == 2:
                        break
        # The old record came before the client connected: not sent; ignored ones never.
        assert [(k, d["id"], d["collection"]) for k, d in got] == [
            ("item", "a.png", "photos"),
            ("removed", "c.png", "photos"),
        ]
        ledger.record_events([EventRecord("r", time.time(), "updated", "d.png", "d.png")])
        # Reconnecting with the last id seen gets what came since.
        headers = {"Last-Event-ID": last_id}
        with httpx.stream("GET", f"{base}/live", headers=headers, timeout=10) as response:
            for line in response.iter_lines():
                if line.startswith("data: ") and '"d.png"' in line:
                    break
            else:
                raise AssertionError("the record written while away was not sent")
    finally:
        server.should_exit = True
        thread.join(10)
        ledger.close()
        catalog.close()
