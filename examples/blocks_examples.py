"""Block functions for the examples: NDVI and a 5 x 5 focal mean.

A block function takes a :class:`pixelfleet.blocks.Block` and the run's ``args`` and
returns ``{output name: array}``; see docs/blocks.md. Pipelines name these functions by
reference (``function = "blocks_examples:ndvi"``), so this file's folder must be on
``PYTHONPATH`` wherever workers run: ``PYTHONPATH=examples pixelfleet run ...``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: A new version redoes every scene a pipeline made with the old one.
__version__ = "1"

NODATA = -9999.0


def ndvi(block: Any, args: Any) -> dict[str, np.ndarray]:
    """(NIR - red) / (NIR + red) as float32; -9999 where either band has no data."""
    red = block.inputs["red"][0].astype("f4")
    nir = block.inputs["nir"][0].astype("f4")
    out = (nir - red) / (nir + red + np.float32(1e-9))
    out[~block.valid("red", "nir")] = NODATA
    return {"ndvi": out[None]}


def focal_mean(block: Any, args: Any) -> dict[str, np.ndarray]:
    """The mean of each pixel's ``size`` x ``size`` neighbourhood (``args["size"]``, 5 by
    default), band by band. Needs ``overlap = size // 2``; returned with the margin,
    which pixelfleet trims, as RIOS does."""
    size = int((args or {}).get("size", 5))
    image = block.inputs["image"].astype(np.float64)
    sums = np.cumsum(np.cumsum(np.pad(image, ((0, 0), (1, 0), (1, 0))), axis=1), axis=2)
    out = np.zeros(image.shape, np.float32)
    half = size // 2
    box = (
        sums[:, size:, size:]
        - sums[:, :-size, size:]
        - sums[:, size:, :-size]
        + sums[:, :-size, :-size]
    )
    out[:, half : half + box.shape[1], half : half + box.shape[2]] = box / (size * size)
    return {"mean": out}
