"""``pixelfleet worker``: what each machine (or Batch container) of a fleet runs."""

from __future__ import annotations

import os
import signal
import sys
import time
from types import FrameType

import click

from pixelfleet.cli.options import resolve_ledger
from pixelfleet.errors import ConfigError, LedgerUnavailableError
from pixelfleet.executors.launchers import EXIT_RETRY
from pixelfleet.fleet.worker import DRAIN, LEASE, FleetWorker
from pixelfleet.imagery.memory import guard_this_process
from pixelfleet.ledger import FleetLedger


@click.command()
@click.option(
    "--ledger",
    "ledger_url",
    metavar="URL",
    default=None,
    help="The run's shared ledger, e.g. postgresql://user@host/db (default: $PIXELFLEET_LEDGER).",
)
@click.option(
    "--run",
    "run_id",
    metavar="RUN",
    default=None,
    help="The run to work on (default: $PIXELFLEET_RUN, else the latest run).",
)
@click.option(
    "--threads",
    type=click.IntRange(1, 256),
    default=None,
    help="Tasks at once (default: the pipeline's run.threads).",
)
@click.option(
    "--lease",
    type=click.FloatRange(1, 3600),
    default=LEASE,
    show_default=True,
    help="Seconds a task stays claimed without a heartbeat.",
)
@click.option(
    "--drain",
    type=click.FloatRange(0, 3600),
    default=DRAIN,
    show_default=True,
    help="On SIGTERM, seconds to finish the tasks in hand before giving them back.",
)
def worker(
    ledger_url: str | None, run_id: str | None, threads: int | None, lease: float, drain: float
) -> None:
    """Claim and run a fleet run's tasks until none are left.

    Exits 0 when the run has nothing left, 75 when the ledger could not be reached or
    the worker was stopped (SIGTERM) before the end: AWS Batch retries those.
    """
    run_id = run_id or os.environ.get("PIXELFLEET_RUN") or None
    index = os.environ.get("AWS_BATCH_JOB_ARRAY_INDEX")
    size = os.environ.get("AWS_BATCH_JOB_ARRAY_SIZE")
    shard = f"{index}/{size}" if index is not None and size else (index or "")
    try:
        ledger_cm = resolve_ledger(ledger_url)
    except LedgerUnavailableError as exc:  # a database that is down now may be up later
        _say(f"error: {exc}")
        sys.exit(EXIT_RETRY)
    with ledger_cm as ledger:
        url = ledger_url or os.environ.get("PIXELFLEET_LEDGER") or ""
        if not isinstance(ledger, FleetLedger) or url.lower().startswith("memory"):
            raise ConfigError(
                f"ledger {url or ledger_url!r} cannot be shared by workers in other processes;"
                " give --ledger postgresql://user@host/database"
            )
        run = ledger.get_run(run_id)
        fleet = FleetWorker(
            ledger, run.run_id, threads=threads, lease=lease, drain=drain, shard=shard, log=_say
        )

        def stop(signum: int, frame: FrameType | None) -> None:
            _say(f"{signal.Signals(signum).name}: finishing the tasks in hand (<= {drain:g} s)")
            fleet.stop()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        started = time.monotonic()
        where = f" (array index {shard})" if shard else ""
        _say(f"worker {fleet.worker_id}{where} on run {run.run_id}")
        # This process exists to run tasks: the memory cap becomes its hard limit at the
        # first decode, as in the local executor's workers (imagery/memory.py).
        guard_this_process()
        report = fleet.run()
    _say(
        f"worker {report.worker_id}: {report.tasks_done} tasks done, {report.tasks_failed}"
        f" failed, {report.tasks_retried} given back to retry, {report.released} released,"
        f" {report.fenced} results refused (a newer attempt owned them)"
        f" in {time.monotonic() - started:.1f} s"
    )
    if report.error:
        _say(f"error: {report.error}")
    sys.stdout.flush()
    sys.stderr.flush()
    # Threads still inside a task (past the drain) must not hold the exit up.
    os._exit(report.exit_code)


def _say(line: str) -> None:
    click.echo(line, err=True)
