"""The media types the API answers with, and a response class for each (so the OpenAPI
document says what each path returns)."""

from __future__ import annotations

from fastapi.responses import JSONResponse

JSON = "application/json"
GEOJSON = "application/geo+json"
SCHEMA = "application/schema+json"
OPENAPI = "application/vnd.oai.openapi+json;version=3.1"
HTML = "text/html"


class GeoJSONResponse(JSONResponse):
    """A GeoJSON body: items and pages of items."""

    media_type = GEOJSON


class SchemaResponse(JSONResponse):
    """A JSON Schema body: queryables."""

    media_type = SCHEMA


class OpenAPIResponse(JSONResponse):
    """The OpenAPI document."""

    media_type = OPENAPI
