"""Block functions the tests run by reference (importable in worker processes too:
``tests/blocks/conftest.py`` puts this folder on ``sys.path``, which spawned workers
inherit)."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

__version__ = "1"

NODATA = -9999.0


def ndvi(block: Any, args: Any) -> dict[str, np.ndarray]:
    """(NIR - red) / (NIR + red), float32, -9999 where either band is nodata."""
    red = block.inputs["red"][0].astype("f4")
    nir = block.inputs["nir"][0].astype("f4")
    out = (nir - red) / (nir + red + np.float32(1e-9))
    out[~block.valid()] = NODATA
    return {"ndvi": out[None]}


def focal_mean(block: Any, args: Any) -> dict[str, np.ndarray]:
    """5 x 5 mean of band 1, computed on the block with its margin (returned with the
    margin, which pixelfleet trims)."""
    size = (args or {}).get("size", 5)
    data = block.inputs["image"][0].astype(np.float64)
    half = size // 2
    padded = np.pad(data, half)  # only the margin's own edge: trimmed away below
    windows = np.lib.stride_tricks.sliding_window_view(padded, (size, size))
    return {"mean": windows.sum(axis=(-2, -1))[None] / (size * size)}


def stack(block: Any, args: Any) -> dict[str, np.ndarray]:
    """Every input as an output of the same name (float32), without the margin."""
    return {name: block.trim(data).astype("f4") for name, data in block.inputs.items()}


def describe(block: Any, args: Any) -> dict[str, np.ndarray]:
    """Band 1 of 'a' where every input is valid, else nodata; records what it saw in
    ``args['seen']`` (inline runs only)."""
    if isinstance(args, dict) and "seen" in args:
        args["seen"].append(
            {
                "index": block.index,
                "window": block.window,
                "shape": block.shape,
                "nodata": dict(block.nodata),
                "transform": block.transform,
                "arrays": {k: v.copy() for k, v in block.inputs.items()},
            }
        )
    out = block.inputs["a"][0].astype("f4")
    out[~block.valid()] = NODATA
    return {"out": out[None]}


def raise_on_block(block: Any, args: Any) -> dict[str, np.ndarray]:
    """Fail on the block at ``args['index']`` with a message of our own."""
    if list(block.index) == list(args["index"]):
        raise ZeroDivisionError(f"no good at {tuple(block.index)}")
    return {"out": block.trim(block.inputs["red"]).astype("f4")}


def slow_ndvi(block: Any, args: Any) -> dict[str, np.ndarray]:
    """:func:`ndvi`, slowly (so a test can kill a worker mid-run); drops a file in
    ``args['marks']`` for every block started."""
    marks = args.get("marks") if isinstance(args, dict) else None
    if marks:
        open(os.path.join(marks, f"{os.getpid()}-{block.index[0]}-{block.index[1]}"), "w").close()
    time.sleep(args.get("sleep", 0.05) if isinstance(args, dict) else 0.05)
    return ndvi(block, args)


def wrong_shape(block: Any, args: Any) -> dict[str, np.ndarray]:
    """An output of the wrong size."""
    return {"out": np.zeros((1, 3, 3), "f4")}


def accumulate(block: Any, args: Any) -> None:
    """Add up band 1 of 'red' in ``args`` (no outputs)."""
    data = block.inputs["red"][0]
    args["sum"] += float(data.sum(dtype=np.float64))
    args["count"] += data.size


def bright(block: Any, args: Any) -> dict[str, np.ndarray]:
    """A mask: band 1 of 'red' over ``args['over']`` (booleans, written as uint8)."""
    return {"mask": block.inputs["red"][0] > args["over"]}


def worker_memory_faults(block: Any, args: Any) -> dict[str, np.ndarray]:
    """Ten times, allocate and touch four 2 MiB arrays at once, then free them (as a block
    function's temporaries come and go); returns the page faults that took (this
    process's minor faults, in every pixel of the block)."""
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        scratch = [np.ones(2 * 1024 * 1024 // 8) for _ in range(4)]
        del scratch
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    return {"faults": np.full((1, *block.trim(block.inputs["red"][0]).shape), faults, "f4")}


def gdal_cache_bytes(block: Any, args: Any) -> dict[str, np.ndarray]:
    """The GDAL block cache size the strip set (as a raster of that value, in MiB)."""
    import rasterio.env

    value = float(rasterio.env.getenv().get("GDAL_CACHEMAX", 0)) / 1024**2
    return {"cache": np.full((1, *block.trim(block.inputs["red"][0]).shape), value, "f4")}
