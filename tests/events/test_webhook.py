"""POST /events (``pixelfleet serve --events``): MinIO's webhook in, the watcher's work out;
401 without the token, 413 over the size limit, 400 for what is not a notification,
never a 5xx."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from event_helpers import minio_event
from live_helpers import keys_under, photo, photo_pipeline

TOKEN = "s3cret-token"


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Path, Path]]:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    import pixelfleet.settings as settings_mod
    from pixelfleet.server import create_app

    monkeypatch.setenv("PIXELFLEET_API_TOKEN", TOKEN)
    monkeypatch.setattr(settings_mod, "_current", None)
    src, out = tmp_path / "photos", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    catalog_url = f"sqlite:///{tmp_path / 'catalog.db'}"
    pipeline = photo_pipeline(f"file://{src}", f"file://{out}", catalog_url)
    app = create_app(
        catalog_url=catalog_url,
        ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}",
        events_pipeline=pipeline,
    )
    with TestClient(app) as client:
        yield client, src, out


def post(client: Any, body: str | bytes, token: str | None = TOKEN) -> Any:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    answer = client.post("/events", content=body, headers=headers)
    assert answer.status_code < 500, answer.text
    return answer


def item_ids(client: Any) -> set[str]:
    answer = client.get("/stac/search", params={"collections": "photos", "limit": 100})
    assert answer.status_code == 200, answer.text
    return {f["id"] for f in answer.json()["features"]}


def test_upload_overwrite_delete(served: tuple[Any, Path, Path]) -> None:
    client, src, out = served
    (src / "a b.png").write_bytes(photo())
    answer = post(client, minio_event("created", "photos", "a b.png", sequencer="01"))
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "recorded"
    assert answer.json()["events"] == [{"action": "created", "bucket": "photos", "key": "a b.png"}]
    assert item_ids(client) == {"a b.png"}
    first = (out / "a b.thumb.jpg").read_bytes()

    (src / "a b.png").write_bytes(photo((10, 200, 10)))
    answer = post(client, minio_event("created", "photos", "a b.png", sequencer="02"))
    assert answer.json()["status"] == "recorded"
    assert (out / "a b.thumb.jpg").read_bytes() != first

    (src / "a b.png").unlink()
    answer = post(client, minio_event("deleted", "photos", "a b.png", sequencer="03"))
    assert answer.json()["status"] == "recorded"
    assert keys_under(out) == set() and item_ids(client) == set()

    counts = client.app.state.webhook.watcher.counts()
    assert (counts["created"], counts["updated"], counts["deleted"]) == (1, 1, 1)


def test_a_failed_object_is_dead_lettered_with_its_reason(served: tuple[Any, Path, Path]) -> None:
    client, src, _ = served
    (src / "bad.png").write_bytes(b"not a png")
    answer = post(client, minio_event("created", "photos", "bad.png"))
    assert answer.status_code == 200
    assert answer.json()["status"] == "dead-lettered"
    assert "bad.png" in answer.json()["reason"]
    dead = client.app.state.webhook.queue.dead
    assert len(dead) == 1 and "bad.png" in dead[0][1]


def test_test_events_are_ignored(served: tuple[Any, Path, Path]) -> None:
    client, _, _ = served
    body = json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "photos"})
    answer = post(client, body)
    assert answer.status_code == 200 and answer.json() == {"status": "ignored", "events": []}


@pytest.mark.parametrize("token", [None, "wrong", ""])
def test_the_token_is_required(served: tuple[Any, Path, Path], token: str | None) -> None:
    client, src, _ = served
    answer = post(client, minio_event("created", "photos", "a.png"), token=token)
    assert answer.status_code == 401
    assert "Authorization: Bearer" in answer.json()["detail"]
    assert client.app.state.webhook.queue.pending() == 0
    basic = client.post("/events", content="{}", headers={"Authorization": f"Basic {TOKEN}"})
    assert basic.status_code == 401


def test_bodies_over_the_limit_are_refused(served: tuple[Any, Path, Path]) -> None:
    from pixelfleet.server.events import MAX_EVENTS_BODY

    client, _, _ = served
    big = b"x" * (MAX_EVENTS_BODY + 1)
    assert post(client, big).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: refused while reading
        for _ in range(40):
            yield b" " * 65536

    headers = {"Authorization": f"Bearer {TOKEN}"}
    answer = client.post("/events", content=chunks(), headers=headers)
    assert answer.status_code == 413, answer.text


@pytest.mark.parametrize(
    "body, why",
    [
        ("{not json", "not JSON"),
        ('{"hello": "world"}', "not an S3, SNS, EventBridge or MinIO notification"),
        ("[1, 2]", "not an object"),
        ('{"Records": [{"eventName": "s3:ObjectCreated:Put"}]}', "has no 'bucket' object"),
        (b"\xff\xfe", "not JSON"),
        ("", "not JSON"),
    ],
)
def test_malformed_notifications_are_400(
    served: tuple[Any, Path, Path], body: str | bytes, why: str
) -> None:
    client, _, _ = served
    answer = post(client, body)
    assert answer.status_code == 400, answer.text
    assert why in answer.json()["detail"]


def test_serve_events_needs_a_token(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from pixelfleet.cli.main import cli

    pipeline = tmp_path / "photos.toml"
    pipeline.write_text(
        f'[source]\nurl = "file://{tmp_path}"\n[output]\nurl = "file://{tmp_path}/out"\n'
        '[[steps]]\nop = "thumbnail"\n'
    )
    result = CliRunner().invoke(cli, ["serve", "--events", str(pipeline)])
    assert result.exit_code == 1, result.output
    assert "PIXELFLEET_API_TOKEN" in result.output


def test_a_stopped_watcher_is_started_again_never_5xx(served: tuple[Any, Path, Path]) -> None:
    client, src, _ = served
    webhook = client.app.state.webhook
    webhook.watcher.stop()  # as if its ledger had failed
    webhook._thread.join(30)
    assert not webhook.running
    (src / "late.png").write_bytes(photo())
    answer = post(client, minio_event("created", "photos", "late.png", sequencer="01"))
    assert answer.status_code in (200, 202), answer.text
    assert webhook.running
    deadline = time.monotonic() + 20
    while "late.png" not in item_ids(client):
        assert time.monotonic() < deadline, "the restarted watcher did not handle the event"
        time.sleep(0.05)
