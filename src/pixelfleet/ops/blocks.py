"""The ``blocks`` step: a user's function over aligned blocks of a scene's band files.

A task-scope op (``scope = "task"``), like ``composite``: with ``partition = { by =
"scene", pattern = "{scene}_B{band}.TIF" }`` the worker hands it all of a scene's band
files at once. The step's ``inputs`` name the files by templates (``red =
"{scene}_B4.TIF"``), its ``outputs`` the products (``ndvi = { key = "{scene}_ndvi.tif",
dtype = "float32", nodata = -9999 }``); the work itself is
:func:`pixelfleet.blocks.compute`, run in the task's process (``workers`` threads), and
the products are written through :class:`~pixelfleet.ops.OpContext` with provenance,
so a rerun skips a scene whose products were made from the same band files by the
same function and settings.

The provenance covers the function's reference, the step's ``version`` and the
function's own ``__version__`` (or its module's), so changing either redoes the scenes.
"""

from __future__ import annotations

import posixpath
import sys
import tempfile
from collections.abc import Sequence
from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pixelfleet.blocks import Grid, Input, Output, compute
from pixelfleet.blocks.spec import AGGREGATIONS, COMPRESSIONS, RESAMPLING
from pixelfleet.blocks.strips import BlockFunction, load_function
from pixelfleet.errors import ConfigError, InputError
from pixelfleet.models import Entry, OutputRecord, stable_hash
from pixelfleet.ops.base import Op, OpConfig, OpContext, group_entry, scene_id, scene_selected
from pixelfleet.sources.scenes import scene_name
from pixelfleet.storage.base import check_key

#: Media type of every product: a tiled GeoTIFF in the Cloud Optimized layout.
COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BlocksInput(_Strict):
    """One input of the step: the band file's key template and how to read it."""

    key: str
    bands: tuple[int, ...] | None = None
    nodata: float | None = None
    resampling: str | None = None

    @field_validator("resampling")
    @classmethod
    def _check_resampling(cls, value: str | None) -> str | None:
        if value is not None and value not in RESAMPLING:
            raise ValueError(
                f"resampling {value!r} is not known; choose one of: {', '.join(RESAMPLING)}"
            )
        return value


class BlocksOutput(_Strict):
    """One product of the step (see :class:`pixelfleet.blocks.Output`)."""

    key: str
    dtype: str | None = None
    nodata: float | None = None
    tile_size: int = Field(512, ge=16, le=4096, multiple_of=16)
    compress: str = "deflate"
    creation_options: dict[str, str | int | float] = Field(default_factory=dict)
    overviews: Literal["auto"] | list[int] = "auto"
    overview_resampling: str = "nearest"
    statistics: bool = True
    title: str | None = None

    @model_validator(mode="after")
    def _check(self) -> BlocksOutput:
        if self.compress not in COMPRESSIONS:
            raise ValueError(
                f"compress {self.compress!r} is not supported; choose one of: "
                f"{', '.join(COMPRESSIONS)}"
            )
        if self.overview_resampling not in AGGREGATIONS:
            raise ValueError(f"overview_resampling must be one of: {', '.join(AGGREGATIONS)}")
        try:
            self.output("check.tif")
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return self

    def output(self, url: str) -> Output:
        """The :class:`~pixelfleet.blocks.Output` this product is written as."""
        return Output(
            url=url,
            dtype=self.dtype,
            nodata=self.nodata,
            tile_size=self.tile_size,
            compress=self.compress,
            creation_options=self.creation_options,
            overviews=self.overviews if isinstance(self.overviews, str) else tuple(self.overviews),
            overview_resampling=self.overview_resampling,
            statistics=self.statistics,
        )


class BlocksGrid(_Strict):
    """An explicit reference grid (see :class:`pixelfleet.blocks.Grid`)."""

    crs: str
    resolution: float | tuple[float, float]
    bounds: tuple[float, float, float, float] | None = None


class BlocksConfig(OpConfig):
    """Settings of the ``blocks`` step.

    - ``function``: ``package.module:name`` of ``function(block, args) -> {name: array}``
      (importable wherever workers run); ``version``: bump it when the function
      changes, to redo every scene; ``args``: passed to every call (JSON values).
    - ``inputs``: ``{name: key template}`` or ``{name: {key, bands, nodata,
      resampling}}``; templates use ``{scene}`` and ``{dir}`` and are looked up, ignoring
      case, among the scene's files (in the scene's folder unless ``{dir}`` is used).
    - ``outputs``: ``{name: key template}`` or ``{name: {key, dtype, nodata, tile_size,
      compress, creation_options, overviews, overview_resampling, statistics, title}}``.
    - ``block_size`` (pixels, or ``[columns, rows]``), ``overlap`` (rows and columns of
      context on each side), ``grid`` (an input's name, default the first, or ``{crs,
      resolution, bounds}``), ``footprint`` (``intersection``, ``union``, ``reference``),
      ``resampling``; ``workers``: threads computing one scene's blocks (scenes already
      run in parallel across the executor's workers).
    - ``scenes``: globs on scene names this step applies to.
    """

    op: Literal["blocks"] = "blocks"
    function: str
    version: str = ""
    args: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, str | BlocksInput]
    outputs: dict[str, str | BlocksOutput]
    block_size: int | tuple[int, int] = 512
    overlap: int = Field(0, ge=0, le=1024)
    grid: str | BlocksGrid | None = None
    footprint: Literal["intersection", "union", "reference"] | None = None
    resampling: str = "nearest"
    workers: int = Field(1, ge=1, le=64)
    scenes: tuple[str, ...] = ("*",)

    @field_validator("function")
    @classmethod
    def _check_function(cls, value: str) -> str:
        module, sep, name = value.partition(":")
        if not sep or not module or not name:
            raise ValueError(f"function {value!r} must look like 'package.module:name'")
        return value

    @field_validator("resampling")
    @classmethod
    def _check_resampling(cls, value: str) -> str:
        if value not in RESAMPLING:
            raise ValueError(
                f"resampling {value!r} is not known; choose one of: {', '.join(RESAMPLING)}"
            )
        return value

    @model_validator(mode="after")
    def _check_all(self) -> BlocksConfig:
        if not self.inputs:
            raise ValueError('inputs: name at least one, e.g. inputs = { red = "{scene}_B4.TIF" }')
        if not self.outputs:
            raise ValueError(
                'outputs: name at least one, e.g. outputs = { ndvi = "{scene}_ndvi.tif" }'
            )
        if isinstance(self.grid, str) and self.grid not in self.inputs:
            raise ValueError(
                f"grid {self.grid!r} is not an input; choose one of: {', '.join(self.inputs)}"
            )
        sizes = (self.block_size,) if isinstance(self.block_size, int) else self.block_size
        if any(s < 1 for s in sizes):
            raise ValueError(f"block_size {self.block_size!r} must be 1 or more pixels")
        for key in [*self.input_keys.values(), *(o.key for o in self.output_specs.values())]:
            try:
                render(key, "path/row/scene")
            except (ConfigError, ValueError) as exc:
                raise ValueError(str(exc)) from None
        return self

    @property
    def input_keys(self) -> dict[str, str]:
        """Each input's key template."""
        return {n: v if isinstance(v, str) else v.key for n, v in self.inputs.items()}

    @property
    def output_specs(self) -> dict[str, BlocksOutput]:
        """Each output's settings (a bare template becomes one with defaults)."""
        return {
            n: BlocksOutput(key=v) if isinstance(v, str) else v for n, v in self.outputs.items()
        }


def render(template: str, group: str) -> str:
    """A key template for a scene: ``{scene}`` and ``{dir}``; in the scene's folder
    unless the template uses ``{dir}``."""
    folder, scene = posixpath.split(group)
    try:
        rendered = template.format(scene=scene, dir=folder)
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(
            f"key template {template!r} is invalid ({exc}); use the fields {{scene}}, {{dir}}"
        ) from None
    if "{dir}" not in template and folder:
        rendered = f"{folder}/{rendered}"
    return check_key("/".join(part for part in rendered.split("/") if part))


def function_version(function: object) -> str:
    """The version a function declares: its ``__version__`` or ``version``, else its
    module's ``__version__`` (empty when none)."""
    for value in (getattr(function, "__version__", None), getattr(function, "version", None)):
        if isinstance(value, str | int | float):
            return str(value)
    module = sys.modules.get(getattr(function, "__module__", "") or "")
    value = getattr(module, "__version__", None)
    return str(value) if isinstance(value, str | int | float) else ""


class BlocksOp(Op):
    """Run a block function over each scene's band files and write its products."""

    name = "blocks"
    Config = BlocksConfig
    scope = "task"

    def __init__(self, config: OpConfig):
        self._function: BlockFunction | None = None
        self._hash = ""
        super().__init__(config)

    @property
    def function(self) -> BlockFunction:
        """The block function, imported on first use (a driver that only plans never
        imports it; workers do)."""
        if self._function is None:
            self._function = load_function(self.options.function)
        return self._function

    @property
    def settings_hash(self) -> str:
        """The step's settings hash with the function's own version in it, so a new
        version of the function redoes the scenes."""
        return stable_hash([self._hash, function_version(self.function)])

    @settings_hash.setter
    def settings_hash(self, value: str) -> None:
        self._hash = value

    @property
    def options(self) -> BlocksConfig:
        """The step's settings, typed."""
        return cast(BlocksConfig, self.config)

    def applies_to(self, group: str) -> bool:
        """Tell whether the step's ``scenes`` globs take this scene."""
        return scene_selected(group, self.options.scenes)

    def output_keys_group(self, group: str, entries: Sequence[Entry]) -> list[str]:
        """The products' keys for one scene."""
        group = scene_id(group, entries)
        if not self.applies_to(group):
            return []
        return [render(o.key, group) for o in self.options.output_specs.values()]

    def output_keys(self, entry: Entry) -> list[str]:
        """A single file as a scene of its own (named by its stem)."""
        return self.output_keys_group(scene_id(entry.key, [entry]), [entry])

    def run(self, ctx: OpContext, entry: Entry) -> list[OutputRecord]:
        """A single file as a scene of its own."""
        return self.run_group(ctx, scene_id(entry.key, [entry]), [entry])

    def run_group(self, ctx: OpContext, group: str, entries: Sequence[Entry]) -> list[OutputRecord]:
        """Compute the scene's products and write them; a missing or bad band file, or
        a function that raises, fails the scene with a message naming it."""
        keys = self.output_keys_group(group, entries)
        if not keys:
            return []
        group = scene_id(group, entries)
        o = self.options
        combined = group_entry(group, entries)
        root = ctx.source.url.rstrip("/")
        inputs = {}
        for name, spec in o.inputs.items():
            key = find_entry(ctx, group, entries, o.input_keys[name]).key
            extra = {} if isinstance(spec, str) else spec.model_dump(exclude={"key"})
            bands = extra.pop("bands", None)
            inputs[name] = Input(f"{root}/{key}", bands=tuple(bands) if bands else None, **extra)
        specs = o.output_specs
        outputs = {
            name: spec.output(key) for (name, spec), key in zip(specs.items(), keys, strict=True)
        }
        grid: str | Grid | None = None
        if isinstance(o.grid, BlocksGrid):
            grid = Grid(o.grid.crs, o.grid.resolution, o.grid.bounds)
        else:
            grid = o.grid
        records: list[OutputRecord] = []
        with tempfile.TemporaryDirectory(prefix="pixelfleet-blocks-") as workdir:
            computed = compute(
                self.function,
                inputs,
                outputs,
                workdir=workdir,
                args=o.args,
                block_size=o.block_size,
                overlap=o.overlap,
                grid=grid,
                footprint=o.footprint,
                resampling=o.resampling,
                executor="threads" if o.workers > 1 else "inline",
                workers=o.workers,
                attempts=1,
                untrusted=True,
                settings=ctx.settings,
                roots={root: ctx.source},
            )
            scene = scene_name(group)
            for (name, product), key in zip(specs.items(), keys, strict=True):
                title = product.title.format(scene=scene, name=name) if product.title else None
                records.append(
                    ctx.write_file(
                        self,
                        combined,
                        key,
                        computed.outputs[name].path,
                        COG_MEDIA_TYPE,
                        roles=["data"],
                        title=title,
                        asset=name,
                    )
                )
        return records


def find_entry(ctx: OpContext, group: str, entries: Sequence[Entry], template: str) -> Entry:
    """The scene's file a key template names (ignoring case); missing raises an
    ``InputError`` listing the scene's files."""
    wanted = render(template, group).lower()
    for entry in entries:
        if entry.key.lower() == wanted:
            return entry
    found = ", ".join(posixpath.basename(e.key) for e in entries) or "none"
    raise InputError(
        f"{ctx.source.describe(render(template, group))}: scene {group!r} has no such file "
        f"(its files: {found}); check the step's inputs"
    )
