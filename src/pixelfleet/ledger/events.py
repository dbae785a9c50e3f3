"""The ledger's log of bucket events: what ``pixelfleet watch`` did with each change.

Every event the watcher settles is one :class:`EventRecord`: an object created,
updated, found current or deleted, an event ignored (and why), a message sent to the
dead-letter queue (and why). The log is how ``pixelfleet status`` shows a watcher's
dead letters, how ``/runs`` shows its counters, and how the server's live feed learns
of items added and removed by another process. Records get increasing ``seq``
numbers, so a reader asks for what came after the last one it saw.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

#: What became of an event. ``current``: the object's outputs were already up to date.
EventAction = Literal[
    "created", "updated", "current", "deleted", "ignored", "failed", "dead-lettered"
]
EVENT_ACTIONS: tuple[str, ...] = (
    "created",
    "updated",
    "current",
    "deleted",
    "ignored",
    "failed",
    "dead-lettered",
)

EVENT_COLUMNS = "seq, run_id, time, action, key, item_id, detail, seconds, collection"


@dataclass
class EventRecord:
    """One settled event (``seq`` is given by the ledger when it is recorded)."""

    run_id: str
    time: float
    action: str
    key: str
    item_id: str = ""
    detail: str = ""
    seconds: float = 0.0
    seq: int = 0
    #: The catalog collection of ``item_id`` (empty without a catalog).
    collection: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-ready values."""
        return dict(self.__dict__)


def events_query(
    run_id: str | None, since: int, actions: Sequence[str], mark: str, newest_first: bool = False
) -> tuple[str, list[Any]]:
    """The SELECT of :meth:`EventLog.events` and its arguments but the limit, in the
    paramstyle whose placeholder is ``mark`` (``?`` for SQLite, ``%s`` for PostgreSQL)."""
    where: list[str] = [f"seq > {mark}"]
    args: list[Any] = [since]
    if run_id is not None:
        where.append(f"run_id = {mark}")
        args.append(run_id)
    if actions:
        where.append(f"action IN ({', '.join([mark] * len(actions))})")
        args.extend(actions)
    order = "seq DESC" if newest_first else "seq"
    condition = " AND ".join(where)
    return (
        f"SELECT {EVENT_COLUMNS} FROM events WHERE {condition} ORDER BY {order} LIMIT {mark}",
        args,
    )


def event_from_row(r: Sequence[Any]) -> EventRecord:
    """An :class:`EventRecord` from a row of :data:`EVENT_COLUMNS`."""
    return EventRecord(
        seq=int(r[0]),
        run_id=r[1],
        time=float(r[2]),
        action=r[3],
        key=r[4],
        item_id=r[5],
        detail=r[6],
        seconds=float(r[7]),
        collection=r[8],
    )


class EventLog(ABC):
    """A ledger's event log (memory, SQLite and PostgreSQL ledgers all keep one)."""

    @abstractmethod
    def record_events(self, records: Sequence[EventRecord]) -> None:
        """Append ``records`` (their ``seq`` is set here, increasing)."""

    @abstractmethod
    def events(
        self,
        run_id: str | None = None,
        since: int = 0,
        actions: Sequence[str] = (),
        limit: int = 100,
        newest_first: bool = False,
    ) -> list[EventRecord]:
        """Records after ``since``, of ``run_id`` and ``actions`` if given: the oldest
        ``limit`` of them in order, or (``newest_first``) the newest, newest first."""

    def last_events(
        self, run_id: str | None = None, actions: Sequence[str] = (), limit: int = 20
    ) -> list[EventRecord]:
        """The newest ``limit`` records (oldest first), for ``status``."""
        return self.events(run_id, 0, actions, limit, newest_first=True)[::-1]

    def latest_seq(self) -> int:
        """The ``seq`` of the newest record (0 when the log is empty): where a reader that
        wants only what comes next starts."""
        newest = self.events(limit=1, newest_first=True)
        return newest[0].seq if newest else 0

    def event_counts(self, run_id: str) -> dict[str, int]:
        """How many records of each action a run has."""
        counts: dict[str, int] = {}
        since = 0
        while page := self.events(run_id, since, (), 5000):
            for record in page:
                counts[record.action] = counts.get(record.action, 0) + 1
            since = page[-1].seq
        return counts
