"""``pixelfleet index PIPELINE``: rebuild the pipeline's catalog items without rendering."""

from __future__ import annotations

import sys

import click

from pixelfleet.cli.display import printable
from pixelfleet.cli.options import executor_option, progress_option, set_option, workers_option
from pixelfleet.humanize import human_seconds
from pixelfleet.pipeline import load_pipeline
from pixelfleet.reindex import reindex


@click.command()
@click.argument("pipeline_file", metavar="PIPELINE", type=click.Path(dir_okay=False))
@set_option
@click.option(
    "--threads",
    default=None,
    type=click.IntRange(1, 64),
    help="Objects in flight per worker process (default: the pipeline's run.threads).",
)
@executor_option
@workers_option
@progress_option
def index(
    pipeline_file: str,
    overrides: tuple[str, ...],
    threads: int | None,
    executor: str | None,
    workers: int | None,
    progress: bool | None,
) -> None:
    """Rebuild PIPELINE's STAC items from its sources and their current outputs.

    Nothing is rendered, and only headers are read. Objects `run` would refuse
    (unsupported format, over the size limits) are refused with the same one-line
    reasons. Exits 1 if any object could not be indexed.
    """
    pipeline = load_pipeline(pipeline_file, overrides)
    summary = reindex(
        pipeline, threads=threads, executor=executor, workers=workers, progress=progress
    )
    click.secho(
        f"indexed {summary.indexed} items into {summary.collection!r} at {summary.catalog_url}"
        f" in {human_seconds(summary.seconds)}",
        fg="red" if summary.failed else "green",
        bold=True,
    )
    if summary.without_outputs:
        click.echo(
            f"  {summary.without_outputs} items have no current outputs yet"
            f" (run: pixelfleet run {pipeline_file})"
        )
    for key, error in summary.failed[:10]:
        click.echo(f"    {printable(key)}: {printable(error)}")
    if summary.failed:
        click.echo(f"  {len(summary.failed)} objects could not be indexed")
        sys.exit(1)
