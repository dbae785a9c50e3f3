"""The STAC API under ``/stac``: landing page, conformance, queryables, collections, items,
search.

Search takes ``bbox``, ``intersects``, ``datetime``, ``ids``, ``collections``, ``q``
(free text), ``filter`` (CQL2 text or JSON), ``sortby`` (any queryable), ``fields``,
``limit`` and ``token``, by GET or POST, all in one request; pages link to the next one
with every parameter kept. How parameters are read is :mod:`pixelfleet.server.params`,
how records are shown :mod:`pixelfleet.server.present`. Writes (``POST .../items``,
``POST /stac/collections``) need ``Authorization: Bearer $PIXELFLEET_API_TOKEN``.
"""

from __future__ import annotations

import hmac
import json
import os
import urllib.parse
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from pixelfleet import __version__
from pixelfleet.catalog import Catalog, SearchPage, SearchQuery, check_collection_id
from pixelfleet.catalog.base import check_item, new_collection
from pixelfleet.errors import AuthError, BadQueryError, ItemNotFoundError
from pixelfleet.server.errors import BodyTooLargeError
from pixelfleet.server.fields import Fields
from pixelfleet.server.media import (
    GEOJSON,
    HTML,
    JSON,
    OPENAPI,
    SCHEMA,
    GeoJSONResponse,
    SchemaResponse,
)
from pixelfleet.server.openapi import (
    DOCS_PATH,
    OPENAPI_PATH,
    SEARCH_PARAMETERS,
    answer,
    body,
    errors,
)
from pixelfleet.server.params import query_from_body, query_from_params
from pixelfleet.server.present import (
    QUERYABLES_REL,
    asset_url,
    collection_url,
    is_local_href,
    link,
    local_path,
    present_collection,
    present_item,
)
from pixelfleet.server.queryables import Profiles

__all__ = ["asset_url", "base_url", "catalog_of", "is_local_href", "router"]

router = APIRouter()

MAX_BODY = 256 * 1024

CONFORMANCE = [
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/collections",
    "https://api.stacspec.org/v1.0.0/ogcapi-features",
    "https://api.stacspec.org/v1.0.0/item-search",
    "https://api.stacspec.org/v1.0.0/item-search#sort",
    "https://api.stacspec.org/v1.0.0/ogcapi-features#sort",
    "https://api.stacspec.org/v1.0.0/item-search#fields",
    "https://api.stacspec.org/v1.0.0/ogcapi-features#fields",
    "https://api.stacspec.org/v1.0.0/item-search#filter",
    "https://api.stacspec.org/v1.0.0-rc.1/item-search#free-text",
    "https://api.stacspec.org/v1.0.0-rc.1/ogcapi-features#free-text",
    "https://api.stacspec.org/v1.0.0/ogcapi-features/extensions/transaction",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/filter",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/features-filter",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/queryables",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-text",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-json",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-cql2",
    "http://www.opengis.net/spec/cql2/1.0/conf/advanced-comparison-operators",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-spatial-functions",
    # The name drafts of CQL2 gave basic spatial functions, which some validators read.
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-spatial-operators",
]
_ROOT_TITLE = "pixelfleet STAC API"


def catalog_of(request: Request) -> Catalog:
    """The app's catalog."""
    catalog: Catalog = request.app.state.catalog
    return catalog


def profiles_of(request: Request) -> Profiles:
    """The app's collection profiles (made on first use)."""
    state = request.app.state
    profiles: Profiles | None = getattr(state, "profiles", None)
    if profiles is None:
        profiles = state.profiles = Profiles()
    return profiles


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


try:  # orjson encodes a page of items about ten times faster than the json module
    import orjson

    def stac_json(data: Any, media_type: str = JSON, status: int = 200) -> Response:
        """A JSON response with a STAC media type."""
        try:
            content = orjson.dumps(data)
        except (orjson.JSONEncodeError, TypeError):  # e.g. integers over 64 bits
            return JSONResponse(data, media_type=media_type, status_code=status)
        return Response(content, media_type=media_type, status_code=status)

except ModuleNotFoundError:  # pragma: no cover - depends on the extras installed

    def stac_json(data: Any, media_type: str = JSON, status: int = 200) -> Response:
        """A JSON response with a STAC media type."""
        return JSONResponse(data, media_type=media_type, status_code=status)


# -- pages of items ---------------------------------------------------------------------------


def search_page(
    request: Request,
    query: SearchQuery,
    fields: Fields | None,
    next_link: Any,
) -> Response:
    """Answer a search: one page of items as a FeatureCollection, linked to the next."""
    catalog = catalog_of(request)
    profiles_of(request).check_sortable(catalog, query)
    page = catalog.search(query)
    nxt = next_link(page.next_token) if page.next_token is not None else None
    return stac_json(feature_collection(page, request, nxt, fields), GEOJSON)


async def answer_search(
    request: Request, query: SearchQuery, fields: Fields | None, next_link: Any
) -> Response:
    """:func:`search_page` on the event loop for catalogs whose searches are short and
    in-process (``searches_inline``: SQLite), where handing each request to a worker
    thread and back costs more than the search; in a worker thread for the others
    (PostgreSQL), which wait on the network and answer requests in parallel."""
    if getattr(catalog_of(request), "searches_inline", False):
        return search_page(request, query, fields, next_link)
    return await run_in_threadpool(search_page, request, query, fields, next_link)


def feature_collection(
    page: SearchPage, request: Request, next_link: dict[str, Any] | None, fields: Fields | None
) -> dict[str, Any]:
    """A page of items as a GeoJSON FeatureCollection with STAC API links."""
    base = base_url(request)
    links = [
        link("root", f"{base}/stac", JSON, _ROOT_TITLE),
        link("self", str(request.url), GEOJSON, "This page"),
    ]
    if next_link is not None:
        links.append(next_link)
    features = [present_item(i, base) for i in page.items]
    if fields is not None:
        features = [fields.apply(f) for f in features]
    body: dict[str, Any] = {
        "type": "FeatureCollection",
        "features": features,
        "links": links,
        "numberReturned": len(page.items),
    }
    if page.matched is not None:
        body["numberMatched"] = page.matched
    return body


def get_next_link(request: Request) -> Any:
    """The GET ``next`` link maker: this URL, every parameter kept, with the new token."""

    def make(token: str) -> dict[str, Any]:
        params = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
        params.append(("token", token))
        href = f"{str(request.url).split('?', 1)[0]}?{urllib.parse.urlencode(params)}"
        return link("next", href, GEOJSON, "Next page", method="GET")

    return make


def post_next_link(request: Request, sent: dict[str, Any]) -> Any:
    """The POST ``next`` link maker: the same body, every field kept, with the new token."""

    def make(token: str) -> dict[str, Any]:
        href = f"{base_url(request)}/stac/search"
        return link(
            "next", href, GEOJSON, "Next page", method="POST", body={**sent, "token": token},
            merge=False,
        )  # fmt: skip

    return make


# -- routes -----------------------------------------------------------------------------------


@router.get(
    "/stac",
    summary="STAC API landing page",
    responses=answer(JSON, "Landing", "The root catalog and its links"),
)
def landing(request: Request) -> Response:
    """The root catalog: what this API offers and where."""
    base = base_url(request)
    search = f"{base}/stac/search"
    links = [
        link("self", f"{base}/stac", JSON, _ROOT_TITLE),
        link("root", f"{base}/stac", JSON, _ROOT_TITLE),
        link("conformance", f"{base}/stac/conformance", JSON, "Conformance classes"),
        link("data", f"{base}/stac/collections", JSON, "Collections"),
        link("search", search, GEOJSON, "Search items (GET)", method="GET"),
        link("search", search, GEOJSON, "Search items (POST)", method="POST"),
        link(QUERYABLES_REL, f"{base}/stac/queryables", SCHEMA, "Queryables of every item"),
        link("service-desc", f"{base}{OPENAPI_PATH}", OPENAPI, "OpenAPI document"),
        link("service-doc", f"{base}{DOCS_PATH}", HTML, "API documentation"),
        link("alternate", f"{base}/", HTML, "Search page"),
    ]
    for collection in catalog_of(request).collections():
        title = collection.get("title") or collection["id"]
        links.append(link("child", collection_url(base, collection["id"]), JSON, title))
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


@router.get(
    "/stac/conformance",
    summary="Conformance classes",
    responses=answer(JSON, "Conformance", "The standards this API follows"),
)
def conformance() -> Response:
    """The standards this API follows."""
    return stac_json({"conformsTo": CONFORMANCE})


def queryables_body(request: Request, properties: dict[str, Any], title: str) -> dict[str, Any]:
    """A queryables document (a JSON Schema) for the URL requested."""
    return {
        "$schema": "https://json-schema.org/draft/2019-09/schema",
        "$id": f"{base_url(request)}{request.url.path}",
        "type": "object",
        "title": title,
        "description": "Fields a filter may use (and sortby, but geometry); properties not"
        " listed may be used too",
        "properties": properties,
        "additionalProperties": True,
    }


@router.get(
    "/stac/queryables",
    summary="Queryables of every collection",
    response_class=SchemaResponse,
    responses=answer(SCHEMA, "Queryables", "A JSON Schema of what filters may use"),
)
def queryables(request: Request) -> Response:
    """The fields filters and sorting may use, over every collection."""
    catalog = catalog_of(request)
    ids = [c["id"] for c in catalog.collections()]
    profile = profiles_of(request).merged(catalog, ids)
    body = queryables_body(request, profile.queryables(), "Queryables of pixelfleet")
    return stac_json(body, SCHEMA)


@router.get(
    "/stac/collections",
    summary="All collections",
    responses=answer(JSON, "Collections", "Every collection with its extent and summaries"),
)
def collections(request: Request) -> Response:
    """Every collection with its extent and summaries."""
    base = base_url(request)
    catalog = catalog_of(request)
    profiles = profiles_of(request)
    found = [
        present_collection(c, base, profiles.of(catalog, c["id"]).summaries(c))
        for c in catalog.collections()
    ]
    return stac_json(
        {
            "collections": found,
            "links": [
                link("self", f"{base}/stac/collections", JSON, "Collections"),
                link("root", f"{base}/stac", JSON, _ROOT_TITLE),
                link("parent", f"{base}/stac", JSON, _ROOT_TITLE),
            ],
        }
    )


@router.post(
    "/stac/collections",
    summary="Create or replace a collection (needs the token)",
    status_code=201,
    responses={
        201: {
            "description": "The collection, created or replaced",
            "content": {JSON: {"schema": {"$ref": "#/components/schemas/Collection"}}},
        },
        **errors(400, 401, 413),
    },
    openapi_extra=body("CollectionBody", "A STAC collection (its id, title, description)"),
)
async def create_collection(request: Request) -> Response:
    """Create or replace a collection from a STAC collection JSON body."""
    require_token(request)
    sent = await read_json(request)
    if not isinstance(sent, dict) or not isinstance(sent.get("id"), str):
        raise BadQueryError('the body must be a STAC collection with an \'id\', e.g. {"id": "x"}')
    collection = new_collection(
        check_collection_id(sent["id"]), sent.get("title"), sent.get("description")
    )
    catalog_of(request).save_collection(collection)
    profiles_of(request).clear()
    return stac_json(present_collection(collection, base_url(request)), status=201)


@router.get(
    "/stac/collections/{collection_id}",
    summary="One collection",
    responses={**answer(JSON, "Collection", "The collection"), **errors(404)},
)
def collection(collection_id: str, request: Request) -> Response:
    """One collection by id, with its extent and summaries."""
    catalog = catalog_of(request)
    found = catalog.get_collection(collection_id)
    summaries = profiles_of(request).of(catalog, collection_id).summaries(found)
    return stac_json(present_collection(found, base_url(request), summaries))


@router.get(
    "/stac/collections/{collection_id}/queryables",
    summary="Queryables of one collection",
    response_class=SchemaResponse,
    responses={
        **answer(SCHEMA, "Queryables", "A JSON Schema of what filters may use"),
        **errors(404),
    },
)
def collection_queryables(collection_id: str, request: Request) -> Response:
    """The fields filters and sorting may use in one collection."""
    catalog = catalog_of(request)
    found = catalog.get_collection(collection_id)
    properties = profiles_of(request).of(catalog, collection_id).queryables()
    properties["collection"] = {**properties["collection"], "const": collection_id}
    title = f"Queryables of {found.get('title') or collection_id}"
    return stac_json(queryables_body(request, properties, title), SCHEMA)


@router.get(
    "/stac/collections/{collection_id}/items",
    summary="A collection's items",
    response_class=GeoJSONResponse,
    responses={
        **answer(GEOJSON, "FeatureCollection", "A page of items"),
        **errors(400, 404),
    },
    openapi_extra={"parameters": [p for p in SEARCH_PARAMETERS if p["name"] != "collections"]},
)
async def collection_items(collection_id: str, request: Request) -> Response:
    """A page of a collection's items; takes the search parameters too."""
    catalog = catalog_of(request)
    if getattr(catalog, "searches_inline", False):
        catalog.get_collection(collection_id)
    else:
        await run_in_threadpool(catalog.get_collection, collection_id)
    query, fields = query_from_params(request.query_params, collections=[collection_id])
    return await answer_search(request, query, fields, get_next_link(request))


@router.post(
    "/stac/collections/{collection_id}/items",
    summary="Add or replace items (needs the token)",
    status_code=201,
    responses={
        201: {
            "description": "How many items were stored",
            "content": {JSON: {"schema": {"$ref": "#/components/schemas/Upserted"}}},
        },
        **errors(400, 401, 404, 413),
    },
    openapi_extra=body("ItemsBody", "One STAC item, or a FeatureCollection of at most 1000"),
)
async def add_items(collection_id: str, request: Request) -> Response:
    """Upsert one item, or a FeatureCollection of items, into a collection."""
    require_token(request)
    catalog = catalog_of(request)
    catalog.get_collection(collection_id)
    sent = await read_json(request)
    items = sent.get("features") if isinstance(sent, dict) and "features" in sent else [sent]
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
    profiles_of(request).clear()
    return stac_json({"upserted": count}, status=201)


@router.get(
    "/stac/collections/{collection_id}/items/{item_id:path}",
    summary="One item",
    response_class=GeoJSONResponse,
    responses={**answer(GEOJSON, "Item", "The item"), **errors(404)},
)
def item(collection_id: str, item_id: str, request: Request) -> Response:
    """One item by collection and id."""
    found = catalog_of(request).get_item(collection_id, item_id)
    return stac_json(present_item(found, base_url(request)), GEOJSON)


@router.get(
    "/stac/search",
    summary="Search items (GET)",
    response_class=GeoJSONResponse,
    responses={**answer(GEOJSON, "FeatureCollection", "A page of items"), **errors(400)},
    openapi_extra={"parameters": SEARCH_PARAMETERS},
)
async def search_get(request: Request) -> Response:
    """Search with query parameters; ``next`` links keep them all and carry the page token."""
    query, fields = query_from_params(request.query_params)
    return await answer_search(request, query, fields, get_next_link(request))


@router.post(
    "/stac/search",
    summary="Search items (POST, JSON body)",
    response_class=GeoJSONResponse,
    responses={**answer(GEOJSON, "FeatureCollection", "A page of items"), **errors(400, 413)},
    openapi_extra=body("SearchBody", "The search, as the STAC API's item search defines it"),
)
async def search_post(request: Request) -> Response:
    """Search with a JSON body; the ``next`` link repeats the body with the page token."""
    sent = await read_json(request)
    query, fields = query_from_body(sent)
    return await answer_search(request, query, fields, post_next_link(request, sent))


@router.get(
    "/assets/{collection_id}/{asset}/{item_id:path}",
    summary="An item's asset file",
    response_class=FileResponse,
    responses={
        200: {"description": "The file", "content": {"application/octet-stream": {}}},
        307: {"description": "The asset is elsewhere: its URL is in Location"},
        **errors(400, 404),
    },
)
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
        raise ItemNotFoundError(
            f"the file of asset {asset!r} of item {item_id!r} is gone; run the pipeline again"
        )
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
    """The request's JSON body, refused when too large (413) or malformed (400)."""
    too_large = f"the request body is over {MAX_BODY} bytes; send a smaller one"
    declared = request.headers.get("content-length")
    if declared is not None and not declared.isdigit():
        raise BadQueryError(f"Content-Length {declared[:40]!r} is not a number of bytes")
    if declared is not None and int(declared) > MAX_BODY:
        raise BodyTooLargeError(too_large)
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY:
            raise BodyTooLargeError(too_large)
    try:
        return json.loads(raw or b"{}", parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise BadQueryError(
            "the request body is not valid JSON (NaN and Infinity are not JSON either)"
        ) from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
