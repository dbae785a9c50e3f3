"""The API's description of itself: the OpenAPI 3.1 document (``service-desc``, served as
``application/vnd.oai.openapi+json;version=3.1``), its HTML rendering (``service-doc``),
and ``OPTIONS`` / ``Allow`` answers that list exactly the methods each path accepts.

The routes in :mod:`pixelfleet.server.stac` read their parameters and bodies themselves
(so that every mistake is a 400 naming the value), which FastAPI cannot see; they declare
them here instead: :data:`SEARCH_PARAMETERS`, the request bodies in :data:`SCHEMAS`, and
the error answers each can give (:func:`errors`). :func:`document` then takes FastAPI's
document and replaces its 422 answers (this server answers a bad request with 400).
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from starlette.routing import Match, Mount

from pixelfleet.errors import ItemNotFoundError
from pixelfleet.server.media import JSON, OpenAPIResponse

router = APIRouter(include_in_schema=False)

OPENAPI_PATH = "/stac/openapi.json"
DOCS_PATH = "/stac/docs"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_ERROR_TEXT = {
    400: "The request is malformed: the description names the bad value and how to fix it.",
    401: "The API token is missing or wrong (writes need 'Authorization: Bearer <token>').",
    404: "No such collection, item or asset.",
    413: "The request body is larger than the server accepts (256 KiB).",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The documented error answers of an operation."""
    return {
        status: {"description": _ERROR_TEXT[status], "content": {JSON: {"schema": _ref("Error")}}}
        for status in statuses
    }


def answer(media_type: str, schema: str, text: str) -> dict[int | str, dict[str, Any]]:
    """The documented 200 answer of an operation."""
    return {200: {"description": text, "content": {media_type: {"schema": _ref(schema)}}}}


def body(schema: str, text: str) -> dict[str, Any]:
    """``openapi_extra`` declaring a JSON request body."""
    return {
        "requestBody": {
            "required": True,
            "description": text,
            "content": {JSON: {"schema": _ref(schema)}},
        }
    }


def _param(name: str, schema: dict[str, Any], text: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": text,
        **extra,
    }


_STRING = {"type": "string"}
#: The query parameters of GET searches (``/stac/search``, ``.../items``).
SEARCH_PARAMETERS = [
    _param("bbox", _STRING, "west,south,east,north in degrees (4 or 6 numbers); west > east"
           " crosses the antimeridian", example="-79,36,-77,37"),
    _param("intersects", _STRING, "A GeoJSON geometry (JSON text), GeometryCollection too"),
    _param("datetime", _STRING, "RFC 3339 timestamp or interval start/end, '..' for an open"
           " end", example="2016-01-01T00:00:00Z/2016-12-31T23:59:59Z"),
    _param("ids", _STRING, "Comma-separated item ids"),
    _param("collections", _STRING, "Comma-separated collection ids"),
    _param("q", _STRING, "Free text: titles, keys, labels, descriptions; commas separate"
           " alternatives", example="glacier"),
    _param("filter", _STRING, "A CQL2 filter (text, or JSON text)",
           example="pixelfleet:datetime_source = 'metadata'"),
    _param("filter-lang", {"type": "string", "enum": ["cql2-text", "cql2-json"]},
           "The filter's language (default: JSON when it starts with '{', else text)"),
    _param("filter-crs", {"type": "string", "enum": ["http://www.opengis.net/def/crs/OGC/1.3/CRS84"]},
           "The filter's coordinate system (only CRS84)"),
    _param("sortby", _STRING, "Comma-separated fields, '-' for descending; any queryable",
           example="-datetime,properties.title"),
    _param("fields", _STRING, "Fields to include, or with '-' to exclude",
           example="id,properties.datetime,-assets"),
    _param("limit", {"type": "integer", "minimum": 1, "default": 10},
           "Items a page holds; above 1000 it is cut to 1000"),
    _param("token", _STRING, "The page token of a 'next' link"),
]  # fmt: skip

_LINK = {
    "type": "object",
    "required": ["rel", "href"],
    "properties": {
        "rel": _STRING,
        "href": {"type": "string", "format": "uri"},
        "type": _STRING,
        "title": _STRING,
        "method": {"type": "string", "enum": ["GET", "POST"]},
        "body": {"type": "object"},
        "merge": {"type": "boolean"},
    },
}
_LINKS = {"type": "array", "items": _ref("Link")}
_GEOMETRY = _ref("Geometry")
_NAMES = {"type": "array", "items": _STRING}

#: Schemas the document refers to.
SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": {
        "type": "object",
        "required": ["code", "description"],
        "properties": {
            "code": {"type": "string", "example": "BadRequest"},
            "description": {"type": "string"},
            "detail": {"type": "string", "description": "The description again"},
        },
    },
    "Link": _LINK,
    "Geometry": {
        "type": "object",
        "description": "A GeoJSON geometry (RFC 7946), GeometryCollection included",
        "required": ["type"],
        "properties": {
            "type": {
                "type": "string",
                "enum": [
                    "Point",
                    "MultiPoint",
                    "LineString",
                    "MultiLineString",
                    "Polygon",
                    "MultiPolygon",
                    "GeometryCollection",
                ],
            },
            "coordinates": {"type": "array"},
            "geometries": {"type": "array", "items": {"$ref": "#/components/schemas/Geometry"}},
        },
    },  # fmt: skip
    "Landing": {
        "type": "object",
        "required": ["type", "id", "stac_version", "description", "conformsTo", "links"],
        "properties": {
            "type": {"const": "Catalog"},
            "id": _STRING,
            "stac_version": _STRING,
            "title": _STRING,
            "description": _STRING,
            "conformsTo": _NAMES,
            "links": _LINKS,
        },
    },
    "Conformance": {
        "type": "object",
        "required": ["conformsTo"],
        "properties": {"conformsTo": _NAMES},
    },
    "Item": {
        "type": "object",
        "required": ["type", "id", "geometry", "properties", "links", "assets"],
        "properties": {
            "type": {"const": "Feature"},
            "stac_version": _STRING,
            "id": _STRING,
            "collection": _STRING,
            "geometry": {"oneOf": [{"type": "null"}, _GEOMETRY]},
            "bbox": {"type": "array", "items": {"type": "number"}},
            "properties": {"type": "object"},
            "links": _LINKS,
            "assets": {"type": "object"},
        },
    },
    "FeatureCollection": {
        "type": "object",
        "required": ["type", "features", "links"],
        "properties": {
            "type": {"const": "FeatureCollection"},
            "features": {"type": "array", "items": _ref("Item")},
            "links": _LINKS,
            "numberMatched": {"type": "integer"},
            "numberReturned": {"type": "integer"},
        },
    },
    "Collection": {
        "type": "object",
        "required": ["type", "id", "stac_version", "description", "license", "extent", "links"],
        "properties": {
            "type": {"const": "Collection"},
            "id": _STRING,
            "stac_version": _STRING,
            "title": _STRING,
            "description": _STRING,
            "license": _STRING,
            "extent": {"type": "object"},
            "summaries": {"type": "object"},
            "links": _LINKS,
        },
    },
    "Collections": {
        "type": "object",
        "required": ["collections", "links"],
        "properties": {
            "collections": {"type": "array", "items": _ref("Collection")},
            "links": _LINKS,
        },
    },
    "Queryables": {
        "type": "object",
        "description": "A JSON Schema of the properties a filter may use",
        "required": ["$schema", "$id", "type", "properties"],
        "properties": {
            "$schema": _STRING,
            "$id": _STRING,
            "type": {"const": "object"},
            "properties": {"type": "object"},
            "additionalProperties": {"type": "boolean"},
        },
    },
    "SearchBody": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "bbox": {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 6},
            "intersects": _GEOMETRY,
            "datetime": {"type": "string", "example": "2016-01-01T00:00:00Z/.."},
            "ids": _NAMES,
            "collections": _NAMES,
            "q": {"oneOf": [_STRING, _NAMES]},
            "filter": {"oneOf": [{"type": "object"}, _STRING]},
            "filter-lang": {"type": "string", "enum": ["cql2-json", "cql2-text"]},
            "filter-crs": _STRING,
            "sortby": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["field"],
                    "properties": {
                        "field": _STRING,
                        "direction": {"type": "string", "enum": ["asc", "desc"]},
                    },
                },
            },
            "fields": {
                "type": "object",
                "properties": {"include": _NAMES, "exclude": _NAMES},
            },
            "limit": {"type": "integer", "minimum": 1, "default": 10},
            "token": _STRING,
            "conf": {"type": "object", "description": "Accepted and ignored"},
        },
    },
    "CollectionBody": {
        "type": "object",
        "required": ["id"],
        "properties": {"id": _STRING, "title": _STRING, "description": _STRING},
    },
    "ItemsBody": {
        "description": "One item, or a FeatureCollection of at most 1000",
        "oneOf": [_ref("Item"), _ref("FeatureCollection")],
    },
    "Upserted": {
        "type": "object",
        "required": ["upserted"],
        "properties": {"upserted": {"type": "integer"}},
    },
}


def document(app: Any) -> dict[str, Any]:
    """The app's OpenAPI document: FastAPI's, with this API's errors and schemas."""
    cached: dict[str, Any] | None = getattr(app.state, "openapi_document", None)
    if cached is not None:
        return cached
    doc: dict[str, Any] = copy.deepcopy(app.openapi())
    for methods in doc.get("paths", {}).values():
        for operation in methods.values():
            responses = operation.get("responses", {})
            if responses.pop("422", None) is not None and "400" not in responses:
                responses.update({str(k): v for k, v in errors(400).items()})
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    schemas.update(SCHEMAS)
    app.state.openapi_document = doc
    return doc


@router.get(OPENAPI_PATH)
def service_desc(request: Request) -> Response:
    """The OpenAPI document."""
    return OpenAPIResponse(document(request.app))


@router.get(DOCS_PATH)
def service_doc() -> HTMLResponse:
    """The OpenAPI document as a page."""
    return get_swagger_ui_html(openapi_url=OPENAPI_PATH, title="pixelfleet STAC API")


#: Methods a route may accept (OPTIONS is answered for every path with a route).
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(app: Any, scope: dict[str, Any]) -> set[str]:
    """The methods the app's routes accept at the path of ``scope`` (empty: no route).

    Each method is tried against the routes as the router would (a route matches fully
    when it takes that method at that path), so routers included in routers count too.
    """
    found: set[str] = set()
    for method in METHODS:
        probe = {**scope, "method": method}
        for route in app.router.routes:
            if isinstance(route, Mount):
                if method in ("GET", "HEAD") and route.matches(probe)[0] != Match.NONE:
                    found.add(method)  # static files
            elif route.matches(probe)[0] == Match.FULL:
                found.add(method)
    return found | {"OPTIONS"} if found else found


@router.options("/{path:path}")
def options(path: str, request: Request) -> Response:
    """What a path accepts, in ``Allow`` (404 for a path with no route)."""
    methods = allowed_methods(request.app, dict(request.scope))
    if not methods:
        raise ItemNotFoundError(f"no resource at /{path}; the STAC API starts at /stac")
    return Response(status_code=204, headers={"Allow": ", ".join(sorted(methods))})
