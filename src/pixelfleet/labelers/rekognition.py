"""The ``rekognition`` labeller: AWS Rekognition's DetectLabels, through boto3 (``[aws]`` extra).

What is sent, decided before any call:

- a JPEG or PNG in S3 (the pipeline's source is ``s3://``) of at most 15 MB: an
  ``S3Object`` reference, so Rekognition reads it itself (the bucket must be in the
  API's region and readable by the caller);
- a JPEG or PNG of at most 5 MB elsewhere: its bytes;
- anything else (TIFF/COG, WebP, GIF, BMP, or a JPEG/PNG over those limits): a JPEG
  rendered the way thumbnails are, at most ``max_side`` pixels on its longest side; if
  even that is over 5 MB the image fails with :class:`ImageTooLargeError`.

Throttling errors (``ThrottlingException``, ``ProvisionedThroughputExceededException``,
``LimitExceededException``) become :class:`~pixelfleet.errors.ThrottledError`, which
the ``labels`` step answers with a pause shared by every worker and another try.
botocore's own retries are off, so that no process retries on its own behind the
shared limits. Bad images (``InvalidImageFormatException``, ``ImageTooLargeException``,
``InvalidS3ObjectException``) fail their object only; server errors are retried by
the runner like storage errors.

Region, endpoint and credentials come from :mod:`pixelfleet.settings` only
(``PIXELFLEET_REKOGNITION_REGION`` or ``AWS_REGION``, ``PIXELFLEET_REKOGNITION_ENDPOINT``,
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from pydantic import Field

from pixelfleet.errors import (
    ConfigError,
    CorruptInputError,
    ImageTooLargeError,
    MissingExtraError,
    StorageError,
    ThrottledError,
    UnsupportedFormatError,
)
from pixelfleet.labelers.base import Box, ImageRef, Label, Labeler, LabelerConfig
from pixelfleet.settings import Settings, get_settings

_INSTALL = "pip install 'pixelfleet[aws]'"
#: Rekognition's limits: image bytes in the request, and an S3 object it reads itself.
MAX_BYTES = 5 * 1024 * 1024
MAX_S3_BYTES = 15 * 1024 * 1024
#: Formats DetectLabels accepts.
ACCEPTED = ("JPEG", "PNG")

THROTTLING = {
    "ThrottlingException",
    "ProvisionedThroughputExceededException",
    "LimitExceededException",
}
BAD_IMAGE = {
    "InvalidImageFormatException": UnsupportedFormatError,
    "ImageTooLargeException": ImageTooLargeError,
    "InvalidS3ObjectException": CorruptInputError,
}


class RekognitionConfig(LabelerConfig):
    """Settings of the ``rekognition`` labeller.

    - ``min_confidence``, ``max_labels``: sent as DetectLabels' ``MinConfidence`` and
      ``MaxLabels`` (the service's own filter; the step filters again).
    - ``max_side``: longest side of the JPEG sent for other formats or oversized images.
    - ``s3_reference``: send ``S3Object`` for objects in S3 (false: always bytes).
    - ``model_version``: part of the labeller version; bump it when AWS announces a new
      label model to relabel everything (the model used is recorded with every result).
    """

    min_confidence: float = Field(55.0, ge=0, le=100)
    max_labels: int = Field(20, ge=1, le=1000)
    max_side: int = Field(1920, ge=80, le=4096)
    s3_reference: bool = True
    model_version: str = "3.0"


class RekognitionLabeler(Labeler):
    """Labels (with parents, aliases and boxes) from AWS Rekognition DetectLabels."""

    name = "rekognition"
    version = "detectlabels-3.0"
    Config = RekognitionConfig
    batch_size = 1

    def __init__(self, config: LabelerConfig, settings: Settings | None = None):
        super().__init__(config)
        self._settings = settings
        self._client: Any = None
        self._lock = threading.Lock()

    @classmethod
    def check_available(cls) -> None:
        """Refuse early when boto3 is missing."""
        import importlib.util

        if importlib.util.find_spec("boto3") is None:
            raise MissingExtraError(f"the rekognition labeller needs boto3: {_INSTALL}")

    @classmethod
    def version_for(cls, config: LabelerConfig) -> str:
        """``detectlabels-<model_version>``."""
        assert isinstance(config, RekognitionConfig)
        return f"detectlabels-{config.model_version}"

    @property
    def options(self) -> RekognitionConfig:
        """The labeller's settings, typed."""
        assert isinstance(self.config, RekognitionConfig)
        return self.config

    @property
    def client(self) -> Any:
        """The boto3 Rekognition client (made on first use; thread-safe)."""
        with self._lock:
            if self._client is None:
                self._client = make_client(self._settings or get_settings())
            return self._client

    def prepare(self, image: ImageRef) -> dict[str, Any]:
        """The ``Image`` parameter of DetectLabels for this image (limits checked here)."""
        from pixelfleet.imagery.reading import sniff_format

        size = image.entry.size
        head = image.storage.read(image.key, 0, 64)
        try:
            fmt = sniff_format(head)
        except UnsupportedFormatError as exc:
            raise UnsupportedFormatError(f"{image.label} {exc}") from None
        if fmt in ACCEPTED:
            where = image.s3_location()
            if where is not None and self.options.s3_reference and size <= MAX_S3_BYTES:
                return {"S3Object": {"Bucket": where[0], "Name": where[1]}}
            if size <= MAX_BYTES:
                return {"Bytes": image.read()}
        return {"Bytes": self._as_jpeg(image, fmt)}

    def label(self, batch: Sequence[Any]) -> list[list[Label]]:
        """One DetectLabels call per image (the API labels one image per call)."""
        return [self._detect(item) for item in batch]

    def _as_jpeg(self, image: ImageRef, fmt: str) -> bytes:
        from pixelfleet.imagery.pictures import ThumbnailOptions
        from pixelfleet.imagery.thumbnails import render_object

        config = ThumbnailOptions(size=self.options.max_side, output_format="jpeg", quality=90)
        data = render_object(image.storage, image.entry, config, image.settings)
        if len(data) > MAX_BYTES:
            raise ImageTooLargeError(
                f"{image.label}: as a {self.options.max_side} px JPEG it is still "
                f"{len(data):,} bytes, over Rekognition's {MAX_BYTES:,}; lower options.max_side"
            )
        return data

    def _detect(self, image: dict[str, Any]) -> list[Label]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self.client.detect_labels(
                Image=image,
                MaxLabels=self.options.max_labels,
                MinConfidence=self.options.min_confidence,
            )
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            message = str(error.get("Message", "")) or code
            where = _describe(image)
            if code in THROTTLING:
                raise ThrottledError(f"Rekognition throttled a call ({code})") from exc
            if code in BAD_IMAGE:
                raise BAD_IMAGE[code](
                    f"{where}: Rekognition refused the image: {code}: {message}"
                ) from None
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            if status >= 500 or code in ("InternalServerError", "ServiceUnavailable"):
                raise StorageError(f"Rekognition failed for {where}: {code}: {message}") from exc
            raise ConfigError(
                f"Rekognition refused {where}: {code}: {message} (check the credentials, the "
                "region, PIXELFLEET_REKOGNITION_REGION, and that it may read the bucket)"
            ) from exc
        except BotoCoreError as exc:
            raise StorageError(f"cannot reach Rekognition: {exc}") from exc
        model = str(response.get("LabelModelVersion", ""))
        return [to_label(item, model) for item in response.get("Labels", [])]


def to_label(item: dict[str, Any], model: str = "") -> Label:
    """One label of a DetectLabels response."""
    boxes = []
    for instance in item.get("Instances", []) or []:
        box = instance.get("BoundingBox") or {}
        if box:
            boxes.append(
                Box(
                    left=float(box.get("Left", 0.0)),
                    top=float(box.get("Top", 0.0)),
                    width=float(box.get("Width", 0.0)),
                    height=float(box.get("Height", 0.0)),
                    confidence=float(instance["Confidence"]) if "Confidence" in instance else None,
                )
            )
    extra: dict[str, Any] = {}
    categories = [c["Name"] for c in item.get("Categories", []) or [] if "Name" in c]
    if categories:
        extra["categories"] = categories
    if model:
        extra["model"] = model
    return Label(
        name=str(item["Name"]),
        confidence=float(item.get("Confidence", 0.0)),
        parents=tuple(p["Name"] for p in item.get("Parents", []) or [] if "Name" in p),
        aliases=tuple(a["Name"] for a in item.get("Aliases", []) or [] if "Name" in a),
        boxes=tuple(boxes),
        extra=extra,
    )


def make_client(settings: Settings) -> Any:
    """A boto3 Rekognition client configured from pixelfleet's settings alone."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError as exc:
        raise MissingExtraError(f"the rekognition labeller needs boto3: {_INSTALL}") from exc
    s3 = settings.s3
    if not (s3.access_key_id and s3.secret_access_key):
        raise ConfigError(
            "no credentials for Rekognition: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(and AWS_SESSION_TOKEN for temporary keys)"
        )
    session = boto3.session.Session(
        aws_access_key_id=s3.access_key_id,
        aws_secret_access_key=s3.secret_access_key,
        aws_session_token=s3.session_token,
        region_name=settings.rekognition_region or "us-east-1",
    )
    return session.client(
        "rekognition",
        endpoint_url=settings.rekognition_endpoint,
        # One attempt: throttling is retried by the labels step, under the shared limits.
        config=Config(
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=10,
            read_timeout=60,
        ),
    )


def _describe(image: dict[str, Any]) -> str:
    ref = image.get("S3Object")
    if ref:
        return f"s3://{ref.get('Bucket')}/{ref.get('Name')}"
    return f"an image of {len(image.get('Bytes', b'')):,} bytes"
