"""Chaos through a real queue and the real command: 2,000 events over 300 keys (20%
duplicated, shuffled, deletes before and after their creates, malformed messages) on
moto's SQS, `pixelfleet watch` SIGKILLed twice and started again. Once the queue is
drained, catalog == bucket and outputs == bucket exactly, and the malformed messages
sit in the dead-letter queue with their reasons."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from event_helpers import new_sqs_queue, sqs_client
from live_helpers import apply_changes, chaos_script, keys_under
from pixelfleet.catalog import open_catalog
from pixelfleet.catalog.query import parse_query

pytestmark = [pytest.mark.s3, pytest.mark.timeout(600)]

SOAK = os.environ.get("PIXELFLEET_SOAK") == "1"


def in_flight(env: Any, client: Any = None) -> int:
    attrs = (client or env.client).get_queue_attributes(
        QueueUrl=env.url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(
        attrs["ApproximateNumberOfMessagesNotVisible"]
    )


def start_watch(toml: Path, env: Any, ledger: str, log: Path) -> subprocess.Popen[bytes]:
    environ = {
        **os.environ,
        "PIXELFLEET_SQS_ENDPOINT": env.endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "pixelfleet.cli.main", "watch", str(toml)]
            + ["--queue", "sqs://" + env.url, "--ledger", ledger, "--executor", "inline"],
            env=environ,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_watch_survives_sigkill_and_converges(s3_server: str, tmp_path: Path) -> None:
    keys, events = (300, 2000) if not SOAK else (1000, 10000)
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    changes, messages = chaos_script(keys=keys, events=events, seed=11, malformed=12)
    apply_changes(src, changes)
    catalog_url = f"sqlite:///{tmp_path / 'cat.db'}"
    toml = tmp_path / "photos.toml"
    toml.write_text(
        f'[source]\nurl = "file://{src}"\ninclude = ["**/*.png"]\n'
        f'[output]\nurl = "file://{out}"\n'
        '[[steps]]\nop = "thumbnail"\nsize = 24\nkey = "{stem}.thumb.jpg"\n'
        f'[catalog]\nurl = "{catalog_url}"\ncollection = "photos"\n'
    )
    client = sqs_client(s3_server)
    env = new_sqs_queue(client, s3_server, visibility=4)
    # Events stream in, as from a bucket: moto's ReceiveMessage reads its whole queue
    # (1.1 s a call with 2,400 messages waiting), so the feeder keeps under 150 queued.
    sent = {"n": 0}
    feeding = threading.Event()

    def feed() -> None:
        feeder = sqs_client(s3_server)
        for start in range(0, len(messages), 10):
            while in_flight(env, feeder) > 150 and not feeding.is_set():
                time.sleep(0.05)
            batch = messages[start : start + 10]
            feeder.send_message_batch(
                QueueUrl=env.url,
                Entries=[{"Id": str(i), "MessageBody": body} for i, body in enumerate(batch)],
            )
            sent["n"] += len(batch)

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    log = tmp_path / "watch.log"
    total = len(messages)
    try:
        for kill_at in (total * 0.4, total * 0.75):  # killed twice, mid-stream
            proc = start_watch(toml, env, ledger, log)
            deadline = time.monotonic() + 150
            while sent["n"] < kill_at and time.monotonic() < deadline:
                assert proc.poll() is None, log.read_text()[-3000:]
                time.sleep(0.1)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        proc = start_watch(toml, env, ledger, log)
        try:
            deadline = time.monotonic() + (900 if SOAK else 200)
            while (thread.is_alive() or in_flight(env)) and time.monotonic() < deadline:
                assert proc.poll() is None, log.read_text()[-3000:]
                time.sleep(0.2)
            assert not thread.is_alive() and in_flight(env) == 0, log.read_text()[-3000:]
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0, log.read_text()[-3000:]
    finally:
        feeding.set()

    bucket = {p.relative_to(src).as_posix() for p in src.rglob("*.png")}
    with open_catalog(catalog_url) as catalog:
        items = catalog.search(parse_query(collections=["photos"], limit=10000)).items
    assert {i["id"] for i in items} == bucket
    assert keys_under(out) == {k.replace(".png", ".thumb.jpg") for k in bucket}
    for item in items:
        assert item["properties"]["pixelfleet:size"] == (src / item["id"]).stat().st_size
    # At least once: a watcher killed between sending a message to the dead-letter queue
    # and deleting the original sends it again; the original's id tells copies apart.
    dead: dict[str, str] = {}
    while True:
        answer = env.client.receive_message(
            QueueUrl=env.dead_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
        )
        got = answer.get("Messages", [])
        if not got:
            break
        for raw in got:
            attrs = raw.get("MessageAttributes", {})
            ident = attrs["pixelfleet-message-id"]["StringValue"]
            dead[ident] = attrs["pixelfleet-reason"]["StringValue"]
    assert len(dead) == 12, dead
    assert all("malformed message" in reason for reason in dead.values())
    text = log.read_text()
    assert "stopped" in text and "dead-lettered" in text
