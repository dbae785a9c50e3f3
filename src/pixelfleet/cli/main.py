"""The ``pixelfleet`` command group.

Errors a user can fix print one line (``error: ...``) and exit 1; ``--debug`` (or
``PIXELFLEET_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from pixelfleet import __version__
from pixelfleet.cli.options import log_options
from pixelfleet.errors import PixelfleetError
from pixelfleet.settings import get_settings

#: Each command's module, imported only when that command runs (or help lists them), so
#: a worker container starting ``pixelfleet worker`` does not import the server or the
#: rendering code of commands it never uses.
COMMANDS = {
    "run": "pixelfleet.cli.run:run",
    "status": "pixelfleet.cli.status:status",
    "retry": "pixelfleet.cli.retry:retry",
    "search": "pixelfleet.cli.search:search",
    "index": "pixelfleet.cli.index:index",
    "serve": "pixelfleet.cli.serve:serve",
    "histogram": "pixelfleet.cli.histogram:histogram",
    "worker": "pixelfleet.cli.worker:worker",
    "batch": "pixelfleet.cli.batch:batch",
    "watch": "pixelfleet.cli.watch:watch",
    "reconcile": "pixelfleet.cli.watch:reconcile",
}


class _Group(click.Group):
    """A click group that turns pixelfleet errors into one clear line and loads each
    command's module on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*COMMANDS, *(n for n in super().list_commands(ctx) if n not in COMMANDS)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        ref = COMMANDS.get(cmd_name)
        if ref is None:
            return super().get_command(ctx, cmd_name)
        module, _, name = ref.partition(":")
        command = getattr(importlib.import_module(module), name)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List the commands with each one's first sentence whole (wrapped), not cut to the
        width left on the line as click does."""
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=1000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

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


@click.group(
    cls=_Group,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="pixelfleet")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@log_options
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Turn a bucket of imagery into thumbnails and a searchable STAC catalog, resumably."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug or get_settings().debug


if __name__ == "__main__":  # `python -m pixelfleet.cli.main`: how fleet-local starts workers
    cli()
