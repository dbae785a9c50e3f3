"""``GET /live``: what changed in the catalog, as server-sent events.

A watcher (``pixelfleet watch``, or ``serve --events`` in this process) records every
settled event in the ledger's event log; this endpoint polls that log and streams the
changes a page cares about:

- ``event: item`` for an item created or updated, ``event: removed`` for one deleted,
  each with ``data: {"id", "collection", "action", "key"}`` and ``id: <seq>``;
- ``event: counts`` every few seconds with the latest watcher run's counts by action
  (what ``/runs`` shows live).

A client that reconnects sends ``Last-Event-ID`` (browsers' ``EventSource`` does so by
itself) and gets what it missed; a new client starts from now. A stream ends after a
few minutes (the browser reconnects), so a server behind a proxy never holds a
connection for ever. Reading the log runs in a worker thread; a ledger that keeps no
event log answers 404 with the reason.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from pixelfleet.errors import ItemNotFoundError
from pixelfleet.ledger import open_ledger
from pixelfleet.ledger.events import EventLog, EventRecord

router = APIRouter()

#: How often the log is read, how often a comment keeps the connection open, how long a
#: stream lasts before the client is asked to reconnect (seconds).
POLL_SECONDS = 0.5
KEEPALIVE_SECONDS = 15.0
STREAM_SECONDS = 300.0
#: How often watcher counts are sent.
COUNTS_SECONDS = 5.0

_ITEM_ACTIONS = ("created", "updated", "deleted")


def frame(record: EventRecord) -> str:
    """One server-sent event for a log record."""
    kind = "removed" if record.action == "deleted" else "item"
    data = {
        "id": record.item_id or record.key,
        "collection": record.collection,
        "action": record.action,
        "key": record.key,
    }
    return f"id: {record.seq}\nevent: {kind}\ndata: {json.dumps(data)}\n\n"


@router.get("/live", include_in_schema=False)
async def live(request: Request, collection: str | None = None) -> StreamingResponse:
    """Stream catalog changes (and watcher counts) as server-sent events."""
    ledger = await run_in_threadpool(open_ledger, request.app.state.ledger_url)
    if not isinstance(ledger, EventLog):
        ledger.close()
        raise ItemNotFoundError(
            f"the ledger {request.app.state.ledger_url!r} keeps no event log, so there is no "
            "live feed; use a SQLite, PostgreSQL or memory ledger"
        )
    last = request.headers.get("last-event-id", "")
    since = int(last) if last.isdigit() else await run_in_threadpool(ledger.latest_seq)
    return StreamingResponse(
        _stream(request, ledger, since, collection),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _stream(
    request: Request, ledger: Any, since: int, collection: str | None
) -> AsyncIterator[str]:
    started = last_sent = time.monotonic()
    last_counts = 0.0
    yield "retry: 2000\n\n"
    try:
        while time.monotonic() - started < STREAM_SECONDS:
            if await request.is_disconnected():
                return
            records = await run_in_threadpool(ledger.events, None, since, _ITEM_ACTIONS, 500)
            for record in records:
                since = record.seq
                if collection and record.collection and record.collection != collection:
                    continue
                yield frame(record)
                last_sent = time.monotonic()
            now = time.monotonic()
            if now - last_counts >= COUNTS_SECONDS:
                last_counts = now
                counts = await run_in_threadpool(_watch_counts, ledger)
                if counts is not None:
                    yield f"event: counts\ndata: {json.dumps(counts)}\n\n"
                    last_sent = now
            if now - last_sent >= KEEPALIVE_SECONDS:
                yield ": keepalive\n\n"
                last_sent = now
            if len(records) < 500:
                await asyncio.sleep(POLL_SECONDS)
    finally:
        await run_in_threadpool(ledger.close)


def _watch_counts(ledger: Any) -> dict[str, Any] | None:
    """The newest watcher run's id, state and counts by action (None: no watcher ran)."""
    for run in ledger.find_runs(limit=20):
        counts = ledger.event_counts(run.run_id)
        if counts:
            return {"run_id": run.run_id, "state": run.state, **counts}
    return None
