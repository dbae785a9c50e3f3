"""The ``pixelfleet`` command group.

Errors a user can fix print one line (``error: ...``) and exit 1; ``--debug`` (or
``PIXELFLEET_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from pixelfleet import __version__
from pixelfleet.errors import PixelfleetError
from pixelfleet.settings import get_settings


class _Group(click.Group):
    """A click group that turns pixelfleet errors into one clear line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PixelfleetError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pixelfleet")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Turn a bucket of imagery into thumbnails and a searchable STAC catalog, resumably."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug or get_settings().debug


def _register() -> None:
    from pixelfleet.cli import batch, histogram, index, retry, run, search, serve, status, worker

    for module in (run, status, retry, search, index, serve, histogram, worker, batch):
        cli.add_command(getattr(module, module.__name__.rsplit(".", 1)[1]))


_register()

if __name__ == "__main__":  # `python -m pixelfleet.cli.main`: how fleet-local starts workers
    cli()
