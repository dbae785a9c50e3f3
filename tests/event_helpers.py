"""Helpers for the event queue tests: RabbitMQ and SQS (moto) queues, their dead letters."""

from __future__ import annotations

import json
import socket
import uuid
from dataclasses import dataclass
from typing import Any

AMQP_HOST, AMQP_PORT = "127.0.0.1", 5672


def amqp_reachable() -> bool:
    try:
        with socket.create_connection((AMQP_HOST, AMQP_PORT), timeout=1):
            return True
    except OSError:
        return False


def amqp_channel() -> Any:
    """A channel of a new connection to the test RabbitMQ (close its connection after)."""
    import pika

    return pika.BlockingConnection(pika.ConnectionParameters(AMQP_HOST, AMQP_PORT)).channel()


@dataclass
class SqsEnv:
    """A fresh SQS queue with a dead-letter queue on the moto server."""

    endpoint: str
    client: Any
    name: str
    url: str
    arn: str
    dead_url: str


def sqs_client(endpoint: str, service: str = "sqs") -> Any:
    import boto3

    return boto3.client(
        service,
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


def new_sqs_queue(client: Any, endpoint: str, visibility: int = 30) -> SqsEnv:
    """A queue of its own (PurgeQueue is limited to once a minute) and its dead letters."""
    name = f"pf-{uuid.uuid4().hex[:12]}"
    dead = client.create_queue(QueueName=f"{name}-dead")["QueueUrl"]
    dead_arn = client.get_queue_attributes(QueueUrl=dead, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    policy = json.dumps({"deadLetterTargetArn": dead_arn, "maxReceiveCount": "20"})
    url = client.create_queue(
        QueueName=name,
        Attributes={"VisibilityTimeout": str(visibility), "RedrivePolicy": policy},
    )["QueueUrl"]
    arn = client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    return SqsEnv(endpoint, client, name, url, arn, dead)


def dead_letters_sqs(env: SqsEnv) -> list[tuple[str, str]]:
    """``(body, reason)`` of the messages in an SQS queue's dead-letter queue."""
    out = []
    for _ in range(3):
        answer = env.client.receive_message(
            QueueUrl=env.dead_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
        )
        for raw in answer.get("Messages", []):
            reason = raw.get("MessageAttributes", {}).get("pixelfleet-reason", {})
            out.append((raw["Body"], reason.get("StringValue", "")))
        if out:
            break
    return out


def dead_letters_amqp(queue_name: str) -> list[tuple[str, str]]:
    """``(body, reason)`` of the messages in ``QUEUE.dead``."""
    channel = amqp_channel()
    out = []
    try:
        while True:
            method, properties, body = channel.basic_get(f"{queue_name}.dead", auto_ack=True)
            if method is None:
                break
            reason = (properties.headers or {}).get("x-pixelfleet-reason", "")
            out.append((body.decode(), reason))
    finally:
        channel.connection.close()
    return out


def minio_event(
    action: str, bucket: str, key: str, etag: str = "e", size: int = 1, sequencer: str = ""
) -> str:
    """A notification as MinIO sends it to a webhook or an AMQP exchange."""
    from urllib.parse import quote_plus

    name = "s3:ObjectCreated:Put" if action == "created" else "s3:ObjectRemoved:Delete"
    obj: dict[str, Any] = {
        "key": quote_plus(key),
        "size": size,
        "eTag": etag,
        "contentType": "image/png",
        "userMetadata": {"content-type": "image/png"},
    }
    if sequencer:
        obj["sequencer"] = sequencer
    record = {
        "eventVersion": "2.0",
        "eventSource": "minio:s3",
        "awsRegion": "",
        "eventTime": "2026-12-03T10:00:00.000Z",
        "eventName": name,
        "userIdentity": {"principalId": "minioadmin"},
        "requestParameters": {"principalId": "minioadmin", "region": "", "sourceIPAddress": "::1"},
        "responseElements": {"x-amz-request-id": "17A9C1F8E2D0B5C4", "x-minio-origin-endpoint": ""},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "Config",
            "bucket": {
                "name": bucket,
                "ownerIdentity": {"principalId": "minioadmin"},
                "arn": f"arn:aws:s3:::{bucket}",
            },
            "object": obj,
        },
        "source": {"host": "::1", "port": "", "userAgent": "MinIO (linux; amd64) minio-go/v7"},
    }
    return json.dumps({"EventName": name, "Key": f"{bucket}/{key}", "Records": [record]})
