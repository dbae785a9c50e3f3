"""``pixelfleet retry RUN --failed``: run a recorded run's failed tasks again."""

from __future__ import annotations

import sys

import click

from pixelfleet.cli.display import show_summary
from pixelfleet.cli.options import (
    executor_option,
    ledger_option,
    progress_option,
    resolve_ledger,
    workers_option,
)
from pixelfleet.runner import Runner, pipeline_of


@click.command()
@click.argument("run_id", metavar="RUN")
@click.option(
    "--failed", "failed", is_flag=True, default=True, help="Retry failed tasks (default)."
)
@click.option(
    "--unfinished",
    is_flag=True,
    help="Also run tasks left pending or running by an interrupted run.",
)
@executor_option
@workers_option
@ledger_option
@progress_option
def retry(
    run_id: str,
    failed: bool,
    unfinished: bool,
    executor: str | None,
    workers: int | None,
    ledger_url: str | None,
    progress: bool | None,
) -> None:
    """Run RUN's failed tasks again, with the pipeline settings RUN used.

    Attempts start again from zero. Exits 1 if any task still fails.
    """
    with resolve_ledger(ledger_url) as ledger:
        record = ledger.get_run(run_id)
        runner = Runner(
            pipeline_of(record), ledger, executor=executor, workers=workers, progress=progress
        )
        summary = runner.retry(record.run_id, unfinished=unfinished)
    show_summary(summary)
    if summary.failed:
        sys.exit(1)
