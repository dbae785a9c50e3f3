"""``POST /events``: bucket notifications by webhook (``pixelfleet serve --events PIPELINE``).

MinIO's webhook target (``mc admin config set ALIAS notify_webhook:pixelfleet
endpoint=http://HOST:8000/events auth_token=TOKEN``) posts S3-shaped ``Records``;
S3 notifications as SNS or EventBridge deliver them are read too. A request must
carry ``Authorization: Bearer TOKEN`` with the server's ``PIXELFLEET_API_TOKEN``
(401 otherwise); a body over 1 MiB is refused with 413 before it is read whole, and
one that is not a bucket notification with 400 (the reason in ``detail``).

An accepted notification goes to a :class:`WebhookQueue`, which a
:class:`~pixelfleet.live.Watcher` running beside the server takes it from: the same
code path as ``pixelfleet watch``. The request waits up to 10 s for its events to be
recorded and answers 200 with ``status`` ``recorded`` or ``dead-lettered`` (with the
``reason``); a notification still being handled then gets 202 ``accepted``. A watcher
that stopped (its ledger or catalog failed) is started again by the next request, whose
notification waits in the queue meanwhile (202, with the reason). Never a 5xx.
"""

from __future__ import annotations

import collections
import contextlib
import hmac
import logging
import threading
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from pixelfleet.errors import AuthError, BadQueryError, ConfigError
from pixelfleet.events.base import BucketEvent, Message
from pixelfleet.events.memory import MemoryQueue
from pixelfleet.events.parse import MalformedEventError, parse_body
from pixelfleet.pipeline import Pipeline
from pixelfleet.server.errors import BodyTooLargeError
from pixelfleet.settings import Settings

log = logging.getLogger("pixelfleet.server.events")

#: Largest notification body accepted (MinIO sends one record per request, ~1.5 kB).
MAX_EVENTS_BODY = 1024 * 1024
#: How long a request waits for its events to be recorded before answering 202.
ANSWER_WITHIN = 10.0
#: A stopped watcher is started again at most this often (seconds).
RESTART_EVERY = 5.0
#: Outcomes kept for requests that stopped waiting (the oldest are forgotten).
_KEPT_OUTCOMES = 10_000

router = APIRouter()

TOKEN_NEEDED = (
    "pixelfleet serve --events needs an API token, which webhook senders must send as"
    " 'Authorization: Bearer TOKEN': set PIXELFLEET_API_TOKEN (e.g. export"
    " PIXELFLEET_API_TOKEN=$(python -c 'import secrets; print(secrets.token_urlsafe(32))'))"
    " and give MinIO the same value (notify_webhook auth_token=TOKEN)"
)


class WebhookQueue(MemoryQueue):
    """The queue between ``POST /events`` and the watcher: a :class:`MemoryQueue` that
    also tells a waiting request what became of its message."""

    name = "webhook"

    def __init__(self, visibility: float = 60.0):
        super().__init__(visibility=visibility)
        self._outcomes: collections.OrderedDict[str, tuple[str, str]] = collections.OrderedDict()

    def ack(self, message: Message) -> None:
        """Remove ``message``; its request hears ``recorded``."""
        super().ack(message)
        self._settled(message, "recorded", "")

    def reject(self, message: Message, reason: str) -> None:
        """Dead-letter ``message``; its request hears ``dead-lettered`` and ``reason``."""
        super().reject(message, reason)
        self._settled(message, "dead-lettered", reason)

    def _settled(self, message: Message, status: str, reason: str) -> None:
        with self._lock:
            self._outcomes[message.id] = (status, reason)
            while len(self._outcomes) > _KEPT_OUTCOMES:
                self._outcomes.popitem(last=False)
            # A server runs for months: keep the recent history only.
            del self.acked[:-1000]
            del self.dead[:-1000]
            self._lock.notify_all()

    def wait_for(self, message_id: str, timeout: float) -> tuple[str, str] | None:
        """``(status, reason)`` once the message is acknowledged or rejected; None if
        that takes longer than ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while message_id not in self._outcomes:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._lock.wait(min(left, 0.5))
            return self._outcomes.pop(message_id)


class Webhook:
    """The webhook's queue and the watcher thread that empties it."""

    def __init__(self, pipeline: Pipeline, ledger_url: str, settings: Settings):
        if not settings.api_token:
            raise ConfigError(TOKEN_NEEDED)
        self.pipeline = pipeline
        self.ledger_url = ledger_url
        self.token = settings.api_token
        self.queue = WebhookQueue()
        self.watcher: Any = None
        self._ledger: Any = None
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self._restart_lock = threading.Lock()
        self._last_start = 0.0

    def start(self) -> None:
        """Open the ledger and start the watcher in a thread."""
        from pixelfleet.ledger import open_ledger
        from pixelfleet.live import Watcher

        self._ledger = open_ledger(self.ledger_url)
        self.watcher = Watcher(
            self.pipeline, self._ledger, self.queue, echo=lambda line: log.info("%s", line)
        )
        self._thread = threading.Thread(target=self._run, name="pixelfleet-webhook", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.watcher.run()
        except BaseException as exc:  # noqa: BLE001 - restarted by the next POST
            self.error = exc
            log.error("the webhook's watcher stopped: %s", exc, exc_info=exc)

    def restart(self) -> str:
        """Start a stopped watcher again (at most every few seconds); "" when it runs, else
        why it cannot."""
        with self._restart_lock:
            if self.running:
                return ""
            if time.monotonic() - self._last_start < RESTART_EVERY:
                return f"the event watcher stopped ({self.error}); it is being restarted"
            self._last_start = time.monotonic()
            if self._ledger is not None:
                with contextlib.suppress(Exception):
                    self._ledger.close()
            try:
                self.start()
            except Exception as exc:  # noqa: BLE001 - told to the sender, retried later
                self.error = exc
                return f"the event watcher cannot start: {exc}; retrying every {RESTART_EVERY:g} s"
            return ""

    @property
    def running(self) -> bool:
        """Whether the watcher is taking events."""
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        """Stop the watcher once the events in hand are recorded, then close the ledger."""
        if self.watcher is not None:
            self.watcher.stop()
        if self._thread is not None:
            self._thread.join(120)
        self.queue.close()
        if self._ledger is not None:
            self._ledger.close()


def install(app: Any, pipeline: Pipeline, ledger_url: str, settings: Settings) -> Webhook:
    """Add ``POST /events`` to ``app``; the app's lifespan starts and stops the watcher."""
    webhook = Webhook(pipeline, ledger_url, settings)
    app.state.webhook = webhook
    app.include_router(router)
    return webhook


def check_token(request: Request, expected: str) -> None:
    """401 unless the request carries ``Authorization: Bearer <expected>``."""
    given = request.headers.get("authorization", "")
    scheme, _, token = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.strip().encode(), expected.encode()
    ):
        raise AuthError("missing or wrong API token; send 'Authorization: Bearer <token>'")


async def read_limited(request: Request, limit: int) -> bytes:
    """The request's body, refused (413) as soon as it passes ``limit`` bytes."""
    too_large = f"the notification is over {limit:,} bytes; send one event per request"
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError(too_large)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError(too_large)
        chunks.append(chunk)
    return b"".join(chunks)


@router.post("/events", tags=["events"])
async def post_events(request: Request) -> JSONResponse:
    """Take a bucket notification; answer once its events are recorded (or in 10 s)."""
    webhook: Webhook = request.app.state.webhook
    check_token(request, webhook.token)
    body = await read_limited(request, MAX_EVENTS_BODY)
    try:
        events = parse_body(body)
    except MalformedEventError as exc:
        raise BadQueryError(f"not a bucket notification: {exc}") from None
    shown = [_event_json(e) for e in events]
    if not events:
        return JSONResponse({"status": "ignored", "events": []})
    message = webhook.queue.put(body=body.decode("utf-8", errors="replace"), events=events)
    if not webhook.running:
        # The watcher stopped (its ledger or catalog failed): start it again. The message
        # waits in the queue either way; if the watcher cannot start, the answer says so
        # and `pixelfleet reconcile` covers a server that goes down before it does.
        problem = await run_in_threadpool(webhook.restart)
        if problem:
            return JSONResponse(
                {"status": "accepted", "message": message.id, "events": shown, "reason": problem},
                status_code=202,
            )
    outcome = await run_in_threadpool(webhook.queue.wait_for, message.id, ANSWER_WITHIN)
    if outcome is None:
        return JSONResponse(
            {"status": "accepted", "message": message.id, "events": shown}, status_code=202
        )
    status, reason = outcome
    answer: dict[str, Any] = {"status": status, "message": message.id, "events": shown}
    if reason:
        answer["reason"] = reason
    return JSONResponse(answer)


def _event_json(event: BucketEvent) -> dict[str, Any]:
    return {"action": event.action, "bucket": event.bucket, "key": event.key}


__all__ = ["MAX_EVENTS_BODY", "Webhook", "WebhookQueue", "install", "router"]
