"""The ``Labeler`` interface: an image in, labels out.

A labeller says what an image shows, as :class:`Label` s: a name, a confidence from 0
to 100, and optionally broader names (``parents``), other names (``aliases``) and
where in the image the thing is (``boxes``). Each labeller has a ``name`` and a
``version``; the ``labels`` step stores both with every result, and a new version
makes the step label again.

Work happens in two phases, so that reading and decoding never hold a rate-limited
slot of a paid service: :meth:`Labeler.prepare` turns one :class:`ImageRef` into
whatever the labeller needs (decoded pixels, bytes, an S3 reference) and may raise an
:class:`~pixelfleet.errors.InputError` for that image alone; :meth:`Labeler.label`
labels a batch of prepared images in one *call*, the unit that
``max_concurrency`` and ``max_calls_per_second`` limit. A call the service refuses
for its own rate limits raises :class:`~pixelfleet.errors.ThrottledError`: the step
backs off (every process of the run with it) and tries again.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from pixelfleet.models import Entry
from pixelfleet.settings import Settings
from pixelfleet.sources.listing import compile_globs
from pixelfleet.storage.base import Storage


@dataclass(frozen=True)
class Box:
    """Where a labelled thing is: fractions (0-1) of the image's width and height."""

    left: float
    top: float
    width: float
    height: float
    confidence: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The box as JSON-compatible data (rounded to 4 decimals)."""
        out: dict[str, Any] = {
            "left": round(self.left, 4),
            "top": round(self.top, 4),
            "width": round(self.width, 4),
            "height": round(self.height, 4),
        }
        if self.confidence is not None:
            out["confidence"] = round(self.confidence, 2)
        return out


@dataclass(frozen=True)
class Label:
    """One thing an image shows, with the labeller's confidence (0-100)."""

    name: str
    confidence: float
    parents: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    boxes: tuple[Box, ...] = ()
    #: Extra figures a labeller reports with the label (e.g. a mean index value).
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The label as JSON-compatible data; empty optional fields are left out."""
        out: dict[str, Any] = {"name": self.name, "confidence": round(self.confidence, 2)}
        if self.parents:
            out["parents"] = list(self.parents)
        if self.aliases:
            out["aliases"] = list(self.aliases)
        if self.boxes:
            out["boxes"] = [b.to_dict() for b in self.boxes]
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Label:
        """Build a label from :meth:`to_dict` output."""
        known = {"name", "confidence", "parents", "aliases", "boxes"}
        return cls(
            name=str(data["name"]),
            confidence=float(data["confidence"]),
            parents=tuple(data.get("parents", ())),
            aliases=tuple(data.get("aliases", ())),
            boxes=tuple(Box(**b) for b in data.get("boxes", ())),
            extra={k: v for k, v in data.items() if k not in known},
        )


@dataclass
class ImageRef:
    """One source image as a labeller sees it: where it is, and ways to read it."""

    storage: Storage
    entry: Entry
    settings: Settings

    @property
    def key(self) -> str:
        """The object's key in its storage."""
        return self.entry.key

    @property
    def label(self) -> str:
        """The object's full URL, for messages."""
        return self.storage.describe(self.entry.key)

    def read(self) -> bytes:
        """The whole object."""
        return self.storage.read(self.entry.key)

    def local_path(self) -> str | None:
        """A filesystem path, for local storage; None otherwise."""
        return self.storage.local_path(self.entry.key)

    def s3_location(self) -> tuple[str, str] | None:
        """``(bucket, key)`` of the object when it lives in S3, else None."""
        bucket = getattr(self.storage, "bucket", None)
        if not isinstance(bucket, str) or not self.storage.url.lower().startswith("s3://"):
            return None
        prefix = str(getattr(self.storage, "prefix", "") or "")
        return bucket, f"{prefix}/{self.entry.key}" if prefix else self.entry.key


class LabelerConfig(BaseModel):
    """Base of a labeller's own settings (a step's ``options``); unknown fields are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Labeler(ABC):
    """Says what images show. Subclasses set ``name``, ``version`` and ``Config``, and
    implement :meth:`label` (and usually :meth:`prepare`)."""

    name: ClassVar[str]
    #: Changes whenever the labels for the same image may change (model, thresholds...).
    version: ClassVar[str]
    Config: ClassVar[type[LabelerConfig]] = LabelerConfig
    #: Images per call by default (the step's ``batch_size`` overrides it).
    batch_size: ClassVar[int] = 1

    def __init__(self, config: LabelerConfig):
        self.config = config

    @classmethod
    def check_available(cls) -> None:
        """Raise :class:`~pixelfleet.errors.MissingExtraError` if a dependency is missing.

        Called when a pipeline is loaded, so a missing extra stops the run before it starts.
        Most labellers need nothing beyond pixelfleet itself.
        """
        return None

    @classmethod
    def version_for(cls, config: LabelerConfig) -> str:
        """The version for these settings (by default the class's ``version``)."""
        return cls.version

    def prepare(self, image: ImageRef) -> Any:
        """Read and decode one image into what :meth:`label` takes (by default the ref).

        Raise an :class:`~pixelfleet.errors.InputError` for an image that cannot be used.
        """
        return image

    @abstractmethod
    def label(self, batch: Sequence[Any]) -> list[list[Label]]:
        """Label prepared images in one call: one list of labels per image, in order.

        Raise :class:`~pixelfleet.errors.ThrottledError` when the service refuses
        the call for its rate limits.
        """


class StaticConfig(LabelerConfig):
    """Settings of the ``static`` labeller.

    - ``labels``: name -> confidence given to every image;
    - ``match``: glob -> {name: confidence}, given to images whose key matches.
    """

    labels: dict[str, float] = {}
    match: dict[str, dict[str, float]] = {}
    version: str = Field("1", description="bump it to relabel with the same labels")


class StaticLabeler(Labeler):
    """Labels from the pipeline itself: the reference labeller, and a way to tag folders
    (``match = {"naip/**" = {aerial = 100}}``). Reads no pixels."""

    name = "static"
    version = "1"
    Config = StaticConfig
    batch_size = 64

    @classmethod
    def version_for(cls, config: LabelerConfig) -> str:
        """The ``version`` setting."""
        assert isinstance(config, StaticConfig)
        return config.version

    def label(self, batch: Sequence[Any]) -> list[list[Label]]:
        """The configured labels of each image."""
        assert isinstance(self.config, StaticConfig)
        matchers = [(compile_globs([g]), labels) for g, labels in self.config.match.items()]
        out = []
        for image in batch:
            found = dict(self.config.labels)
            for matches, labels in matchers:
                if matches(image.key):
                    found.update(labels)
            out.append([Label(name, float(conf)) for name, conf in found.items()])
        return out
