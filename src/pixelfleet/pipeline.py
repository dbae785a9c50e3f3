"""Pipeline files: TOML, validated on load into a :class:`Pipeline`.

A bad file raises :class:`~pixelfleet.errors.ConfigError` whose message names the
file, the field, the bad value and what would be valid.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from pixelfleet.errors import ConfigError, PixelfleetError, UnknownNameError
from pixelfleet.models import Task, stable_hash
from pixelfleet.ops import Op, OpConfig, ops
from pixelfleet.urls import check_storage_url, resolve_sqlite_url

if TYPE_CHECKING:
    from pixelfleet.settings import Settings
    from pixelfleet.sources.base import Source


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Partition(_Strict):
    """How source objects are grouped into tasks.

    ``auto`` (the default) batches objects under 1 MB, up to ``size`` per task, and
    gives each larger object a task of its own (see :mod:`pixelfleet.plan`); a source
    that never ends (events) gets one task per object. A bare name is accepted for the
    table: ``partition = "object"`` is ``partition = { by = "object" }``.
    """

    by: Literal["auto", "object", "prefix", "count", "scene"] = "auto"
    depth: int = Field(2, ge=1, le=32, description="prefix depth, for by = 'prefix'")
    size: int = Field(
        100,
        ge=1,
        le=1_000_000,
        description="objects per task, for by = 'count'; at most this many, for by = 'auto'",
    )
    pattern: str | list[str] | None = Field(
        None,
        description="for by = 'scene': file-name pattern(s) such as '{scene}_B{band}.TIF'"
        " (see pixelfleet.sources.scenes)",
    )

    @model_validator(mode="before")
    @classmethod
    def _bare_name(cls, value: Any) -> Any:
        return {"by": value} if isinstance(value, str) else value

    @field_validator("pattern")
    @classmethod
    def _check_pattern(cls, value: str | list[str] | None) -> str | list[str] | None:
        from pixelfleet.sources.scenes import ScenePattern

        if value is not None:
            ScenePattern(value)  # raises a ConfigError (a ValueError) naming the problem
        return value

    @model_validator(mode="after")
    def _pattern_for_scenes(self) -> Partition:
        if self.by == "scene" and self.pattern is None:
            raise ValueError(
                "a scene partition needs a pattern, e.g. "
                'partition = { by = "scene", pattern = "{scene}_B{band}.TIF" }'
            )
        return self


class SourceSection(_Strict):
    """Where the source objects are and which of them to take."""

    url: str
    include: list[str] = ["**/*"]
    exclude: list[str] = []
    ignore_case: bool = True
    partition: Partition = Partition()
    #: An S3 Inventory ``manifest.json`` URL to take the objects from instead of a listing.
    inventory: str | None = None
    #: Only objects of these MIME types (judged from the extension), e.g. ["image/jpeg"].
    content_types: list[str] = []

    @field_validator("url", "inventory")
    @classmethod
    def _scheme_typo(cls, value: str | None) -> str | None:
        return None if value is None else check_storage_url(value, "URL")


class Output(_Strict):
    """Where outputs go; keys mirror the source keys."""

    url: str
    public_url: str | None = None

    @field_validator("url")
    @classmethod
    def _scheme_typo(cls, value: str) -> str:
        return check_storage_url(value, "URL")


class CatalogSection(_Strict):
    """Where the pipeline's STAC items go (see ``pixelfleet.catalog``)."""

    url: str | None = Field(
        None,
        description="sqlite:///path.db or postgresql://... (pgstac); default: $PIXELFLEET_CATALOG,"
        " else sqlite:///pixelfleet.db",
    )
    collection: str = Field(description="the STAC collection every item of this pipeline is in")
    title: str | None = None
    description: str | None = None

    @field_validator("collection")
    @classmethod
    def _valid_collection(cls, value: str) -> str:
        from pixelfleet.catalog.base import check_collection_id

        return check_collection_id(value)

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from pixelfleet.catalog import check_catalog_url

        return check_catalog_url(value)


class BatchSection(_Strict):
    """``[run.batch]``: the AWS Batch array job ``--executor aws-batch`` submits."""

    job_queue: str | None = Field(None, description="the job queue's name or ARN (required)")
    job_definition: str | None = Field(
        None,
        description="a job definition's name or ARN; without one, one named"
        " pixelfleet-worker is registered (or reused) from `image`",
    )
    image: str | None = Field(None, description="the worker image, e.g. an ECR URI")
    job_name: str | None = Field(None, description="default: pixelfleet-<run id>")
    array_size: int | None = Field(
        None, ge=1, le=1_000_000, description="workers to start (default: one per task, <= 10000)"
    )
    vcpus: float = Field(1.0, gt=0, le=256)
    memory: int = Field(2048, ge=128, description="MiB per worker")
    timeout: int | None = Field(None, ge=60, description="seconds one worker may run")
    attempts: int = Field(2, ge=1, le=10, description="tries of a worker (host failures, exit 75)")
    platform: Literal["EC2", "FARGATE"] = "EC2"
    job_role_arn: str | None = None
    execution_role_arn: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    environment: dict[str, str] = Field(default_factory=dict)


class Run(_Strict):
    """How the work is executed."""

    executor: str = "local"
    workers: int | None = Field(None, ge=1, le=1024)
    threads: int | None = Field(
        None,
        ge=1,
        le=64,
        description="tasks in flight per worker process (default: 1 when the source and"
        " the output are local folders, whose work is CPU; 8 otherwise, to overlap request"
        " latency)",
    )
    attempts: int = Field(2, ge=1, le=20)
    timeout: float = Field(600.0, gt=0, description="seconds one task may run")
    memory_cap: int | str | None = Field(
        None,
        description="memory one worker process may use decoding images, like '2G'"
        " (default: PIXELFLEET_MEMORY_CAP, 1G)",
    )
    ledger: str | None = None
    batch: BatchSection = BatchSection()

    @field_validator("memory_cap")
    @classmethod
    def _size(cls, value: int | str | None) -> int | None:
        from pixelfleet.settings import parse_bytes

        return None if value is None else parse_bytes(str(value), "run.memory_cap")

    def worker_settings(self, settings: Settings) -> Settings:
        """``settings`` with what this section overrides for the workers (``memory_cap``)."""
        import dataclasses

        if self.memory_cap is None:
            return settings
        return dataclasses.replace(settings, memory_cap=int(self.memory_cap))

    @field_validator("executor")
    @classmethod
    def _known_executor(cls, value: str) -> str:
        from pixelfleet.executors import executor_names, parse_executor
        from pixelfleet.executors.launchers import launcher_names

        name, _ = parse_executor(value)
        known = executor_names() + launcher_names()
        if name not in known:
            raise ValueError(
                f"unknown executor {value!r}; choose one of: "
                f"{', '.join(known)} (dask also as dask://host:port)"
            )
        return value


class Pipeline(_Strict):
    """A whole pipeline file."""

    source: SourceSection
    output: Output
    steps: list[OpConfig]
    run: Run = Run()
    catalog: CatalogSection | None = None
    path: str | None = None

    @property
    def threads(self) -> int:
        """Tasks in flight per worker: as set, else 8 when the source or the output is
        remote (to overlap request latency), and 1 when both are local folders: that work
        is CPU, and more threads in a process only pass the GIL to and fro (measured on
        small photos: 2 threads cost 10% more CPU than 1, and 4 threads 15-20%)."""
        if self.run.threads is not None:
            return self.run.threads
        local = all(
            url.startswith(("file://", "/")) or "://" not in url
            for url in (self.source.url, self.output.url)
        )
        return 1 if local else 8

    def make_source(self, settings: Settings | None = None) -> Source:
        """The source ``[source]`` names: its S3 Inventory report if it has one, else a
        listing of its URL; through the include/exclude globs and content types either way."""
        from pixelfleet.settings import get_settings

        settings = settings or get_settings()
        src = self.source
        filters = (src.include, src.exclude, src.ignore_case, src.content_types)
        if src.inventory:
            from pixelfleet.sources.s3inventory import InventorySource

            return InventorySource(src.inventory, src.url, *filters, settings=settings)
        from pixelfleet.sources.listing import ListingSource

        return ListingSource(src.url, *filters, settings=settings)

    def make_ops(self) -> list[Op]:
        """Instantiate the pipeline's steps."""
        return [ops.get(step.op)(step) for step in self.steps]

    def output_keys(self, task: Task) -> set[str]:
        """Every output key the steps would write for ``task`` (keys that are unsafe, or
        a task with no scene, have none): what to clean after a writer died mid-task."""
        keys: set[str] = set()
        for op in self.make_ops():
            try:
                if op.scope == "task":
                    keys.update(
                        op.output_keys_group(task.group or task.entries[0].key, task.entries)
                    )
                else:
                    for entry in task.entries:
                        keys.update(op.output_keys(entry))
            except (PixelfleetError, IndexError):
                continue
        return keys

    @property
    def settings_hash(self) -> str:
        """Hash of what changes outputs: the output location and every step's settings."""
        return stable_hash(
            {
                "output": self.output.url,
                "steps": [s.model_dump(mode="json") for s in self.steps],
            }
        )

    def to_json_dict(self) -> dict[str, Any]:
        """The pipeline as plain data, e.g. to store in the ledger or send to workers."""
        data = self.model_dump(mode="json", exclude={"path", "steps"})
        data["steps"] = [s.model_dump(mode="json") for s in self.steps]
        data["path"] = self.path
        return data


def _format_loc(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _fields_at(model: type[BaseModel], loc: Sequence[int | str]) -> list[str]:
    """The field names of the table at ``loc`` inside ``model`` (``loc`` ends with the
    unknown name itself), or none when the path leaves the models."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        is_model = isinstance(current, type) and issubclass(current, BaseModel)
        field = current.model_fields.get(part) if is_model else None
        if field is None:
            return []
        current = field.annotation
        # Optional sections (``CatalogSection | None``) and lists of tables: the model inside.
        for arg in (*getattr(current, "__args__", ()), current):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                current = arg
                break
        else:
            return []
    if not (isinstance(current, type) and issubclass(current, BaseModel)):
        return []
    return [name for name in current.model_fields if name != "path"]


def _unknown_field(loc: str, name: str, valid: list[str]) -> str:
    """The message for an unknown field: the nearest valid name if one is close, and the
    valid names."""
    msg = f"unknown field {loc!r}"
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    if close:
        msg += f"; did you mean {close[0]!r}?"
    if valid:
        return f"{msg} (valid fields here: {', '.join(valid)})"
    return f"{msg}; check the spelling (see docs/DESIGN.md for valid fields)"


def _explain(
    exc: ValidationError, where: str, prefix: str = "", model: type[BaseModel] | None = None
) -> ConfigError:
    lines = []
    for err in exc.errors():
        loc = _format_loc([*([prefix] if prefix else []), *err["loc"]])
        if err["type"] == "extra_forbidden":
            valid = _fields_at(model, err["loc"]) if model is not None else []
            msg = _unknown_field(loc, str(err["loc"][-1]), valid)
        elif err["type"] == "missing":
            msg = f"{loc}: required field is missing"
        else:
            bad = err.get("input")
            msg = f"{loc}: {err['msg'].removeprefix('Value error, ')} (got {bad!r})"
        lines.append(msg)
    return ConfigError(f"{where}: " + "; ".join(lines))


def _parse_steps(raw_steps: Any, where: str) -> list[OpConfig]:
    if not isinstance(raw_steps, list) or not raw_steps:
        raise ConfigError(
            f'{where}: steps: at least one [[steps]] table is needed, e.g. op = "thumbnail"'
        )
    parsed = []
    for i, raw in enumerate(raw_steps):
        if not isinstance(raw, dict) or "op" not in raw:
            raise ConfigError(
                f"{where}: steps[{i}].op is missing; choose one of: {', '.join(ops.names())}"
            )
        try:
            op_cls = ops.get(raw["op"])
        except UnknownNameError as exc:
            raise ConfigError(f"{where}: steps[{i}].op: {exc}") from None
        try:
            parsed.append(op_cls.Config.model_validate(raw))
        except ValidationError as exc:
            raise _explain(exc, where, f"steps[{i}]", op_cls.Config) from None
    return parsed


def set_dotted(data: dict[str, Any], dotted: str, value: Any, origin: str = "--set") -> None:
    """Set ``a.b.0.c`` in nested dicts/lists (used by ``--set`` and ``PIXELFLEET_SET*``).

    ``origin`` names where the override came from, in error messages.
    """
    parts = dotted.split(".")
    node: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            try:
                index = int(part)
                node[index]  # noqa: B018 - raises IndexError for a bad index
            except (ValueError, IndexError):
                raise ConfigError(
                    f"{origin} {dotted}: {part!r} is not an index of the list "
                    f"({len(node)} item(s): 0 to {len(node) - 1})"
                ) from None
            if last:
                node[index] = value
            else:
                node = node[index]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
        else:
            raise ConfigError(f"{origin} {dotted}: {'.'.join(parts[:i])} is not a table")


def parse_value(text: str) -> Any:
    """Parse a ``--set`` value as TOML (numbers, booleans, arrays), else keep it as text."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def pipeline_from_dict(data: dict[str, Any], where: str = "pipeline") -> Pipeline:
    """Validate already-parsed pipeline data."""
    data = dict(data)
    steps = _parse_steps(data.pop("steps", None), where)
    data.pop("path", None)
    allowed = {"source", "output", "run", "catalog"}
    for name in data:
        if name not in allowed:
            close = difflib.get_close_matches(name, sorted(allowed), n=1, cutoff=0.6)
            hint = f"did you mean [{close[0]}]? " if close else ""
            raise ConfigError(
                f"{where}: unknown section [{name}]; {hint}valid sections: "
                f"[source], [output], [[steps]], [run], [catalog]"
            )
    try:
        return Pipeline.model_validate({**data, "steps": steps, "path": where})
    except ValidationError as exc:
        raise _explain(exc, where, model=Pipeline) from None


def apply_override(data: dict[str, Any], item: str, origin: str = "--set") -> None:
    """Apply one ``field.path=value`` override (value parsed as TOML, else text)."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(
            f"{origin} {item!r} must look like section.field=value, "
            "e.g. steps.0.recipe=swir2-nir-green"
        )
    set_dotted(data, key.strip(), parse_value(value.strip()), origin)


def load_pipeline(
    path: str,
    overrides: Sequence[str] = (),
    env_overrides: Sequence[tuple[str, str]] | None = None,
) -> Pipeline:
    """Read and validate a pipeline file, applying ``key=value`` overrides first.

    ``env_overrides`` are ``(variable, "key=value")`` pairs from the environment
    (default: :attr:`Settings.pipeline_overrides <pixelfleet.settings.Settings>`, the
    ``PIXELFLEET_SET`` and ``PIXELFLEET_SET_*`` variables); ``overrides`` (``--set``)
    are applied after them and win.
    """
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"pipeline file {path!r} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    if env_overrides is None:
        from pixelfleet.settings import get_settings

        env_overrides = get_settings().pipeline_overrides
    # The environment first, the command line last: --set wins over PIXELFLEET_SET*.
    for origin, item in [*env_overrides, *(("--set", o) for o in overrides)]:
        apply_override(data, item, origin)
    # Relative local paths in a pipeline are relative to the file, not the shell's folder.
    base = os.path.dirname(os.path.abspath(path))
    for section in ("source", "output"):
        sec = data.get(section)
        if isinstance(sec, dict) and isinstance(sec.get("url"), str):
            url = check_storage_url(sec["url"], f"{path}: {section}.url")
            if "://" not in url and not os.path.isabs(url):
                sec["url"] = os.path.normpath(os.path.join(base, url))
    source = data.get("source")
    if isinstance(source, dict):
        inventory = source.get("inventory")
        if isinstance(inventory, str):
            check_storage_url(inventory, f"{path}: source.inventory")
        if isinstance(inventory, str) and "://" not in inventory and not os.path.isabs(inventory):
            source["inventory"] = os.path.normpath(os.path.join(base, inventory))
    for section, name in (("run", "ledger"), ("catalog", "url")):
        sec = data.get(section)
        if isinstance(sec, dict) and isinstance(sec.get(name), str):
            sec[name] = resolve_sqlite_url(sec[name], base)
    return pipeline_from_dict(data, where=path)
