"""``pixelfleet serve``: the search page and STAC API over HTTP."""

from __future__ import annotations

import click

from pixelfleet.cli.options import serve_ledger_option
from pixelfleet.cli.search import catalog_option, existing_catalog_url
from pixelfleet.errors import ConfigError, MissingExtraError
from pixelfleet.settings import get_settings


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--events",
    "events_file",
    default=None,
    metavar="PIPELINE",
    type=click.Path(dir_okay=False, exists=True),
    help="Also take bucket notifications at POST /events (MinIO's webhook) and keep"
    " PIPELINE's outputs and catalog current; needs PIXELFLEET_API_TOKEN.",
)
@catalog_option
@serve_ledger_option
def serve(
    host: str,
    port: int,
    events_file: str | None,
    catalog_url: str | None,
    ledger_url: str | None,
) -> None:
    """Serve the search page (/) and the STAC API (/stac) on 127.0.0.1:8000.

    Write endpoints need PIXELFLEET_API_TOKEN; binding other than 127.0.0.1 must be asked
    for with --host. With --events PIPELINE, POST /events takes bucket notifications
    (Authorization: Bearer $PIXELFLEET_API_TOKEN) and handles them as pixelfleet watch does.
    """
    try:
        import uvicorn
    except ModuleNotFoundError as exc:
        raise MissingExtraError(
            "pixelfleet serve needs optional dependencies: pip install 'pixelfleet[server]'"
        ) from exc
    from pixelfleet.server import create_app

    settings = get_settings()
    pipeline = None
    if events_file is not None:
        from pixelfleet.pipeline import load_pipeline
        from pixelfleet.server.events import TOKEN_NEEDED

        if not settings.api_token:
            raise ConfigError(TOKEN_NEEDED)
        pipeline = load_pipeline(events_file)
        ledger_url = ledger_url or pipeline.run.ledger
        # The catalog served is the one the events keep current (it may not exist yet).
        if catalog_url is None and pipeline.catalog is not None and pipeline.catalog.url:
            catalog_url = pipeline.catalog.url
    served_catalog = catalog_url if pipeline is not None else existing_catalog_url(catalog_url)
    app = create_app(
        settings,
        catalog_url=served_catalog,
        ledger_url=ledger_url,
        events_pipeline=pipeline,
    )
    click.echo(f"pixelfleet: search page http://{host}:{port}/  STAC API http://{host}:{port}/stac")
    if settings.api_token is None:
        click.echo("  writes are disabled (set PIXELFLEET_API_TOKEN to enable them)")
    if pipeline is not None:
        click.echo(f"  bucket events: POST http://{host}:{port}/events for {pipeline.source.url}")
    uvicorn.run(app, host=host, port=port, log_level="warning")
