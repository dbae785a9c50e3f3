"""The ``Op`` interface: one pipeline step applied to one source object.

An op reads a source entry through :class:`OpContext`, writes its outputs through
:meth:`OpContext.write`, and says which keys it writes (so a rerun can see that they
are already current and skip the work).

The worker uses a pipeline's ops in one of two modes (:data:`Mode`): ``"render"``
(``pixelfleet run``) calls :meth:`Op.run` for every output that is not current, and
``"index"`` (``pixelfleet index``) never does: it only describes the outputs that are
already current and asks :meth:`Op.item_properties` about them, to rebuild catalog items.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import posixpath
import urllib.parse
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict

from pixelfleet import __version__
from pixelfleet.errors import ConfigError
from pixelfleet.models import Entry, OutputRecord, combined_etag, stable_hash
from pixelfleet.settings import Settings
from pixelfleet.storage.base import Storage, check_key

#: How the worker uses a pipeline's ops on an object (see :func:`pixelfleet.worker.process_entry`):
#:
#: - ``"render"``: outputs that are not current are made by :meth:`Op.run` (or
#:   :meth:`Op.run_group`); the op reads and checks the source itself.
#: - ``"index"``: nothing is made and no op reads the source. Outputs found current are
#:   described with :meth:`Op.current_record` (the others are left out) and passed to
#:   :meth:`Op.item_properties`, which must therefore work from the outputs alone. The
#:   source is checked as ``run`` checks it (same limits, same messages) when its item is
#:   built, and only its header is read.
Mode = Literal["render", "index"]


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
    #: The pipeline's scene pattern(s) (``partition.pattern``), from which task-scope ops
    #: read band names; None outside a scene pipeline.
    scene_pattern: str | list[str] | None = field(default=None)

    def write(
        self,
        op: Op,
        entry: Entry,
        key: str,
        data: bytes,
        content_type: str | None = None,
        *,
        roles: Sequence[str] | None = None,
        title: str | None = None,
        asset: str | None = None,
        fields: dict[str, Any] | None = None,
    ) -> OutputRecord:
        """Write one output atomically, tagged with the provenance that makes it current.

        ``roles``, ``title``, ``asset`` and ``fields`` (more asset fields, such as
        ``raster:bands``) describe the output as an asset of the source's STAC item;
        they are stored with the object too, so an output found current later
        describes itself the same way (:meth:`Op.current_record`).
        """
        record = _describe(op, key, content_type, roles, title, asset, fields)
        _guard()
        written = self.output.write(key, data, _metadata(op, entry, record))
        record.size = written.size
        return record

    def write_file(
        self,
        op: Op,
        entry: Entry,
        key: str,
        path: str,
        content_type: str | None = None,
        *,
        roles: Sequence[str] | None = None,
        title: str | None = None,
        asset: str | None = None,
        fields: dict[str, Any] | None = None,
    ) -> OutputRecord:
        """Like :meth:`write`, from a local file, for outputs too big to hold in memory.

        The file is given up: local storage may move it into place.
        """
        record = _describe(op, key, content_type, roles, title, asset, fields)
        _guard()
        written = self.output.write_file(key, path, _metadata(op, entry, record), consume=True)
        record.size = written.size
        return record


#: Called before every output is written, in the thread that writes it; it raises to
#: refuse the write. A fleet worker sets it to check that it still holds the task's
#: lease, so a worker paused past its lease never replaces a newer attempt's outputs.
write_guard: ContextVar[Callable[[], None] | None] = ContextVar("write_guard", default=None)


def _guard() -> None:
    check = write_guard.get()
    if check is not None:
        check()


def _describe(
    op: Op,
    key: str,
    content_type: str | None,
    roles: Sequence[str] | None,
    title: str | None,
    asset: str | None,
    fields: dict[str, Any] | None = None,
) -> OutputRecord:
    """The record of an output about to be written (its size filled in once written)."""
    chosen = list(roles) if roles is not None else op.asset_roles(key)
    return OutputRecord(
        key=key,
        size=0,
        step=op.name,
        media_type=content_type,
        roles=chosen or None,
        title=title,
        asset=asset,
        fields=dict(fields or {}),
    )


def _metadata(op: Op, entry: Entry, record: OutputRecord) -> dict[str, str]:
    """Provenance plus the asset description, stored with the object."""
    metadata = op.provenance(entry)
    if record.media_type:
        metadata["content-type"] = record.media_type
    if record.roles:
        metadata["roles"] = ",".join(record.roles)
    if record.title:
        metadata["title"] = urllib.parse.quote(record.title)
    if record.asset:
        metadata["asset"] = record.asset
    if record.fields:
        metadata.update(op.pack_fields(record.fields))
    return metadata


def check_percentiles(value: tuple[float, float]) -> tuple[float, float]:
    """Validate a ``[low, high]`` percentile pair (for ops' settings models)."""
    low, high = value
    if not 0 <= low < high <= 100:
        raise ValueError(
            f"percentiles {list(value)} must be [low, high] with 0 <= low < high <= 100, "
            "such as [2, 98]"
        )
    return value


def check_colour(value: str) -> str:
    """Validate a CSS colour name or ``#rrggbb`` (for ops' ``background`` settings)."""
    from PIL import ImageColor

    try:
        ImageColor.getrgb(value)
    except ValueError:
        raise ValueError(
            f"background {value!r} is not a colour; use a CSS name such as 'white' or '#rrggbb'"
        ) from None
    return value


#: A ``[low, high]`` percentile pair setting, validated.
Percentiles = Annotated[tuple[float, float], AfterValidator(check_percentiles)]
#: A colour setting (CSS name or ``#rrggbb``), validated.
Colour = Annotated[str, AfterValidator(check_colour)]


def render_key(template: str, source_key: str) -> str:
    """Turn a key template into an output key that mirrors the source key's folders.

    Fields: ``{stem}`` (file name without extension), ``{name}``, ``{ext}`` (without
    the dot), ``{dir}`` and ``{key}``. The result is placed in the source key's folder
    unless the template uses ``{dir}`` or ``{key}`` itself.
    """
    return _render_key(template, source_key)


# The worker asks for an object's output keys twice (are they current? then the op's
# run), and a task's objects are asked about together: the last few thousand are kept.
@functools.lru_cache(maxsize=4096)
def _render_key(template: str, source_key: str) -> str:
    check_key(source_key)
    folder, name = posixpath.split(source_key)
    stem, ext = posixpath.splitext(name)
    fields = {"stem": stem, "name": name, "ext": ext.lstrip("."), "dir": folder, "key": source_key}
    try:
        rendered = template.format(**fields)
    except KeyError as exc:
        raise ConfigError(
            f"key template {template!r} has an unknown field {{{exc.args[0]}}}; use the fields "
            "{stem}, {name}, {ext}, {dir}, {key}"
        ) from None
    except (IndexError, ValueError) as exc:
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
    return Entry(key=group, size=sum(e.size for e in entries), etag=combined_etag(entries))


class Op(ABC):
    """A pipeline step. Subclasses set ``name`` and ``Config`` and implement two methods.

    Most ops work on one object at a time (``scope = "entry"``: :meth:`output_keys`
    and :meth:`run`). An op that needs all of a task's objects at once (a scene's band
    files) sets ``scope = "task"`` and implements :meth:`output_keys_group` and
    :meth:`run_group` instead; the worker calls those once per task.

    In ``"index"`` mode (:data:`Mode`) neither :meth:`run` nor :meth:`run_group` nor
    :meth:`start_task` is called: an op's part of a catalog item then comes from
    :meth:`current_record` and :meth:`item_properties` alone.
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

    def start_task(self, ctx: OpContext, entries: Sequence[Entry]) -> None:  # noqa: B027
        """Called once per task, before its entries are processed one by one.

        Ops that work on several objects at once (batching, as the ``labels`` step
        does) override it to see what is coming; the default does nothing.
        """

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

    def check_inputs(self, ctx: OpContext, group: str, entries: Sequence[Entry]) -> None:  # noqa: B027
        """Check the step's settings against real inputs, from their headers only.

        A dry run calls it on a sample (the first task, and the first object of each
        file type), so that a setting no input can satisfy (``bands = [4, 3, 2]`` on
        3-band files) fails before the run rather than in every task. ``entries`` are
        the sampled objects (a task-scope op gets a whole task, ``group`` its group).
        Raise a :class:`~pixelfleet.errors.ConfigError` naming the setting, the file and
        the fix; leave problems of one object (a corrupt file) to the run. The default
        checks nothing.
        """

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

    def asset_roles(self, key: str) -> list[str]:
        """STAC roles of the output ``key`` when the op does not pass any to ``write``.

        The default is none; the thumbnail step says ``["thumbnail"]``.
        """
        return []

    def current_record(self, output: Entry) -> OutputRecord:
        """Describe an output found current (not rewritten) from its stored metadata."""
        meta = output.metadata
        roles = [r for r in meta.get("roles", "").split(",") if r] or self.asset_roles(output.key)
        return OutputRecord(
            key=output.key,
            size=output.size,
            step=self.name,
            media_type=meta.get("content-type") or None,
            roles=roles or None,
            title=urllib.parse.unquote(meta["title"]) if meta.get("title") else None,
            asset=meta.get("asset") or None,
            fields=self.unpack_fields(meta),
        )

    def pack_fields(self, fields: dict[str, Any]) -> dict[str, str]:
        """An output's extra asset fields as object metadata (one compact JSON value).

        S3 keeps 2 KB of metadata per object, all of it counted: an op whose fields
        may be large overrides this and :meth:`unpack_fields` to store them compactly.
        """
        return {"fields": json.dumps(fields, separators=(",", ":"), sort_keys=True)}

    def unpack_fields(self, metadata: dict[str, str]) -> dict[str, Any]:
        """The extra asset fields :meth:`pack_fields` stored (none when absent or unreadable)."""
        try:
            fields = json.loads(metadata.get("fields") or "{}")
        except ValueError:
            return {}
        return fields if isinstance(fields, dict) else {}

    def item_properties(
        self, ctx: OpContext, entry: Entry, outputs: Sequence[OutputRecord]
    ) -> dict[str, Any]:
        """Properties this step adds to the source's STAC item (default: none).

        Called after the step ran for ``entry`` or found its outputs current, with
        the step's own ``outputs`` (in ``"index"`` mode, only the current ones, and
        :meth:`run` was not called); an op that computes something searchable (labels,
        statistics) returns it here, reading it back from its outputs if need be.
        The worker merges every step's properties into the item; a ``labels`` list of
        ``{"name": ..., "confidence": ...}`` is also indexed for free-text search.
        """
        return {}

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """The op's settings schema, for docs and error messages."""
        return cls.Config.model_json_schema()


def scene_id(group: str, entries: Sequence[Entry]) -> str:
    """A scene step's name for a task: a task of one object grouped by its key
    (``by = "object"``) is named by its stem, any other by its group."""
    if len(entries) == 1 and group == entries[0].key:
        folder, name = posixpath.split(group)
        stem = posixpath.splitext(name)[0]
        return f"{folder}/{stem}" if folder else stem
    return group


def scene_selected(group: str, globs: Sequence[str]) -> bool:
    """Tell whether a scene step's ``scenes`` globs take this scene (ignoring case)."""
    from pixelfleet.sources.scenes import scene_name

    name = scene_name(group).lower()
    return any(fnmatch.fnmatchcase(name, g.lower()) for g in globs)
