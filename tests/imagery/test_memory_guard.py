"""The hard memory limit of a worker process (``RLIMIT_DATA``): set by the first decode
under a cap, set again under another cap, never below what the process already holds,
and given back once every holder has released the process (a Dask worker outlives its
run). Each case runs in a child process: the limit would hold for the test process too."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

SCRIPT = """
import json, resource
from pixelfleet.imagery import memory
from pixelfleet.settings import Settings

def limit():
    return resource.getrlimit(resource.RLIMIT_DATA)[0]

MiB = 1024**2
seen = {"before": limit()}
memory.decode_budget(Settings(memory_cap=900 * MiB))
seen["unguarded"] = limit()  # a runner's or a server's process: no limit
memory.guard_this_process()
memory.guard_this_process()  # a second holder (two runs on one Dask worker)
memory.decode_budget(Settings(memory_cap=900 * MiB))
seen["first"] = limit()
memory.decode_budget(Settings(memory_cap=800 * MiB))
seen["other cap"] = limit()
memory.decode_budget(Settings(memory_cap=16 * MiB))
seen["tiny cap"] = limit()
seen["floor"] = memory.data_bytes() + memory.MIN_BUDGET
seen["allocates"] = len(bytearray(32 * MiB))  # the process's own work goes on
memory.release_this_process()
seen["one released"] = limit()
memory.release_this_process()
seen["all released"] = limit()
print(json.dumps(seen))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_DATA is set on Linux")
def test_the_hard_limit_follows_the_cap_has_a_floor_and_is_given_back() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    mib = 1024**2
    assert seen["unguarded"] == seen["before"]
    assert seen["first"] == 900 * mib
    assert seen["other cap"] == 800 * mib
    assert 16 * mib < seen["tiny cap"] <= seen["floor"] + 4 * mib  # what it holds + 64 MiB
    assert seen["allocates"] == 32 * mib
    assert seen["one released"] == seen["tiny cap"]
    assert seen["all released"] == seen["before"]
