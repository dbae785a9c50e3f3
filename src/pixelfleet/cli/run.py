"""``pixelfleet run PIPELINE``: run a pipeline, or show what it would do."""

from __future__ import annotations

import sys
from typing import Any

import click

from pixelfleet.cli.display import show_dry_run, show_summary
from pixelfleet.cli.options import (
    executor_option,
    ledger_option,
    log_options,
    metrics_host_option,
    metrics_port_option,
    progress_option,
    resolve_ledger,
    serving_metrics,
    set_option,
    workers_option,
)
from pixelfleet.executors.launchers import is_launcher, open_launcher
from pixelfleet.fleet.driver import FleetDriver
from pixelfleet.fleet.estimate import Estimate, children, parse_estimate
from pixelfleet.fleet.estimate import estimate as estimate_run
from pixelfleet.humanize import human_bytes, human_seconds
from pixelfleet.pipeline import Pipeline, load_pipeline
from pixelfleet.plan import parse_shard
from pixelfleet.runner import Runner, RunSummary
from pixelfleet.settings import get_settings


@click.command()
@click.argument("pipeline_file", metavar="PIPELINE", type=click.Path(dir_okay=False))
@click.option("--dry-run", is_flag=True, help="List tasks, objects and bytes; write nothing.")
@click.option(
    "--estimate",
    default=None,
    metavar="vcpus=N[,sample=K]",
    help="With --dry-run: run K random objects (default 20) into a temporary folder and"
    " estimate hours on N vCPUs, requests and their cost for the whole plan.",
)
@executor_option
@workers_option
@set_option
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
@click.option(
    "--follow/--no-follow",
    default=True,
    help="Fleets (aws-batch, fleet): follow progress to the end (default), or return once"
    " the workers are started; `pixelfleet status RUN` follows it then.",
)
@ledger_option
@progress_option
@metrics_port_option
@metrics_host_option
@log_options
def run(metrics_port: int | None, metrics_host: str, **options: Any) -> None:
    """Run PIPELINE: list the source, skip what is current, process the rest.

    Exits 1 if any task failed; `pixelfleet status` lists the failures.
    """
    with serving_metrics(None if options["dry_run"] else metrics_port, metrics_host):
        _run(**options)


def _run(
    pipeline_file: str,
    dry_run: bool,
    estimate: str | None,
    executor: str | None,
    workers: int | None,
    overrides: tuple[str, ...],
    shard: str | None,
    inventory: str | None,
    only: tuple[str, ...],
    follow: bool,
    ledger_url: str | None,
    progress: bool | None,
) -> None:
    if inventory:
        overrides = (*overrides, f"source.inventory={inventory}")
    if estimate and not dry_run:
        raise click.UsageError("--estimate goes with --dry-run (it writes nothing either)")
    pipeline = load_pipeline(pipeline_file, overrides)
    spec = executor or pipeline.run.executor
    if is_launcher(spec) and not dry_run:
        summary = _run_fleet(pipeline, spec, ledger_url, workers, progress, shard, only, follow)
        if summary.state == "running":  # --no-follow
            click.echo(f"run {summary.run_id} started ({summary.executor})")
            return
        show_summary(summary)
        if summary.state != "done":
            sys.exit(1)
        return
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
        if dry_run and estimate:
            wanted = parse_estimate(estimate)
            report = estimate_run(runner, wanted["vcpus"], wanted["sample"], wanted["threads"])
            show_estimate(report, spec, pipeline.run.batch.array_size)
            return
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


def _run_fleet(
    pipeline: Pipeline,
    spec: str,
    ledger_url: str | None,
    workers: int | None,
    progress: bool | None,
    shard: str | None,
    only: tuple[str, ...],
    follow: bool,
) -> RunSummary:
    """A run whose tasks wait in a shared ledger for workers that a launcher starts."""
    url = ledger_url or pipeline.run.ledger or get_settings().ledger_url
    with resolve_ledger(url, pipeline) as ledger:
        driver = FleetDriver(
            pipeline,
            ledger,
            url,
            open_launcher(spec, workers=workers),
            executor=spec.partition("://")[0],
            workers=workers,
            progress=progress,
            shard=parse_shard(shard) if shard else None,
            only=only,
            follow=follow,
            log=lambda line: click.echo(line, err=True),
        )
        return driver.run()


def show_estimate(report: Estimate, executor: str, array_size: int | None) -> None:
    """What the whole plan would take, from the sample run here."""
    click.echo(
        f"{report.tasks:,} tasks to run ({report.objects:,} objects,"
        f" {human_bytes(report.bytes)}); {report.already_done:,} tasks already done."
        f" Planned in {human_seconds(report.plan_seconds)}. Nothing was written."
    )
    if not report.sampled_objects:
        return
    click.echo(
        f"sample: {report.sampled_objects} random objects run here into a temporary folder:"
        f" {report.cpu_per_object * 1000:.0f} ms CPU and {report.wall_per_object * 1000:.0f} ms"
        f" wall per object ({report.failed_in_sample} failed)"
    )
    totals = report.totals()
    counts = ", ".join(f"{k} {_count(v)}" for k, v in totals.items() if k != "bytes read")
    click.echo(
        f"requests for the plan (the sample's per object x {report.objects:,}): {counts};"
        f" {human_bytes(totals['bytes read'])} read"
    )
    hours = human_seconds(report.hours * 3600) if report.hours >= 1 / 60 else "a minute or less"
    line = f"on {report.vcpus} vCPUs ({report.threads} tasks in flight per worker): about {hours}"
    if executor.startswith("aws-batch"):
        line += f"; aws-batch would start {children(report.tasks, array_size):,} workers"
    click.echo(line)
    click.echo(
        f"request cost: about ${report.cost():,.2f}, assuming S3 Standard list prices in"
        " us-east-1 (PUT/LIST $0.005, GET/HEAD $0.0004 per 1,000 requests; check your"
        " region and storage class). Compute and data transfer are not included."
    )


def _count(n: float) -> str:
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    if n >= 1e4:
        return f"{n / 1e3:.0f}k"
    return f"{n:,.0f}"
