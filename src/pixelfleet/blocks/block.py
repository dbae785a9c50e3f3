"""The block a user's function receives: the inputs' pixels for one window, and where it is."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window


@dataclass
class Block:
    """One block of every input, aligned on the reference grid.

    - ``inputs[name]``: a ``(bands, rows, cols)`` array in the input's own type, with
      ``overlap`` extra rows and columns on every side (the margin). Where an input has
      no data (outside its extent, including past the grid's edge) the pixels are its
      nodata value, or 0 for an input that declares none.
    - ``nodata[name]``: each input's nodata value (None when it has none).
    - ``window``: the block on the grid, without the margin (rasterio ``Window``, in
      grid pixels); ``index``: its (row, column) among the blocks.
    - ``transform``: the affine transform of the arrays (their top-left pixel is the
      margin's); ``crs``: the grid's.
    - ``args``: what the run was given as ``args`` (also passed to the function).

    The function returns ``{output name: array}``, each ``(bands, rows, cols)`` (or
    ``(rows, cols)`` for one band), either the shape of the inputs' arrays (the margin
    included, as in RIOS: pixelfleet trims it) or the shape of the window.
    """

    inputs: dict[str, np.ndarray]
    nodata: dict[str, float | None]
    window: Window
    index: tuple[int, int]
    overlap: int
    transform: Affine
    crs: CRS | None
    args: Any = None
    _masks: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of the input arrays, the margin included."""
        rows = int(self.window.height) + 2 * self.overlap
        cols = int(self.window.width) + 2 * self.overlap
        return rows, cols

    def mask(self, name: str) -> np.ndarray:
        """``(bands, rows, cols)`` booleans for input ``name``: True where a pixel is data,
        False where it is the input's nodata value (or NaN). All True for an input
        without a nodata value, except NaN."""
        cached = self._masks.get(name)
        if cached is not None:
            return cached
        data = self.inputs[name]
        nodata = self.nodata.get(name)
        if nodata is None:
            valid = ~np.isnan(data) if data.dtype.kind == "f" else np.ones(data.shape, bool)
        elif isinstance(nodata, float) and np.isnan(nodata):
            valid = ~np.isnan(data)
        else:
            valid = data != data.dtype.type(nodata)
            if data.dtype.kind == "f":
                valid &= ~np.isnan(data)
        self._masks[name] = valid
        return valid

    def valid(self, *names: str) -> np.ndarray:
        """``(rows, cols)`` booleans: True where every band of every named input (all
        inputs by default) is data."""
        out = np.ones(self.shape, bool)
        for name in names or tuple(self.inputs):
            out &= self.mask(name).all(axis=0)
        return out

    def coords(self) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)``: the grid coordinates of every pixel's centre, two ``(rows, cols)``
        arrays (RIOS's ``info.getBlockCoordArrays``), margin included."""
        rows, cols = self.shape
        t = self.transform
        xs = t.c + t.a * (np.arange(cols) + 0.5)
        ys = t.f + t.e * (np.arange(rows) + 0.5)
        x, y = np.meshgrid(xs, ys)
        return x, y

    def trim(self, array: np.ndarray) -> np.ndarray:
        """``array`` without the margin (for arrays shaped like the inputs')."""
        o = self.overlap
        if not o:
            return array
        return array[..., o:-o, o:-o]


def as_bands(name: str, value: Any, block: Block) -> np.ndarray:
    """A function's output array as ``(bands, rows, cols)`` for the window (the margin
    trimmed); a wrong shape raises ``ValueError`` naming the shapes that would do."""
    array = np.asarray(value)
    if array.ndim == 2:
        array = array[None]
    rows, cols = block.shape
    core = (int(block.window.height), int(block.window.width))
    if array.ndim == 3 and array.shape[1:] == (rows, cols):
        return block.trim(array)
    if array.ndim == 3 and array.shape[1:] == core:
        return array
    raise ValueError(
        f"output {name!r} has shape {np.shape(value)}; return (bands, {rows}, {cols}) "
        f"(the inputs' shape, margin included) or (bands, {core[0]}, {core[1]}) (the window)"
    )


def check_outputs(result: Any, names: Mapping[str, object]) -> dict[str, Any]:
    """The function's result as a dict holding every output, or a ``ValueError`` saying
    what is missing or unexpected. With no outputs (a run that only reads, gathering
    something in ``args``), the function may return None."""
    if result is None and not names:
        return {}
    if not isinstance(result, Mapping):
        raise ValueError(
            f"the function returned {type(result).__name__}; return a dict of output arrays, "
            f"e.g. {{{', '.join(repr(n) + ': array' for n in names)}}}"
        )
    missing = [n for n in names if n not in result]
    extra = [n for n in result if n not in names]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(map(repr, missing))}")
        if extra:
            parts.append(f"unexpected {', '.join(map(repr, extra))}")
        raise ValueError(
            f"the function's outputs do not match: {'; '.join(parts)} "
            f"(the outputs are {', '.join(map(repr, names))})"
        )
    return dict(result)
