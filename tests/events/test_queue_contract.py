"""One contract for every EventQueue: MemoryQueue (the reference), SqsQueue on moto,
AmqpQueue on RabbitMQ. Receive, acknowledge, come back, dead-letter with a reason, extend."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from event_helpers import (
    amqp_channel,
    dead_letters_amqp,
    dead_letters_sqs,
    new_sqs_queue,
    sqs_client,
)
from pixelfleet.events import EventQueue, MemoryQueue

VISIBILITY = 1  # seconds, where the queue has a visibility timeout


@dataclass
class Harness:
    """A queue under test and what the test needs to drive it from outside."""

    queue: EventQueue
    put: Callable[[str], None]
    dead: Callable[[], list[tuple[str, str]]]
    #: A new receiver for the same queue (after ``queue`` is closed).
    reopen: Callable[[], EventQueue]
    #: Unacknowledged messages come back after the visibility timeout (else: on close).
    has_visibility: bool


def _memory(request: pytest.FixtureRequest) -> Harness:
    queue = MemoryQueue(visibility=VISIBILITY)
    return Harness(
        queue,
        lambda body: queue.put(body),
        lambda: [(m.body, reason) for m, reason in queue.dead],
        lambda: queue,
        True,
    )


def _sqs(request: pytest.FixtureRequest) -> Harness:
    from pixelfleet.events.sqs import SqsQueue
    from pixelfleet.settings import get_settings

    request.getfixturevalue("s3_env")
    endpoint = request.getfixturevalue("s3_server")
    monkeypatch = request.getfixturevalue("monkeypatch")
    import pixelfleet.settings as settings_mod

    monkeypatch.setenv("PIXELFLEET_SQS_ENDPOINT", endpoint)
    monkeypatch.setattr(settings_mod, "_current", None)
    client = sqs_client(endpoint)
    request.addfinalizer(client.close)
    env = new_sqs_queue(client, endpoint, visibility=VISIBILITY)

    def open_one() -> EventQueue:
        queue = SqsQueue(f"sqs://{env.name}", get_settings())
        request.addfinalizer(queue.close)
        return queue

    return Harness(
        open_one(),
        lambda body: client.send_message(QueueUrl=env.url, MessageBody=body),
        lambda: dead_letters_sqs(env),
        open_one,
        True,
    )


def _amqp(request: pytest.FixtureRequest) -> Harness:
    from pixelfleet.events.amqp import AmqpQueue

    url = request.getfixturevalue("amqp_url")
    name = url.rsplit("/", 1)[1]

    def open_one() -> EventQueue:
        queue = AmqpQueue(url)
        request.addfinalizer(queue.close)
        return queue

    queue = open_one()
    channel = amqp_channel()
    request.addfinalizer(channel.connection.close)
    return Harness(
        queue,
        lambda body: channel.basic_publish("", name, body.encode()),
        lambda: dead_letters_amqp(name),
        open_one,
        False,
    )


@pytest.fixture(
    params=[
        pytest.param(_memory, id="memory"),
        pytest.param(_sqs, id="sqs", marks=pytest.mark.s3),
        pytest.param(_amqp, id="amqp", marks=pytest.mark.amqp),
    ]
)
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    yield request.param(request)


def receive_all(queue: EventQueue, n: int, wait: float = 5.0) -> list[Any]:
    """Receive until ``n`` messages came (or ``wait`` seconds passed)."""
    out: list[Any] = []
    deadline = time.monotonic() + wait
    while len(out) < n and time.monotonic() < deadline:
        out += queue.receive(10, 1.0)
    return out


def test_receive_hands_out_what_was_sent(harness: Harness) -> None:
    harness.put('{"n": 1}')
    harness.put('{"n": 2}')
    got = receive_all(harness.queue, 2)
    assert sorted(m.body for m in got) == ['{"n": 1}', '{"n": 2}']
    assert all(m.receive_count == 1 for m in got)
    assert len({m.id for m in got}) == 2


def test_receive_waits_at_most_about_wait(harness: Harness) -> None:
    start = time.monotonic()
    assert harness.queue.receive(10, 1.0) == []
    assert time.monotonic() - start < 3.0


def test_an_acknowledged_message_is_gone(harness: Harness) -> None:
    harness.put('{"n": 1}')
    [message] = receive_all(harness.queue, 1)
    harness.queue.ack(message)
    if harness.has_visibility:
        time.sleep(VISIBILITY + 0.3)
        again = harness.queue
    else:
        harness.queue.close()
        again = harness.reopen()
    assert again.receive(10, 1.0) == []
    assert harness.dead() == []


def test_an_unacknowledged_message_comes_back(harness: Harness) -> None:
    harness.put('{"n": 1}')
    [message] = receive_all(harness.queue, 1)
    if harness.has_visibility:
        assert harness.queue.receive(10, 0.2) == []  # hidden while held
        again = harness.queue
    else:
        harness.queue.close()  # an AMQP message returns when its connection closes
        again = harness.reopen()
    [back] = receive_all(again, 1, wait=VISIBILITY + 5)
    assert back.body == message.body
    assert back.receive_count >= 2
    again.ack(back)


def test_a_rejected_message_lands_in_the_dead_letters_with_its_reason(harness: Harness) -> None:
    harness.put('{"n": "bad"}')
    [message] = receive_all(harness.queue, 1)
    harness.queue.reject(message, "malformed message: not an S3 notification")
    assert harness.dead() == [('{"n": "bad"}', "malformed message: not an S3 notification")]
    if harness.has_visibility:
        time.sleep(VISIBILITY + 0.3)
        assert harness.queue.receive(10, 0.5) == []
    else:
        harness.queue.close()
        assert harness.reopen().receive(10, 0.5) == []


def test_extend_keeps_a_message_hidden_longer(harness: Harness) -> None:
    harness.put('{"n": 1}')
    [message] = receive_all(harness.queue, 1)
    harness.queue.extend(message, VISIBILITY + 2)  # no-op where there is no visibility
    if not harness.has_visibility:
        assert harness.queue.visibility is None
        harness.queue.ack(message)
        return
    assert harness.queue.visibility == VISIBILITY
    time.sleep(VISIBILITY + 0.5)
    assert harness.queue.receive(10, 0.2) == []  # past the first timeout, still hidden
    [back] = receive_all(harness.queue, 1, wait=5)
    assert back.body == message.body
