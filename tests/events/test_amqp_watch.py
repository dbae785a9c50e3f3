"""End to end through RabbitMQ: MinIO-shaped notifications published to an exchange,
read by an AmqpQueue bound to it, applied by a watcher to a local bucket."""

from __future__ import annotations

from pathlib import Path

import pytest

from event_helpers import amqp_channel, dead_letters_amqp, minio_event
from live_helpers import (
    Background,
    item_ids,
    keys_under,
    local_photos,
    photo,
    wait_for,
)
from pixelfleet.live import Watcher

pytestmark = pytest.mark.amqp


def test_upload_overwrite_delete_through_an_exchange(amqp_url: str, tmp_path: Path) -> None:
    from pixelfleet.events.queues import open_queue
    from pixelfleet.settings import get_settings

    name = amqp_url.rsplit("/", 1)[1]
    exchange = f"{name}-ex"
    src, out, catalog_url, pipeline, ledger, catalog = local_photos(tmp_path, "photos")
    queue = open_queue(
        f"{amqp_url}?exchange={exchange}&routing_key=bucketlogs",
        pipeline.source.url,
        get_settings(),
    )
    assert queue.visibility is None
    assert f"bound to exchange {exchange}" in queue.describe()
    channel = amqp_channel()

    def publish(body: str) -> None:
        channel.basic_publish(exchange, "bucketlogs", body.encode())

    watcher = Watcher(pipeline, ledger, queue, catalog=catalog, summary_every=0)
    try:
        with Background(watcher):
            (src / "a b.png").write_bytes(photo())
            publish(minio_event("created", "photos", "a b.png", sequencer="0001"))
            wait_for(lambda: "a b.png" in item_ids(catalog))
            assert keys_under(out) == {"a b.thumb.jpg"}
            first = (out / "a b.thumb.jpg").read_bytes()

            (src / "a b.png").write_bytes(photo((10, 200, 10)))
            publish(minio_event("created", "photos", "a b.png", sequencer="0002"))
            wait_for(lambda: watcher.counts().get("updated", 0) == 1)
            assert (out / "a b.thumb.jpg").read_bytes() != first

            (src / "a b.png").unlink()
            publish(minio_event("deleted", "photos", "a b.png", sequencer="0003"))
            wait_for(lambda: watcher.counts().get("deleted", 0) == 1)
            assert keys_under(out) == set() and item_ids(catalog) == set()

            publish("{not json")
            wait_for(lambda: watcher.counts().get("dead-lettered", 0) == 1)
        dead = dead_letters_amqp(name)
        assert [body for body, _ in dead] == ["{not json"]
        assert "not JSON" in dead[0][1]
        # Everything was acknowledged: nothing is left in the queue.
        declared = channel.queue_declare(name, passive=True)
        assert declared.method.message_count == 0
    finally:
        channel.connection.close()
        catalog.close()
        ledger.close()


def test_bad_urls_say_what_to_write() -> None:
    from pixelfleet.errors import ConfigError
    from pixelfleet.events.amqp import parse_amqp_url

    with pytest.raises(ConfigError, match="names no queue"):
        parse_amqp_url("amqp://guest:guest@127.0.0.1:5672/")
    with pytest.raises(ConfigError, match="unknown"):
        parse_amqp_url("amqp://h/q?exchnage=x")
    with pytest.raises(ConfigError, match="exchange_type"):
        parse_amqp_url("amqp://h/q?exchange_type=broadcast")
    address = parse_amqp_url("amqps://u:p%40ss@mq.example:5671/bucket%2Fevents?vhost=prod")
    assert (address.user, address.password, address.queue) == ("u", "p@ss", "bucket/events")
    assert address.vhost == "prod" and address.tls and "p@ss" not in address.shown


def test_a_wrong_password_is_a_clear_error(amqp_url: str) -> None:
    from pixelfleet.errors import ConfigError
    from pixelfleet.events.amqp import AmqpQueue

    with pytest.raises(ConfigError, match="refused user 'guest'"):
        AmqpQueue(amqp_url.replace("guest:guest", "guest:wrong"))
