"""``AmqpQueue``: bucket events from a RabbitMQ (AMQP 0-9-1) queue, as MinIO sends them.

``--queue amqp://USER:PASS@HOST:5672/QUEUE`` reads QUEUE (the URL's path is the
queue's name, not a virtual host: give that with ``?vhost=NAME``). Options:

- ``exchange=NAME``: bind QUEUE to that exchange (MinIO's ``MINIO_NOTIFY_AMQP_EXCHANGE``),
  declaring it when missing, as ``exchange_type`` (default ``fanout``), durable;
- ``routing_key=KEY``: the binding's key (MinIO's ``..._ROUTING_KEY``; default: QUEUE);
- ``prefetch=N``: messages RabbitMQ hands over before any is acknowledged (default 100);
- ``vhost=NAME``: the virtual host (default ``/``); ``amqps://`` uses TLS.

QUEUE is declared durable, with ``x-dead-letter-exchange`` set to ``QUEUE.dead`` (a
fanout exchange bound to the durable queue ``QUEUE.dead``), so messages RabbitMQ
itself gives up on land there too. If QUEUE already exists with other arguments it
is used as it is.

Dead letters: a rejected message is published to ``QUEUE.dead`` with the reason in
the header ``x-pixelfleet-reason`` (the queue it came from in ``x-pixelfleet-queue``),
confirmed by the broker, and then acknowledged. (``basic_nack`` without requeue
would reach the same queue through the dead-letter exchange with ``x-death``, but
AMQP has no way to attach the reason to it.) A crash between the two leaves the
message in both queues; handling it again is harmless.

A message not acknowledged returns to QUEUE when the connection closes, so there is
no visibility timeout (``visibility`` is None). The connection is used from one
thread only (the watcher's receiver), as pika's ``BlockingConnection`` requires.
"""

from __future__ import annotations

import contextlib
import itertools
import ssl
import time
from collections import deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from typing_extensions import override

from pixelfleet.errors import ConfigError, MissingExtraError, PixelfleetError
from pixelfleet.events.base import EventQueue, Message

_INSTALL = "pip install 'pixelfleet[events]'"
_OPTIONS = ("exchange", "exchange_type", "routing_key", "prefetch", "vhost")
_EXCHANGE_TYPES = ("fanout", "direct", "topic", "headers")
#: Reply codes RabbitMQ closes a channel with.
_NOT_FOUND, _PRECONDITION_FAILED = 404, 406


class AmqpQueueError(PixelfleetError, ConnectionError):
    """RabbitMQ could not be reached or refused a request; the message says which."""


@dataclass(frozen=True)
class AmqpAddress:
    """What an ``amqp://`` URL names."""

    host: str
    port: int
    user: str
    password: str
    vhost: str
    queue: str
    tls: bool
    exchange: str | None = None
    exchange_type: str = "fanout"
    routing_key: str | None = None
    prefetch: int = 100

    @property
    def shown(self) -> str:
        """The URL without its password."""
        scheme = "amqps" if self.tls else "amqp"
        return f"{scheme}://{self.user}:***@{self.host}:{self.port}/{self.queue}"

    @property
    def dead(self) -> str:
        """The dead-letter exchange and queue: ``QUEUE.dead``."""
        return f"{self.queue}.dead"


def parse_amqp_url(url: str) -> AmqpAddress:
    """Read ``amqp[s]://USER:PASS@HOST[:PORT]/QUEUE[?options]``."""
    parts = urlsplit(url)
    tls = parts.scheme.lower() == "amqps"
    if parts.scheme.lower() not in ("amqp", "amqps") or not parts.hostname:
        raise ConfigError(
            f"AMQP URL {url!r} is not amqp://USER:PASS@HOST:5672/QUEUE (or amqps://...)"
        )
    queue = unquote(parts.path.lstrip("/"))
    if not queue:
        raise ConfigError(
            f"AMQP URL {parts.scheme}://{parts.hostname}... names no queue: put the queue's"
            " name in the path, e.g. amqp://guest:guest@127.0.0.1:5672/bucketevents"
        )
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = sorted(set(query) - set(_OPTIONS))
    if unknown:
        raise ConfigError(
            f"AMQP URL option(s) {', '.join(unknown)} unknown; use {', '.join(_OPTIONS)}"
        )
    kind = query.get("exchange_type", "fanout")
    if kind not in _EXCHANGE_TYPES:
        raise ConfigError(f"exchange_type={kind!r} is not one of {', '.join(_EXCHANGE_TYPES)}")
    prefetch_text = query.get("prefetch", "100")
    if not prefetch_text.isdigit() or not 1 <= int(prefetch_text) <= 65535:
        raise ConfigError(f"prefetch={prefetch_text!r} must be a whole number from 1 to 65535")
    try:
        port = parts.port or (5671 if tls else 5672)
    except ValueError:
        raise ConfigError(f"AMQP URL {url!r} has a port that is not a number") from None
    return AmqpAddress(
        host=parts.hostname,
        port=port,
        user=unquote(parts.username or "guest"),
        password=unquote(parts.password or "guest"),
        vhost=query.get("vhost", "/"),
        queue=queue,
        tls=tls,
        exchange=query.get("exchange") or None,
        exchange_type=kind,
        routing_key=query.get("routing_key") or None,
        prefetch=int(prefetch_text),
    )


class AmqpQueue(EventQueue):
    """A RabbitMQ queue of bucket notifications."""

    name = "amqp"
    visibility = None

    def __init__(self, url: str, *, connect_timeout: float = 10.0):
        try:
            import pika
        except ModuleNotFoundError as exc:
            raise MissingExtraError(f"AMQP queues need pika: {_INSTALL}") from exc
        self._pika = pika
        self.address = parse_amqp_url(url)
        self._connect_timeout = connect_timeout
        self._buffer: deque[Message] = deque()
        self._generation = 0
        self._ids = itertools.count(1)
        self._connection: Any = None
        self._channel: Any = None
        self._connect()

    # -- connection ----------------------------------------------------------------------

    def _connect(self) -> None:
        pika = self._pika
        a = self.address
        options = None
        if a.tls:
            options = pika.SSLOptions(ssl.create_default_context(), a.host)
        params = pika.ConnectionParameters(
            host=a.host,
            port=a.port,
            virtual_host=a.vhost,
            credentials=pika.PlainCredentials(a.user, a.password),
            ssl_options=options,
            heartbeat=60,
            blocked_connection_timeout=300,
            socket_timeout=self._connect_timeout,
            stack_timeout=self._connect_timeout * 2,
        )
        try:
            self._connection = pika.BlockingConnection(params)
        except pika.exceptions.ProbableAuthenticationError as exc:
            raise ConfigError(
                f"RabbitMQ at {a.shown} refused user {a.user!r}: check the user and password"
            ) from exc
        except pika.exceptions.AMQPError as exc:
            raise AmqpQueueError(
                f"cannot connect to RabbitMQ at {a.shown} ({exc!r}):"
                " is it running, and is the URL right?"
            ) from exc
        self._generation += 1
        self._buffer.clear()
        try:
            self._declare()
            self._channel.basic_qos(prefetch_count=a.prefetch)
            self._channel.basic_consume(a.queue, self._on_message, auto_ack=False)
        except BaseException:
            self.close()
            raise

    def _fresh_channel(self) -> Any:
        self._channel = self._connection.channel()
        self._channel.confirm_delivery()
        return self._channel

    def _declare(self) -> None:
        """The dead-letter exchange and queue, the queue, and its binding."""
        closed = self._pika.exceptions.ChannelClosedByBroker
        a = self.address
        ch = self._fresh_channel()
        ch.exchange_declare(a.dead, "fanout", durable=True)
        ch.queue_declare(a.dead, durable=True)
        ch.queue_bind(a.dead, a.dead)
        try:
            ch.queue_declare(a.queue, durable=True, arguments={"x-dead-letter-exchange": a.dead})
        except closed as exc:
            if exc.reply_code != _PRECONDITION_FAILED:
                raise AmqpQueueError(f"RabbitMQ refused queue {a.queue!r}: {exc}") from exc
            # It exists with other arguments: use it as it is.
            self._fresh_channel().queue_declare(a.queue, passive=True)
        if a.exchange:
            try:
                self._channel.exchange_declare(a.exchange, passive=True)
            except closed as exc:
                if exc.reply_code != _NOT_FOUND:
                    raise AmqpQueueError(
                        f"RabbitMQ refused exchange {a.exchange!r}: {exc}"
                    ) from exc
                self._fresh_channel().exchange_declare(a.exchange, a.exchange_type, durable=True)
            self._channel.queue_bind(a.queue, a.exchange, routing_key=a.routing_key or a.queue)

    def _on_message(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        headers = dict(getattr(properties, "headers", None) or {})
        count = headers.get("x-delivery-count")  # quorum queues count deliveries
        receives = count + 1 if isinstance(count, int) else 2 if method.redelivered else 1
        self._buffer.append(
            Message(
                id=f"amqp-{self._generation}-{method.delivery_tag}",
                body=body.decode("utf-8", errors="replace"),
                receive_count=receives,
                handle=(self._generation, method.delivery_tag, properties),
            )
        )

    def _lost(self, exc: BaseException) -> bool:
        errors = self._pika.exceptions
        return isinstance(
            exc, errors.AMQPConnectionError | errors.AMQPChannelError | errors.StreamLostError
        )

    # -- the queue -------------------------------------------------------------------------

    @override
    def receive(self, most: int, wait: float) -> list[Message]:
        deadline = time.monotonic() + max(0.0, wait)
        try:
            self._connection.process_data_events(time_limit=0)
            while not self._buffer:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._connection.process_data_events(time_limit=left)
        except Exception as exc:
            if not self._lost(exc):
                raise
            # Messages in hand come back to the queue by themselves; start over.
            with contextlib.suppress(Exception):
                self._connection.close()
            self._connect()
            return []
        out: list[Message] = []
        while self._buffer and len(out) < most:
            out.append(self._buffer.popleft())
        return out

    @override
    def ack(self, message: Message) -> None:
        generation, tag, _ = message.handle
        if generation != self._generation:
            return  # delivered on a connection since closed: it comes back by itself
        self._channel.basic_ack(tag)

    @override
    def reject(self, message: Message, reason: str) -> None:
        generation, tag, properties = message.handle
        if generation != self._generation:
            return
        pika = self._pika
        headers = dict(getattr(properties, "headers", None) or {})
        headers["x-pixelfleet-reason"] = reason[:4000]
        headers["x-pixelfleet-queue"] = self.address.queue
        headers["x-pixelfleet-receive-count"] = message.receive_count
        copy = pika.BasicProperties(
            content_type=getattr(properties, "content_type", None) or "application/json",
            headers=headers,
            delivery_mode=pika.DeliveryMode.Persistent,
        )
        try:
            self._channel.basic_publish(
                "", self.address.dead, message.body.encode(), copy, mandatory=True
            )
        except (pika.exceptions.UnroutableError, pika.exceptions.NackError) as exc:
            raise AmqpQueueError(
                f"RabbitMQ did not take a dead letter into queue {self.address.dead!r}: {exc}"
            ) from exc
        self._channel.basic_ack(tag)

    @override
    def close(self) -> None:
        """Close the connection; messages not acknowledged return to the queue."""
        connection, self._connection = self._connection, None
        self._buffer.clear()
        if connection is not None and connection.is_open:
            with contextlib.suppress(Exception):
                connection.close()

    @override
    def describe(self) -> str:
        bound = f" bound to exchange {self.address.exchange}" if self.address.exchange else ""
        return f"amqp queue {self.address.shown}{bound} (dead letters: {self.address.dead})"


__all__ = ["AmqpAddress", "AmqpQueue", "AmqpQueueError", "parse_amqp_url"]
