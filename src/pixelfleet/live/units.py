"""The watcher's bookkeeping: messages in hand, the events of each unit, the summary."""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from pixelfleet.events import BucketEvent, EventQueue, Message
from pixelfleet.models import Entry, EntryResult
from pixelfleet.sources.base import Source


@dataclass
class WatchSummary:
    """What a watcher did, by action, and how long events took to settle."""

    run_id: str
    counts: dict[str, int] = field(default_factory=dict)
    #: How long the latest settled events took (the newest 10,000: a watcher runs for weeks).
    latencies: collections.deque[float] = field(
        default_factory=lambda: collections.deque(maxlen=10_000)
    )
    messages: int = 0

    def line(self) -> str:
        """One line: ``120 messages: created 80, updated 10, deleted 20, ...``."""
        parts = [f"{name} {n}" for name, n in sorted(self.counts.items()) if n]
        lat = sorted(self.latencies)
        tail = ""
        if lat:
            tail = f"; settle p50 {pct(lat, 0.5):.2f} s, p95 {pct(lat, 0.95):.2f} s"
        return f"{self.messages} messages: {', '.join(parts) or 'nothing yet'}{tail}"


@dataclass
class Tracked:
    """A message being handled: how many of its events are still open."""

    message: Message
    queue: EventQueue
    open: int = 0
    failures: list[str] = field(default_factory=list)
    done: bool = False


@dataclass
class Part:
    """One event of a message, waiting for or covered by its unit's handling."""

    tracked: Tracked
    event: BucketEvent
    arrived: float


@dataclass
class Unit:
    """An object (or a scene) and the events waiting for it."""

    name: str
    high: str = ""  # the newest sequencer applied
    busy: bool = False
    due: float = 0.0  # scenes: not handled before this (settle time)
    waiting: list[Part] = field(default_factory=list)
    running: list[Part] = field(default_factory=list)
    existed: bool = False  # the unit had outputs before this handling (updated vs created)
    open_entries: set[str] = field(default_factory=set)  # entries of its task not settled
    results: list[EntryResult] = field(default_factory=list)


class LiveSource(Source):
    """The runner's source while watching: tasks come from the watcher; their outcomes
    go back to it."""

    name = "events"
    ends = False

    def __init__(self, settled: Callable[[Entry, EntryResult | None], None]):
        self._settled = settled

    def entries(self) -> Iterator[Entry]:
        """Never read: the watcher hands the runner its tasks."""
        return iter(())

    def settle(self, entry: Entry, result: EntryResult | None) -> None:
        """Hand ``entry``'s recorded outcome to the watcher."""
        self._settled(entry, result)


def source_bucket(url: str) -> tuple[str | None, str]:
    """An object store source's bucket and key prefix (``None`` bucket: a local folder,
    whose events carry keys relative to it)."""
    parts = urlsplit(url)
    if parts.scheme in ("s3", "gs", "az", "minio"):
        prefix = parts.path.lstrip("/")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        return parts.netloc, prefix
    return None, ""


def show(key: str) -> str:
    """A key as one printable line (control characters escaped)."""
    return key if key.isprintable() else repr(key)[1:-1]


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of sorted ``values``, nearest rank."""
    index = min(len(values) - 1, max(0, round(q * (len(values) - 1))))
    return values[index]
