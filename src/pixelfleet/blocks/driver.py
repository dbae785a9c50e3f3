"""The driver of a run: ``apply`` plans it, runs its strips, assembles and delivers outputs.

The driver (the caller's process) plans the run: it opens every input's header,
resolves the reference grid and footprint, cuts the grid into strips, and hands the
strips to an executor (:mod:`pixelfleet.blocks.pool`). Each worker computes its strips
and compresses their tiles (:mod:`pixelfleet.blocks.strips`); the driver then puts
each output together (:mod:`pixelfleet.blocks.assemble`) in a temporary folder and
moves or uploads it into place in one atomic step, so a failed or killed run leaves
nothing that looks like a finished output.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from pixelfleet.blocks.assemble import Assembled, RasterFacts, assemble
from pixelfleet.blocks.grid import GridSpec, resolve_grid, strip_rows, strips
from pixelfleet.blocks.pool import StripRunner, parse_executor
from pixelfleet.blocks.rasters import Opened, raster_info
from pixelfleet.blocks.spec import Grid, Input, Output, check_resampling, encode_args
from pixelfleet.blocks.strips import BlockFunction, RunPlan, StripJob, load_function
from pixelfleet.errors import ConfigError
from pixelfleet.registry import load_reference
from pixelfleet.settings import Settings, get_settings
from pixelfleet.storage import Storage


@dataclass
class OutputInfo(RasterFacts):
    """What was written for one output, and where."""

    url: str = ""


@dataclass
class ApplyResult:
    """What a run did: its grid, the outputs written, and how long it took."""

    grid: GridSpec
    footprint: str
    outputs: dict[str, OutputInfo]
    blocks: int
    strips: int
    seconds: float
    #: Per strip: rows, seconds, CPU seconds and the worker's pid.
    timings: list[dict[str, Any]] = field(default_factory=list)
    #: Seconds spent planning, computing the strips, assembling and delivering.
    phases: dict[str, float] = field(default_factory=dict)


@dataclass
class Computed:
    """A run's outputs assembled in a local folder, not yet delivered."""

    grid: GridSpec
    footprint: str
    outputs: dict[str, Assembled]
    blocks: int
    strips: int
    timings: list[dict[str, Any]]
    phases: dict[str, float] = field(default_factory=dict)


def apply(
    function: BlockFunction | str,
    inputs: Mapping[str, str | Input],
    outputs: Mapping[str, str | Output],
    *,
    args: Any = None,
    block_size: int | tuple[int, int] = 512,
    overlap: int = 0,
    grid: str | Grid | None = None,
    footprint: str | None = None,
    resampling: str = "nearest",
    executor: str = "local",
    workers: int | None = None,
    attempts: int = 2,
    progress: bool = False,
    workdir: str | None = None,
    settings: Settings | None = None,
) -> ApplyResult:
    """Run ``function(block, args)`` over aligned blocks of ``inputs``; write ``outputs``.

    - ``function``: a function of a :class:`~pixelfleet.blocks.Block` and ``args``
      returning ``{output name: array}``; or its reference ``"package.module:name"``.
      For ``local`` and ``dask`` it is sent by reference, so it must be defined at the
      top level of an importable module (or of the script being run, for ``local``).
    - ``inputs``: ``{name: path or URL or Input}``; ``outputs``: ``{name: path or URL
      or Output}`` (an output's type defaults to the arrays' type).
    - ``block_size``: pixels per block side, or ``(columns, rows)``; ``overlap``: rows and
      columns of context on each side of every block (the arrays include them; outputs
      may be returned with them, and are trimmed, or without).
    - ``grid``: the reference grid, an input's name (default: the first input) or a
      :class:`~pixelfleet.blocks.Grid`; ``footprint``: ``intersection`` (default),
      ``union`` or ``reference``; ``resampling``: for inputs not on the grid.
    - ``executor``: ``local`` (``workers`` processes, default one per core), ``threads``,
      ``inline``, ``dask`` or ``dask://host:port``; ``attempts``: tries of a strip whose
      worker died; ``progress``: a progress bar on stderr.
    - ``args``: anything, passed to every call (for ``local`` and ``dask``: numbers,
      strings, lists, dicts, numpy arrays or a ``SimpleNamespace`` of them).
    - ``workdir``: where strips are written before the outputs are assembled (default:
      the system's temporary folder); ``settings``: the driver's process settings
      (worker processes read theirs from the environment, as every pixelfleet process).

    Outputs are tiled GeoTIFFs in the Cloud Optimized layout, with overviews and
    per-band statistics, written in one atomic step when every block is done. Raises
    :class:`~pixelfleet.blocks.BlockFunctionError` (naming the block's window) when
    the function fails, ``InputError`` for unreadable or non-overlapping inputs.
    """
    started = time.perf_counter()
    settings = settings or get_settings()
    named_outputs = _outputs(outputs)
    with _workdir(workdir) as folder:
        computed = compute(
            function,
            inputs,
            named_outputs,
            args=args,
            block_size=block_size,
            overlap=overlap,
            grid=grid,
            footprint=footprint,
            resampling=resampling,
            executor=executor,
            workers=workers,
            attempts=attempts,
            progress=progress,
            workdir=folder,
            settings=settings,
        )
        delivering = time.perf_counter()
        written: dict[str, OutputInfo] = {}
        with Opened(settings) as opened:
            for name, result in computed.outputs.items():
                url = named_outputs[name].url
                storage, key = opened.storage(url)
                storage.write_file(key, result.path, consume=True)
                facts = {f.name: getattr(result, f.name) for f in fields(RasterFacts)}
                written[name] = OutputInfo(**facts, url=url)
    return ApplyResult(
        grid=computed.grid,
        footprint=computed.footprint,
        outputs=written,
        blocks=computed.blocks,
        strips=computed.strips,
        seconds=time.perf_counter() - started,
        timings=computed.timings,
        phases={**computed.phases, "deliver": time.perf_counter() - delivering},
    )


def compute(
    function: BlockFunction | str,
    inputs: Mapping[str, str | Input],
    outputs: Mapping[str, str | Output],
    *,
    workdir: str,
    args: Any = None,
    block_size: int | tuple[int, int] = 512,
    overlap: int = 0,
    grid: str | Grid | None = None,
    footprint: str | None = None,
    resampling: str = "nearest",
    executor: str = "inline",
    workers: int | None = None,
    attempts: int = 2,
    progress: bool = False,
    untrusted: bool = False,
    settings: Settings | None = None,
    roots: Mapping[str, Storage] | None = None,
) -> Computed:
    """Like :func:`apply`, but leave the outputs assembled in ``workdir`` (local files
    named after the outputs) instead of delivering them; for callers that write them
    themselves, such as the pipeline step. ``untrusted`` inputs must be GeoTIFFs within
    the image size limit; ``roots`` lends storages already open, by URL (for
    executors that run in this process)."""
    started = time.perf_counter()
    settings = settings or get_settings()
    kind, _address = parse_executor(executor)
    named_inputs = _inputs(inputs)
    named_outputs = _outputs(outputs)
    cols, rows = _block_size(block_size)
    if not isinstance(overlap, int) or overlap < 0:
        raise ConfigError(f"overlap {overlap!r} must be a whole number of pixels, 0 or more")
    check_resampling(resampling)
    if attempts < 1:
        raise ConfigError(f"attempts {attempts} must be 1 or more")
    count = workers or (1 if kind == "inline" else os.cpu_count() or 1)
    callable_, reference = _function(function, kind)
    encoded_args = encode_args(args) if kind in ("local", "dask") else None

    with Opened(settings, untrusted, roots) as opened:
        infos = {}
        for name, spec in named_inputs.items():
            dataset = opened.open(spec.url)
            infos[name] = raster_info(name, opened.describe(spec.url), dataset, spec)
    grid_spec, chosen = resolve_grid(infos, grid, footprint)

    factors = {n: o.factors(grid_spec.width, grid_spec.height) for n, o in named_outputs.items()}
    height = strip_rows(
        rows,
        [o.tile_size for o in named_outputs.values()],
        [f[0] for f in factors.values() if f],
    )
    plan = RunPlan(
        function=reference,
        args=encoded_args,
        inputs=named_inputs,
        outputs=named_outputs,
        grid=grid_spec,
        overlap=overlap,
        block_cols=cols,
        block_rows=rows,
        resampling=resampling,
        workdir=workdir,
        strip_levels={n: [f for f in fs if height % f == 0] for n, fs in factors.items()},
        untrusted=untrusted,
        gdal_cache_mb=settings.gdal_cache_mb,
    )
    jobs = [StripJob(i, r0, r1) for i, (r0, r1) in enumerate(strips(grid_spec.height, height))]
    total = sum(len(job.blocks(plan)) for job in jobs)
    computing = time.perf_counter()
    with _progress(progress, total) as on_blocks:
        results = StripRunner(
            plan=plan,
            jobs=jobs,
            executor=executor,
            workers=max(1, min(count, len(jobs))),
            attempts=attempts,
            function=callable_,
            args=args,
            on_blocks=on_blocks,
            roots=roots,
        ).run()
    assembling = time.perf_counter()
    assembled = {
        name: assemble(
            name, output, grid_spec, results, factors[name], workdir, threads=max(1, count)
        )
        for name, output in named_outputs.items()
    }
    timings = [
        {k: r[k] for k in ("strip", "rows", "blocks", "seconds", "cpu_seconds", "pid")}
        for r in results
    ]
    phases = {
        "plan": computing - started,
        "strips": assembling - computing,
        "assemble": time.perf_counter() - assembling,
    }
    return Computed(grid_spec, chosen, assembled, total, len(jobs), timings, phases)


def function_reference(function: Callable[..., Any]) -> str:
    """``package.module:name`` of a function defined at a module's top level; a lambda,
    a nested function or a method raises a :class:`ConfigError` saying why."""
    module = getattr(function, "__module__", None)
    qualname = getattr(function, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        raise ConfigError(
            f"{function!r} cannot be sent to worker processes by name: define it at the top "
            "level of a module, or use executor='inline' or 'threads'"
        )
    return f"{module}:{qualname}"


def _function(function: BlockFunction | str, kind: str) -> tuple[BlockFunction, str]:
    """The function to call in this process, and its reference for workers."""
    if isinstance(function, str):
        return load_function(function), function
    if not callable(function):
        raise ConfigError(f"function {function!r} is neither callable nor 'package.module:name'")
    if kind in ("inline", "threads"):
        module = getattr(function, "__module__", "?")
        return function, f"{module}:{getattr(function, '__qualname__', repr(function))}"
    reference = function_reference(function)
    try:
        found = load_reference(reference)
    except Exception as exc:  # noqa: BLE001 - any import failure means the same thing here
        raise ConfigError(
            f"function {reference!r} cannot be imported by name ({exc}); define it at the top "
            "level of an importable module, or use executor='inline' or 'threads'"
        ) from exc
    if found is not function:
        raise ConfigError(
            f"{reference!r} names another object than the function given; define the "
            "function at the top level of its module"
        )
    return function, reference


def _inputs(inputs: Mapping[str, str | Input]) -> dict[str, Input]:
    if not isinstance(inputs, Mapping) or not inputs:
        raise ConfigError("inputs must be a dict of {name: path or URL}, with at least one")
    out = {}
    for name, spec in inputs.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"input name {name!r} must be a non-empty string")
        out[name] = spec if isinstance(spec, Input) else Input(str(spec))
    return out


def _outputs(outputs: Mapping[str, str | Output]) -> dict[str, Output]:
    if not isinstance(outputs, Mapping):
        raise ConfigError("outputs must be a dict of {name: path, URL or Output} (or {})")
    out: dict[str, Output] = {}
    for name, spec in outputs.items():
        if not isinstance(name, str) or not name or "/" in name:
            raise ConfigError(f"output name {name!r} must be a non-empty string without '/'")
        out[name] = spec if isinstance(spec, Output) else Output(str(spec))
        twins = [n for n, o in out.items() if o.url == out[name].url and n != name]
        if twins:
            raise ConfigError(f"outputs {twins[0]!r} and {name!r} both go to {out[name].url}")
    return out


def _block_size(value: int | tuple[int, int]) -> tuple[int, int]:
    sizes = (value, value) if isinstance(value, int) else tuple(value)
    if len(sizes) != 2 or any(not isinstance(s, int) or s < 1 for s in sizes):
        raise ConfigError(
            f"block_size {value!r} must be a number of pixels or (columns, rows), such as 512"
        )
    return sizes[0], sizes[1]


@contextlib.contextmanager
def _workdir(parent: str | None) -> Iterator[str]:
    folder = tempfile.mkdtemp(prefix="pixelfleet-blocks-", dir=parent)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def _progress(show: bool, total: int) -> Iterator[Callable[[int], None] | None]:
    if not show:
        yield None
        return
    from tqdm import tqdm

    with tqdm(total=total, unit="block", desc="blocks") as bar:
        yield bar.update
