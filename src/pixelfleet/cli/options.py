"""Options several commands share."""

from __future__ import annotations

import os

import click

from pixelfleet.ledger import Ledger, open_ledger
from pixelfleet.pipeline import Pipeline
from pixelfleet.settings import get_settings
from pixelfleet.urls import sqlite_path

ledger_option = click.option(
    "--ledger",
    "ledger_url",
    metavar="URL",
    default=None,
    help="Ledger to use (default: the pipeline's run.ledger, else $PIXELFLEET_LEDGER, "
    "else sqlite:///pixelfleet.db).",
)
executor_option = click.option(
    "--executor",
    "-e",
    metavar="NAME",
    default=None,
    help="inline | local | dask | dask://host:port, or a fleet sharing a ledger:"
    " aws-batch | fleet-local | fleet (overrides the pipeline's run.executor).",
)
workers_option = click.option(
    "--workers", "-w", type=click.IntRange(1, 1024), default=None, help="Worker processes."
)
progress_option = click.option(
    "--progress/--no-progress", default=None, help="Progress bar (default: on in a terminal)."
)


def resolve_ledger(
    url: str | None, pipeline: Pipeline | None = None, read_only: bool = False
) -> Ledger:
    """Open the ledger named on the command line, by the pipeline, or by the settings.

    ``read_only``: a ledger file that does not exist yet is not created (an empty
    in-memory ledger stands in), so a dry run writes nothing at all.
    """
    if url is None and pipeline is not None:
        url = pipeline.run.ledger
    url = url or get_settings().ledger_url
    if read_only and url.startswith("sqlite:///") and not os.path.exists(sqlite_path(url)):
        url = "sqlite:///:memory:"
    return open_ledger(url)
