"""One strip of blocks, computed and written by one worker.

A strip is a run of whole block rows across the grid. The worker reads each block of
every input (the next block's reads run in a thread while the function works on this
one), calls the user's function, trims the margin, and writes each output's window
into a tiled, compressed GeoTIFF of the strip's own. So the compression, the costly
part of writing, runs in every worker at once. On the way it gathers per-band
statistics and the strip's part of each overview level it can make alone. The final
file is assembled from the strips' tiles without recompressing them
(:mod:`pixelfleet.blocks.assemble`).

:func:`run_strip_json` is what a worker process or a Dask worker calls, by reference,
with a JSON job; it answers in JSON, an error included.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

from pixelfleet.blocks.block import Block, as_bands, check_outputs
from pixelfleet.blocks.grid import BlockRef, GridSpec, blocks_of
from pixelfleet.blocks.overviews import LevelBuilder
from pixelfleet.blocks.rasters import InputReader, Opened, raster_info
from pixelfleet.blocks.spec import COMPRESSIONS, Input, Output, decode_args
from pixelfleet.blocks.statistics import BandStats, valid_mask
from pixelfleet.errors import (
    PERMANENT_ERRORS,
    ConfigError,
    InputError,
    PixelfleetError,
)
from pixelfleet.imagery.rasters import GDAL_OPTIONS
from pixelfleet.models import one_line
from pixelfleet.registry import load_reference
from pixelfleet.settings import get_settings
from pixelfleet.storage import Storage

#: A block function: ``function(block, args) -> {output name: array}``.
BlockFunction = Callable[[Block, Any], Mapping[str, Any]]


class BlockFunctionError(InputError):
    """The user's function raised on a block; the message names the function, the
    block's index and window, and the function's own error.

    It is permanent (an ``InputError``): the same block raises again on a retry.
    """


@dataclass
class RunPlan:
    """Everything a worker needs to compute any strip of a run (sent as JSON)."""

    function: str
    args: Any
    inputs: dict[str, Input]
    outputs: dict[str, Output]
    grid: GridSpec
    overlap: int
    block_cols: int
    block_rows: int
    resampling: str
    workdir: str
    #: Overview factors each worker makes for its own strip, per output.
    strip_levels: dict[str, list[int]] = field(default_factory=dict)
    untrusted: bool = False
    gdal_cache_mb: int = 64
    #: Return the strip's files' bytes with the result (workers on other machines).
    return_files: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The plan as JSON-ready data."""
        return {
            "function": self.function,
            "args": self.args,
            "inputs": {n: i.to_dict() for n, i in self.inputs.items()},
            "outputs": {n: o.to_dict() for n, o in self.outputs.items()},
            "grid": self.grid.to_dict(),
            "overlap": self.overlap,
            "block_cols": self.block_cols,
            "block_rows": self.block_rows,
            "resampling": self.resampling,
            "workdir": self.workdir,
            "strip_levels": self.strip_levels,
            "untrusted": self.untrusted,
            "gdal_cache_mb": self.gdal_cache_mb,
            "return_files": self.return_files,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunPlan:
        """The inverse of :meth:`to_dict`."""
        return cls(
            function=data["function"],
            args=data["args"],
            inputs={n: Input.from_dict(i) for n, i in data["inputs"].items()},
            outputs={n: Output.from_dict(o) for n, o in data["outputs"].items()},
            grid=GridSpec.from_dict(data["grid"]),
            overlap=int(data["overlap"]),
            block_cols=int(data["block_cols"]),
            block_rows=int(data["block_rows"]),
            resampling=data["resampling"],
            workdir=data["workdir"],
            strip_levels={n: list(v) for n, v in data.get("strip_levels", {}).items()},
            untrusted=bool(data.get("untrusted", False)),
            gdal_cache_mb=int(data.get("gdal_cache_mb", 64)),
            return_files=bool(data.get("return_files", False)),
        )


@dataclass
class StripJob:
    """One strip to compute: its number and rows ``[row0, row1)``."""

    index: int
    row0: int
    row1: int

    def blocks(self, plan: RunPlan) -> list[BlockRef]:
        """The strip's blocks, row by row."""
        return blocks_of(plan.grid.width, self.row0, self.row1, plan.block_cols, plan.block_rows)


def gtiff_profile(
    output: Output, dtype: str, count: int, width: int, height: int, grid: GridSpec
) -> dict[str, Any]:
    """The creation options of every file an output is assembled from (they must agree)."""
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": dtype,
        "crs": grid.crs,
        "transform": grid.transform,
        "nodata": output.nodata,
        "tiled": True,
        "blockxsize": output.tile_size,
        "blockysize": output.tile_size,
        "compress": COMPRESSIONS[output.compress],
        "bigtiff": "IF_SAFER",
    }
    profile.update(output.creation_options)
    return profile


def output_dtype(name: str, output: Output, array: np.ndarray) -> np.dtype:
    """The type output ``name`` is written in: its own, else the arrays' (booleans as
    uint8, float16 as float32)."""
    if output.dtype:
        return np.dtype(output.dtype)
    dtype = array.dtype
    if dtype.kind == "b":
        return np.dtype("uint8")
    if dtype == np.float16:
        return np.dtype("float32")
    if dtype.kind not in "iuf":
        raise ValueError(
            f"output {name!r} has arrays of {dtype}, which a GeoTIFF cannot hold; return "
            "integers or floats, or set the output's dtype"
        )
    return dtype


def check_nodata(name: str, output: Output, dtype: np.dtype) -> None:
    """Refuse an output nodata value its type cannot hold."""
    nodata = output.nodata
    if nodata is None or (dtype.kind == "f" and np.isnan(nodata)):
        return
    if np.array(nodata).astype(dtype) != nodata:
        raise ConfigError(f"output {name!r}: nodata {nodata} cannot be held by its type {dtype}")


class StripWriter:
    """One output's strip: a tiled GeoTIFF, statistics and overview parts."""

    def __init__(
        self,
        name: str,
        output: Output,
        plan: RunPlan,
        job: StripJob,
        dtype: np.dtype,
        bands: int,
    ):
        check_nodata(name, output, dtype)
        self.name = name
        self.output = output
        self.dtype = dtype
        self.bands = bands
        self.row0 = job.row0
        self.path = os.path.join(plan.workdir, f"{name}.strip{job.index:05d}.tif")
        grid = plan.grid
        self.width, self.height = grid.width, grid.height
        self.tile = output.tile_size
        self.fill = padding_value(output, dtype)
        # Whole tiles only: pixelfleet writes the edge tiles' padding itself, so their
        # bytes never depend on how GDAL would fill it.
        width = whole_tiles(grid.width, self.tile)
        height = whole_tiles(job.row1 - job.row0, self.tile)
        profile = gtiff_profile(output, dtype.name, bands, width, height, grid)
        profile["transform"] = grid.transform @ Affine.translation(0, job.row0)
        self._dataset = rasterio.open(self.path, "w", **profile)
        self.stats = [BandStats() for _ in range(bands)] if output.statistics else []
        self.levels = [
            LevelBuilder(
                f,
                output.overview_resampling,
                bands,
                dtype,
                output.nodata,
                grid.width,
                grid.height,
                job.row0,
                job.row1,
            )
            for f in plan.strip_levels.get(name, [])
        ]

    def write(self, array: np.ndarray, window: Window) -> None:
        """Write one block (``(bands, rows, cols)``, margin already trimmed)."""
        if array.shape[0] != self.bands:
            raise ValueError(
                f"output {self.name!r} has {array.shape[0]} band(s) here and {self.bands} in "
                "earlier blocks; return the same number of bands for every block"
            )
        data = array.astype(self.dtype, copy=False)
        col, row = int(window.col_off), int(window.row_off)
        rows, cols = data.shape[1:]
        padded = pad_edges(data, col, row, self.width, self.height, self.tile, self.fill)
        _, padded_rows, padded_cols = padded.shape
        self._dataset.write(padded, window=Window(col, row - self.row0, padded_cols, padded_rows))
        valid = None
        if self.stats or any(lv.aggregation == "average" for lv in self.levels):
            valid = valid_mask(data, self.output.nodata)
        for b, stats in enumerate(self.stats):
            stats.add(data[b], None if valid is None else valid[b])
        for level in self.levels:
            level.add(data, col, row, valid)

    def close(self, job: StripJob, workdir: str) -> dict[str, Any]:
        """Finish the strip's file; returns what the assembly needs to know about it."""
        self._dataset.close()
        levels = {}
        for level in self.levels:
            path = os.path.join(workdir, f"{self.name}.strip{job.index:05d}.ovr{level.factor}.npy")
            np.save(path, level.result())
            levels[str(level.factor)] = path
        return {
            "path": self.path,
            "dtype": self.dtype.name,
            "bands": self.bands,
            "stats": [s.to_list() for s in self.stats],
            "levels": levels,
        }

    def abort(self) -> None:
        """Close and forget the strip's file after a failure."""
        try:
            self._dataset.close()
        finally:
            if os.path.exists(self.path):
                os.unlink(self.path)


def whole_tiles(size: int, tile: int) -> int:
    """``size`` rounded up to whole tiles."""
    return -(-size // tile) * tile


def padding_value(output: Output, dtype: np.dtype) -> float:
    """What fills edge tiles past the image: the output's nodata, else 0."""
    nodata = output.nodata
    return 0 if nodata is None or (dtype.kind != "f" and np.isnan(nodata)) else nodata


def pad_edges(
    data: np.ndarray, col: int, row: int, width: int, height: int, tile: int, fill: float
) -> np.ndarray:
    """A block at (``col``, ``row``) grown with ``fill`` to the tile edges past the
    image's right and bottom edges (unchanged elsewhere)."""
    _, rows, cols = data.shape
    extra_cols = whole_tiles(width, tile) - width if col + cols == width else 0
    extra_rows = whole_tiles(height, tile) - height if row + rows == height else 0
    if not extra_cols and not extra_rows:
        return data
    return np.pad(data, ((0, 0), (0, extra_rows), (0, extra_cols)), constant_values=fill)


def describe_window(window: Window) -> str:
    """``rows 0-512, columns 512-1024`` for messages."""
    r, c = int(window.row_off), int(window.col_off)
    return f"rows {r}-{r + int(window.height)}, columns {c}-{c + int(window.width)}"


def run_strip(
    plan: RunPlan,
    job: StripJob,
    function: BlockFunction,
    args: Any,
    on_block: Callable[[int], None] | None = None,
    roots: Mapping[str, Storage] | None = None,
) -> dict[str, Any]:
    """Compute and write one strip; returns its result (see :meth:`StripWriter.close`).

    A function that raises fails with :class:`BlockFunctionError`; a block whose
    outputs are malformed, too. ``roots``: storages lent by the caller (see
    :class:`~pixelfleet.blocks.rasters.Opened`).
    """
    started, cpu = time.perf_counter(), time.process_time()
    settings = get_settings()
    grid = plan.grid
    writers: dict[str, StripWriter] = {}
    # In bytes: rasterio hands an integer GDAL_CACHEMAX to GDALSetCacheMax64, so a bare
    # 64 was a 64-byte cache, and every tile an overlapping window touched was decoded
    # again for each window (a 5 x 5 focal mean read its input 5.5 times over, measured).
    env = {**GDAL_OPTIONS, "GDAL_CACHEMAX": plan.gdal_cache_mb * 1024 * 1024}
    with (
        rasterio.Env(**env),
        Opened(settings, plan.untrusted, roots) as opened,
        ThreadPoolExecutor(1, thread_name_prefix="pixelfleet-read") as reads,
    ):
        readers: dict[str, InputReader] = {}
        try:
            for name, spec in plan.inputs.items():
                dataset = opened.open(spec.url)
                info = raster_info(name, opened.describe(spec.url), dataset, spec)
                readers[name] = InputReader(
                    info, spec, dataset, grid, plan.overlap, plan.resampling
                )
            nodata = {name: r.nodata for name, r in readers.items()}
            refs = job.blocks(plan)

            def read(ref: BlockRef) -> dict[str, np.ndarray]:
                return {name: r.read(ref.window) for name, r in readers.items()}

            pending = reads.submit(read, refs[0]) if refs else None
            for k, ref in enumerate(refs):
                assert pending is not None
                arrays = pending.result()
                if k + 1 < len(refs):
                    pending = reads.submit(read, refs[k + 1])
                w = ref.window
                block = Block(
                    inputs=arrays,
                    nodata=nodata,
                    window=w,
                    index=ref.index,
                    overlap=plan.overlap,
                    transform=grid.transform
                    @ Affine.translation(
                        int(w.col_off) - plan.overlap, int(w.row_off) - plan.overlap
                    ),
                    crs=grid.crs,
                    args=args,
                )
                try:
                    result = check_outputs(function(block, args), plan.outputs)
                    shaped = {n: as_bands(n, v, block) for n, v in result.items()}
                except Exception as exc:
                    raise BlockFunctionError(
                        f"{plan.function} failed on block {ref.index} ({describe_window(w)} "
                        f"of the {grid.width} x {grid.height} grid): "
                        f"{type(exc).__name__}: {one_line(str(exc))}"
                    ) from exc
                for name, array in shaped.items():
                    writer = writers.get(name)
                    if writer is None:
                        output = plan.outputs[name]
                        dtype = output_dtype(name, output, array)
                        writer = writers[name] = StripWriter(
                            name, output, plan, job, dtype, array.shape[0]
                        )
                    writer.write(array, w)
                if on_block is not None:
                    on_block(1)
            outputs = {name: writers[name].close(job, plan.workdir) for name in writers}
        except BaseException:
            for writer in writers.values():
                writer.abort()
            raise
        finally:
            for reader in readers.values():
                reader.close()
    return {
        "strip": job.index,
        "rows": [job.row0, job.row1],
        "blocks": len(refs),
        "outputs": outputs,
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu,
        "pid": os.getpid(),
    }


def load_function(reference: str) -> BlockFunction:
    """Import a block function named ``package.module:name``."""
    function = load_reference(reference)
    if not callable(function):
        raise ConfigError(f"{reference!r} is not a function")
    return function  # type: ignore[no-any-return]


#: glibc's ``mallopt`` parameters (malloc.h): below this size an allocation comes from
#: the heap, not a mapping of its own; free memory at the heap's top beyond this is
#: given back to the system.
_M_MMAP_THRESHOLD, _M_TRIM_THRESHOLD = -3, -1
_MMAP_THRESHOLD = 64 * 1024**2
_TRIM_THRESHOLD = 128 * 1024**2
_malloc_tuned = False


def reuse_block_memory() -> bool:
    """Have this worker process reuse freed block-sized memory instead of mapping it anew.

    A block's arrays are megabytes each (a 516 x 516 float64 is 2 MB), above glibc's
    default mapping threshold, so each was a fresh ``mmap`` whose pages the kernel
    zeroed on first touch and unmapped on free: for the benchmark's 5 x 5 focal mean,
    1.5 s of kernel time in 2.3 s of the function's CPU (measured; 0.7 s with this).
    Raising the threshold to 64 MiB keeps such arrays in the heap, which the next block
    reuses; memory is still bounded by the blocks in flight, and above 128 MiB of free
    heap the rest is returned. Worker processes only (the driver is the user's own
    process); without glibc (musl, macOS) nothing is changed. Returns whether it was set.
    """
    global _malloc_tuned
    if _malloc_tuned:
        return True
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    _malloc_tuned = bool(
        mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
    )
    return _malloc_tuned


def run_strip_json(payload: str) -> str:
    """The worker entry point: a JSON job (``{"plan": ..., "job": ...}``) in, JSON out.

    Errors are answered, not raised: ``{"error": {"type", "message", "permanent"}}``.
    """
    reuse_block_memory()
    data = json.loads(payload)
    try:
        plan = RunPlan.from_dict(data["plan"])
        job = StripJob(**data["job"])
        function = load_function(plan.function)
        result = run_strip(plan, job, function, decode_args(plan.args))
        if plan.return_files:
            result["files"] = _collect_files(result)
        return json.dumps(result)
    except Exception as exc:  # noqa: BLE001 - every error goes back to the driver as data
        return json.dumps({"error": error_dict(exc)})


def error_dict(exc: BaseException) -> dict[str, Any]:
    """An exception as data: its class name, message, and whether retrying can help."""
    return {
        "type": type(exc).__name__,
        "message": str(exc),
        "permanent": isinstance(exc, PERMANENT_ERRORS),
    }


def raise_error(error: Mapping[str, Any]) -> None:
    """Raise, in the driver, the error a worker reported (same class where pixelfleet
    has it: ``BlockFunctionError``, ``InputError``...)."""
    import pixelfleet.errors as errors_module

    name, message = error.get("type", ""), error.get("message", "")
    cls = BlockFunctionError if name == "BlockFunctionError" else getattr(errors_module, name, None)
    if isinstance(cls, type) and issubclass(cls, PixelfleetError):
        raise cls(message)
    if error.get("permanent"):
        raise InputError(f"{name}: {message}")
    raise PixelfleetError(f"{name}: {message}")


def _collect_files(result: dict[str, Any]) -> dict[str, str]:
    """The strip's files as base64 text, for a driver on another machine."""
    import base64

    files: dict[str, str] = {}
    for output in result["outputs"].values():
        for path in [output["path"], *output["levels"].values()]:
            with open(path, "rb") as f:
                files[os.path.basename(path)] = base64.b64encode(f.read()).decode("ascii")
            os.unlink(path)
    return files
