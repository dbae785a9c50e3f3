"""Options several commands share (imported by the command group: kept light)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:  # the group imports this module: it must stay light
    from pixelfleet.ledger import Ledger
    from pixelfleet.pipeline import Pipeline

F = TypeVar("F", bound=Callable[..., Any])


def _ledger_option(default: str) -> Callable[[F], F]:
    """``--ledger URL``, whose help says where the ledger comes from without one."""
    return click.option(
        "--ledger",
        "ledger_url",
        metavar="URL",
        default=None,
        help=f"Ledger to use (default: {default}$PIXELFLEET_LEDGER, else sqlite:///pixelfleet.db).",
    )


#: ``--ledger`` of the commands that take a pipeline (whose run.ledger is the default).
ledger_option = _ledger_option("the pipeline's run.ledger, else ")
#: ``--ledger`` of the commands that take no pipeline (``status``).
plain_ledger_option = _ledger_option("")
#: ``--ledger`` of ``serve``, whose only pipeline is the one ``--events`` names.
serve_ledger_option = _ledger_option("with --events, that pipeline's run.ledger; else ")
executor_option = click.option(
    "--executor",
    "-e",
    metavar="NAME",
    default=None,
    help="inline | local | dask | dask://host:port, or a fleet sharing a ledger:"
    " aws-batch | fleet-local | fleet (overrides the pipeline's run.executor).",
)
set_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="FIELD=VALUE",
    help="Override a pipeline field, e.g. --set steps.0.size=256 (repeatable).",
)
workers_option = click.option(
    "--workers", "-w", type=click.IntRange(1, 1024), default=None, help="Worker processes."
)
progress_option = click.option(
    "--progress/--no-progress", default=None, help="Progress bar (default: on in a terminal)."
)


def _set_logging(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """Keep the log format and level given (on the group or the command) and apply them."""
    from pixelfleet.metrics.logs import configure_logging

    meta = ctx.find_root().meta
    if value is not None:
        meta[f"pixelfleet.{param.name}"] = value
    configure_logging(meta.get("pixelfleet.log_format"), meta.get("pixelfleet.log_level"))


def log_options(f: F) -> F:
    """``--log-format human|json`` and ``--log-level``, on the ``pixelfleet`` group (before
    the command) and on the commands that run work (after it)."""
    f = click.option(
        "--log-level",
        type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
        default=None,
        expose_value=False,
        callback=_set_logging,
        help="Log records at this level and above (default: info with --log-format json,"
        " none for human).",
    )(f)
    return click.option(
        "--log-format",
        type=click.Choice(["human", "json"]),
        default=None,
        expose_value=False,
        callback=_set_logging,
        help="Log lines to stderr for people (human, the default) or one JSON object per"
        " line for log shippers, with run id, task id, key, attempt and error type.",
    )(f)


metrics_port_option = click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    metavar="PORT",
    help="Serve Prometheus metrics at http://HOST:PORT/metrics while the run lasts.",
)
metrics_host_option = click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    help="Address the --metrics-port server binds (0.0.0.0 for a scraper on another host).",
)


@contextlib.contextmanager
def serving_metrics(port: int | None, host: str = "127.0.0.1") -> Iterator[None]:
    """Serve this process's Prometheus metrics on ``host:port`` while the block runs
    (nothing for None)."""
    if port is None:
        yield
        return
    from pixelfleet.metrics.exposition import serve

    try:
        server = serve(port, host)
    except OSError as exc:
        raise click.UsageError(
            f"--metrics-port {port}: cannot listen on {host}:{port} ({exc.strerror or exc});"
            " choose a free port"
        ) from exc
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


def resolve_ledger(
    url: str | None, pipeline: Pipeline | None = None, read_only: bool = False
) -> Ledger:
    """Open the ledger named on the command line, by the pipeline, or by the settings.

    ``read_only``: a ledger file that does not exist yet is not created (an empty
    in-memory ledger stands in), so a dry run writes nothing at all.
    """
    from pixelfleet.ledger import open_ledger
    from pixelfleet.settings import get_settings
    from pixelfleet.urls import sqlite_path

    if url is None and pipeline is not None:
        url = pipeline.run.ledger
    url = url or get_settings().ledger_url
    if read_only and url.startswith("sqlite:///") and not os.path.exists(sqlite_path(url)):
        url = "sqlite:///:memory:"
    return open_ledger(url)
