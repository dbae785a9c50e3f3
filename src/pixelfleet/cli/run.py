"""``pixelfleet run PIPELINE``: run a pipeline, or show what it would do."""

from __future__ import annotations

import sys

import click

from pixelfleet.cli.display import show_dry_run, show_summary
from pixelfleet.cli.options import (
    executor_option,
    ledger_option,
    progress_option,
    resolve_ledger,
    workers_option,
)
from pixelfleet.pipeline import load_pipeline
from pixelfleet.plan import parse_shard
from pixelfleet.runner import Runner


@click.command()
@click.argument("pipeline_file", metavar="PIPELINE", type=click.Path(dir_okay=False))
@click.option("--dry-run", is_flag=True, help="List tasks, objects and bytes; write nothing.")
@executor_option
@workers_option
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="FIELD=VALUE",
    help="Override a pipeline field, e.g. --set steps.0.size=256 (repeatable).",
)
@click.option("--shard", default=None, metavar="i/N", help="Run only shard i of N (by task group).")
@click.option(
    "--inventory",
    default=None,
    metavar="URL",
    help="Take the source objects from this S3 Inventory manifest.json instead of a listing.",
)
@click.option(
    "--only",
    multiple=True,
    metavar="GROUP",
    help="Run only this task group, e.g. a scene id (repeatable).",
)
@ledger_option
@progress_option
def run(
    pipeline_file: str,
    dry_run: bool,
    executor: str | None,
    workers: int | None,
    overrides: tuple[str, ...],
    shard: str | None,
    inventory: str | None,
    only: tuple[str, ...],
    ledger_url: str | None,
    progress: bool | None,
) -> None:
    """Run PIPELINE: list the source, skip what is current, process the rest.

    Exits 1 if any task failed; `pixelfleet status` lists the failures.
    """
    if inventory:
        overrides = (*overrides, f"source.inventory={inventory}")
    pipeline = load_pipeline(pipeline_file, overrides)
    with resolve_ledger(ledger_url, pipeline, read_only=dry_run) as ledger:
        runner = Runner(
            pipeline,
            ledger,
            executor=executor,
            workers=workers,
            progress=progress,
            shard=parse_shard(shard) if shard else None,
            only=only,
        )
        if dry_run:
            show_dry_run(runner.dry_run())
            return
        summary = runner.run()
    show_summary(summary)
    if only and not summary.counts.tasks_planned:
        click.echo(
            f"warning: no task group matched --only {', '.join(only)}; "
            "`--dry-run` without --only lists the groups",
            err=True,
        )
    if summary.failed:
        sys.exit(1)
