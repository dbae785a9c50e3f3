"""Reading bucket notifications: S3 (direct, via SNS), EventBridge, MinIO, test events,
and messages that are none of these."""

from __future__ import annotations

import json

import pytest

from live_helpers import s3_event
from pixelfleet.events import compare_sequencers
from pixelfleet.events.parse import MalformedEventError, parse_body


def test_s3_keys_are_url_decoded_and_carry_their_version() -> None:
    body = s3_event("created", "bkt", "al/2013/a b+c%.tif", etag="abc", size=9, sequencer="0A1")
    (event,) = parse_body(body)
    assert event.action == "created" and event.bucket == "bkt"
    assert event.key == "al/2013/a b+c%.tif"
    assert (event.etag, event.size, event.sequencer) == ("abc", 9, "0A1")
    assert event.time > 0


def test_sns_wrapped_and_deletes() -> None:
    inner = s3_event("deleted", "bkt", "x.png")
    (event,) = parse_body(json.dumps({"Type": "Notification", "Message": inner}))
    assert (event.action, event.key, event.origin) == ("deleted", "x.png", "sns")


def test_eventbridge_keys_are_not_encoded() -> None:
    body = {
        "source": "aws.s3",
        "detail-type": "Object Deleted",
        "time": "2026-12-03T10:00:00Z",
        "detail": {"bucket": {"name": "b"}, "object": {"key": "a b+c.png", "sequencer": "1F"}},
    }
    (event,) = parse_body(json.dumps(body))
    assert (event.action, event.key, event.sequencer) == ("deleted", "a b+c.png", "1F")
    body["detail-type"] = "Object Restore Completed"
    assert parse_body(json.dumps(body)) == []


def test_minio_records() -> None:
    body = json.loads(s3_event("created", "photos", "dir/p q.jpg"))
    body["Records"][0]["eventName"] = "s3:ObjectCreated:Put"
    body["Records"][0]["eventSource"] = "minio:s3"
    body["EventName"], body["Key"] = "s3:ObjectCreated:Put", "photos/dir/p q.jpg"
    (event,) = parse_body(json.dumps(body))
    assert (event.key, event.origin) == ("dir/p q.jpg", "minio")


def test_test_events_and_other_kinds_give_nothing() -> None:
    assert parse_body('{"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "b"}') == []
    body = json.loads(s3_event("created", "b", "k"))
    body["Records"][0]["eventName"] = "ObjectRestore:Completed"
    assert parse_body(json.dumps(body)) == []


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("{nope", "not JSON"),
        ("[1, 2]", "not an object"),
        ('{"hello": 1}', "its fields: hello"),
        ('{"Records": 3}', "'Records' is not a list"),
        ('{"Records": [{"eventName": "ObjectCreated:Put"}]}', "has no 'bucket' object"),
        (s3_event("created", "b", "k").replace('"e"', '"e", "sequencer": "zz"'), "not hex"),
        ("x" * 300_000, "longer than"),
    ],
)
def test_malformed_messages_say_what_is_wrong(body: str, says: str) -> None:
    with pytest.raises(MalformedEventError, match=says):
        parse_body(body)


def test_sequencers_compare_as_padded_hex() -> None:
    assert compare_sequencers("0055AED6DCD90281E5", "0055AED6DCD90281E6") < 0
    assert compare_sequencers("FF", "0100") < 0  # shorter is padded on the left
    assert compare_sequencers("0A", "a") == 0
    assert compare_sequencers("", "01") == 0  # unknown: no order
