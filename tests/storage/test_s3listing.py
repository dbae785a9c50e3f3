"""The hand-signed S3 listing: its requests are signed exactly as botocore signs them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest


def test_s3_listing_is_signed_like_botocore_signs(monkeypatch: pytest.MonkeyPatch) -> None:
    botocore_auth = pytest.importorskip("botocore.auth")
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from pixelfleet.storage.s3listing import BucketLister

    when = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    lister = BucketLister(
        "s3://my-bucket/pre",
        endpoint="http://127.0.0.1:9000",
        bucket="my-bucket",
        region="eu-west-3",
        credentials=lambda: ("AKIDEXAMPLE", "secret/key+example", "session-token"),
        requester_pays=True,
    )
    query = {"list-type": "2", "prefix": "pre/a b+c/ü~", "continuation-token": "x/y=="}
    ours = lister.request(query, now=when)
    theirs = AWSRequest(
        method="GET", url=ours.full_url, headers={"x-amz-request-payer": "requester"}
    )
    monkeypatch.setattr(botocore_auth, "get_current_datetime", lambda: when.replace(tzinfo=None))
    credentials = Credentials("AKIDEXAMPLE", "secret/key+example", "session-token")
    botocore_auth.S3SigV4Auth(credentials, "s3", "eu-west-3").add_auth(theirs)
    assert ours.get_header("Authorization") == theirs.headers["Authorization"]
