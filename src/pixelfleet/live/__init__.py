"""Keeping outputs and catalog current as a bucket changes: ``pixelfleet watch`` and
``pixelfleet reconcile``.

:class:`~pixelfleet.live.watcher.Watcher` takes bucket events from an
:class:`~pixelfleet.events.EventQueue` and runs each through the same runner,
workers, ledger and catalog as a backfill; :mod:`~pixelfleet.live.reconcile` finds
what events missed by comparing the bucket with the catalog.
"""

from __future__ import annotations

from pixelfleet.live.units import WatchSummary
from pixelfleet.live.watcher import Watcher

__all__ = ["WatchSummary", "Watcher"]
