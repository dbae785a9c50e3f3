"""Ledgers chosen by URL: ``sqlite:///path.db`` (the embedded default), ``memory://``
(the reference, for tests; ``memory://name`` is shared within the process) and
``postgresql://user@host/db`` (shared by a fleet of workers on many machines)."""

from __future__ import annotations

from collections.abc import Callable

from pixelfleet.ledger.base import Ledger, RunRecord, TaskRecord, TaskStats
from pixelfleet.ledger.fleet import FleetLedger, WorkerRecord
from pixelfleet.registry import Registry

__all__ = [
    "FleetLedger",
    "Ledger",
    "RunRecord",
    "TaskRecord",
    "TaskStats",
    "WorkerRecord",
    "ledgers",
    "open_ledger",
]

ledgers = Registry(
    "ledger URL scheme",
    "pixelfleet.ledgers",
    {
        "sqlite": "pixelfleet.ledger.sqlite:SqliteLedger",
        "memory": "pixelfleet.ledger.memory:MemoryLedger",
        "postgresql": "pixelfleet.ledger.postgres:PostgresLedger",
        "postgres": "pixelfleet.ledger.postgres:PostgresLedger",
    },
    extras={"postgresql": "postgres", "postgres": "postgres"},
)


def open_ledger(url: str) -> Ledger:
    """Open the ledger a URL names (a registry name alone, such as ``memory``, too)."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else url.lower()
    cls: Callable[[str], Ledger] = ledgers.get(scheme)
    return cls(url)
