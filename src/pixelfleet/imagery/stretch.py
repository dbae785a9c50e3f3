"""Stretching values to 8 bits: fixed ranges, percentiles, histogram equalisation, gamma.

A :class:`Stretch` is fitted once per channel from a sample of the valid values (a
decimated nearest-neighbour read: every 8th pixel of every 8th row by default, which
matches exact percentiles to well within 1% of the range) and then applied to every
window of the full-resolution data. For integer bands of up to 16 bits it becomes a
lookup table from raw value to output byte, so applying it is one indexing
operation per pixel whatever the stretch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

StretchMode = Literal["percentile", "fixed", "equalize"]

#: Percentiles reported by :func:`describe` (and in histogram JSON).
REPORTED_PERCENTILES = (0.5, 1.0, 2.0, 5.0, 25.0, 50.0, 75.0, 95.0, 98.0, 99.0, 99.5)

# Equalisation maps through this many quantiles of the sample (for float channels).
_EQ_STEPS = 1024


@dataclass
class Stretch:
    """How one channel's values become bytes: ``low`` -> 0, ``high`` -> 255 (linear,
    then gamma), or through equalisation ``knots`` (values at evenly spaced quantiles)."""

    mode: StretchMode
    low: float
    high: float
    gamma: float = 1.0
    knots: np.ndarray | None = None

    def apply(self, values: np.ndarray) -> np.ndarray:
        """Stretch an array of raw (or computed float) values to uint8."""
        data = values.astype(np.float32, copy=False)
        if self.knots is not None:
            levels = np.linspace(0.0, 1.0, len(self.knots), dtype=np.float32)
            t = np.interp(data, self.knots, levels).astype(np.float32)
        else:
            span = self.high - self.low
            t = (np.clip(data, self.low, self.high) - np.float32(self.low)) * np.float32(1.0 / span)
        if self.gamma != 1.0:
            t = np.power(t, np.float32(1.0 / self.gamma))
        out = t * np.float32(255.0) + np.float32(0.5)
        scaled: np.ndarray = np.nan_to_num(out, nan=0.0).astype(np.uint8)
        return scaled

    def lut(self, dtype: np.dtype[Any]) -> np.ndarray | None:
        """A lookup table indexed by raw value (offset by ``-min`` for signed types), or
        None when the dtype has too many values for one (floats, 32-bit integers)."""
        if dtype.kind not in "ui" or dtype.itemsize > 2:
            return None
        info = np.iinfo(dtype)
        values = np.arange(info.min, info.max + 1, dtype=np.int64)
        return self.apply(values)

    def to_dict(self) -> dict[str, Any]:
        """The stretch as JSON-compatible data."""
        out: dict[str, Any] = {
            "mode": self.mode,
            "low": self.low,
            "high": self.high,
            "gamma": self.gamma,
        }
        return out


def fit_stretch(
    sample: np.ndarray,
    mode: StretchMode,
    percentiles: tuple[float, float] = (2.0, 98.0),
    fixed: tuple[float, float] | None = None,
    gamma: float = 1.0,
) -> Stretch:
    """Fit a stretch to a 1-D sample of valid, finite values.

    A sample with no values stretches 0..1 (everything shows black); a constant
    sample gets a range of one unit around its value (mid-grey).
    """
    if mode == "fixed":
        if fixed is None:
            raise ValueError("a fixed stretch needs a range, e.g. [5900, 11000]")
        low, high = float(fixed[0]), float(fixed[1])
        return Stretch("fixed", low, high, gamma)
    if sample.size == 0:
        return Stretch(mode, 0.0, 1.0, gamma)
    if mode == "equalize":
        quantiles = np.linspace(0.0, 100.0, _EQ_STEPS + 1)
        knots = np.percentile(sample, quantiles).astype(np.float64)
        knots = np.maximum.accumulate(knots)
        low, high = float(knots[0]), float(knots[-1])
        if high <= low:
            return Stretch("equalize", low - 0.5, low + 0.5, gamma)
        # Ties (many equal values) would make np.interp jump: nudge knots apart.
        knots = knots + np.arange(len(knots)) * (high - low) * 1e-9
        return Stretch("equalize", low, high, gamma, knots=knots)
    low, high = (float(v) for v in np.percentile(sample, percentiles))
    if high <= low:
        low, high = low - 0.5, low + 0.5
    return Stretch("percentile", low, high, gamma)


def describe(sample: np.ndarray, total: int, bins: int = 256) -> dict[str, Any]:
    """Statistics of a 1-D sample of valid values: min, max, mean, std, percentiles,
    counts, and a histogram of ``bins`` equal bins between min and max.

    ``total`` is how many sampled pixels there were, valid or not.
    """
    out: dict[str, Any] = {"count": int(sample.size), "sampled": int(total)}
    out["invalid"] = int(total - sample.size)
    if sample.size == 0:
        out.update(min=None, max=None, mean=None, std=None, percentiles={}, histogram=None)
        return out
    low, high = float(sample.min()), float(sample.max())
    pct = np.percentile(sample, REPORTED_PERCENTILES)
    counts, edges = np.histogram(sample, bins=bins, range=(low, high if high > low else low + 1))
    out.update(
        min=low,
        max=high,
        mean=float(sample.mean(dtype=np.float64)),
        std=float(sample.std(dtype=np.float64)),
        percentiles={_pct_key(p): float(v) for p, v in zip(REPORTED_PERCENTILES, pct, strict=True)},
        histogram={"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]},
    )
    return out


def _pct_key(p: float) -> str:
    return f"p{p:g}"
