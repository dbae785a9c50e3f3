"""Plain data passed between the planner, the executors, the workers and the ledger.

Everything here converts to and from JSON-compatible dicts: tasks and results
cross process and machine boundaries as JSON, never as pickles.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

EntryState = Literal["done", "skipped", "failed"]
TaskState = Literal["pending", "running", "done", "failed"]


@dataclass(frozen=True)
class Entry:
    """One object in a storage: its key relative to the storage root, and its version."""

    key: str
    size: int
    etag: str
    mtime: float = 0.0
    metadata: dict[str, str] = field(default_factory=dict, compare=False)

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
    """One object written (or found current) by a step."""

    key: str
    size: int
    step: str
    #: IANA media type (e.g. ``image/tiff; application=geotiff; profile=cloud-optimized``),
    #: and STAC asset roles (``visual``, ``overview``, ``metadata``...), when the op knows them.
    media_type: str | None = None
    roles: list[str] | None = None


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

    @property
    def permanent(self) -> bool:
        """True when retrying cannot help: every failure is an input error."""
        from pixelfleet.errors import is_permanent

        types = [e.error_type for e in self.entries if e.state == "failed"]
        if self.error_type:
            types.append(self.error_type)
        return bool(types) and all(is_permanent(t or "") for t in types)

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
        )


def one_line(text: str, limit: int = 500) -> str:
    """Squash an error message to one line of at most ``limit`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def stable_hash(value: Any, length: int = 16) -> str:
    """Hash a JSON-compatible value the same way on every machine and run."""
    blob = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]
