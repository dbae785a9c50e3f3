"""The rekognition labeller: what it sends (botocore Stubber), throttling, limits, and a
call against moto's Rekognition."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import Stubber
from PIL import Image

from pixelfleet.errors import ThrottledError, UnsupportedFormatError
from pixelfleet.labelers.base import ImageRef
from pixelfleet.labelers.rekognition import (
    MAX_BYTES,
    RekognitionConfig,
    RekognitionLabeler,
    make_client,
)
from pixelfleet.settings import Settings, get_settings
from pixelfleet.storage import open_storage
from pixelfleet.storage.memory import MemoryStorage

DATA = Path(__file__).resolve().parents[1] / "data"

RESPONSE = {
    "Labels": [
        {
            "Name": "Cat",
            "Confidence": 97.5,
            "Instances": [
                {
                    "BoundingBox": {"Width": 0.5, "Height": 0.6, "Left": 0.1, "Top": 0.2},
                    "Confidence": 96.0,
                }
            ],
            "Parents": [{"Name": "Animal"}, {"Name": "Pet"}],
            "Aliases": [{"Name": "Kitty"}],
            "Categories": [{"Name": "Animals and Pets"}],
        }
    ],
    "LabelModelVersion": "3.0",
}


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Settings:
    import pixelfleet.settings as settings_mod

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setattr(settings_mod, "_current", None)
    return get_settings()


def stubbed(aws: Settings, **options: Any) -> tuple[RekognitionLabeler, Stubber]:
    labeler = RekognitionLabeler(RekognitionConfig(**options), aws)
    labeler._client = make_client(aws)
    stub = Stubber(labeler._client)
    stub.activate()
    return labeler, stub


def ref(storage: Any, key: str, settings: Settings) -> ImageRef:
    entry = storage.head(key)
    assert entry is not None
    return ImageRef(storage, entry, settings)


def test_bytes_for_local_jpeg_and_png(aws: Settings) -> None:
    labeler, stub = stubbed(aws, min_confidence=70, max_labels=5)
    storage = open_storage(str(DATA))
    image = labeler.prepare(ref(storage, "flower.jpg", aws))
    assert image == {"Bytes": (DATA / "flower.jpg").read_bytes()}
    stub.add_response(
        "detect_labels", RESPONSE, {"Image": image, "MaxLabels": 5, "MinConfidence": 70}
    )
    (labels,) = labeler.label([image])
    stub.assert_no_pending_responses()
    (cat,) = labels
    assert cat.to_dict() == {
        "name": "Cat",
        "confidence": 97.5,
        "parents": ["Animal", "Pet"],
        "aliases": ["Kitty"],
        "boxes": [{"left": 0.1, "top": 0.2, "width": 0.5, "height": 0.6, "confidence": 96.0}],
        "categories": ["Animals and Pets"],
        "model": "3.0",
    }


def test_s3_object_reference_when_the_source_is_s3(aws: Settings) -> None:
    labeler, _ = stubbed(aws)

    class FakeS3(MemoryStorage):
        bucket = "photos-bucket"
        prefix = "in/2026"

    storage = FakeS3("memory://fake-s3")
    storage.url = "s3://photos-bucket/in/2026"
    storage.write("a/cat.png", (DATA / "chelsea.png").read_bytes())
    image = labeler.prepare(ref(storage, "a/cat.png", aws))
    assert image == {"S3Object": {"Bucket": "photos-bucket", "Name": "in/2026/a/cat.png"}}
    off = RekognitionLabeler(RekognitionConfig(s3_reference=False), aws)
    assert "Bytes" in off.prepare(ref(storage, "a/cat.png", aws))


def test_other_formats_and_big_images_become_jpeg(aws: Settings) -> None:
    labeler, _ = stubbed(aws, max_side=256)
    storage = MemoryStorage("memory://rek-big")
    storage.write("r.tif", (DATA / "naip_m_3607824_se_17_1_20160620_sub.tif").read_bytes())
    import numpy as np

    pixels = np.random.default_rng(1).integers(0, 255, (1800, 1800, 3), dtype=np.uint8)
    noise = Image.fromarray(pixels)
    buf = io.BytesIO()
    noise.save(buf, "PNG", compress_level=0)
    assert len(buf.getvalue()) > MAX_BYTES
    storage.write("big.png", buf.getvalue())
    for key in ("r.tif", "big.png"):
        sent = labeler.prepare(ref(storage, key, aws))["Bytes"]
        with Image.open(io.BytesIO(sent)) as im:
            assert im.format == "JPEG" and max(im.size) <= 256
    storage.write("x.txt", b"hello world, not an image")
    with pytest.raises(UnsupportedFormatError, match="x.txt"):
        labeler.prepare(ref(storage, "x.txt", aws))


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("ThrottlingException", ThrottledError),
        ("ProvisionedThroughputExceededException", ThrottledError),
        ("InvalidImageFormatException", UnsupportedFormatError),
    ],
)
def test_errors_are_mapped(aws: Settings, code: str, expected: type[Exception]) -> None:
    labeler, stub = stubbed(aws)
    stub.add_client_error("detect_labels", service_error_code=code, http_status_code=400)
    with pytest.raises(expected):
        labeler.label([{"Bytes": b"x"}])


def test_step_retries_throttling_with_backoff(
    aws: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pixelfleet.labelers import limits
    from pixelfleet.ops.labels import LabelsConfig, LabelsOp

    monkeypatch.setattr(limits, "FIRST_PAUSE", 0.05)
    op = LabelsOp(LabelsConfig.model_validate({"op": "labels", "labeler": "rekognition"}))
    assert op.options.labeler_version == "detectlabels-3.0"
    labeler = op.labeler
    assert isinstance(labeler, RekognitionLabeler)
    labeler._client = make_client(aws)
    stub = Stubber(labeler._client)
    stub.activate()
    for _ in range(2):
        stub.add_client_error("detect_labels", service_error_code="ThrottlingException")
    stub.add_response("detect_labels", RESPONSE)
    (labels,) = op.call([{"Bytes": b"x"}])
    assert labels[0].name == "Cat"
    stub.assert_no_pending_responses()


def test_against_moto(aws: Settings) -> None:
    from moto import mock_aws

    with mock_aws():
        labeler = RekognitionLabeler(RekognitionConfig(), aws)
        storage = open_storage(str(DATA))
        (labels,) = labeler.label([labeler.prepare(ref(storage, "chelsea.png", aws))])
    assert labels and all(0 <= lab.confidence <= 100 for lab in labels)
    assert labels[0].extra.get("model") == "3.0"
