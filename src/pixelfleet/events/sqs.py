"""``SqsQueue``: bucket events from an Amazon SQS queue (``--queue sqs://NAME``).

S3 sends its notifications to SQS directly, through an SNS topic, or through
EventBridge; :mod:`pixelfleet.events.parse` reads all three. Messages are taken
with long polling; a message is deleted once handled; a message held long is
extended (ChangeMessageVisibility); the queue's ``VisibilityTimeout`` is the
watcher's ``visibility``.

Dead letters: a rejected message is sent to the queue's dead-letter queue with the
reason as the message attribute ``pixelfleet-reason`` (and the queue it came from
as ``pixelfleet-queue``), then deleted. The dead-letter queue is the target of the
queue's redrive policy, which SQS also uses for messages received too often; or
the queue given with ``?dead_letter=NAME-OR-URL``. A queue with neither is refused
at start: a message pixelfleet cannot handle would otherwise come back forever.
"""

from __future__ import annotations

import json
import math
from typing import Any
from urllib.parse import parse_qs, urlsplit

from typing_extensions import override

from pixelfleet.errors import ConfigError, MissingExtraError, PixelfleetError
from pixelfleet.events.base import EventQueue, Message
from pixelfleet.settings import Settings

_INSTALL = "pip install 'pixelfleet[events]'"
#: SQS message attribute values hold up to 256 KiB with the body; reasons are short.
_MAX_REASON = 4000
#: Longest visibility SQS allows (12 hours).
_MAX_VISIBILITY = 43_200


class SqsQueueError(PixelfleetError, ConnectionError):
    """SQS refused or failed a request; the message says which and why."""


class SqsQueue(EventQueue):
    """An SQS queue of bucket notifications."""

    name = "sqs"
    #: boto3 clients are thread-safe; each ReceiveMessage is a round trip of its own.
    concurrent_receives = 3

    def __init__(self, url: str, settings: Settings, *, dead_letter: str | None = None):
        try:
            import boto3
            from botocore.config import Config
        except ModuleNotFoundError as exc:
            raise MissingExtraError(f"SQS queues need boto3: {_INSTALL}") from exc
        from botocore.exceptions import BotoCoreError, ClientError

        self._client_errors = (BotoCoreError, ClientError)
        self.given = url
        target, query = _split(url)
        if target.startswith(("sqs://https://", "sqs://http://")):
            target = target.removeprefix("sqs://")
        dead_letter = dead_letter or _one(query, "dead_letter", url)
        endpoint = settings.sqs_endpoint
        region = settings.s3.region
        if target.startswith(("https://", "http://")):
            parts = urlsplit(target)
            host = parts.hostname or ""
            if endpoint is None and not host.endswith("amazonaws.com"):
                endpoint = f"{parts.scheme}://{parts.netloc}"  # a local SQS (moto, ElasticMQ)
            if region is None and host.startswith("sqs.") and host.count(".") >= 3:
                region = host.split(".")[1]
        s3 = settings.s3
        session = boto3.session.Session(
            aws_access_key_id=s3.access_key_id,
            aws_secret_access_key=s3.secret_access_key,
            aws_session_token=s3.session_token,
            region_name=region or "us-east-1",
        )
        self._client = session.client(
            "sqs",
            endpoint_url=endpoint,
            config=Config(
                retries={"total_max_attempts": 4, "mode": "standard"},
                connect_timeout=10,
                # A long poll answers within 20 s; more means the connection is stuck.
                read_timeout=40,
            ),
        )
        try:
            self.url = self._queue_url(target)
            attrs = self._call(
                "GetQueueAttributes",
                self._client.get_queue_attributes,
                QueueUrl=self.url,
                AttributeNames=["VisibilityTimeout", "RedrivePolicy", "QueueArn"],
            )["Attributes"]
            self.visibility = float(attrs.get("VisibilityTimeout", 30))
            if dead_letter:
                self.dead_letter_url = self._queue_url(_split(dead_letter)[0])
            elif attrs.get("RedrivePolicy"):
                self.dead_letter_url = self._redrive_target(attrs["RedrivePolicy"])
            else:
                raise ConfigError(
                    f"SQS queue {self.url} has no dead-letter queue, so a message pixelfleet"
                    " cannot handle would come back forever. Give it a redrive policy: "
                    f"aws sqs create-queue --queue-name {_name_of(self.url)}-dead; aws sqs"
                    f" set-queue-attributes --queue-url {self.url} --attributes"
                    ' \'{"RedrivePolicy": "{\\"deadLetterTargetArn\\":\\"ARN-OF-THE-DEAD'
                    '-QUEUE\\",\\"maxReceiveCount\\":\\"5\\"}"}\'; or name one in the queue'
                    f" URL: {url.split('?')[0]}?dead_letter=QUEUE-NAME-OR-URL"
                )
        except BaseException:
            self._client.close()
            raise

    # -- setup -------------------------------------------------------------------------

    def _queue_url(self, target: str) -> str:
        """A queue URL from ``https://...``, ``sqs://https://...`` or ``sqs://NAME``."""
        target = target.removeprefix("sqs://")
        if target.startswith(("https://", "http://")):
            return target
        name = target.strip("/")
        if not name or "/" in name:
            raise ConfigError(
                f"SQS queue {self.given!r} names no queue; use sqs://QUEUE-NAME or the queue's"
                " URL, https://sqs.REGION.amazonaws.com/ACCOUNT/NAME"
            )
        try:
            answer = self._client.get_queue_url(QueueName=name)
        except self._client_errors as exc:
            code = _code(exc)
            if code in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"):
                raise ConfigError(
                    f"SQS queue {name!r} does not exist in region"
                    f" {self._client.meta.region_name}: check the name, set AWS_REGION, or"
                    " pass the queue's URL (sqs://https://sqs.REGION.amazonaws.com/ACCOUNT/NAME)"
                ) from None
            raise SqsQueueError(f"SQS GetQueueUrl for {name!r} failed: {exc}") from exc
        return str(answer["QueueUrl"])

    def _redrive_target(self, policy_text: str) -> str:
        """The URL of the dead-letter queue a redrive policy names (by ARN)."""
        try:
            arn = str(json.loads(policy_text)["deadLetterTargetArn"])
            _, _, _, _, account, name = arn.split(":", 5)
        except (ValueError, KeyError, TypeError):
            raise ConfigError(
                f"SQS queue {self.url} has a redrive policy without a dead-letter queue ARN:"
                f" {policy_text[:200]}"
            ) from None
        try:
            answer = self._client.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)
        except self._client_errors as exc:
            raise ConfigError(
                f"the dead-letter queue {arn} of SQS queue {self.url} cannot be found ({exc});"
                " create it, or fix the queue's redrive policy"
            ) from None
        return str(answer["QueueUrl"])

    def _call(self, what: str, method: Any, **kwargs: Any) -> Any:
        try:
            return method(**kwargs)
        except self._client_errors as exc:
            raise SqsQueueError(f"SQS {what} on {self.url_or_given} failed: {exc}") from exc

    @property
    def url_or_given(self) -> str:
        """The queue's URL once known, else the URL given."""
        return getattr(self, "url", self.given)

    # -- the queue ---------------------------------------------------------------------

    @override
    def receive(self, most: int, wait: float) -> list[Message]:
        answer = self._call(
            "ReceiveMessage",
            self._client.receive_message,
            QueueUrl=self.url,
            MaxNumberOfMessages=max(1, min(10, most)),
            # Under half a second: a short poll (the watcher is busy and comes back soon).
            WaitTimeSeconds=0 if wait < 0.5 else min(20, math.ceil(wait)),
            AttributeNames=["ApproximateReceiveCount"],
            MessageAttributeNames=["All"],
        )
        out = []
        for raw in answer.get("Messages", []):
            count = raw.get("Attributes", {}).get("ApproximateReceiveCount", "1")
            out.append(
                Message(
                    id=str(raw["MessageId"]),
                    body=str(raw.get("Body", "")),
                    receive_count=int(count) if str(count).isdigit() else 1,
                    handle=raw["ReceiptHandle"],
                )
            )
        return out

    @override
    def ack(self, message: Message) -> None:
        self._delete(message)

    @override
    def reject(self, message: Message, reason: str) -> None:
        attributes = {
            "pixelfleet-reason": {"DataType": "String", "StringValue": reason[:_MAX_REASON] or "-"},
            "pixelfleet-queue": {"DataType": "String", "StringValue": self.url},
            # The original's id: a message sent here twice (its watcher was killed between
            # sending it and deleting the original) shows as one.
            "pixelfleet-message-id": {"DataType": "String", "StringValue": message.id or "-"},
            "pixelfleet-receive-count": {
                "DataType": "Number",
                "StringValue": str(message.receive_count),
            },
        }
        self._call(
            "SendMessage (to the dead-letter queue)",
            self._client.send_message,
            QueueUrl=self.dead_letter_url,
            MessageBody=message.body or "{}",
            MessageAttributes=attributes,
        )
        # Sent, then deleted: a crash between the two leaves the message in both queues,
        # and its second handling is harmless.
        self._delete(message)

    def _delete(self, message: Message) -> None:
        try:
            self._client.delete_message(QueueUrl=self.url, ReceiptHandle=message.handle)
        except self._client_errors as exc:
            if _code(exc) in ("ReceiptHandleIsInvalid", "InvalidParameterValue"):
                return  # handed out again meanwhile: it comes back, handled twice, harmlessly
            raise SqsQueueError(f"SQS DeleteMessage on {self.url} failed: {exc}") from exc

    @override
    def extend(self, message: Message, seconds: float) -> None:
        self._call(
            "ChangeMessageVisibility",
            self._client.change_message_visibility,
            QueueUrl=self.url,
            ReceiptHandle=message.handle,
            VisibilityTimeout=max(0, min(_MAX_VISIBILITY, math.ceil(seconds))),
        )

    @override
    def close(self) -> None:
        self._client.close()

    @override
    def describe(self) -> str:
        return f"sqs queue {self.url} (dead letters: {self.dead_letter_url})"


def _split(url: str) -> tuple[str, dict[str, list[str]]]:
    """A queue URL without pixelfleet's query options, and those options."""
    head, _, query = url.partition("?")
    return head, parse_qs(query)


def _one(query: dict[str, list[str]], name: str, url: str) -> str | None:
    unknown = sorted(set(query) - {"dead_letter"})
    if unknown:
        raise ConfigError(
            f"SQS queue URL {url!r} has unknown option(s) {', '.join(unknown)}; the one option"
            " is ?dead_letter=QUEUE-NAME-OR-URL"
        )
    values = query.get(name)
    return values[-1] if values else None


def _name_of(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1] or "QUEUE"


def _code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


__all__ = ["SqsQueue", "SqsQueueError"]
