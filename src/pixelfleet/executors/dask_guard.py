"""The memory cap's hard limit in Dask workers: a worker plugin, imported only by the
Dask executor (it needs ``distributed``).

Each worker of the cluster, those that join later included, is marked as a process
that runs tasks (:func:`~pixelfleet.imagery.memory.guard_this_process`): its first
decode sets ``RLIMIT_DATA`` from the settings the task runs under, as in the local
executor's workers. Removing the plugin (the executor closing) gives each worker back
the limit it had, since a cluster given by address outlives the run.
"""

from __future__ import annotations

from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin
from typing_extensions import override

from pixelfleet.imagery.memory import guard_this_process, release_this_process


class MemoryGuard(WorkerPlugin):
    """Marks each Dask worker as a dedicated worker for the memory cap while registered."""

    @override
    def setup(self, worker: Any) -> None:
        guard_this_process()

    @override
    def teardown(self, worker: Any) -> None:
        release_this_process()
