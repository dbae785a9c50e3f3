"""``MemorySource``: entries handed over by code, the reference behaviour of a source.

Tests and library users ``put`` entries in and ``end`` the stream (or never do, to
act as a live source); every acknowledged entry is kept in :attr:`MemorySource.acked`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator

from pixelfleet.models import Entry
from pixelfleet.sources.base import Source

_END = object()


class MemorySource(Source):
    """A source fed by :meth:`put`; it ends after :meth:`end` (or :meth:`close`)."""

    name = "memory"

    def __init__(self, entries: Iterable[Entry] = (), *, end: bool = False):
        self._queue: queue.Queue[object] = queue.Queue()
        self._lock = threading.Lock()
        #: Entries the runner acknowledged, in order.
        self.acked: list[Entry] = []
        for entry in entries:
            self.put(entry)
        if end:
            self.end()

    def put(self, entry: Entry) -> None:
        """Hand one entry to the stream."""
        self._queue.put(entry)

    def end(self) -> None:
        """No more entries: :meth:`entries` stops once it has yielded those already put."""
        self._queue.put(_END)

    def entries(self) -> Iterator[Entry]:
        """The entries put so far and every one put later, until :meth:`end`."""
        while True:
            item = self._queue.get()
            if item is _END:
                return
            assert isinstance(item, Entry)
            yield item

    def ack(self, entry: Entry) -> None:
        """Remember that ``entry``'s work is recorded."""
        with self._lock:
            self.acked.append(entry)

    def close(self) -> None:
        """End the stream."""
        self.end()
