"""Fixtures for event queues: RabbitMQ queues of their own, fresh SQS queues on moto."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from event_helpers import AMQP_HOST, AMQP_PORT, SqsEnv, amqp_reachable, new_sqs_queue, sqs_client


@pytest.fixture
def amqp_url() -> Iterator[str]:
    """``amqp://guest:guest@127.0.0.1:5672/<fresh queue>``; the queue, its dead-letter
    queue and exchange are deleted afterwards. Skips when RabbitMQ is unreachable,
    unless CI is set (then it is a failure)."""
    if not amqp_reachable():
        if os.environ.get("CI"):
            pytest.fail(f"RabbitMQ is not reachable on {AMQP_HOST}:{AMQP_PORT} (CI needs it)")
        pytest.skip(f"RabbitMQ is not reachable on {AMQP_HOST}:{AMQP_PORT}")
    pika = pytest.importorskip("pika")
    name = f"pixelfleet-test-{uuid.uuid4().hex[:10]}"
    yield f"amqp://guest:guest@{AMQP_HOST}:{AMQP_PORT}/{name}"
    connection = pika.BlockingConnection(pika.ConnectionParameters(AMQP_HOST, AMQP_PORT))
    try:
        channel = connection.channel()
        for queue in (name, f"{name}.dead"):
            channel.queue_delete(queue)
        for exchange in (f"{name}.dead", f"{name}-ex"):
            channel.exchange_delete(exchange)
    finally:
        connection.close()


@pytest.fixture
def sqs_env(s3_env: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[SqsEnv]:
    """A fresh SQS queue (visibility 30 s) on the moto server that also serves
    ``s3_env``; pixelfleet's settings point at it."""
    import pixelfleet.settings as settings_mod

    monkeypatch.setenv("PIXELFLEET_SQS_ENDPOINT", s3_env.endpoint)
    monkeypatch.setattr(settings_mod, "_current", None)
    client = sqs_client(s3_env.endpoint)
    try:
        yield new_sqs_queue(client, s3_env.endpoint)
    finally:
        client.close()
