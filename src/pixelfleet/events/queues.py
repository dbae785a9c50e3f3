"""``open_queue``: the :class:`~pixelfleet.events.EventQueue` a ``--queue`` URL names.

=====================================================  =====================================
``--queue``                                            queue
=====================================================  =====================================
``sqs://NAME``                                         SQS queue NAME (GetQueueUrl), in the
                                                       region and endpoint of the settings
``sqs://https://sqs.REGION.amazonaws.com/ACCT/NAME``,  an SQS queue by its URL
``https://sqs.REGION.amazonaws.com/ACCT/NAME``
``amqp://user:pass@host:5672/QUEUE``, ``amqps://...``  a RabbitMQ queue (``?exchange=...``)
``memory://``                                          a :class:`MemoryQueue` (tests)
none                                                   the source folder (``file://`` sources)
=====================================================  =====================================

An SQS URL may end in ``?dead_letter=QUEUE`` (a name or URL) to dead-letter there
instead of in the queue's redrive policy's target.
"""

from __future__ import annotations

from pixelfleet.errors import ConfigError
from pixelfleet.events.base import EventQueue
from pixelfleet.settings import Settings
from pixelfleet.urls import scheme_of

#: The ``--queue`` forms, for error messages.
QUEUE_FORMS = (
    "sqs://QUEUE-NAME, sqs://https://sqs.REGION.amazonaws.com/ACCOUNT/NAME (or that https"
    " URL alone), amqp://USER:PASS@HOST:5672/QUEUE, amqps://..."
)


def open_queue(url: str | None, source_url: str, settings: Settings) -> EventQueue:
    """The queue ``url`` names; with none, the source folder itself (``file://`` sources)."""
    if url is None or not url.strip():
        if scheme_of(source_url, "file") != "file":
            raise ConfigError(
                f"source {source_url} is not a local folder, so its events must come from a"
                f" queue: pass --queue with one of {QUEUE_FORMS}"
            )
        from pixelfleet.events.folder import FolderQueue

        return FolderQueue(source_url)
    url = url.strip()
    lower = url.lower()
    if lower.startswith("sqs://") or _is_sqs_https(lower):
        from pixelfleet.events.sqs import SqsQueue

        return SqsQueue(url, settings)
    if lower.startswith(("amqp://", "amqps://")):
        from pixelfleet.events.amqp import AmqpQueue

        return AmqpQueue(url)
    if lower.startswith("memory://"):
        from pixelfleet.events.memory import MemoryQueue

        return MemoryQueue()
    if lower.startswith("file://"):
        from pixelfleet.events.folder import FolderQueue

        return FolderQueue(url)
    raise ConfigError(f"--queue {url!r} is not a queue pixelfleet can read; use {QUEUE_FORMS}")


def _is_sqs_https(lower: str) -> bool:
    """An AWS SQS queue URL (``https://sqs.REGION.amazonaws.com/...`` and the legacy
    ``https://REGION.queue.amazonaws.com/...``)."""
    if not lower.startswith("https://"):
        return False
    host = lower.removeprefix("https://").split("/", 1)[0]
    return host.startswith("sqs.") or host.endswith("queue.amazonaws.com")


__all__ = ["QUEUE_FORMS", "open_queue"]
