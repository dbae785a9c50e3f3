"""Bucket events: what changed in a bucket, as messages from a queue.

An :class:`~pixelfleet.events.base.EventQueue` hands over messages (an SQS queue, an
AMQP queue, a folder watched for changes, the server's webhook, or
:class:`~pixelfleet.events.memory.MemoryQueue` fed by code); :func:`parse_message`
reads the S3, SNS, EventBridge and MinIO notification formats into
:class:`BucketEvent` values. ``pixelfleet watch`` (:mod:`pixelfleet.live`) acts on them.
"""

from __future__ import annotations

from pixelfleet.events.base import BucketEvent, EventQueue, Message, compare_sequencers
from pixelfleet.events.memory import MemoryQueue
from pixelfleet.events.parse import parse_message

__all__ = [
    "BucketEvent",
    "EventQueue",
    "MemoryQueue",
    "Message",
    "compare_sequencers",
    "parse_message",
]
