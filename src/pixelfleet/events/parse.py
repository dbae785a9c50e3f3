"""Reading bucket notifications: S3's own, wrapped by SNS, EventBridge's, and MinIO's.

- **S3** (to SQS, SNS or a Lambda function): ``{"Records": [{"eventName":
  "ObjectCreated:Put", "s3": {"bucket": {"name"}, "object": {"key", "size", "eTag",
  "sequencer"}}}]}``; keys are URL-encoded as a query string is (``+`` is a space).
- **SNS**: ``{"Type": "Notification", "Message": "<the S3 JSON as text>"}`` (without
  raw message delivery; with it, the S3 JSON arrives as is).
- **EventBridge**: ``{"source": "aws.s3", "detail-type": "Object Created" | "Object
  Deleted", "detail": {"bucket": {"name"}, "object": {"key", "size", "etag",
  "sequencer"}}}``; keys are not encoded.
- **MinIO** (webhook, AMQP, ...): S3's ``Records`` with ``eventName`` prefixed ``s3:``
  and an outer ``EventName``/``Key``.

S3's ``s3:TestEvent`` (sent when a notification is configured) and kinds that change
no object's bytes (restores, replication, tagging, ACLs) give no event. Anything
else that does not read as one of these raises :class:`MalformedEventError`, whose
message says what is wrong; the watcher sends such a message to the dead-letter
queue with that reason.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from urllib.parse import unquote_plus

from pixelfleet.errors import PixelfleetError
from pixelfleet.events.base import Action, BucketEvent, Message

#: Bodies longer than this are not read (an S3 notification holds one record, ~1.5 kB).
MAX_BODY_BYTES = 256 * 1024


class MalformedEventError(PixelfleetError, ValueError):
    """A message that is not a bucket notification pixelfleet can read."""


def parse_message(message: Message) -> list[BucketEvent]:
    """The events of ``message``: those it carries, else those its text holds."""
    if message.events is not None:
        return list(message.events)
    return parse_body(message.body)


def parse_body(body: str | bytes) -> list[BucketEvent]:
    """The object events in a notification's text (none for a test event)."""
    if len(body) > MAX_BODY_BYTES:
        raise MalformedEventError(
            f"message of {len(body):,} bytes is longer than {MAX_BODY_BYTES:,}: "
            "not a bucket notification"
        )
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedEventError(f"message is not JSON ({exc}): {_excerpt(body)}") from None
    return parse_document(data)


def parse_document(data: Any) -> list[BucketEvent]:
    """The object events in a decoded notification."""
    if not isinstance(data, dict):
        raise MalformedEventError(
            f"message is a JSON {type(data).__name__}, not an object: {_excerpt(data)}"
        )
    if data.get("Type") == "Notification" and "Message" in data:  # SNS envelope
        inner = data["Message"]
        if not isinstance(inner, str):
            raise MalformedEventError("SNS notification whose Message is not text")
        return [_with_origin(e, "sns") for e in parse_body(inner)]
    if data.get("Event") == "s3:TestEvent" or data.get("Type") == "SubscriptionConfirmation":
        return []
    if "Records" in data:
        records = data["Records"]
        if not isinstance(records, list):
            raise MalformedEventError("'Records' is not a list")
        out: list[BucketEvent] = []
        for index, record in enumerate(records):
            event = _s3_record(record, index)
            if event is not None:
                out.append(event)
        return out
    if data.get("source") == "aws.s3" and "detail" in data:
        event = _eventbridge(data)
        return [] if event is None else [event]
    keys = ", ".join(sorted(str(k) for k in data)[:8])
    raise MalformedEventError(
        f"not an S3, SNS, EventBridge or MinIO notification (its fields: {keys or 'none'})"
    )


def _s3_record(record: Any, index: int) -> BucketEvent | None:
    where = f"Records[{index}]"
    if not isinstance(record, dict):
        raise MalformedEventError(f"{where} is not an object")
    name = record.get("eventName")
    if not isinstance(name, str):
        raise MalformedEventError(f"{where} has no eventName")
    action = _action(name.removeprefix("s3:"))
    if action is None:
        return None
    s3 = record.get("s3")
    bucket = _field(s3, "bucket", where + ".s3")
    obj = _field(s3, "object", where + ".s3")
    key = obj.get("key")
    bucket_name = bucket.get("name")
    if not isinstance(key, str) or not key or not isinstance(bucket_name, str):
        raise MalformedEventError(f"{where}.s3 has no object key or bucket name")
    origin = "minio" if str(record.get("eventSource", "")).startswith("minio") else "s3"
    return BucketEvent(
        action=action,
        bucket=bucket_name,
        key=unquote_plus(key),
        etag=str(obj.get("eTag") or obj.get("etag") or "").strip('"'),
        size=_size(obj.get("size")),
        sequencer=_sequencer(obj.get("sequencer"), where),
        time=_time(record.get("eventTime")),
        origin=origin,
    )


def _eventbridge(data: dict[str, Any]) -> BucketEvent | None:
    kind = data.get("detail-type")
    action: Action | None = {"Object Created": "created", "Object Deleted": "deleted"}.get(
        str(kind)
    )  # type: ignore[assignment]
    if action is None:
        return None  # restores, tags, ACLs, storage class changes: the bytes are the same
    detail = data["detail"]
    bucket = _field(detail, "bucket", "detail")
    obj = _field(detail, "object", "detail")
    key, bucket_name = obj.get("key"), bucket.get("name")
    if not isinstance(key, str) or not key or not isinstance(bucket_name, str):
        raise MalformedEventError("EventBridge detail has no object key or bucket name")
    return BucketEvent(
        action=action,
        bucket=bucket_name,
        key=key,
        etag=str(obj.get("etag") or obj.get("eTag") or "").strip('"'),
        size=_size(obj.get("size")),
        sequencer=_sequencer(obj.get("sequencer"), "detail.object"),
        time=_time(data.get("time")),
        origin="eventbridge",
    )


def _action(name: str) -> Action | None:
    if name.startswith("ObjectCreated"):
        return "created"
    if name.startswith(("ObjectRemoved", "LifecycleExpiration")):
        return "deleted"
    return None


def _field(parent: Any, name: str, where: str) -> dict[str, Any]:
    value = parent.get(name) if isinstance(parent, dict) else None
    if not isinstance(value, dict):
        raise MalformedEventError(f"{where} has no {name!r} object")
    return value


def _size(value: Any) -> int:
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError):
        return 0


def _sequencer(value: Any, where: str) -> str:
    if value in (None, ""):
        return ""
    text = str(value)
    try:
        int(text, 16)
    except ValueError:
        raise MalformedEventError(f"{where} sequencer {text[:40]!r} is not hexadecimal") from None
    return text


def _time(value: Any) -> float:
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return 0.0
    return 0.0


def _with_origin(event: BucketEvent, origin: str) -> BucketEvent:
    from dataclasses import replace

    return replace(event, origin=origin)


def _excerpt(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    text = " ".join(text.split())
    return repr(text[:80] + ("…" if len(text) > 80 else ""))
