"""``pixelfleet watch`` and ``pixelfleet reconcile``: keep outputs and catalog current."""

from __future__ import annotations

import signal
import sys
import time
from types import FrameType
from typing import Any

import click

from pixelfleet.cli.options import (
    executor_option,
    ledger_option,
    resolve_ledger,
    set_option,
    workers_option,
)
from pixelfleet.errors import ConfigError
from pixelfleet.pipeline import Pipeline, load_pipeline


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``6h``, ``1d`` as seconds."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
    value = text.strip().lower()
    scale = units.get(value[-1:])
    number = value[:-1] if scale is not None else value
    try:
        seconds = float(number) * (scale or 1.0)
    except ValueError:
        raise ConfigError(
            f"duration {text!r} is not a number of seconds or one like 90s, 15m, 6h, 1d"
        ) from None
    if seconds <= 0:
        raise ConfigError(f"duration {text!r} must be more than zero")
    return seconds


@click.command()
@click.argument("pipeline_file", metavar="PIPELINE", type=click.Path(dir_okay=False))
@click.option(
    "--queue",
    "queue_url",
    default=None,
    metavar="URL",
    help="Where bucket events come from: sqs://NAME or an SQS https:// URL,"
    " amqp://user:pass@host:5672/QUEUE; none: watch the source folder (file:// sources).",
)
@click.option(
    "--reconcile-every",
    default=None,
    metavar="DURATION",
    help="Also compare the bucket with the catalog this often (e.g. 6h) and fix what differs.",
)
@click.option(
    "--settle",
    default=2.0,
    show_default=True,
    type=float,
    metavar="SECONDS",
    help="Scene partitions: wait this long after a band file's event for the scene's others.",
)
@executor_option
@workers_option
@set_option
@ledger_option
def watch(
    pipeline_file: str,
    queue_url: str | None,
    reconcile_every: str | None,
    settle: float,
    executor: str | None,
    workers: int | None,
    overrides: tuple[str, ...],
    ledger_url: str | None,
) -> None:
    """Keep PIPELINE's outputs and catalog current as its bucket changes.

    Prints a line per event (created, updated, current, deleted, ignored, failed,
    dead-lettered) and a summary every minute. Ctrl-C or SIGTERM stops taking
    messages and returns once those in hand are recorded.
    """
    from pixelfleet.events.queues import open_queue
    from pixelfleet.live import Watcher
    from pixelfleet.settings import get_settings

    pipeline = load_pipeline(pipeline_file, overrides)
    every = parse_duration(reconcile_every) if reconcile_every else None
    events = open_queue(queue_url, pipeline.source.url, get_settings())
    with resolve_ledger(ledger_url, pipeline) as ledger:
        watcher = Watcher(
            pipeline,
            ledger,
            events,
            executor=executor,
            workers=workers,
            settle=settle,
            echo=_say,
            reconcile_every=every,
        )
        stops = 0

        def stop(signum: int, frame: FrameType | None) -> None:
            nonlocal stops
            stops += 1
            if stops > 1:
                raise KeyboardInterrupt
            _say("stopping: recording the events in hand (Ctrl-C again to quit at once)")
            watcher.stop()

        previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
        _say(f"watching {events.describe()} for {pipeline.source.url}; Ctrl-C stops")
        try:
            summary = watcher.run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        _say(f"stopped   {summary.line()} (run {summary.run_id})")


@click.command()
@click.argument("pipeline_file", metavar="PIPELINE", type=click.Path(dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Print what differs; change nothing.")
@executor_option
@workers_option
@set_option
@ledger_option
def reconcile(
    pipeline_file: str,
    dry_run: bool,
    executor: str | None,
    workers: int | None,
    overrides: tuple[str, ...],
    ledger_url: str | None,
) -> None:
    """Compare PIPELINE's bucket with its catalog and fix what differs.

    New and changed objects are processed, and deleted ones have their outputs and
    item removed, by the same code path as `pixelfleet watch`. With --dry-run, print
    the three counts and a few examples of each.
    """
    from pixelfleet.catalog import open_catalog
    from pixelfleet.live.reconcile import catalog_url_of, compare

    pipeline = load_pipeline(pipeline_file, overrides)
    section = catalog_url_of(pipeline)
    started = time.monotonic()
    with open_catalog(section) as catalog:
        report = compare(pipeline, catalog)
        click.echo(f"reconcile: {report.line()} ({time.monotonic() - started:.1f} s)")
        for kind, names in report.examples().items():
            for name in names:
                click.echo(f"  {kind:<8} {name}")
        if dry_run or report.in_line:
            return
        _apply(pipeline, report, catalog, executor, workers, ledger_url)


def _apply(
    pipeline: Pipeline,
    report: Any,
    catalog: Any,
    executor: str | None,
    workers: int | None,
    ledger_url: str | None,
) -> None:
    from pixelfleet.events import MemoryQueue
    from pixelfleet.live import Watcher
    from pixelfleet.live.units import source_bucket

    bucket, prefix = source_bucket(pipeline.source.url)
    with resolve_ledger(ledger_url, pipeline) as ledger:
        watcher = Watcher(
            pipeline,
            ledger,
            MemoryQueue(),
            catalog=catalog,
            executor=executor,
            workers=workers,
            echo=_say,
            summary_every=0,
            until_idle=True,
        )
        watcher.inject(report.events(bucket or "", prefix))
        summary = watcher.run()
    click.echo(f"reconciled: {summary.line()} (run {summary.run_id})")
    if summary.counts.get("failed") or summary.counts.get("dead-lettered"):
        sys.exit(1)


def _say(line: str) -> None:
    click.echo(f"{time.strftime('%H:%M:%S')} {line}")
