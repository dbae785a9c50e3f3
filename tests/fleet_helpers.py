"""A fleet run to break: a bucket of probe objects, a pipeline, workers as real processes.

The probe op (``ops_for_tests:ProbeOp``) writes ``{stem}.out`` holding the pid that wrote
it and appends ``<key> <pid>`` to ``writes.log`` for every write, so tests can tell which
attempt wrote each output and whether anything was written twice.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from pixelfleet.executors.launchers import ExternalLauncher
from pixelfleet.fleet.driver import FleetDriver
from pixelfleet.ledger import FleetLedger, open_ledger
from pixelfleet.pipeline import load_pipeline

TESTS = Path(__file__).resolve().parent


@dataclass
class FleetBucket:
    """A bucket of ``n`` probe objects and a pipeline over it."""

    root: Path
    pipeline: Path
    keys: list[str]

    @property
    def out(self) -> Path:
        """The output folder."""
        return self.root / "out"

    def writes(self) -> Counter[str]:
        """How many times each output key was written."""
        log = self.root / "log" / "writes.log"
        if not log.exists():
            return Counter()
        return Counter(line.split()[0] for line in log.read_text().splitlines())

    def writer_pid(self, key: str) -> int:
        """The pid recorded in an output."""
        return int(json.loads((self.out / key).read_text())["pid"])


def make_fleet_bucket(
    root: Path, n: int, words: str = "x", slow: dict[int, str] | None = None, attempts: int = 3
) -> FleetBucket:
    """``n`` objects ``obj-0000.txt``... whose text is ``words`` (``slow`` maps an index
    to other words), one task per object."""
    src = root / "src"
    src.mkdir(parents=True)
    for folder in ("log", "marks", "out"):
        (root / folder).mkdir()
    keys = []
    for i in range(n):
        name = f"obj-{i:04d}.txt"
        (src / name).write_text((slow or {}).get(i, words))
        keys.append(name)
    pipeline = root / "p.toml"
    pipeline.write_text(
        f"""
[source]
url = "{src}"
partition = {{ by = "object" }}

[output]
url = "{root / "out"}"

[[steps]]
op = "ops_for_tests:ProbeOp"
marks_dir = "{root / "marks"}"
log_dir = "{root / "log"}"

[run]
attempts = {attempts}
timeout = 120
"""
    )
    return FleetBucket(root, pipeline, keys)


def plan_run(bucket: FleetBucket, ledger_url: str) -> str:
    """Plan the bucket's pipeline into a shared ledger (no workers started); the run id."""
    pipeline = load_pipeline(str(bucket.pipeline))
    with open_ledger(ledger_url) as ledger:
        driver = FleetDriver(
            pipeline, ledger, ledger_url, ExternalLauncher(), "fleet", follow=False, progress=False
        )
        return driver.run().run_id


def worker_env(limits_dir: Path | None = None, **extra: str) -> dict[str, str]:
    """The environment of a worker process: the tests folder importable (the probe op)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    if limits_dir is not None:
        env["PIXELFLEET_LIMITS_DIR"] = str(limits_dir)
    env.update(extra)
    return env


def start_worker(
    ledger_url: str,
    run_id: str,
    lease: float = 5.0,
    threads: int = 2,
    env: dict[str, str] | None = None,
    drain: float | None = None,
) -> subprocess.Popen[str]:
    """``pixelfleet worker`` as its own process, as a container would run it."""
    command = [
        sys.executable,
        "-m",
        "pixelfleet.cli.main",
        "worker",
        "--ledger",
        ledger_url,
        "--run",
        run_id,
        "--lease",
        str(lease),
        "--threads",
        str(threads),
    ]
    if drain is not None:
        command += ["--drain", str(drain)]
    return subprocess.Popen(
        command,
        env=env or worker_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(check: object, timeout: float, what: str) -> None:
    """Poll ``check()`` until it is true, or fail saying ``what`` never happened."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} did not happen within {timeout:g} s")


def fleet_ledger(url: str) -> FleetLedger:
    """A ledger object of the test's own, to look at the run."""
    ledger = open_ledger(url)
    assert isinstance(ledger, FleetLedger)
    return ledger


def pid_of(worker_id: str) -> int:
    """The pid in a worker id ``host:pid:tag``."""
    return int(worker_id.split(":")[1])
