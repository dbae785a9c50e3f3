"""Ledgers chosen by URL: ``sqlite:///path.db`` (the embedded default) and ``memory://``
(the reference, for tests; ``memory://name`` is shared within the process)."""

from __future__ import annotations

from collections.abc import Callable

from pixelfleet.ledger.base import Ledger, RunRecord, TaskRecord
from pixelfleet.registry import Registry

__all__ = ["Ledger", "RunRecord", "TaskRecord", "ledgers", "open_ledger"]

ledgers = Registry(
    "ledger URL scheme",
    "pixelfleet.ledgers",
    {
        "sqlite": "pixelfleet.ledger.sqlite:SqliteLedger",
        "memory": "pixelfleet.ledger.memory:MemoryLedger",
    },
    extras={},
)


def open_ledger(url: str) -> Ledger:
    """Open the ledger a URL names (a registry name alone, such as ``memory``, too)."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else url.lower()
    cls: Callable[[str], Ledger] = ledgers.get(scheme)
    return cls(url)
