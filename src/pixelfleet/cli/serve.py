"""``pixelfleet serve``: the search page and STAC API over HTTP."""

from __future__ import annotations

import click

from pixelfleet.cli.options import ledger_option
from pixelfleet.cli.search import catalog_option, existing_catalog_url
from pixelfleet.errors import MissingExtraError
from pixelfleet.settings import get_settings


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@catalog_option
@ledger_option
def serve(host: str, port: int, catalog_url: str | None, ledger_url: str | None) -> None:
    """Serve the search page (/) and the STAC API (/stac) on 127.0.0.1:8000.

    Write endpoints need PIXELFLEET_API_TOKEN; binding other than 127.0.0.1 must be asked
    for with --host.
    """
    try:
        import uvicorn
    except ModuleNotFoundError as exc:
        raise MissingExtraError(
            "pixelfleet serve needs optional dependencies: pip install 'pixelfleet[server]'"
        ) from exc
    from pixelfleet.server import create_app

    settings = get_settings()
    app = create_app(settings, catalog_url=existing_catalog_url(catalog_url), ledger_url=ledger_url)
    click.echo(f"pixelfleet: search page http://{host}:{port}/  STAC API http://{host}:{port}/stac")
    if settings.api_token is None:
        click.echo("  writes are disabled (set PIXELFLEET_API_TOKEN to enable them)")
    uvicorn.run(app, host=host, port=port, log_level="warning")
