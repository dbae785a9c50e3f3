"""The ``EventQueue`` interface and the values it carries.

A queue hands out :class:`Message` objects; each holds the notification's text (or,
for sources that know the change directly, such as a watched folder, the events
themselves). The receiver :meth:`~EventQueue.ack` s a message once everything it
asked for is recorded, or :meth:`~EventQueue.reject` s it to the dead-letter queue
with a reason. A message neither acknowledged nor rejected comes back later (after
the queue's visibility timeout, or when the connection closes): delivery is at least
once, so handling a message twice must be harmless.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Literal

#: What happened to an object.
Action = Literal["created", "deleted"]


@dataclass(frozen=True)
class BucketEvent:
    """One change to one object, as a notification told it.

    ``key`` is decoded (S3 notifications URL-encode it). ``sequencer`` orders events
    on the same key (S3's hexadecimal ``sequencer``; empty when the sender has none).
    """

    action: Action
    bucket: str
    key: str
    etag: str = ""
    size: int = 0
    sequencer: str = ""
    time: float = 0.0
    origin: str = "s3"


@dataclass
class Message:
    """One message from a queue: its text, the events in it once read, and the queue's
    handle for acknowledging it."""

    id: str
    body: str = ""
    #: Set by sources that produce events directly (no text to parse).
    events: list[BucketEvent] | None = None
    #: How many times the queue has handed this message out (1 on first delivery).
    receive_count: int = 1
    #: The queue's own handle (an SQS receipt handle, an AMQP delivery tag).
    handle: Any = None
    received: float = field(default_factory=time.monotonic)


class EventQueue(ABC):
    """Where bucket events come from: a queue of messages, told what became of each."""

    #: Short name for summaries (``sqs``, ``amqp``, ``folder``, ``webhook``, ``memory``).
    name: str = "queue"

    @abstractmethod
    def receive(self, most: int, wait: float) -> list[Message]:
        """Up to ``most`` messages, waiting up to ``wait`` seconds for the first one."""

    @abstractmethod
    def ack(self, message: Message) -> None:
        """``message`` is handled and recorded: remove it from the queue for good."""

    @abstractmethod
    def reject(self, message: Message, reason: str) -> None:
        """``message`` cannot be handled: move it to the dead-letter queue with ``reason``."""

    def extend(self, message: Message, seconds: float) -> None:  # noqa: B027 - optional
        """Keep ``message`` out of other receivers' hands ``seconds`` longer (a long task)."""

    #: How long a received message stays hidden from other receivers (None: until the
    #: connection closes); the watcher extends messages held longer than half of it.
    visibility: float | None = None

    #: How many :meth:`receive` calls may run at once from different threads (1: the
    #: queue's connection belongs to one thread, as AMQP's does). A queue whose calls
    #: are network round trips (SQS) takes several at once to keep workers fed.
    concurrent_receives: int = 1

    def close(self) -> None:  # noqa: B027 - optional: most queues hold a connection
        """Release connections; messages not acknowledged go back to the queue."""

    def describe(self) -> str:
        """One line for the watcher's banner, e.g. ``sqs queue https://...``."""
        return self.name

    def __enter__(self) -> EventQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def compare_sequencers(a: str, b: str) -> int:
    """-1, 0 or 1 as S3 sequencer ``a`` is older than, the same as or newer than ``b``.

    S3 documents that sequencers of one key compare as hexadecimal numbers of possibly
    different lengths: pad the shorter with zeros on the left, then compare as text.
    An empty sequencer is unknown and compares equal to anything.
    """
    if not a or not b:
        return 0
    width = max(len(a), len(b))
    left, right = a.upper().rjust(width, "0"), b.upper().rjust(width, "0")
    return (left > right) - (left < right)
