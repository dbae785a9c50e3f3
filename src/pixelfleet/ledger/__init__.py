"""Ledgers chosen by URL: ``sqlite:///path.db`` (the embedded default)."""

from __future__ import annotations

from pixelfleet.ledger.base import Ledger, RunRecord, TaskRecord
from pixelfleet.registry import Registry

__all__ = ["Ledger", "RunRecord", "TaskRecord", "ledgers", "open_ledger"]

ledgers = Registry(
    "ledger URL scheme",
    "pixelfleet.ledgers",
    {"sqlite": "pixelfleet.ledger.sqlite:SqliteLedger"},
    extras={},
)


def open_ledger(url: str) -> Ledger:
    """Open the ledger a URL names."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    return ledgers.get(scheme)(url)
