"""One map from exception class to HTTP status, and the handlers that apply it.

Every error body is ``{"detail": "..."}``. Errors caused by the request are 4xx and
never logged; anything else is a 5xx and is logged with its traceback.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from pixelfleet.errors import (
    AuthError,
    BadQueryError,
    CatalogError,
    ConfigError,
    ItemNotFoundError,
    LedgerError,
    PixelfleetError,
    UnknownNameError,
)

log = logging.getLogger("pixelfleet.server")

#: Exception class -> HTTP status; the first match in this order wins.
STATUS: dict[type[Exception], int] = {
    BadQueryError: 400,
    ConfigError: 400,
    UnknownNameError: 400,
    AuthError: 401,
    ItemNotFoundError: 404,
    LedgerError: 404,
    CatalogError: 503,
}


def status_of(exc: Exception) -> int:
    """The HTTP status an exception maps to (500 for anything unexpected)."""
    for cls, status in STATUS.items():
        if isinstance(exc, cls):
            return status
    return 500


def add_handlers(app: FastAPI) -> None:
    """Install the handlers on an app."""

    async def pixelfleet_error(request: Request, exc: Exception) -> JSONResponse:
        status = status_of(exc)
        if status >= 500:
            log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        parts = []
        for err in exc.errors()[:5]:
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "request"
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
        return JSONResponse({"detail": "; ".join(parts) or "invalid request"}, status_code=400)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return JSONResponse(
            {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
        )

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": "internal error; see the server log"}, status_code=500)

    app.add_exception_handler(PixelfleetError, pixelfleet_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
