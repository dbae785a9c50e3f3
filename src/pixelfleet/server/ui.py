"""The web pages: map-first search (``/``), an item (``/items/...``), runs (``/runs``).

Pages are rendered on the server (Jinja2) and work without JavaScript as lists of
links; ``static/app.js`` adds the maps (Leaflet and a Natural Earth world outline,
both vendored under ``static/vendor/`` by ``scripts/vendor_frontend.py``, so no page
needs the internet), hover linking between map and list, and drawing an area as the
bbox filter. Bad input shows the same message the API would give, with status 400.
"""

from __future__ import annotations

import copy
import json
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
from pixelfleet.humanize import human_bytes, human_seconds
from pixelfleet.server.composites import composites_of
from pixelfleet.server.present import present_item
from pixelfleet.server.stac import asset_url, base_url, catalog_of, is_local_href

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
router = APIRouter(include_in_schema=False)

PAGE_SIZE = 24
#: "Newest first": by capture time, then the items known only by their file time
#: (``pixelfleet.catalog.items.NEWEST_FIRST``: no import of the item builder here).
NEWEST_FIRST = "-pixelfleet:captured,-datetime"
#: The search page's sort choices: (sortby value, what the menu says).
SORTS = [
    (NEWEST_FIRST, "newest first"),
    ("datetime", "oldest first"),
    ("id", "key A–Z"),
    ("-id", "key Z–A"),
]
#: Shown for a property that has no value (never Python's ``None``).
NOTHING = "—"


def mount_static(app: FastAPI) -> None:
    """Serve the pages' CSS and JavaScript, and the vendored map files."""
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
    if is_local_href(href) or href.startswith("s3://") or href.startswith(f"{base}/assets/"):
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


def when_label(item: dict[str, Any]) -> str:
    """What the date means: a capture date, or only the file's time when nothing better
    was found (so the page never presents a modification time as a capture date)."""
    source = (item.get("properties") or {}).get("pixelfleet:datetime_source")
    return "file time (no capture date)" if source == "mtime" else "captured"


def bbox_of(item: dict[str, Any]) -> list[float] | None:
    """An item's bbox as [west, south, east, north] (a 3-D bbox loses its heights)."""
    bbox = item.get("bbox")
    if not isinstance(bbox, list) or len(bbox) not in (4, 6):
        return None
    if not all(isinstance(v, int | float) for v in bbox):
        return None
    if len(bbox) == 6:
        return [bbox[0], bbox[1], bbox[3], bbox[4]]
    return [float(v) for v in bbox]


def map_entry(item: dict[str, Any], base: str) -> dict[str, Any]:
    """What the page's JavaScript draws for an item: footprint, bbox and thumbnail."""
    props = item.get("properties") or {}
    return {
        "id": item["id"],
        "collection": item.get("collection", ""),
        "title": props.get("title") or item["id"],
        "href": item_page_url(item),
        "thumb": thumbnail_of(item, base),
        "bbox": bbox_of(item) if item.get("geometry") else None,
        "geometry": item.get("geometry"),
    }


def label_names(item: dict[str, Any], most: int = 4) -> list[str]:
    """The first label names of an item."""
    labels = (item.get("properties") or {}).get("labels") or []
    return [str(lab["name"]) for lab in labels if isinstance(lab, dict) and lab.get("name")][:most]


def page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
    """Render a template with what every page needs."""
    settings = getattr(request.app.state, "settings", None)
    context = {
        "version": __version__,
        "path": request.url.path,
        "basemap_url": getattr(settings, "basemap_url", None) or "",
        **context,
    }
    return templates.TemplateResponse(request, name, context, status_code=status)


def page_href(pairs: list[tuple[str, str]]) -> str:
    """The search page with these query parameters."""
    return "/?" + urllib.parse.urlencode(pairs) if pairs else "/"


def text_query(q: str, labels: list[str]) -> str | None:
    """The free text to search: the box's text, each label chip's words added to every
    alternative (so a label narrows the search, whatever the box holds)."""
    if not labels:
        return q or None
    extra = " ".join(labels).replace(",", " ")  # a comma would start an alternative
    alternatives = q.split(",") if q.strip() else [""]
    return ",".join(f"{a.strip()} {extra}".strip() for a in alternatives)


def filter_chips(
    form: dict[str, str], labels: list[str], keep: list[tuple[str, str]]
) -> list[dict[str, str]]:
    """The active filters as chips, each with the link that removes it."""

    def without(*names: str, value: str | None = None) -> str:
        return page_href(
            [(k, v) for k, v in keep if not (k in names and (value is None or v == value))]
        )

    chips = []
    if form["q"]:
        chips.append({"kind": "text", "text": f"“{form['q']}”", "remove": without("q")})
    if form["collection"]:
        chips.append(
            {"kind": "collection", "text": form["collection"], "remove": without("collection")}
        )
    if form["start"] or form["end"]:
        text = f"{form['start'] or '…'} – {form['end'] or '…'}"
        chips.append({"kind": "dates", "text": text, "remove": without("start", "end")})
    if form["bbox"]:
        chips.append({"kind": "area", "text": form["bbox"], "remove": without("bbox")})
    for name in labels:
        chips.append({"kind": "label", "text": name, "remove": without("label", value=name)})
    return chips


@router.get("/", response_class=HTMLResponse)
def search_page(request: Request) -> Response:
    """The search page: a map of the results' footprints and thumbnails, the results
    beside it (photos without a footprint apart), filters as chips, and paging."""
    params = request.query_params
    form = {
        "q": params.get("q", ""),
        "collection": params.get("collection", ""),
        "start": params.get("start", ""),
        "end": params.get("end", ""),
        "bbox": params.get("bbox", ""),
        "sort": params.get("sort", NEWEST_FIRST),
    }
    labels = list(dict.fromkeys(v.strip() for v in params.getlist("label") if v.strip()))
    token = params.get("token") or None
    # Tokens only go forward, so the pages before this one travel in the URL ("" = first).
    back = params.getlist("back") if token else []
    keep = [(k, v) for k, v in params.multi_items() if k not in ("token", "back")]
    catalog = catalog_of(request)
    error = None
    items: list[dict[str, Any]] = []
    matched: int | None = 0
    cap = None
    next_href = prev_href = None
    status = 200
    try:
        datetime = None
        if form["start"] or form["end"]:
            datetime = f"{form['start'] or '..'}/{form['end'] or '..'}"
        query = parse_query(
            q=text_query(form["q"], labels),
            collections=form["collection"] or None,
            datetime=datetime,
            bbox=form["bbox"] or None,
            sortby=form["sort"] or None,
            limit=params.get("limit") or PAGE_SIZE,
            token=token,
        )
        result = catalog.search(query)
        items, matched = result.items, result.matched
        cap = result.extra.get("matched_cap")
        if result.next_token:
            trail = [("back", b) for b in [*back, token or ""]]
            next_href = page_href([*keep, *trail, ("token", result.next_token)])
        if token:
            earlier = [("back", b) for b in back[:-1]]
            previous = [("token", back[-1])] if back and back[-1] else []
            prev_href = page_href([*keep, *earlier, *previous])
    except BadQueryError as exc:
        error, status = str(exc), 400
    base = base_url(request)
    cards = [
        {
            **map_entry(i, base),
            "when": when_of(i),
            "when_label": when_label(i),
            "labels": [
                {"name": n, "href": None if n in labels else page_href([*keep, ("label", n)])}
                for n in label_names(i)
            ],
        }
        for i in items
    ]
    start_index = len(back) * int(params.get("limit") or PAGE_SIZE) if token else 0
    return page(
        request,
        "search.html",
        {
            "form": form,
            "labels": labels,
            "placed": [c for c in cards if c["bbox"]],
            "unplaced": [c for c in cards if not c["bbox"]],
            "entries": [
                {k: c[k] for k in ("id", "title", "href", "thumb", "bbox", "geometry")}
                for c in cards
                if c["bbox"]
            ],
            "chips": filter_chips(form, labels, keep),
            "clear_href": page_href([(k, v) for k, v in keep if k == "sort"]),
            "matched": matched,
            "cap": cap,
            "first": start_index + 1,
            "last": start_index + len(cards),
            "error": error,
            "next_href": next_href,
            "prev_href": prev_href,
            "sorts": SORTS,
            "keep": [(k, v) for k, v in keep if k in ("label", "limit")],
            "collections": [c["id"] for c in catalog.collections()],
            "title": f"{form['q']} — pixelfleet" if form["q"] else "pixelfleet search",
        },
        status,
    )


def readable(value: Any) -> str:
    """A property value as a person reads it: no ``None``, no Python reprs."""
    if value is None:
        return NOTHING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return format(value, ".10g")
    if isinstance(value, list) and all(
        v is None or isinstance(v, str | int | float | bool) for v in value
    ):
        return ", ".join(readable(v) for v in value) or NOTHING
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    return str(value)


def pystac_snippet(base: str, collection_id: str, item_id: str) -> str:
    """Python that opens this item with pystac-client."""
    return (
        "from pystac_client import Client\n\n"
        f"client = Client.open({json.dumps(base + '/stac')})\n"
        f"search = client.search(collections=[{json.dumps(collection_id)}], "
        f"ids=[{json.dumps(item_id)}])\n"
        "item = next(search.items())\n"
        "print(item.datetime, item.bbox, list(item.assets))\n"
    )


@router.get("/items/{collection_id}/{item_id:path}", response_class=HTMLResponse)
def item_page(collection_id: str, item_id: str, request: Request) -> Response:
    """One item: a map with its footprint and thumbnail, labels, composites with their
    histograms, assets and properties."""
    try:
        found = catalog_of(request).get_item(collection_id, item_id)
    except ItemNotFoundError as exc:
        return page(request, "message.html", {"title": "Not found", "message": str(exc)}, 404)
    base = base_url(request)
    raw_assets = found.get("assets") or {}
    shown = present_item(copy.deepcopy(found), base)
    props = shown.get("properties") or {}
    assets = []
    for name, asset in (shown.get("assets") or {}).items():
        original = str((raw_assets.get(name) or {}).get("href", ""))
        href = str(asset.get("href", ""))
        if original.startswith("s3://"):
            link: str | None = asset_url(base, collection_id, name, item_id)
        else:
            link = href if href.startswith(("http://", "https://")) else None
        size = asset.get("file:size")
        assets.append(
            {
                "name": name,
                "title": asset.get("title") or name,
                "roles": ", ".join(asset.get("roles") or []),
                "type": asset.get("type") or NOTHING,
                "href": href,
                "link": link,
                "filename": (original.rstrip("/").rsplit("/", 1)[-1] or name),
                "size": human_bytes(size) if isinstance(size, int | float) else NOTHING,
            }
        )
    labels = [
        {
            "name": str(lab.get("name", "")),
            "confidence": lab.get("confidence")
            if isinstance(lab.get("confidence"), int | float)
            else None,
        }
        for lab in props.get("labels") or []
        if isinstance(lab, dict)
    ]
    title = props.get("title") or item_id
    links = {a["name"]: a["link"] for a in assets}
    api_href = next(
        (lk["href"] for lk in shown.get("links") or [] if lk.get("rel") == "self"), base
    )
    return page(
        request,
        "item.html",
        {
            "item": shown,
            "title": title,
            "thumb": thumbnail_of(found, base),
            "when": when_of(shown),
            "when_label": when_label(shown),
            "labels": labels,
            "composites": composites_of(shown, links.get, str(title)),
            "assets": assets,
            "properties": [
                (k, readable(v)) for k, v in sorted(props.items()) if k not in ("labels",)
            ],
            "entry": map_entry(found, base),
            "bbox": ", ".join(format(v, ".7g") for v in bbox_of(found) or []),
            "item_json": json.dumps(shown, indent=2, ensure_ascii=False),
            "snippet": pystac_snippet(base, collection_id, item_id),
            "api_href": api_href,
        },
    )


def failures_of(tasks: list[Any], most: int) -> list[dict[str, Any]]:
    """Failed objects of failed tasks (the task itself when it failed as a whole)."""
    out: list[dict[str, Any]] = []
    for t in tasks:
        whole = {"key": t.group, "error_type": t.error_type or "", "error": t.error or ""}
        out.extend(t.failures or [whole])
    return out[:most]


def _watch_row(ledger: Any, run: Any) -> dict[str, Any]:
    """A watcher's events by action and its last dead letters (empty for other runs)."""
    from pixelfleet.ledger.events import EventLog

    if not isinstance(ledger, EventLog):
        return {}
    counts = ledger.event_counts(run.run_id)
    if not counts:
        return {}
    dead = ledger.last_events(run.run_id, ["dead-lettered", "failed"], limit=5)
    return {
        "events": counts,
        "dead": [{"key": d.key or "message", "error": d.detail} for d in dead],
    }


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
                        "failures": failures_of(
                            ledger.find_tasks(run.run_id, ["failed"], limit=5), 5
                        ),
                        **_watch_row(ledger, run),
                    }
                )
    except (LedgerError, PixelfleetError) as exc:
        error = str(exc)
    live = any(r["state"] == "running" for r in rows)
    return page(request, "runs.html", {"runs": rows, "error": error, "live": live, "title": "Runs"})


#: Most tasks a run page reads for its throughput chart (a sample of bigger runs).
_CHART_TASKS = 200_000
#: Bars in the throughput chart.
_CHART_BARS = 40


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(request: Request, run_id: str) -> Response:
    """One run: its counts, timing, failures with their reasons, and throughput over time."""
    from pixelfleet.ledger import open_ledger
    from pixelfleet.ledger.base import effective_state

    try:
        with open_ledger(request.app.state.ledger_url) as ledger:
            run = ledger.get_run(run_id)
            by_state = ledger.state_counts(run.run_id)
            stats = ledger.task_stats(run.run_id)
            failed = ledger.find_tasks(run.run_id, ["failed"], limit=100)
            settled = ledger.find_tasks(run.run_id, ["done", "failed"], limit=_CHART_TASKS)
            state = effective_state(run, ledger.now())
            watch = _watch_row(ledger, run)
    except (LedgerError, PixelfleetError) as exc:
        return page(request, "message.html", {"title": "Run", "message": str(exc)}, 404)
    failures = failures_of(failed, 100)
    counts = run.counts.to_dict()
    context = {
        "title": f"Run {run.run_id}",
        "run": run,
        "state": state,
        "tasks": by_state,
        "counts": {k: v for k, v in counts.items() if v},
        "stats": stats.to_dict(),
        "p50": human_seconds(stats.p50_seconds) if stats.p50_seconds is not None else "—",
        "p95": human_seconds(stats.p95_seconds) if stats.p95_seconds is not None else "—",
        "failures": failures,
        "chart": throughput_chart([t.updated for t in settled if t.updated]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.created)),
        "took": human_seconds((run.finished or time.time()) - run.created),
        **watch,
    }
    return page(request, "run.html", context)


def throughput_chart(times: list[float]) -> dict[str, Any] | None:
    """Tasks settled per interval, as bars for an inline SVG (None with under 2 tasks)."""
    if len(times) < 2:
        return None
    first, last = min(times), max(times)
    # Bars of a second at least: a run of a few seconds gets one bar a second.
    width = max((last - first) / _CHART_BARS, 1.0)
    count = min(_CHART_BARS, int((last - first) / width) + 1)
    span = count * width
    bins = [0] * count
    for t in times:
        bins[min(count - 1, int((t - first) / width))] += 1
    top = max(bins)
    per_second = [n / width for n in bins]
    return {
        "bars": [
            {"x": i * 10, "h": round(80 * n / top, 1), "n": n, "rate": f"{r:,.1f}"}
            for i, (n, r) in enumerate(zip(bins, per_second, strict=True))
        ],
        "interval": human_seconds(width),
        "peak": f"{max(per_second):,.1f}",
        "mean": f"{len(times) / span:,.1f}",
        "span": human_seconds(span),
    }
