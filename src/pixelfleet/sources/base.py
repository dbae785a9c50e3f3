"""The ``Source`` interface: where work comes from, as a stream of entries.

A source yields :class:`~pixelfleet.models.Entry` objects (key, size, etag, mtime)
for as long as it has them: a bucket listing ends, an event queue never does. The
runner takes entries as they arrive, submits their work at once, and calls
:meth:`Source.ack` for each entry whose outcome the ledger has recorded, so a source
backed by a queue can delete the message only when nothing can be lost any more.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator

from pixelfleet.models import Entry, EntryResult


class Source(ABC):
    """A stream of entries, told when each entry's work is recorded."""

    #: Short name shown in summaries and errors.
    name: str = "source"

    @abstractmethod
    def entries(self) -> Iterator[Entry]:
        """Yield entries as they become known. May block while waiting for more, and may
        never end. Called once, and consumed in one thread (not necessarily the caller's)."""

    def ack(self, entry: Entry) -> None:  # noqa: B027 - optional: most sources keep no state
        """``entry``'s work is recorded in the ledger (done, failed for good, or already
        done before); the source may forget it. Called from the runner's thread."""

    def settle(self, entry: Entry, result: EntryResult | None) -> None:
        """``entry``'s work is recorded, with its outcome: ``result`` is the entry's result
        (None when its task was skipped as done before). Sources that act on outcomes (a
        watcher sends a failed event to its dead-letter queue) override this; by default
        it is :meth:`ack`. Called from the runner's thread."""
        self.ack(entry)

    def close(self) -> None:  # noqa: B027 - optional: most sources hold nothing open
        """Stop: release connections, and make a blocked :meth:`entries` return soon."""

    def describe(self) -> str:
        """One line for summaries, e.g. ``listing of s3://bucket/prefix``."""
        return self.name

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
