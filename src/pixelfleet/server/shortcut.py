"""``GET /stac/search`` on an in-process catalog, answered before FastAPI's routing.

The search page is the request the API answers most, and on SQLite its search takes
0.2-0.3 ms; FastAPI's exception middleware, its routers' matching of every route in
turn, dependency solving and the endpoint's wrapper took about 40% of the server's CPU
for each such request (py-spy, 100,000 items). This ASGI middleware sits inside the
app's outermost error middleware and answers that one route itself, with the same code
as the route (:func:`~pixelfleet.server.stac.search_page`, the same parameter parsing,
the same error answers); every other request, and searches on catalogs that answer in
a worker thread (PostgreSQL), go on to the app. The route stays declared, so the
OpenAPI document, ``OPTIONS`` and ``HEAD`` are unchanged.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from pixelfleet.server.errors import answer_error
from pixelfleet.server.params import query_from_params
from pixelfleet.server.stac import catalog_of, get_next_link, search_page

PATH = "/stac/search"


class SearchShortcut:
    """ASGI middleware: ``GET /stac/search`` on a ``searches_inline`` catalog, directly."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer the search route, or hand the request on."""
        if scope["type"] != "http" or scope["method"] != "GET" or scope["path"] != PATH:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        if not getattr(catalog_of(request), "searches_inline", False):
            await self.app(scope, receive, send)
            return
        response: Any
        try:
            query, fields = query_from_params(request.query_params)
            response = search_page(request, query, fields, get_next_link(request))
        except Exception as exc:  # noqa: BLE001 - answered as the app's handlers answer
            response = answer_error(request, exc)
        await response(scope, receive, send)
