"""How the API shows what the catalog holds: links (every one with a title), asset files
served by this server, and no path of the server's own disks.

Items of a local source carry its folder in ``pixelfleet:source`` and in ``description``
(``photos/x.jpg (/srv/data/bucket)``); the API shows the folder's name instead
(``bucket``), so keys read relative to the source and the server's paths stay private.
Asset files on this machine are linked through ``/assets/...``.
"""

from __future__ import annotations

import posixpath
import urllib.parse
from typing import Any

from pixelfleet.server.media import GEOJSON, HTML, JSON, SCHEMA

#: The OGC relation of a queryables document.
QUERYABLES_REL = "http://www.opengis.net/def/rel/ogc/1.0/queryables"


def link(rel: str, href: str, media_type: str, title: str, **extra: Any) -> dict[str, Any]:
    """A link with its relation, type and title."""
    return {"rel": rel, "href": href, "type": media_type, "title": title, **extra}


def collection_url(base: str, collection: str) -> str:
    """The API URL of a collection."""
    return f"{base}/stac/collections/{urllib.parse.quote(collection, safe='')}"


def item_url(base: str, collection: str, item_id: str) -> str:
    """The API URL of one item (ids may hold slashes: they stay path separators)."""
    return f"{collection_url(base, collection)}/items/{urllib.parse.quote(item_id, safe='/')}"


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


def source_name(url: str) -> str:
    """What the API calls a local source: its folder's name (``/srv/data/bucket`` ->
    ``bucket``), never its path."""
    return posixpath.basename(local_path(url).rstrip("/")) or "local"


def hide_local_paths(item: dict[str, Any]) -> None:
    """Replace the path of a local source in an item's properties by its folder's name."""
    props = item.get("properties")
    if not isinstance(props, dict):
        return
    source = props.get("pixelfleet:source")
    if not isinstance(source, str) or not is_local_href(source) or not source.strip("/"):
        return
    name = source_name(source)
    for key, value in props.items():
        if isinstance(value, str) and source in value:
            props[key] = value.replace(source, name)


def present_item(item: dict[str, Any], base: str) -> dict[str, Any]:
    """An item as the API shows it: links added, local asset files served by this server,
    no local paths."""
    collection, ident = item.get("collection", ""), item["id"]
    coll_href = collection_url(base, collection)
    title = (item.get("properties") or {}).get("title") or ident
    item["links"] = [
        link("self", item_url(base, collection, ident), GEOJSON, f"Item {title}"),
        link("parent", coll_href, JSON, f"Collection {collection}"),
        link("collection", coll_href, JSON, f"Collection {collection}"),
        link("root", f"{base}/stac", JSON, "pixelfleet STAC API"),
        link(
            "alternate",
            f"{base}/items/{urllib.parse.quote(collection)}/{urllib.parse.quote(ident, safe='/')}",
            HTML,
            f"Web page of {title}",
        ),
    ]
    for name, asset in (item.get("assets") or {}).items():
        href = str(asset.get("href", ""))
        if is_local_href(href):
            asset["href"] = asset_url(base, collection, name, ident)
    hide_local_paths(item)
    return item


def present_collection(
    collection: dict[str, Any], base: str, summaries: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A collection with its links and summaries (summaries it stores itself win)."""
    cid = collection["id"]
    href = collection_url(base, cid)
    title = collection.get("title") or cid
    collection["links"] = [
        link("self", href, JSON, f"Collection {title}"),
        link("parent", f"{base}/stac", JSON, "pixelfleet STAC API"),
        link("root", f"{base}/stac", JSON, "pixelfleet STAC API"),
        link("items", f"{href}/items", GEOJSON, f"Items of {title}"),
        link(QUERYABLES_REL, f"{href}/queryables", SCHEMA, f"Queryables of {title}"),
    ]
    if summaries:
        stored = collection.get("summaries")
        collection["summaries"] = {**summaries, **(stored if isinstance(stored, dict) else {})}
    return collection
