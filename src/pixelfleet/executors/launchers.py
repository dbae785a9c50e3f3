"""The ``Launcher`` interface: start the workers of a fleet run somewhere.

A fleet run differs from a local or Dask run in who drives the work: its tasks wait in a
shared ledger and ``pixelfleet worker`` processes claim them, wherever they run. A
launcher only starts those processes (and says whether they are still going); the
ledger tells the driver what became of each task. Launchers:

- ``fleet``: starts nothing; prints the command to start workers with (Kubernetes jobs,
  systemd units, a shell on each machine).
- ``fleet-local``: ``workers`` worker processes on this machine (the reference, used by
  the tests; also a way to use every core of a large machine with a shared ledger).
- ``aws-batch``: one AWS Batch array job of workers (:mod:`pixelfleet.executors.batch`).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from typing_extensions import override

from pixelfleet.registry import Registry

#: A worker exits with this when it failed for a reason worth another try (its ledger
#: could not be reached, it was told to stop): BSD's EX_TEMPFAIL, retried by Batch.
EXIT_RETRY = 75


@dataclass
class LaunchRequest:
    """What a launcher needs to start the workers of one run."""

    run_id: str
    ledger_url: str
    #: Tasks waiting to be done: no point in starting more workers than this (0: not
    #: known yet, for a launcher that starts its workers while the plan is written).
    tasks: int
    #: Workers wanted (None: the launcher's default).
    workers: int | None = None
    #: ``[run.batch]`` and other launcher settings, as plain data.
    settings: Mapping[str, Any] = field(default_factory=dict)
    #: Variables every worker gets (e.g. ``PIXELFLEET_LIMITS_URL``).
    environment: Mapping[str, str] = field(default_factory=dict)


@dataclass
class FleetState:
    """What a launcher knows of the workers it started."""

    started: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    #: True once no worker it started can still claim a task.
    ended: bool = False
    #: One line for the progress display, e.g. an array job's status summary.
    detail: str = ""


def worker_arguments(run_id: str, ledger_url: str) -> list[str]:
    """The arguments of ``pixelfleet`` that make a worker of a run."""
    return ["worker", "--ledger", ledger_url, "--run", run_id]


class Launcher(ABC):
    """Starts the workers of a fleet run and reports whether they still run."""

    name: str = "launcher"
    #: Workers may start before the plan is known (``LaunchRequest.tasks`` is 0 then):
    #: the run is ``planning`` until its tasks are all written, and workers wait for it.
    starts_before_plan: bool = False

    @abstractmethod
    def launch(self, request: LaunchRequest) -> list[str]:
        """Start workers; returns lines telling the user what was started."""

    @abstractmethod
    def state(self) -> FleetState:
        """How the workers started are doing (cheap enough to call every few seconds)."""

    @abstractmethod
    def stop(self) -> None:
        """Stop what this process started and can stop (safe to call twice)."""

    def wait(self, timeout: float) -> None:  # noqa: B027 - only local workers can be waited for
        """The run is over: wait up to ``timeout`` seconds for workers started here to end."""

    def describe(self) -> str:
        """One line for the run summary."""
        return self.name


class ExternalLauncher(Launcher):
    """Starts nothing: the user starts ``pixelfleet worker`` processes themselves."""

    name = "fleet"

    def __init__(self, address: str = "", **_: Any):
        """Nothing to set up: it starts no worker."""

    @override
    def launch(self, request: LaunchRequest) -> list[str]:
        args = ["pixelfleet", *worker_arguments(request.run_id, request.ledger_url)]
        command = " ".join(shlex.quote(a) for a in args)
        return [
            f"{request.tasks} tasks wait in the ledger; start workers anywhere with:",
            f"  {command}",
        ]

    @override
    def state(self) -> FleetState:
        return FleetState()  # unknown: the ledger's worker heartbeats tell

    @override
    def stop(self) -> None:
        pass

    @override
    def describe(self) -> str:
        return "fleet: workers started by you"


class ProcessLauncher(Launcher):
    """``workers`` worker processes on this machine."""

    name = "fleet-local"
    starts_before_plan = True

    def __init__(self, address: str = "", workers: int | None = None, **_: Any):
        self.workers = workers or os.cpu_count() or 1
        self._procs: list[subprocess.Popen[bytes]] = []

    @override
    def launch(self, request: LaunchRequest) -> list[str]:
        wanted = request.workers or self.workers
        count = max(1, min(wanted, request.tasks) if request.tasks else wanted)
        self.workers = count
        env = {**os.environ, **request.environment}
        command = [
            sys.executable,
            "-m",
            "pixelfleet.cli.main",
            *worker_arguments(request.run_id, request.ledger_url),
        ]
        for _ in range(count):
            self._procs.append(subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL))
        return [f"started {count} worker processes on this machine"]

    @override
    def state(self) -> FleetState:
        codes = [p.poll() for p in self._procs]
        return FleetState(
            started=len(codes),
            running=sum(c is None for c in codes),
            succeeded=sum(c == 0 for c in codes),
            failed=sum(c not in (None, 0) for c in codes),
            ended=bool(codes) and all(c is not None for c in codes),
        )

    @override
    def wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for proc in self._procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                return

    @override
    def stop(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()  # workers give their tasks back on SIGTERM
        for proc in self._procs:
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()

    @override
    def describe(self) -> str:
        return f"fleet-local: {self.workers} worker processes"


launchers = Registry(
    "executor",
    "pixelfleet.launchers",
    {
        "fleet": "pixelfleet.executors.launchers:ExternalLauncher",
        "fleet-local": "pixelfleet.executors.launchers:ProcessLauncher",
        "aws-batch": "pixelfleet.executors.batch:BatchLauncher",
    },
    extras={"aws-batch": "aws"},
)


def launcher_names() -> list[str]:
    """The executors that run a fleet through a shared ledger."""
    return launchers.names()


def is_launcher(spec: str) -> bool:
    """Tell whether an executor spec names a fleet launcher."""
    return spec.partition("://")[0] in launcher_names()


def open_launcher(spec: str, workers: int | None = None) -> Launcher:
    """A launcher by executor spec (``aws-batch``, ``fleet``, ``fleet-local``)."""
    name, _, address = spec.partition("://")
    cls: Callable[..., Launcher] = launchers.get(name)
    return cls(address, workers=workers)
