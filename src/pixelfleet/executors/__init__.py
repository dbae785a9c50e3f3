"""Executors chosen by the pipeline's ``run.executor``: ``inline``, ``local``, ``dask``."""

from __future__ import annotations

from collections.abc import Callable

from pixelfleet.executors.base import Executor, Job
from pixelfleet.registry import Registry

__all__ = ["Executor", "Job", "executor_names", "executors", "open_executor", "parse_executor"]

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


def parse_executor(spec: str) -> tuple[str, str]:
    """Split an executor spec into its name and address: ``"dask://host:8786"`` ->
    ``("dask", "host:8786")``, ``"local"`` -> ``("local", "")``.

    The name is kept as written (a plug-in may be named by ``package.module:Name``).
    """
    name, _, address = spec.partition("://")
    return name, address


def open_executor(spec: str, workers: int | None = None, threads: int = 4) -> Executor:
    """Build an executor from ``inline``, ``local``, ``dask`` or ``dask://host:port``.

    Executors take ``(address, workers, threads)``; ``address`` is what follows ``://``.
    """
    name, address = parse_executor(spec)
    cls: Callable[..., Executor] = executors.get(name)
    return cls(address, workers=workers, threads=threads)
