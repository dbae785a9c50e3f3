"""Plain data passed between the planner, the executors, the workers and the ledger.

Everything here converts to and from JSON-compatible dicts: tasks and results
cross process and machine boundaries as JSON, never as pickles.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pixelfleet.errors import PERMANENT_ERRORS

#: ``skipped-missing``: the object was listed (e.g. in an S3 Inventory) but was gone when read.
EntryState = Literal["done", "skipped", "failed", "skipped-missing"]


@dataclass(frozen=True)
class Entry:
    """One object in a storage: its key relative to the storage root, and its version."""

    key: str
    size: int
    etag: str
    mtime: float = 0.0
    metadata: dict[str, str] = field(default_factory=dict, compare=False)
    #: Why the object is listed but must never be read (a symbolic link or a FIFO in a
    #: local folder), else None. The runner records such an entry as skipped with this
    #: reason, and never gives it to a worker. Not part of :meth:`to_dict`.
    skip: str | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """Return the entry as a JSON-compatible dict (metadata left out)."""
        return {"key": self.key, "size": self.size, "etag": self.etag, "mtime": self.mtime}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Entry:
        """Build an entry from :meth:`to_dict` output."""
        return cls(
            key=data["key"],
            size=int(data["size"]),
            etag=str(data["etag"]),
            mtime=float(data.get("mtime", 0.0)),
        )


@dataclass(frozen=True)
class Task:
    """A unit of work: some entries and the pipeline steps to run on each of them.

    ``id`` is derived from the entries' keys and etags and the pipeline's settings, so
    the same work always has the same id and a changed source gets a new one.
    """

    id: str
    group: str
    entries: tuple[Entry, ...]

    @property
    def size(self) -> int:
        """Total bytes of the task's source objects."""
        return sum(e.size for e in self.entries)

    def to_dict(self) -> dict[str, Any]:
        """Return the task as a JSON-compatible dict."""
        return {"id": self.id, "group": self.group, "entries": [e.to_dict() for e in self.entries]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Task:
        """Build a task from :meth:`to_dict` output."""
        return cls(
            id=data["id"],
            group=data.get("group", ""),
            entries=tuple(Entry.from_dict(e) for e in data["entries"]),
        )


@dataclass
class OutputRecord:
    """One object written (or found current) by a step.

    The optional fields describe the output as an asset of the source's STAC item
    (see ``docs/DESIGN.md``, "Catalog"): ``asset`` is its key in the item's assets
    (default: the step's name, numbered when a step writes several), ``roles`` its
    STAC roles (``["thumbnail"]``, ``["overview"]``, ``["data"]``...), ``media_type``
    its MIME type and ``title`` a human title.
    """

    key: str
    size: int
    step: str
    #: Catalog properties the step found for the source object, such as
    #: ``{"pixelfleet:labels": [...]}``; merged into :attr:`EntryResult.properties`.
    properties: dict[str, Any] = field(default_factory=dict)
    #: IANA media type (e.g. ``image/tiff; application=geotiff; profile=cloud-optimized``),
    #: and STAC asset roles (``visual``, ``overview``, ``metadata``...), when the op knows them.
    media_type: str | None = None
    roles: list[str] | None = None
    title: str | None = None
    asset: str | None = None
    #: More fields of the output's STAC asset, such as a composite's ``raster:bands``
    #: (statistics and a histogram per channel); kept in the object's metadata too.
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass
class EntryResult:
    """What happened to one entry of a task."""

    key: str
    etag: str
    state: EntryState
    outputs: list[OutputRecord] = field(default_factory=list)
    error_type: str | None = None
    error: str | None = None
    seconds: float = 0.0
    #: Catalog properties of the source object from every step that ran on it (e.g. labels),
    #: for the catalog to put on the object's STAC item. Empty for skipped objects.
    properties: dict[str, Any] = field(default_factory=dict)
    #: The entry's STAC item (a JSON dict), when the pipeline has a ``[catalog]``.
    item: dict[str, Any] | None = None
    #: True when the entry failed with an error retrying cannot help (an instance of
    #: :data:`~pixelfleet.errors.PERMANENT_ERRORS`), as decided by the worker.
    permanent: bool = False


@dataclass
class TaskResult:
    """What a worker reports for a task, or what the executor reports when the worker died."""

    task_id: str
    state: Literal["done", "failed"]
    entries: list[EntryResult] = field(default_factory=list)
    error_type: str | None = None
    error: str | None = None
    seconds: float = 0.0
    worker: str = ""
    #: True when the task failed and retrying cannot help: every failure in it is
    #: permanent (see :data:`~pixelfleet.errors.PERMANENT_ERRORS`). Set by the worker,
    #: which has the exceptions; an executor's "worker lost" or "timed out" is not.
    permanent: bool = False
    #: What the worker counted while it ran the task (storage requests, labeller calls),
    #: as flat ``kind|label|label`` keys: see :mod:`pixelfleet.metrics`.
    metrics: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return the result as a JSON-compatible dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskResult:
        """Build a result from :meth:`to_dict` output."""
        entries = [
            EntryResult(**{**e, "outputs": [OutputRecord(**o) for o in e.get("outputs", [])]})
            for e in data.get("entries", [])
        ]
        return cls(**{**data, "entries": entries})

    @classmethod
    def crashed(cls, task_id: str, error: BaseException, worker: str = "") -> TaskResult:
        """A result for a task whose worker failed outside the per-entry error handling."""
        return cls(
            task_id=task_id,
            state="failed",
            error_type=type(error).__name__,
            error=one_line(str(error)) or type(error).__name__,
            worker=worker,
            permanent=isinstance(error, PERMANENT_ERRORS),
        )


@dataclass
class RunCounts:
    """What a run did, task by task and object by object (kept with the run in the ledger)."""

    tasks_planned: int = 0
    tasks_skipped: int = 0  # already done by an earlier run
    tasks_done: int = 0
    tasks_failed: int = 0
    retries: int = 0
    objects_written: int = 0
    objects_current: int = 0  # outputs already current: not rewritten
    objects_failed: int = 0
    objects_skipped: int = 0  # in tasks skipped as done
    objects_missing: int = 0  # listed, but gone when read
    bytes: int = 0
    items_indexed: int = 0
    objects_unrendered: int = 0  # ``index``: items whose outputs are not made (or current) yet
    tasks_retried: int = 0  # by ``pixelfleet retry``
    requests: int = 0  # storage requests the workers made (as their results report them)
    #: Listed but never read, with a reason (``Entry.skip``: a symbolic link, a FIFO):
    #: skipped, not failed.
    objects_refused: int = 0

    def to_dict(self) -> dict[str, int]:
        """The counts as JSON-ready numbers."""
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> RunCounts:
        """Counts as stored; names this version does not know are ignored."""
        known = cls.__dataclass_fields__
        return cls(**{k: int(v) for k, v in (data or {}).items() if k in known})


def combined_etag(entries: Any) -> str:
    """One etag for several objects (a scene's band files): a hash of every entry's key
    and etag, so it changes when any of them changes, or one is added or removed."""
    return stable_hash(sorted([e.key, e.etag] for e in entries), 32)


def one_line(text: str, limit: int = 500) -> str:
    """Squash an error message to one line of at most ``limit`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def stable_hash(value: Any, length: int = 16) -> str:
    """Hash a JSON-compatible value the same way on every machine and run."""
    blob = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]
