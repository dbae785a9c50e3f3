"""``pixelfleet serve``: the STAC API (under ``/stac``) and the web UI (``/``), one FastAPI app.

Build it with :func:`create_app`; the ``[server]`` extra provides FastAPI, uvicorn
and Jinja2.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from pixelfleet.errors import MissingExtraError
from pixelfleet.settings import Settings, get_settings

__all__ = ["create_app"]


def create_app(
    settings: Settings | None = None,
    *,
    catalog: Any = None,
    catalog_url: str | None = None,
    ledger_url: str | None = None,
    events_pipeline: Any = None,
) -> Any:
    """The server app: STAC API at ``/stac``, search page at ``/``, runs at ``/runs``,
    Prometheus metrics at ``/metrics``.

    ``catalog`` (an open :class:`~pixelfleet.catalog.Catalog`) wins over
    ``catalog_url``, which wins over the settings' ``catalog_url``; the runs page
    reads ``ledger_url`` (default: the settings' ledger). ``events_pipeline`` (a
    :class:`~pixelfleet.pipeline.Pipeline`) adds ``POST /events``, bucket notifications
    by webhook, handled by a watcher the app runs (:mod:`pixelfleet.server.events`).
    """
    try:
        from fastapi import FastAPI
    except ModuleNotFoundError as exc:
        raise MissingExtraError(
            "pixelfleet serve needs optional dependencies: pip install 'pixelfleet[server]'"
        ) from exc
    from pixelfleet import __version__
    from pixelfleet.catalog import open_catalog
    from pixelfleet.server import live, metrics, openapi, stac, ui
    from pixelfleet.server.errors import add_handlers
    from pixelfleet.server.queryables import Profiles
    from pixelfleet.server.shortcut import SearchShortcut

    settings = settings or get_settings()
    owned = catalog is None

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        webhook = getattr(app.state, "webhook", None)
        if webhook is not None:
            webhook.start()
        try:
            yield
        finally:
            if webhook is not None:
                webhook.stop()
        if owned:
            app.state.catalog.close()

    app = FastAPI(
        lifespan=lifespan,
        title="pixelfleet",
        version=__version__,
        description="STAC API and search pages for the imagery pixelfleet has processed.",
        # Served by pixelfleet.server.openapi, with the OpenAPI media type.
        docs_url=None,
        openapi_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.catalog = catalog or open_catalog(catalog_url or settings.catalog_url)
    app.state.ledger_url = ledger_url or settings.ledger_url
    app.state.profiles = Profiles()
    add_handlers(app)
    app.include_router(stac.router)
    app.include_router(ui.router)
    app.include_router(live.router)  # GET /live, catalog changes as server-sent events
    app.include_router(metrics.router)  # GET /metrics, Prometheus
    if events_pipeline is not None:
        from pixelfleet.server import events

        events.install(app, events_pipeline, app.state.ledger_url, settings)  # POST /events
    app.include_router(openapi.router)  # last: its OPTIONS route answers for every path
    ui.mount_static(app)
    app.add_middleware(SearchShortcut)  # GET /stac/search on SQLite without the routing
    return app
