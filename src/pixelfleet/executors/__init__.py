"""Executors chosen by the pipeline's ``run.executor``: ``inline``, ``local``, ``dask``."""

from __future__ import annotations

from pixelfleet.executors.base import Executor, Job
from pixelfleet.registry import Registry

__all__ = ["Executor", "Job", "executor_names", "executors", "open_executor"]

executors = Registry(
    "executor",
    "pixelfleet.executors",
    {
        "inline": "pixelfleet.executors.inline:InlineExecutor",
        "local": "pixelfleet.executors.local:LocalExecutor",
        "dask": "pixelfleet.executors.dask:DaskExecutor",
    },
    extras={"dask": "dask"},
)


def executor_names() -> list[str]:
    """Every executor name a pipeline may use."""
    return executors.names()


def open_executor(spec: str, workers: int | None = None, threads: int = 4) -> Executor:
    """Build an executor from ``inline``, ``local``, ``dask`` or ``dask://host:port``.

    Executors take ``(address, workers, threads)``; ``address`` is what follows ``://``.
    """
    name, _, address = spec.partition("://")
    cls = executors.get(name)
    return cls(address, workers=workers, threads=threads)
