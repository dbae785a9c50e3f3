"""``pixelfleet index PIPELINE``: rebuild the pipeline's catalog items without rendering."""

from __future__ import annotations

import sys

import click

from pixelfleet.humanize import human_seconds
from pixelfleet.pipeline import load_pipeline
from pixelfleet.reindex import reindex


@click.command()
@click.argument("pipeline_file", metavar="PIPELINE", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="FIELD=VALUE", help="Override a field.")
@click.option("--threads", default=8, show_default=True, type=click.IntRange(1, 64))
def index(pipeline_file: str, overrides: tuple[str, ...], threads: int) -> None:
    """Rebuild PIPELINE's STAC items from its sources and their current outputs.

    Nothing is rendered, and only headers are read. Objects `run` would refuse
    (unsupported format, over the size limits) are refused with the same one-line
    reasons. Exits 1 if any object could not be indexed.
    """
    pipeline = load_pipeline(pipeline_file, overrides)
    summary = reindex(pipeline, threads=threads)
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
        click.echo(f"    {key}: {error}")
    if summary.failed:
        click.echo(f"  {len(summary.failed)} objects could not be indexed")
        sys.exit(1)
