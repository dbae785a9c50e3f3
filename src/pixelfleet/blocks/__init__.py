"""Block processing, RIOS style: your function over aligned blocks of many rasters.

::

    from pixelfleet import blocks

    def ndvi(block, args):
        red = block.inputs["red"][0].astype("f4")
        nir = block.inputs["nir"][0].astype("f4")
        out = (nir - red) / (nir + red + 1e-9)
        out[~block.valid()] = -9999
        return {"ndvi": out[None]}

    blocks.apply(
        ndvi,
        inputs={"red": "LC08_x_B4.TIF", "nir": "LC08_x_B5.TIF"},
        outputs={"ndvi": blocks.Output("LC08_x_ndvi.tif", dtype="float32", nodata=-9999)},
        block_size=512, overlap=0, grid="red", footprint="intersection",
        resampling="nearest", executor="local",
    )

Every input is read on one reference grid (an input's, or an explicit :class:`Grid`),
reprojected or resampled block by block where it is not on it; the blocks run in
parallel (threads, processes or Dask), each worker compressing its own part of the
outputs, which are tiled GeoTIFFs in the Cloud Optimized layout with overviews and
statistics. ``docs/blocks.md`` is the guide, with a table for RIOS users; the pipeline
step is ``op = "blocks"`` (:mod:`pixelfleet.ops.blocks`).

The names below load on first use, so a worker process that imports one module of
this package does not import them all.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pixelfleet.blocks.block import Block
    from pixelfleet.blocks.driver import ApplyResult, OutputInfo, apply, compute
    from pixelfleet.blocks.grid import GridSpec
    from pixelfleet.blocks.spec import Grid, Input, Output
    from pixelfleet.blocks.statistics import BandStats
    from pixelfleet.blocks.strips import BlockFunctionError

__all__ = [
    "ApplyResult",
    "BandStats",
    "Block",
    "BlockFunctionError",
    "Grid",
    "GridSpec",
    "Input",
    "Output",
    "OutputInfo",
    "apply",
    "compute",
]

_WHERE = {
    "ApplyResult": "driver",
    "OutputInfo": "driver",
    "apply": "driver",
    "compute": "driver",
    "Block": "block",
    "GridSpec": "grid",
    "Grid": "spec",
    "Input": "spec",
    "Output": "spec",
    "BandStats": "statistics",
    "BlockFunctionError": "strips",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'pixelfleet.blocks' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"pixelfleet.blocks.{module}"), name)
    globals()[name] = value
    return value
