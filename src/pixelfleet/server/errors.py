"""One map from exception class to HTTP status, and the handlers that apply it.

Every error body is ``{"code": ..., "description": ...}`` as the STAC API has it (with
the description repeated as ``detail``, which earlier clients read). Errors caused by the
request are 4xx and never logged; anything else is a 5xx and is logged with its
traceback.
"""

from __future__ import annotations

import logging
from typing import Any

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
from pixelfleet.server.openapi import allowed_methods

log = logging.getLogger("pixelfleet.server")


class BodyTooLargeError(BadQueryError):
    """A request body larger than the server accepts (413)."""


#: Exception class -> HTTP status; the first match in this order wins.
STATUS: dict[type[Exception], int] = {
    BodyTooLargeError: 413,
    BadQueryError: 400,
    ConfigError: 400,
    UnknownNameError: 400,
    AuthError: 401,
    ItemNotFoundError: 404,
    LedgerError: 404,
    CatalogError: 503,
}

#: HTTP status -> the error's ``code``.
CODES = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    413: "PayloadTooLarge",
    500: "InternalServerError",
    503: "ServiceUnavailable",
}


def status_of(exc: Exception) -> int:
    """The HTTP status an exception maps to (500 for anything unexpected)."""
    for cls, status in STATUS.items():
        if isinstance(exc, cls):
            return status
    return 500


def error_response(
    status: int, description: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """An error answer: ``code``, ``description`` (and ``detail``, the same)."""
    code = CODES.get(status, "ServerError" if status >= 500 else "ClientError")
    return JSONResponse(
        {"code": code, "description": description, "detail": description},
        status_code=status,
        headers=headers,
    )


def answer_error(request: Request, exc: Exception) -> JSONResponse:
    """The answer to a pixelfleet error (4xx) or an unexpected one (500, logged)."""
    status = status_of(exc)
    if status >= 500:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    if not isinstance(exc, PixelfleetError):
        return error_response(500, "internal error; see the server log")
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return error_response(status, str(exc), headers)


def add_handlers(app: FastAPI) -> None:
    """Install the handlers on an app."""

    async def pixelfleet_error(request: Request, exc: Exception) -> JSONResponse:
        return answer_error(request, exc)

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        parts = []
        for err in exc.errors()[:5]:
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "request"
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
        return error_response(400, "; ".join(parts) or "invalid request")

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        headers: dict[str, Any] = dict(exc.headers or {})
        description = str(exc.detail)
        path = request.url.path
        if exc.status_code == 404:
            description = f"no resource at {path}; the STAC API starts at /stac"
        elif exc.status_code == 405:
            methods = sorted(allowed_methods(request.app, dict(request.scope)))
            headers["Allow"] = ", ".join(methods)
            description = f"{request.method} is not allowed on {path}; use {', '.join(methods)}"
        return error_response(exc.status_code, description, headers)

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        return answer_error(request, exc)

    app.add_exception_handler(PixelfleetError, pixelfleet_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
