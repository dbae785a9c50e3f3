"""A run shared by many workers: the driver that plans it into a shared ledger and
follows it (:class:`FleetDriver`), the ``pixelfleet worker`` loop that claims its tasks
(:class:`FleetWorker`), and the estimate of what a run would cost (:func:`estimate`)."""

from __future__ import annotations

from pixelfleet.fleet.driver import FleetDriver
from pixelfleet.fleet.estimate import Estimate, estimate
from pixelfleet.fleet.worker import FleetWorker

__all__ = ["Estimate", "FleetDriver", "FleetWorker", "estimate"]
