"""How the STAC API reads a search: GET query parameters or a POST body, into a
:class:`~pixelfleet.catalog.SearchQuery` and the :class:`~pixelfleet.server.fields.Fields`
to show.

The API is stricter than the CLI and the search page, which share the catalog's
:func:`~pixelfleet.catalog.parse_query`: ``datetime`` must be RFC 3339 (a date, a time
and a zone; intervals ``a/b``, ``../b``, ``a/..``), a POST ``bbox`` must be an array and
``intersects`` an object, and parameters it does not know are refused so that typos are
seen. Every refusal is a :class:`~pixelfleet.errors.BadQueryError` naming the bad value
and showing a valid one.
"""

from __future__ import annotations

import json
from typing import Any

from pixelfleet.catalog import SearchQuery, parse_query
from pixelfleet.catalog.query import iso
from pixelfleet.catalog.values import RFC3339_EXAMPLE, rfc3339_epoch
from pixelfleet.errors import BadQueryError
from pixelfleet.server.fields import Fields

#: Query parameters (and body fields) search understands.
SEARCH_PARAMS = (
    "bbox",
    "collections",
    "datetime",
    "fields",
    "filter",
    "filter-crs",
    "filter-lang",
    "filter_lang",
    "ids",
    "intersects",
    "limit",
    "q",
    "sortby",
    "token",
)
#: Body fields a POST search may carry besides those (pgstac's clients send ``conf``).
IGNORED_BODY = ("conf",)
#: The only CRS filters may use (longitude, latitude in degrees).
CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"

DATETIME_EXAMPLE = (
    f"{RFC3339_EXAMPLE}, 2013-01-01T00:00:00Z/2013-12-31T23:59:59Z or ../2013-12-31T00:00:00Z"
)


def api_datetime(value: Any) -> str | None:
    """A datetime parameter checked as RFC 3339, rewritten in the catalog's own form.

    One timestamp, or an interval ``start/end`` whose open end is ``..`` or empty.
    """
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadQueryError(f"datetime {value!r} must be a string such as {DATETIME_EXAMPLE}")
    parts = value.split("/")
    if len(parts) > 2:
        raise BadQueryError(
            f"datetime {value!r} must be one timestamp or an interval start/end (.. for an open"
            f" end), e.g. {DATETIME_EXAMPLE}"
        )
    if len(parts) == 1:
        return iso(rfc3339_epoch(value, "datetime"))
    ends = ["" if p in ("", "..") else iso(rfc3339_epoch(p, "datetime")) for p in parts]
    if not any(ends):
        raise BadQueryError(
            f"datetime {value!r}: at least one end of the interval must be given, e.g."
            f" {DATETIME_EXAMPLE}"
        )
    return "/".join(e or ".." for e in ends)


def _check_crs(value: Any) -> None:
    if value not in (None, "", CRS84):
        raise BadQueryError(f"filter-crs {value!r} is not supported; use {CRS84} (or leave it out)")


def query_from_params(params: Any, **fixed: Any) -> tuple[SearchQuery, Fields | None]:
    """Read a GET search (``params``: Starlette's query parameters); ``fixed`` overrides
    (the collection of ``/collections/{id}/items``)."""
    unknown = sorted(set(params) - set(SEARCH_PARAMS))
    if unknown:
        raise BadQueryError(
            f"unknown search parameter {unknown[0]!r}; use: {', '.join(SEARCH_PARAMS)}"
        )
    intersects = params.get("intersects")
    if intersects is not None:
        try:
            intersects = json.loads(intersects)
        except (ValueError, RecursionError):
            raise BadQueryError(
                f"intersects {intersects[:80]!r} is not GeoJSON; give a geometry such as"
                ' {"type": "Point", "coordinates": [-77.0, 38.9]}'
            ) from None
    _check_crs(params.get("filter-crs"))
    fields = params.get("fields")
    args: dict[str, Any] = {
        "bbox": params.get("bbox"),
        "datetime": api_datetime(params.get("datetime")),
        "ids": params.get("ids"),
        "collections": params.get("collections"),
        "q": params.get("q"),
        "filter": params.get("filter"),
        "filter_lang": params.get("filter-lang") or params.get("filter_lang"),
        "sortby": params.get("sortby"),
        "limit": params.get("limit"),
        "token": params.get("token"),
        "intersects": intersects,
    }
    args.update(fixed)
    return parse_query(**args), (None if fields is None else Fields.from_param(fields))


def query_from_body(body: Any) -> tuple[SearchQuery, Fields | None]:
    """Read a POST search body."""
    if not isinstance(body, dict):
        raise BadQueryError('the search body must be a JSON object, e.g. {"limit": 10}')
    unknown = sorted(set(body) - set(SEARCH_PARAMS) - set(IGNORED_BODY))
    if unknown:
        raise BadQueryError(f"unknown search field {unknown[0]!r}; use: {', '.join(SEARCH_PARAMS)}")
    bbox = body.get("bbox")
    if bbox is not None and not isinstance(bbox, list):
        raise BadQueryError(
            f"bbox {bbox!r} must be a JSON array of 4 (or 6) numbers, e.g. [100.0, 0.0, 105.0,"
            " 1.0]; a comma-separated string is for GET"
        )
    intersects = body.get("intersects")
    if intersects is not None and not isinstance(intersects, dict):
        raise BadQueryError(
            f"intersects {intersects!r:.80} must be a GeoJSON geometry object, e.g."
            ' {"type": "Point", "coordinates": [-77.0, 38.9]}'
        )
    _check_crs(body.get("filter-crs"))
    fields = None
    if "fields" in body:
        fields = Fields.from_body(body["fields"])
    query = parse_query(
        bbox=bbox,
        datetime=api_datetime(body.get("datetime")),
        ids=body.get("ids"),
        collections=body.get("collections"),
        q=body.get("q"),
        filter=body.get("filter"),
        filter_lang=body.get("filter-lang") or body.get("filter_lang"),
        sortby=body.get("sortby"),
        limit=body.get("limit"),
        token=body.get("token"),
        intersects=intersects,
    )
    return query, fields
