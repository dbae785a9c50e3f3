"""Per-band statistics of an output, gathered block by block and combined at the end.

Every worker keeps, per band of its strip, the count of pixels and of valid ones
(neither the output's nodata value nor NaN), their minimum, maximum, sum and sum of
squares; the strips' figures are added up in strip order, so the result does not
depend on how many workers ran. They become GDAL's ``STATISTICS_*`` metadata (the
standard deviation is the population one, as GDAL computes it).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class BandStats:
    """Running statistics of one band."""

    total: int = 0
    count: int = 0
    minimum: float = math.inf
    maximum: float = -math.inf
    sum: float = 0.0
    sumsq: float = 0.0

    def add(self, values: np.ndarray, valid: np.ndarray | None) -> None:
        """Count the pixels of ``values`` (one band), those where ``valid`` is True."""
        self.total += values.size
        picked = values if valid is None else values[valid]
        if not picked.size:
            return
        self.count += int(picked.size)
        self.minimum = min(self.minimum, float(picked.min()))
        self.maximum = max(self.maximum, float(picked.max()))
        as64 = picked.astype(np.float64, copy=False).ravel()
        self.sum += float(as64.sum())
        # einsum, not np.dot: BLAS would wake its thread pool, which then spins for CPU.
        self.sumsq += float(np.einsum("i,i->", as64, as64))

    def merge(self, other: BandStats) -> None:
        """Add another strip's figures."""
        self.total += other.total
        self.count += other.count
        self.minimum = min(self.minimum, other.minimum)
        self.maximum = max(self.maximum, other.maximum)
        self.sum += other.sum
        self.sumsq += other.sumsq

    @property
    def mean(self) -> float:
        """Mean of the valid pixels (NaN without any)."""
        return self.sum / self.count if self.count else math.nan

    @property
    def stddev(self) -> float:
        """Population standard deviation of the valid pixels (NaN without any)."""
        if not self.count:
            return math.nan
        mean = self.mean
        return math.sqrt(max(self.sumsq / self.count - mean * mean, 0.0))

    @property
    def valid_percent(self) -> float:
        """Percentage of pixels that are valid."""
        return 100.0 * self.count / self.total if self.total else 0.0

    def tags(self) -> dict[str, str]:
        """GDAL's ``STATISTICS_*`` metadata items (none for a band without valid pixels)."""
        if not self.count:
            return {}
        return {
            "STATISTICS_MINIMUM": repr(self.minimum),
            "STATISTICS_MAXIMUM": repr(self.maximum),
            "STATISTICS_MEAN": repr(self.mean),
            "STATISTICS_STDDEV": repr(self.stddev),
            "STATISTICS_VALID_PERCENT": f"{self.valid_percent:.6g}",
        }

    def to_list(self) -> list[float]:
        """As JSON-ready numbers (infinite extremes of an empty band as None)."""
        return [
            self.total,
            self.count,
            self.minimum if self.count else None,  # type: ignore[list-item]
            self.maximum if self.count else None,  # type: ignore[list-item]
            self.sum,
            self.sumsq,
        ]

    @classmethod
    def from_list(cls, values: Sequence[float | None]) -> BandStats:
        """The inverse of :meth:`to_list`."""
        total, count, low, high, total_sum, sumsq = values
        return cls(
            total=int(total or 0),
            count=int(count or 0),
            minimum=math.inf if low is None else float(low),
            maximum=-math.inf if high is None else float(high),
            sum=float(total_sum or 0.0),
            sumsq=float(sumsq or 0.0),
        )


def valid_mask(array: np.ndarray, nodata: float | None) -> np.ndarray | None:
    """Where ``array`` holds data: not ``nodata`` and not NaN (None: everywhere)."""
    if array.dtype.kind != "f":
        if nodata is None:
            return None
        return np.asarray(array != array.dtype.type(nodata))
    valid: np.ndarray = ~np.isnan(array)
    if nodata is not None and not math.isnan(nodata):
        valid &= array != array.dtype.type(nodata)
    return valid


def combine(parts: Iterable[Sequence[BandStats]]) -> list[BandStats]:
    """Per-band statistics of several strips, added in order."""
    out: list[BandStats] = []
    for bands in parts:
        if not out:
            out = [BandStats() for _ in bands]
        for mine, theirs in zip(out, bands, strict=True):
            mine.merge(theirs)
    return out
