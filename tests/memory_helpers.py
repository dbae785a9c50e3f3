"""Measuring worker memory in tests: peak resident sizes of child processes, the hard
limit a worker process runs under, and an op that reports both from inside a worker.

:class:`LimitProbeOp` is named by reference (``memory_helpers:LimitProbeOp``), so worker
processes that see the test process's ``sys.path`` (local and Dask workers) or get the
tests folder on ``PYTHONPATH`` (``pixelfleet worker``) load it without registration.
Put after a step that decodes, it tells the limit that decode set.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading

import psutil

from pixelfleet.models import Entry, OutputRecord
from pixelfleet.ops import Op, OpConfig, OpContext, render_key
from process_helpers import is_worker

LIMIT_PROBE_OP = "memory_helpers:LimitProbeOp"


def status_bytes(name: str, pid: int | str = "self") -> int:
    """A ``/proc/<pid>/status`` size field (``VmHWM``, ``VmRSS``, ``VmData``) in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
    raise LookupError(f"{name} not in /proc/{pid}/status")


def data_limit() -> int:
    """This process's soft ``RLIMIT_DATA`` (``resource.RLIM_INFINITY`` when unlimited)."""
    return resource.getrlimit(resource.RLIMIT_DATA)[0]


def worker_memory() -> dict[str, int]:
    """What a worker process holds and may hold: pid, soft ``RLIMIT_DATA``, ``VmData``, peak RSS."""
    return {
        "pid": os.getpid(),
        "limit": data_limit(),
        "data": status_bytes("VmData"),
        "peak_rss": status_bytes("VmHWM"),
    }


class LimitProbeOp(Op):
    """Writes ``{stem}.memory.json``: :func:`worker_memory` of the process that ran it."""

    name = "test-limit-probe"
    Config = OpConfig

    def output_keys(self, entry: Entry) -> list[str]:
        """One output per source object."""
        return [render_key("{stem}.memory.json", entry.key)]

    def run(self, ctx: OpContext, entry: Entry) -> list[OutputRecord]:
        """Record the process's limit and memory."""
        key = self.output_keys(entry)[0]
        return [ctx.write(self, entry, key, json.dumps(worker_memory()).encode())]


class PeakRss:
    """Polls the peak resident size (VmHWM) of every descendant of this process, by pid.

    A poll every 50 ms; the kernel keeps the high-water mark, so a peak is seen unless
    the process ends within 50 ms of it (:func:`wait_peak` measures that case exactly).
    """

    def __init__(self) -> None:
        self.peaks: dict[int, int] = {}
        self.names: dict[int, str] = {}
        #: The worker processes among them (:func:`process_helpers.is_worker`).
        self.workers: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            for child in me.children(recursive=True):
                try:
                    peak = status_bytes("VmHWM", child.pid)
                    if child.pid not in self.names:
                        self.names[child.pid] = " ".join(child.cmdline()[:4])
                        if is_worker(child):
                            self.workers.add(child.pid)
                except (OSError, LookupError, psutil.Error):
                    continue  # gone, or a zombie
                self.peaks[child.pid] = max(self.peaks.get(child.pid, 0), peak)
            self._stop.wait(0.05)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


#: Runs a command as its child and writes the peak resident size (bytes) of it and of
#: every descendant it waited for (``wait4``'s ``ru_maxrss``) to a file. The figure must
#: come from a small parent: a process forked from pytest starts with pytest's resident
#: pages as its high-water mark, which Linux carries across ``exec`` into ``ru_maxrss``
#: (pytest holds 800+ MiB late in a full run), so pytest's own ``wait4`` would report
#: pytest's size rather than the command's.
_MEASURED = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(str(usage.ru_maxrss * 1024))
sys.exit(os.waitstatus_to_exitcode(status) & 0xFF)
"""


def measured(command: list[str], peak_file: str | os.PathLike[str]) -> list[str]:
    """``command`` (its program an absolute path) run by a small launcher that writes,
    once it ends, the kernel's peak resident size of it and its descendants to
    ``peak_file``; the launcher exits with the command's status."""
    return [sys.executable, "-c", _MEASURED, os.fspath(peak_file), *command]
