"""Overview levels of an output, made from the full-resolution blocks as they are written.

A level of factor ``f`` has one pixel per ``f`` x ``f`` cell of the output (cells at the
right and bottom edges are cut short by the image). Two aggregations:

- ``nearest`` (RIOS's default): the pixel at the centre of the cell (for an even
  ``f``, the one below and to the right of it);
- ``average``: the mean of the cell's valid pixels (not nodata, not NaN), rounded for
  integer types; a cell without any is nodata (NaN for floats without a nodata value).

Each worker makes the levels of its own strip from the blocks it computes, for every
factor that divides the strip's height (so no cell is split between strips); coarser
levels, if any, are made from the finest one at the end (:func:`reduce_level`).
"""

from __future__ import annotations

import math

import numpy as np

from pixelfleet.blocks.statistics import valid_mask


def centres(n: int, factor: int, first: int = 0, last: int | None = None) -> np.ndarray:
    """The index of the pixel picked by ``nearest`` for cells ``first..last-1`` of a
    side ``n`` pixels long."""
    count = math.ceil(n / factor)
    cells = np.arange(first, count if last is None else last)
    starts = cells * factor
    picked: np.ndarray = starts + np.minimum(factor, n - starts) // 2
    return picked


def empty_value(dtype: np.dtype, nodata: float | None) -> float:
    """What a level pixel with no data holds: nodata, else NaN (floats) or 0."""
    if nodata is not None:
        return nodata
    return math.nan if dtype.kind == "f" else 0


class LevelBuilder:
    """One overview level of one strip of an output, filled block by block.

    The strip covers rows ``row0..row1`` of an output ``width`` x ``height``; ``row0``
    is a multiple of ``factor``.
    """

    def __init__(
        self,
        factor: int,
        aggregation: str,
        bands: int,
        dtype: np.dtype,
        nodata: float | None,
        width: int,
        height: int,
        row0: int,
        row1: int,
    ):
        self.factor = factor
        self.aggregation = aggregation
        self.dtype = dtype
        self.nodata = nodata
        self.row0 = row0 // factor
        self.rows = math.ceil(row1 / factor) - self.row0
        self.cols = math.ceil(width / factor)
        shape = (bands, self.rows, self.cols)
        if aggregation == "nearest":
            self._pick_rows = centres(height, factor, self.row0, self.row0 + self.rows)
            self._pick_cols = centres(width, factor)
            self.values = np.full(shape, empty_value(dtype, nodata), dtype)
        else:
            self.sums = np.zeros(shape, np.float64)
            self.counts = np.zeros(shape, np.int32)

    def add(self, array: np.ndarray, col: int, row: int, valid: np.ndarray | None) -> None:
        """Take in a block: ``array`` ``(bands, rows, cols)`` at (``col``, ``row``) of the
        output, with its validity (None: all valid)."""
        if self.aggregation == "nearest":
            self._add_nearest(array, col, row)
        else:
            self._add_average(array, col, row, valid)

    def _add_nearest(self, array: np.ndarray, col: int, row: int) -> None:
        _, rows, cols = array.shape
        r = np.nonzero((self._pick_rows >= row) & (self._pick_rows < row + rows))[0]
        c = np.nonzero((self._pick_cols >= col) & (self._pick_cols < col + cols))[0]
        if not r.size or not c.size:
            return
        picked = array[:, self._pick_rows[r] - row][:, :, self._pick_cols[c] - col]
        self.values[:, r[0] : r[-1] + 1, c[0] : c[-1] + 1] = picked

    def _add_average(self, array: np.ndarray, col: int, row: int, valid: np.ndarray | None) -> None:
        f = self.factor
        _, rows, cols = array.shape
        # Where each cell starts inside the block (the block may start mid-cell).
        row_starts = np.unique(np.r_[0, np.arange(-row % f, rows, f)])
        col_starts = np.unique(np.r_[0, np.arange(-col % f, cols, f)])
        values = array.astype(np.float64)
        if valid is None:
            ones = np.ones(array.shape, np.int32)
        else:
            values[~valid] = 0.0
            ones = valid.astype(np.int32)
        sums = np.add.reduceat(np.add.reduceat(values, row_starts, axis=1), col_starts, axis=2)
        counts = np.add.reduceat(np.add.reduceat(ones, row_starts, axis=1), col_starts, axis=2)
        r0 = row // f - self.row0
        c0 = col // f
        self.sums[:, r0 : r0 + sums.shape[1], c0 : c0 + sums.shape[2]] += sums
        self.counts[:, r0 : r0 + sums.shape[1], c0 : c0 + sums.shape[2]] += counts

    def result(self) -> np.ndarray:
        """The level's pixels for this strip, ``(bands, rows, cols)``, in the output type."""
        if self.aggregation == "nearest":
            return self.values
        return finish_average(self.sums, self.counts, self.dtype, self.nodata)


def finish_average(
    sums: np.ndarray, counts: np.ndarray, dtype: np.dtype, nodata: float | None
) -> np.ndarray:
    """Means from sums and counts, in ``dtype``; empty cells get the empty value."""
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        means = np.clip(np.rint(means), info.min, info.max)
    out = means.astype(dtype) if dtype.kind == "f" else np.where(counts > 0, means, 0).astype(dtype)
    out[counts == 0] = empty_value(dtype, nodata)
    return out


def reduce_level(
    data: np.ndarray, factor: int, aggregation: str, nodata: float | None
) -> np.ndarray:
    """A coarser level from rows of a finer one: ``data`` ``(bands, rows, cols)`` starts
    at a row that is a multiple of ``factor`` (its last rows may be a short cell)."""
    bands, rows, cols = data.shape
    if aggregation == "nearest":
        return data[:, centres(rows, factor)][:, :, centres(cols, factor)]
    builder = LevelBuilder(factor, "average", bands, data.dtype, nodata, cols, rows, 0, rows)
    builder.add(data, 0, 0, valid_mask(data, nodata))
    return builder.result()
