"""Which of this test's descendant processes are workers, and which are multiprocessing's
own helpers (no tests here).

A local executor's worker is spawned (``spawn_main`` on its command line) or forked
from multiprocessing's fork server, whose command line it then shares: a forked worker
is told from the server by its parent, the server. The helpers (the resource tracker
and the fork server) are started once per process and kept until it exits.
"""

from __future__ import annotations

import psutil

FORK_SERVER = "multiprocessing.forkserver"


def _line(process: psutil.Process) -> str:
    return " ".join(process.cmdline())


def is_worker(process: psutil.Process) -> bool:
    """A worker process: spawned, or forked from the fork server (psutil errors pass)."""
    line = _line(process)
    if "spawn_main" in line:
        return True
    if FORK_SERVER not in line:
        return False
    parent = process.parent()
    return parent is not None and FORK_SERVER in _line(parent)


def is_helper(process: psutil.Process) -> bool:
    """multiprocessing's resource tracker or fork server (not a worker forked from it)."""
    line = _line(process)
    if "multiprocessing.resource_tracker" in line:
        return True
    return FORK_SERVER in line and not is_worker(process)
