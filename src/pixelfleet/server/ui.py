"""The web pages: search with thumbnails (``/``), an item (``/items/...``), runs (``/runs``).

Pages are rendered on the server (Jinja2); a few lines of JavaScript add a
placeholder for thumbnails that fail to load. Bad input shows the same message the
API would give, with status 400.
"""

from __future__ import annotations

import math
import time
import urllib.parse
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from pixelfleet import __version__
from pixelfleet.catalog import parse_query
from pixelfleet.errors import BadQueryError, ItemNotFoundError, LedgerError, PixelfleetError
from pixelfleet.humanize import human_seconds
from pixelfleet.server.stac import asset_url, base_url, catalog_of, is_local_href

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
router = APIRouter(include_in_schema=False)

PAGE_SIZE = 24


def mount_static(app: FastAPI) -> None:
    """Serve the pages' CSS and JavaScript."""
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")


def thumbnail_of(item: dict[str, Any], base: str) -> str | None:
    """The URL of an item's thumbnail: remote ones as they are, local ones through us."""
    assets = item.get("assets") or {}
    chosen = None
    for name, asset in assets.items():
        if "thumbnail" in (asset.get("roles") or []):
            chosen = name
            break
    if chosen is None:
        for name, asset in assets.items():
            if "overview" in (asset.get("roles") or []) or "visual" in (asset.get("roles") or []):
                chosen = name
                break
    if chosen is None:
        return None
    href = str(assets[chosen].get("href", ""))
    if href.startswith(("http://", "https://")):
        return href
    if is_local_href(href) or href.startswith("s3://"):
        return asset_url(base, item.get("collection", ""), chosen, item["id"])
    return None


def item_page_url(item: dict[str, Any]) -> str:
    """The web page of an item."""
    return (
        f"/items/{urllib.parse.quote(item.get('collection', ''))}/"
        f"{urllib.parse.quote(item['id'], safe='/')}"
    )


def when_of(item: dict[str, Any]) -> str:
    """A short date (or year range) for a card."""
    props = item.get("properties") or {}
    if props.get("datetime"):
        return str(props["datetime"])[:10]
    start, end = str(props.get("start_datetime", ""))[:10], str(props.get("end_datetime", ""))[:10]
    if start[:4] == end[:4] and start[5:] == "01-01" and end[5:] == "12-31":
        return start[:4]
    return start if start == end else f"{start} – {end}"


def page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
    """Render a template with what every page needs."""
    context = {"version": __version__, "path": request.url.path, **context}
    return templates.TemplateResponse(request, name, context, status_code=status)


@router.get("/", response_class=HTMLResponse)
def search_page(request: Request) -> Response:
    """The search page: a box, filters, and a grid of results with their thumbnails."""
    params = request.query_params
    form = {
        "q": params.get("q", ""),
        "collection": params.get("collection", ""),
        "start": params.get("start", ""),
        "end": params.get("end", ""),
        "bbox": params.get("bbox", ""),
        "sort": params.get("sort", "-datetime"),
    }
    catalog = catalog_of(request)
    error = None
    items: list[dict[str, Any]] = []
    matched: int | None = 0
    cap = None
    next_href = None
    status = 200
    try:
        datetime = None
        if form["start"] or form["end"]:
            datetime = f"{form['start'] or '..'}/{form['end'] or '..'}"
        query = parse_query(
            q=form["q"] or None,
            collections=form["collection"] or None,
            datetime=datetime,
            bbox=form["bbox"] or None,
            sortby=form["sort"] or None,
            limit=params.get("limit") or PAGE_SIZE,
            token=params.get("token"),
        )
        result = catalog.search(query)
        items, matched = result.items, result.matched
        cap = result.extra.get("matched_cap")
        if result.next_token:
            rest = [(k, v) for k, v in params.multi_items() if k != "token"]
            next_href = "/?" + urllib.parse.urlencode([*rest, ("token", result.next_token)])
    except BadQueryError as exc:
        error, status = str(exc), 400
    base = base_url(request)
    cards = [
        {
            "title": (i.get("properties") or {}).get("title") or i["id"],
            "id": i["id"],
            "collection": i.get("collection", ""),
            "when": when_of(i),
            "thumb": thumbnail_of(i, base),
            "href": item_page_url(i),
            "labels": [
                lab.get("name")
                for lab in (i.get("properties") or {}).get("labels") or []
                if isinstance(lab, dict)
            ][:4],
        }
        for i in items
    ]
    return page(
        request,
        "search.html",
        {
            "form": form,
            "cards": cards,
            "matched": matched,
            "cap": cap,
            "error": error,
            "next_href": next_href,
            "first_href": "/?"
            + urllib.parse.urlencode([(k, v) for k, v in params.multi_items() if k != "token"])
            if params.get("token")
            else None,
            "collections": [c["id"] for c in catalog.collections()],
            "title": f"{form['q']} — pixelfleet" if form["q"] else "pixelfleet search",
        },
        status,
    )


@router.get("/items/{collection_id}/{item_id:path}", response_class=HTMLResponse)
def item_page(collection_id: str, item_id: str, request: Request) -> Response:
    """One item: large thumbnail, footprint, labels, assets and properties."""
    try:
        found = catalog_of(request).get_item(collection_id, item_id)
    except ItemNotFoundError as exc:
        return page(request, "message.html", {"title": "Not found", "message": str(exc)}, 404)
    base = base_url(request)
    props = found.get("properties") or {}
    assets = []
    for name, asset in (found.get("assets") or {}).items():
        href = str(asset.get("href", ""))
        served = is_local_href(href) or href.startswith("s3://")
        link = asset_url(base, collection_id, name, item_id) if served else href
        assets.append(
            {
                "name": name,
                "title": asset.get("title") or name,
                "roles": ", ".join(asset.get("roles") or []),
                "type": asset.get("type") or "",
                "href": href,
                "link": link if link.startswith(("http://", "https://")) else None,
                "size": asset.get("file:size"),
            }
        )
    labels = [lab for lab in props.get("labels") or [] if isinstance(lab, dict)]
    shown = {
        k: v
        for k, v in sorted(props.items())
        if k not in ("labels",) and not isinstance(v, dict | list)
    }
    return page(
        request,
        "item.html",
        {
            "item": found,
            "title": props.get("title") or item_id,
            "thumb": thumbnail_of(found, base),
            "when": when_of(found),
            "labels": labels,
            "assets": assets,
            "properties": shown,
            "footprint": footprint_svg(found),
            "api_href": f"/stac/collections/{urllib.parse.quote(collection_id)}/items/"
            f"{urllib.parse.quote(item_id, safe='/')}",
        },
    )


@router.get("/runs", response_class=HTMLResponse)
def runs_page(request: Request) -> Response:
    """Recent runs with their progress, read from the ledger."""
    from pixelfleet.ledger import open_ledger

    rows = []
    error = None
    try:
        with open_ledger(request.app.state.ledger_url) as ledger:
            for run in ledger.find_runs(limit=50):
                counts = ledger.state_counts(run.run_id)
                total = sum(counts.values())
                finished = counts.get("done", 0) + counts.get("failed", 0)
                rows.append(
                    {
                        "id": run.run_id,
                        "state": run.state,
                        "pipeline": run.pipeline_path,
                        "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.created)),
                        "took": human_seconds((run.finished or time.time()) - run.created),
                        "done": counts.get("done", 0),
                        "failed": counts.get("failed", 0),
                        "running": counts.get("running", 0) + counts.get("pending", 0),
                        "skipped": run.counts.tasks_skipped,
                        "indexed": run.counts.items_indexed,
                        "percent": 100 if total == 0 else math.floor(100 * finished / total),
                        "failures": [
                            f
                            for t in ledger.find_tasks(run.run_id, ["failed"], limit=5)
                            for f in (
                                t.failures
                                or [
                                    {
                                        "key": t.group,
                                        "error_type": t.error_type or "",
                                        "error": t.error or "",
                                    }
                                ]
                            )
                        ][:5],
                    }
                )
    except (LedgerError, PixelfleetError) as exc:
        error = str(exc)
    live = any(r["state"] == "running" for r in rows)
    return page(request, "runs.html", {"runs": rows, "error": error, "live": live, "title": "Runs"})


def footprint_svg(item: dict[str, Any]) -> dict[str, Any] | None:
    """Drawing instructions for an item's footprint: a world frame with a marker, and the
    outline in its own lon/lat frame (equirectangular), or None without geometry."""
    geometry = item.get("geometry")
    bbox = item.get("bbox")
    if not geometry or not bbox:
        return None
    rings = _rings(geometry)
    w, s, e, n = (
        bbox[0],
        bbox[1],
        bbox[-3] if len(bbox) == 6 else bbox[2],
        bbox[-2] if len(bbox) == 6 else bbox[3],
    )
    span = max(e - w, n - s, 1e-6)
    pad = span * 0.15
    fw, fs, fe, fn = w - pad, s - pad, w + span + pad, s + span + pad
    size = 300.0

    def to_xy(lon: float, lat: float) -> str:
        x = (lon - fw) / (fe - fw) * size
        y = (fn - lat) / (fn - fs) * size
        return f"{x:.1f},{y:.1f}"

    outline = [" ".join(to_xy(p[0], p[1]) for p in ring) for ring in rings]
    cx, cy = (w + e) / 2, (s + n) / 2
    world = {
        "x": (cx + 180) / 360 * 360,
        "y": (90 - cy) / 180 * 180,
        "box": (
            (w + 180),
            (90 - n),
            max(e - w, 0.8),
            max(n - s, 0.8),
        ),
    }
    ticks = {
        "w": f"{fw:.4f}",
        "e": f"{fe:.4f}",
        "n": f"{fn:.4f}",
        "s": f"{fs:.4f}",
    }
    return {"outline": outline, "world": world, "ticks": ticks, "size": size}


def _rings(geometry: dict[str, Any]) -> list[Any]:
    kind, coords = geometry.get("type"), geometry.get("coordinates")
    if kind == "Point":
        return [[coords, coords]]
    if kind == "Polygon":
        return list(coords or [])
    if kind == "MultiPolygon":
        return [ring for poly in coords or [] for ring in poly]
    if kind in ("LineString", "MultiPoint"):
        return [coords or []]
    return []
