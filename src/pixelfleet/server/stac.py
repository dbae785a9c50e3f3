"""The STAC API under ``/stac``: landing page, conformance, collections, items, search.

Search takes ``bbox``, ``datetime``, ``ids``, ``collections``, ``q`` (free text),
``filter`` (CQL2-JSON), ``sortby``, ``limit`` and ``token``, by GET or POST; pages
link to the next one. Writes (``POST .../items``, ``POST /stac/collections``) need
``Authorization: Bearer $PIXELFLEET_API_TOKEN``.
"""

from __future__ import annotations

import hmac
import json
import os
import urllib.parse
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response

from pixelfleet import __version__
from pixelfleet.catalog import Catalog, SearchPage, SearchQuery, check_collection_id, parse_query
from pixelfleet.catalog.base import check_item, new_collection
from pixelfleet.errors import AuthError, BadQueryError, ItemNotFoundError

router = APIRouter()

GEOJSON = "application/geo+json"
JSON = "application/json"
MAX_BODY = 256 * 1024

CONFORMANCE = [
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/collections",
    "https://api.stacspec.org/v1.0.0/ogcapi-features",
    "https://api.stacspec.org/v1.0.0/item-search",
    "https://api.stacspec.org/v1.0.0/item-search#sort",
    "https://api.stacspec.org/v1.0.0/ogcapi-features#sort",
    "https://api.stacspec.org/v1.0.0-rc.1/item-search#free-text",
    "https://api.stacspec.org/v1.0.0-rc.2/item-search#filter",
    "https://api.stacspec.org/v1.0.0/ogcapi-features/extensions/transaction",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/filter",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/features-filter",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-json",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-cql2",
    "http://www.opengis.net/spec/cql2/1.0/conf/advanced-comparison-operators",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-spatial-functions",
]

#: Query parameters search understands (others are refused, so typos are seen).
SEARCH_PARAMS = {
    "bbox",
    "datetime",
    "ids",
    "collections",
    "q",
    "filter",
    "filter-lang",
    "filter_lang",
    "sortby",
    "limit",
    "token",
    "intersects",
}


def catalog_of(request: Request) -> Catalog:
    """The app's catalog."""
    catalog: Catalog = request.app.state.catalog
    return catalog


def base_url(request: Request) -> str:
    """The server's root URL as the client sees it, without a trailing slash."""
    return str(request.base_url).rstrip("/")


def require_token(request: Request) -> None:
    """Refuse a request that changes data unless it carries the API token."""
    expected = request.app.state.settings.api_token
    if not expected:
        raise AuthError(
            "writes are disabled on this server: start it with PIXELFLEET_API_TOKEN set, and send"
            " 'Authorization: Bearer <token>'"
        )
    given = request.headers.get("authorization", "")
    scheme, _, token = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip(), expected):
        raise AuthError("missing or wrong API token; send 'Authorization: Bearer <token>'")


def stac_json(data: Any, media_type: str = JSON, status: int = 200) -> Response:
    """A JSON response with a STAC media type."""
    return JSONResponse(data, media_type=media_type, status_code=status)


# -- links ----------------------------------------------------------------------------------


def item_url(base: str, collection: str, item_id: str) -> str:
    """The API URL of one item (ids may hold slashes: they stay path separators)."""
    return (
        f"{base}/stac/collections/{urllib.parse.quote(collection)}/items/"
        f"{urllib.parse.quote(item_id, safe='/')}"
    )


def asset_url(base: str, collection: str, asset: str, item_id: str) -> str:
    """Where the server serves a local asset file."""
    return (
        f"{base}/assets/{urllib.parse.quote(collection)}/{urllib.parse.quote(asset)}/"
        f"{urllib.parse.quote(item_id, safe='/')}"
    )


def is_local_href(href: str) -> bool:
    """True for hrefs that name a file on this machine (absolute paths, file://)."""
    return href.startswith("/") or href.startswith("file://")


def local_path(href: str) -> str:
    """The path of a local href."""
    if href.startswith("file://"):
        return urllib.parse.unquote(urllib.parse.urlparse(href).path)
    return href


def present_item(item: dict[str, Any], base: str) -> dict[str, Any]:
    """An item as the API shows it: links added, local asset files served by this server."""
    collection, ident = item.get("collection", ""), item["id"]
    self_href = item_url(base, collection, ident)
    coll_href = f"{base}/stac/collections/{urllib.parse.quote(collection)}"
    item["links"] = [
        {"rel": "self", "href": self_href, "type": GEOJSON},
        {"rel": "parent", "href": coll_href, "type": JSON},
        {"rel": "collection", "href": coll_href, "type": JSON},
        {"rel": "root", "href": f"{base}/stac", "type": JSON},
        {"rel": "alternate", "href": f"{base}/items/{collection}/{ident}", "type": "text/html"},
    ]
    for name, asset in (item.get("assets") or {}).items():
        href = str(asset.get("href", ""))
        if is_local_href(href):
            asset["href"] = asset_url(base, collection, name, ident)
    return item


def present_collection(collection: dict[str, Any], base: str) -> dict[str, Any]:
    """A collection with its links."""
    href = f"{base}/stac/collections/{urllib.parse.quote(collection['id'])}"
    collection["links"] = [
        {"rel": "self", "href": href, "type": JSON},
        {"rel": "parent", "href": f"{base}/stac", "type": JSON},
        {"rel": "root", "href": f"{base}/stac", "type": JSON},
        {"rel": "items", "href": f"{href}/items", "type": GEOJSON},
    ]
    return collection


def feature_collection(
    page: SearchPage, request: Request, next_link: dict[str, Any] | None
) -> dict[str, Any]:
    """A page of items as a GeoJSON FeatureCollection with STAC API links."""
    base = base_url(request)
    links = [
        {"rel": "root", "href": f"{base}/stac", "type": JSON},
        {"rel": "self", "href": str(request.url), "type": GEOJSON},
    ]
    if next_link is not None:
        links.append(next_link)
    body: dict[str, Any] = {
        "type": "FeatureCollection",
        "features": [present_item(i, base) for i in page.items],
        "links": links,
        "numberReturned": len(page.items),
    }
    if page.matched is not None:
        body["numberMatched"] = page.matched
    return body


def get_next_link(request: Request, token: str | None) -> dict[str, Any] | None:
    """The GET ``next`` link: this URL with the new token."""
    if token is None:
        return None
    params = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
    params.append(("token", token))
    href = f"{str(request.url).split('?', 1)[0]}?{urllib.parse.urlencode(params)}"
    return {"rel": "next", "href": href, "type": GEOJSON, "method": "GET"}


def query_from_params(request: Request, **fixed: Any) -> SearchQuery:
    """Parse search parameters from a GET query string."""
    params = request.query_params
    unknown = sorted(set(params) - SEARCH_PARAMS)
    if unknown:
        raise BadQueryError(
            f"unknown search parameter {unknown[0]!r}; use: {', '.join(sorted(SEARCH_PARAMS))}"
        )
    intersects = params.get("intersects")
    if intersects is not None:
        try:
            intersects = json.loads(intersects)
        except ValueError:
            raise BadQueryError("intersects is not valid GeoJSON") from None
    args: dict[str, Any] = {
        "bbox": params.get("bbox"),
        "datetime": params.get("datetime"),
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
    return parse_query(**args)


# -- routes ---------------------------------------------------------------------------------


@router.get("/stac", summary="STAC API landing page")
def landing(request: Request) -> Response:
    """The root catalog: what this API offers and where."""
    base = base_url(request)
    links = [
        {"rel": "self", "href": f"{base}/stac", "type": JSON},
        {"rel": "root", "href": f"{base}/stac", "type": JSON},
        {"rel": "conformance", "href": f"{base}/stac/conformance", "type": JSON},
        {"rel": "data", "href": f"{base}/stac/collections", "type": JSON},
        {"rel": "search", "href": f"{base}/stac/search", "type": GEOJSON, "method": "GET"},
        {"rel": "search", "href": f"{base}/stac/search", "type": GEOJSON, "method": "POST"},
        {
            "rel": "service-desc",
            "href": f"{base}/stac/openapi.json",
            "type": "application/vnd.oai.openapi+json;version=3.0",
        },
        {"rel": "service-doc", "href": f"{base}/stac/docs", "type": "text/html"},
        {"rel": "alternate", "href": f"{base}/", "type": "text/html", "title": "Search page"},
    ]
    for collection in catalog_of(request).collections():
        links.append(
            {
                "rel": "child",
                "href": f"{base}/stac/collections/{urllib.parse.quote(collection['id'])}",
                "type": JSON,
                "title": collection.get("title") or collection["id"],
            }
        )
    return stac_json(
        {
            "type": "Catalog",
            "stac_version": "1.1.0",
            "id": "pixelfleet",
            "title": "pixelfleet",
            "description": f"Imagery processed by pixelfleet {__version__}",
            "conformsTo": CONFORMANCE,
            "links": links,
        }
    )


@router.get("/stac/conformance", summary="Conformance classes")
def conformance() -> Response:
    """The standards this API follows."""
    return stac_json({"conformsTo": CONFORMANCE})


@router.get("/stac/collections", summary="All collections")
def collections(request: Request) -> Response:
    """Every collection with its extent."""
    base = base_url(request)
    found = [present_collection(c, base) for c in catalog_of(request).collections()]
    return stac_json(
        {
            "collections": found,
            "links": [
                {"rel": "self", "href": f"{base}/stac/collections", "type": JSON},
                {"rel": "root", "href": f"{base}/stac", "type": JSON},
            ],
        }
    )


@router.post("/stac/collections", summary="Create or replace a collection (needs the token)")
async def create_collection(request: Request) -> Response:
    """Create or replace a collection from a STAC collection JSON body."""
    require_token(request)
    body = await read_json(request)
    if not isinstance(body, dict) or not isinstance(body.get("id"), str):
        raise BadQueryError("the body must be a STAC collection with an 'id'")
    collection = new_collection(
        check_collection_id(body["id"]), body.get("title"), body.get("description")
    )
    catalog_of(request).save_collection(collection)
    return stac_json(present_collection(collection, base_url(request)), status=201)


@router.get("/stac/collections/{collection_id}", summary="One collection")
def collection(collection_id: str, request: Request) -> Response:
    """One collection by id."""
    found = catalog_of(request).get_collection(collection_id)
    return stac_json(present_collection(found, base_url(request)))


@router.get("/stac/collections/{collection_id}/items", summary="A collection's items")
def collection_items(collection_id: str, request: Request) -> Response:
    """A page of a collection's items; takes the search parameters too."""
    catalog_of(request).get_collection(collection_id)
    query = query_from_params(request, collections=[collection_id])
    page = catalog_of(request).search(query)
    body = feature_collection(page, request, get_next_link(request, page.next_token))
    return stac_json(body, GEOJSON)


@router.post(
    "/stac/collections/{collection_id}/items", summary="Add or replace items (needs the token)"
)
async def add_items(collection_id: str, request: Request) -> Response:
    """Upsert one item, or a FeatureCollection of items, into a collection."""
    require_token(request)
    catalog = catalog_of(request)
    catalog.get_collection(collection_id)
    body = await read_json(request)
    items = body.get("features") if isinstance(body, dict) and "features" in body else [body]
    if not isinstance(items, list) or len(items) > 1000:
        raise BadQueryError("send one item or a FeatureCollection of at most 1000 items")
    for item in items:
        if isinstance(item, dict):
            item.setdefault("collection", collection_id)
        check_item(item)
        for name, asset in (item.get("assets") or {}).items():
            href = str(asset.get("href", "")) if isinstance(asset, dict) else ""
            if is_local_href(href) or href.startswith("s3://"):
                # The server serves such hrefs itself (files, S3 with its credentials):
                # only pipelines, run by the operator, may name them.
                raise BadQueryError(
                    f"item {item['id']!r} asset {name!r}: href {href!r} names a file or an S3"
                    " object; items written over HTTP may only link http(s) URLs"
                )
        if item["collection"] != collection_id:
            raise BadQueryError(
                f"item {item['id']!r} says collection {item['collection']!r}, not {collection_id!r}"
            )
    count = catalog.upsert(items)
    return stac_json({"upserted": count}, status=201)


@router.get("/stac/collections/{collection_id}/items/{item_id:path}", summary="One item")
def item(collection_id: str, item_id: str, request: Request) -> Response:
    """One item by collection and id."""
    found = catalog_of(request).get_item(collection_id, item_id)
    return stac_json(present_item(found, base_url(request)), GEOJSON)


@router.get("/stac/search", summary="Search items (GET)")
def search_get(request: Request) -> Response:
    """Search with query parameters; ``next`` links carry the page token."""
    query = query_from_params(request)
    page = catalog_of(request).search(query)
    return stac_json(
        feature_collection(page, request, get_next_link(request, page.next_token)), GEOJSON
    )


@router.post("/stac/search", summary="Search items (POST, JSON body)")
async def search_post(request: Request) -> Response:
    """Search with a JSON body; the ``next`` link repeats the body with the page token."""
    body = await read_json(request)
    if not isinstance(body, dict):
        raise BadQueryError("the search body must be a JSON object")
    unknown = sorted(set(body) - SEARCH_PARAMS - {"fields", "conf"})
    if unknown:
        raise BadQueryError(
            f"unknown search field {unknown[0]!r}; use: {', '.join(sorted(SEARCH_PARAMS))}"
        )
    query = parse_query(
        bbox=body.get("bbox"),
        datetime=body.get("datetime"),
        ids=body.get("ids"),
        collections=body.get("collections"),
        q=body.get("q"),
        filter=body.get("filter"),
        filter_lang=body.get("filter-lang") or body.get("filter_lang"),
        sortby=body.get("sortby"),
        limit=body.get("limit"),
        token=body.get("token"),
        intersects=body.get("intersects"),
    )
    page = catalog_of(request).search(query)
    next_link = None
    if page.next_token is not None:
        next_link = {
            "rel": "next",
            "href": f"{base_url(request)}/stac/search",
            "type": GEOJSON,
            "method": "POST",
            "body": {**body, "token": page.next_token},
            "merge": False,
        }
    return stac_json(feature_collection(page, request, next_link), GEOJSON)


@router.get("/assets/{collection_id}/{asset}/{item_id:path}", summary="An item's asset file")
def asset_file(collection_id: str, asset: str, item_id: str, request: Request) -> Response:
    """Serve an asset that lives on this machine; redirect to a remote one."""
    found = catalog_of(request).get_item(collection_id, item_id)
    entry = (found.get("assets") or {}).get(asset)
    if not isinstance(entry, dict) or not entry.get("href"):
        raise ItemNotFoundError(f"item {item_id!r} has no asset {asset!r}")
    href = str(entry["href"])
    if href.startswith(("http://", "https://")):
        return RedirectResponse(href, status_code=307)
    if href.startswith("s3://"):
        return s3_asset(request, href, entry.get("type"))
    if not is_local_href(href):
        raise ItemNotFoundError(
            f"asset {asset!r} is at {href}, which this server cannot fetch; give the pipeline's"
            " [output] a public_url"
        )
    path = local_path(href)
    if not os.path.isfile(path):
        raise ItemNotFoundError(f"asset file {path} is gone; run the pipeline again")
    return FileResponse(path, media_type=entry.get("type") or None)


#: Largest object the server relays from S3 (thumbnails and previews, not scenes).
MAX_RELAY_BYTES = 32 * 1024**2


def s3_asset(request: Request, href: str, media_type: str | None) -> Response:
    """Relay an asset from S3 with the server's credentials (for outputs without a
    ``public_url``); only hrefs the catalog holds get here, and only small objects."""
    from pixelfleet.storage import open_storage

    bucket, _, key = href.removeprefix("s3://").partition("/")
    if not bucket or not key:
        raise ItemNotFoundError(f"asset href {href!r} names no object")
    storage = open_storage(f"s3://{bucket}", request.app.state.settings)
    head = storage.head(key)
    if head is None:
        raise ItemNotFoundError(f"asset {href} does not exist")
    if head.size > MAX_RELAY_BYTES:
        raise BadQueryError(
            f"asset {href} is {head.size:,} bytes; the server relays objects up to"
            f" {MAX_RELAY_BYTES:,} bytes: fetch it from S3 directly"
        )
    return Response(storage.read(key), media_type=media_type or "application/octet-stream")


async def read_json(request: Request) -> Any:
    """The request's JSON body, refused when too large or malformed."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
        raise BadQueryError(f"the request body is over {MAX_BODY} bytes")
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY:
            raise BadQueryError(f"the request body is over {MAX_BODY} bytes")
    try:
        return json.loads(raw or b"{}")
    except (ValueError, RecursionError):
        raise BadQueryError("the request body is not valid JSON") from None
