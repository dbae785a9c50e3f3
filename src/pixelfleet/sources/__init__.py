"""Where work comes from: a :class:`Source` yields entries as a stream and is told when
each entry's work is recorded (:meth:`Source.ack`).

:class:`ListingSource` lists a storage URL, :class:`InventorySource` reads an S3
Inventory report, :class:`MemorySource` is fed by code (the reference, and a test tool).
:mod:`~pixelfleet.sources.scenes` holds the scene-name patterns that planning groups by.
"""

from __future__ import annotations

from pixelfleet.sources.base import Source
from pixelfleet.sources.listing import ListingSource
from pixelfleet.sources.memory import MemorySource
from pixelfleet.sources.s3inventory import InventorySource

__all__ = ["InventorySource", "ListingSource", "MemorySource", "Source"]
