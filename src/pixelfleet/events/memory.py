"""``MemoryQueue``: an event queue in this process, the reference behaviour of a queue.

It behaves as SQS does where it matters to a receiver: a received message is hidden
for ``visibility`` seconds and handed out again (its receive count one higher) unless
acknowledged; a rejected message moves to :attr:`MemoryQueue.dead` with its reason;
with ``max_receives``, a message handed out that many times goes there by itself
(SQS's redrive policy). Tests and the server's webhook feed it with :meth:`put`.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass

from pixelfleet.events.base import BucketEvent, EventQueue, Message


@dataclass
class _Held:
    message: Message
    visible_at: float  # monotonic time it is handed out again; 0: not held


class MemoryQueue(EventQueue):
    """A queue fed by :meth:`put`, with visibility timeouts and a dead-letter list."""

    name = "memory"

    def __init__(self, visibility: float = 30.0, max_receives: int | None = None):
        self.visibility = visibility
        self.max_receives = max_receives
        self._lock = threading.Condition()
        self._messages: dict[str, _Held] = {}  # in arrival order
        self._ids = itertools.count(1)
        self._closed = False
        #: Messages acknowledged, in order.
        self.acked: list[Message] = []
        #: Messages rejected (or received too often), with their reasons.
        self.dead: list[tuple[Message, str]] = []

    def put(self, body: str = "", events: list[BucketEvent] | None = None) -> Message:
        """Add a message (text, or events already known); return it."""
        message = Message(id=f"m{next(self._ids)}", body=body, events=events, receive_count=0)
        with self._lock:
            self._messages[message.id] = _Held(message, 0.0)
            self._lock.notify_all()
        return message

    def receive(self, most: int, wait: float) -> list[Message]:
        """Messages visible now, waiting up to ``wait`` seconds for one to be."""
        deadline = time.monotonic() + wait
        with self._lock:
            while True:
                now = time.monotonic()
                out: list[Message] = []
                for held in list(self._messages.values()):
                    if len(out) >= most:
                        break
                    if held.visible_at > now:
                        continue
                    message = held.message
                    if self.max_receives is not None and message.receive_count >= self.max_receives:
                        del self._messages[message.id]
                        self.dead.append((message, f"received {message.receive_count} times"))
                        continue
                    message.receive_count += 1
                    message.received = now
                    held.visible_at = now + (self.visibility or 1e9)
                    out.append(message)
                if out or self._closed or now >= deadline:
                    return out
                self._lock.wait(min(0.05, deadline - now))

    def ack(self, message: Message) -> None:
        """Remove ``message`` for good (a second ack is harmless)."""
        with self._lock:
            if self._messages.pop(message.id, None) is not None:
                self.acked.append(message)

    def reject(self, message: Message, reason: str) -> None:
        """Move ``message`` to :attr:`dead` with ``reason``."""
        with self._lock:
            if self._messages.pop(message.id, None) is not None:
                self.dead.append((message, reason))

    def extend(self, message: Message, seconds: float) -> None:
        """Hide ``message`` for ``seconds`` more from now."""
        with self._lock:
            held = self._messages.get(message.id)
            if held is not None:
                held.visible_at = time.monotonic() + seconds

    def pending(self) -> int:
        """Messages neither acknowledged nor rejected yet."""
        with self._lock:
            return len(self._messages)

    def close(self) -> None:
        """Wake a waiting :meth:`receive`; held messages stay (they would come back)."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
