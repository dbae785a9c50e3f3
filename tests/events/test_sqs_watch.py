"""End to end on moto: S3 -> SQS (direct, through SNS, through EventBridge) -> a watcher
with an s3:// source and output; upload, overwrite and delete keep catalog and outputs
current; S3's test event is ignored; a malformed message is dead-lettered with a reason."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from event_helpers import SqsEnv, dead_letters_sqs, sqs_client
from live_helpers import Background, item_ids, photo, photo_pipeline, wait_for
from pixelfleet.catalog import open_catalog
from pixelfleet.ledger import open_ledger
from pixelfleet.live import Watcher

pytestmark = pytest.mark.s3

EVENTS = ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]


def keys(client: Any, bucket: str) -> set[str]:
    return {o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])}


def direct(s3: Any, sqs: SqsEnv, bucket: str) -> None:
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": sqs.arn, "Events": EVENTS}]
        },
    )


def via_sns(s3: Any, sqs: SqsEnv, bucket: str) -> None:
    sns = sqs_client(sqs.endpoint, "sns")
    topic = sns.create_topic(Name=f"{sqs.name}-topic")["TopicArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=sqs.arn)
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={"TopicConfigurations": [{"TopicArn": topic, "Events": EVENTS}]},
    )
    sns.close()


def via_eventbridge(s3: Any, sqs: SqsEnv, bucket: str) -> None:
    events = sqs_client(sqs.endpoint, "events")
    rule = f"{sqs.name}-rule"
    pattern = {"source": ["aws.s3"], "detail": {"bucket": {"name": [bucket]}}}
    events.put_rule(Name=rule, EventPattern=json.dumps(pattern))
    events.put_targets(Rule=rule, Targets=[{"Id": "queue", "Arn": sqs.arn}])
    s3.put_bucket_notification_configuration(
        Bucket=bucket, NotificationConfiguration={"EventBridgeConfiguration": {}}
    )
    events.close()


@pytest.mark.parametrize("wire", [direct, via_sns, via_eventbridge], ids=lambda f: f.__name__)
def test_upload_overwrite_delete(
    wire: Callable[[Any, SqsEnv, str], None], s3_env: Any, sqs_env: SqsEnv, tmp_path: Path
) -> None:
    from pixelfleet.events.queues import open_queue
    from pixelfleet.settings import get_settings

    s3, bucket = s3_env.client, s3_env.bucket
    out_bucket = f"{bucket}-out"
    s3.create_bucket(Bucket=out_bucket)
    wire(s3, sqs_env, bucket)
    catalog_url = f"sqlite:///{tmp_path / 'catalog.db'}"
    pipeline = photo_pipeline(f"s3://{bucket}", f"s3://{out_bucket}", catalog_url)
    ledger = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    catalog = open_catalog(catalog_url)
    queue = open_queue(f"sqs://{sqs_env.name}", pipeline.source.url, get_settings())
    assert queue.visibility == 30
    watcher = Watcher(pipeline, ledger, queue, catalog=catalog, summary_every=0)
    try:
        with Background(watcher):
            s3.put_object(Bucket=bucket, Key="a b/c.png", Body=photo())
            wait_for(lambda: "a b/c.png" in item_ids(catalog))
            assert keys(s3, out_bucket) == {"a b/c.thumb.jpg"}
            first = s3.get_object(Bucket=out_bucket, Key="a b/c.thumb.jpg")["Body"].read()

            s3.put_object(Bucket=bucket, Key="a b/c.png", Body=photo((10, 200, 10)))
            wait_for(lambda: watcher.counts().get("updated", 0) >= 1)
            again = s3.get_object(Bucket=out_bucket, Key="a b/c.thumb.jpg")["Body"].read()
            assert again != first

            s3.delete_object(Bucket=bucket, Key="a b/c.png")
            wait_for(lambda: watcher.counts().get("deleted", 0) >= 1)
            assert keys(s3, out_bucket) == set()
            assert item_ids(catalog) == set()

            sqs_env.client.send_message(QueueUrl=sqs_env.url, MessageBody="{not json")
            wait_for(lambda: watcher.counts().get("dead-lettered", 0) >= 1)
            wait_for(lambda: _empty(sqs_env))
        counts = watcher.counts()
        if wire is not via_eventbridge:  # EventBridge sends no test event
            assert counts.get("ignored", 0) >= 1, counts  # the s3:TestEvent
        assert counts.get("failed", 0) == 0, counts
        dead = dead_letters_sqs(sqs_env)
        assert [body for body, _ in dead] == ["{not json"]
        assert "not JSON" in dead[0][1]
    finally:
        catalog.close()
        ledger.close()


def _empty(env: SqsEnv) -> bool:
    attrs = env.client.get_queue_attributes(
        QueueUrl=env.url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return all(v == "0" for v in attrs.values())


def test_a_queue_without_dead_letters_is_refused(s3_env: Any, sqs_env: SqsEnv) -> None:
    from pixelfleet.errors import ConfigError
    from pixelfleet.events.sqs import SqsQueue
    from pixelfleet.settings import get_settings

    url = sqs_env.client.create_queue(QueueName=f"{sqs_env.name}-plain")["QueueUrl"]
    with pytest.raises(ConfigError, match="RedrivePolicy") as info:
        SqsQueue(f"sqs://{sqs_env.name}-plain", get_settings())
    assert url in str(info.value) and "dead_letter=" in str(info.value)
    # Named in the URL, a dead-letter queue will do instead of a redrive policy.
    queue = SqsQueue(f"sqs://{url}?dead_letter={sqs_env.dead_url}", get_settings())
    assert queue.dead_letter_url == sqs_env.dead_url
    queue.close()


def test_queue_url_forms(s3_env: Any, sqs_env: SqsEnv) -> None:
    from pixelfleet.errors import ConfigError
    from pixelfleet.events.queues import open_queue
    from pixelfleet.settings import get_settings

    settings = get_settings()
    for form in (f"sqs://{sqs_env.name}", f"sqs://{sqs_env.url}"):
        queue = open_queue(form, "s3://b", settings)
        assert queue.describe() == f"sqs queue {sqs_env.url} (dead letters: {sqs_env.dead_url})"
        queue.close()
    with pytest.raises(ConfigError, match="'no-such-queue' does not exist"):
        open_queue("sqs://no-such-queue", "s3://b", settings)
    with pytest.raises(ConfigError, match="unknown option"):
        open_queue(f"sqs://{sqs_env.name}?dlq=x", "s3://b", settings)
