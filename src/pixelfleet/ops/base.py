"""The ``Op`` interface: one pipeline step applied to one source object.

An op reads a source entry through :class:`OpContext`, writes its outputs through
:meth:`OpContext.write`, and says which keys it writes (so a rerun can see that they
are already current and skip the work).
"""

from __future__ import annotations

import posixpath
import urllib.parse
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from pixelfleet import __version__
from pixelfleet.errors import ConfigError
from pixelfleet.models import Entry, OutputRecord, stable_hash
from pixelfleet.settings import Settings
from pixelfleet.storage.base import Storage, check_key

if TYPE_CHECKING:
    from pixelfleet.pipeline import Partition


class OpConfig(BaseModel):
    """Base of every op's settings: unknown fields are errors, so typos are caught on load."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    op: str

    def settings_hash(self) -> str:
        """A short hash of every setting that changes the outputs."""
        return stable_hash(self.model_dump(mode="json"))


@dataclass
class OpContext:
    """What an op may touch: the source and output storages and the process settings."""

    source: Storage
    output: Storage
    settings: Settings
    #: How the pipeline groups source objects into tasks (task-scope ops read band
    #: names from its pattern); None outside a pipeline.
    partition: Partition | None = field(default=None)

    def write(
        self,
        op: Op,
        entry: Entry,
        key: str,
        data: bytes,
        content_type: str | None = None,
        roles: Sequence[str] = (),
    ) -> OutputRecord:
        """Write one output atomically, tagged with the provenance that makes it current."""
        metadata = op.provenance(entry)
        if content_type:
            metadata["content-type"] = content_type
        written = self.output.write(key, data, metadata)
        return OutputRecord(
            key=key,
            size=written.size,
            step=op.name,
            media_type=content_type,
            roles=list(roles) or None,
        )

    def write_file(
        self,
        op: Op,
        entry: Entry,
        key: str,
        path: str,
        content_type: str | None = None,
        roles: Sequence[str] = (),
    ) -> OutputRecord:
        """Like :meth:`write`, from a local file, for outputs too big to hold in memory.

        The file is given up: local storage may move it into place.
        """
        metadata = op.provenance(entry)
        if content_type:
            metadata["content-type"] = content_type
        written = self.output.write_file(key, path, metadata, consume=True)
        return OutputRecord(
            key=key,
            size=written.size,
            step=op.name,
            media_type=content_type,
            roles=list(roles) or None,
        )


def render_key(template: str, source_key: str) -> str:
    """Turn a key template into an output key that mirrors the source key's folders.

    Fields: ``{stem}`` (file name without extension), ``{name}``, ``{ext}`` (without
    the dot), ``{dir}`` and ``{key}``. The result is placed in the source key's folder
    unless the template uses ``{dir}`` or ``{key}`` itself.
    """
    check_key(source_key)
    folder, name = posixpath.split(source_key)
    stem, ext = posixpath.splitext(name)
    fields = {"stem": stem, "name": name, "ext": ext.lstrip("."), "dir": folder, "key": source_key}
    try:
        rendered = template.format(**fields)
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(
            f"key template {template!r} is invalid ({exc}); use the fields "
            "{stem}, {name}, {ext}, {dir}, {key}"
        ) from None
    if "{dir}" not in template and "{key}" not in template and folder:
        rendered = f"{folder}/{rendered}"
    # "{dir}/x" at the root renders as "/x": drop empty parts, which cannot escape the root.
    return check_key("/".join(part for part in rendered.split("/") if part))


def group_entry(group: str, entries: Sequence[Entry]) -> Entry:
    """One entry standing for a whole task's entries, for task-scope ops' provenance.

    Its key is the task's group (a scene id), its size the sum of sizes and its etag a
    hash of every entry's key and etag: an output made from it is current exactly as
    long as none of the task's objects changed, and none was added or removed.
    """
    etag = stable_hash(sorted([e.key, e.etag] for e in entries), 32)
    return Entry(key=group, size=sum(e.size for e in entries), etag=etag)


class Op(ABC):
    """A pipeline step. Subclasses set ``name`` and ``Config`` and implement two methods.

    Most ops work on one object at a time (``scope = "entry"``: :meth:`output_keys`
    and :meth:`run`). An op that needs all of a task's objects at once (a scene's band
    files) sets ``scope = "task"`` and implements :meth:`output_keys_group` and
    :meth:`run_group` instead; the worker calls those once per task.
    """

    name: ClassVar[str]
    Config: ClassVar[type[OpConfig]]
    scope: ClassVar[Literal["entry", "task"]] = "entry"

    def __init__(self, config: OpConfig):
        self.config = config
        self.settings_hash = config.settings_hash()

    @abstractmethod
    def output_keys(self, entry: Entry) -> list[str]:
        """The keys this op writes for ``entry``."""

    @abstractmethod
    def run(self, ctx: OpContext, entry: Entry) -> list[OutputRecord]:
        """Process one entry and write its outputs; raise an ``InputError`` for bad input."""

    def output_keys_group(self, group: str, entries: Sequence[Entry]) -> list[str]:
        """The keys a task-scope op writes for a task (``group`` is the task's group)."""
        raise NotImplementedError(f"op {self.name!r} works on single objects (scope 'entry')")

    def run_group(self, ctx: OpContext, group: str, entries: Sequence[Entry]) -> list[OutputRecord]:
        """Process a whole task's entries at once and write the outputs (scope ``"task"``).

        Write through :meth:`OpContext.write` with :func:`group_entry` as the entry, so
        the outputs carry the provenance :meth:`is_current` checks. Raise an
        ``InputError`` naming the bad object for bad input.
        """
        raise NotImplementedError(f"op {self.name!r} works on single objects (scope 'entry')")

    def provenance(self, entry: Entry) -> dict[str, str]:
        """Metadata stored with every output: what made it, from which version of the source."""
        return {
            "source-key": urllib.parse.quote(entry.key, safe="/"),
            "source-etag": entry.etag,
            "op": self.name,
            "settings": self.settings_hash,
            "version": __version__,
        }

    def is_current(self, output: Entry | None, entry: Entry) -> bool:
        """Tell whether an existing output was made from this source version with these settings."""
        if output is None:
            return False
        meta = output.metadata
        return meta.get("source-etag") == entry.etag and meta.get("settings") == self.settings_hash

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """The op's settings schema, for docs and error messages."""
        return cls.Config.model_json_schema()
