"""Histogram plots and statistics, to choose a stretch by.

:func:`plot_histograms` draws the statistics :func:`~pixelfleet.imagery.composite.make_composite`
and :func:`scene_histograms` produce: the raw bands (from the decimated sample), with
each channel's stretch range marked, and the channels after stretch. Plots use
matplotlib's Agg backend (no display), installed with ``pip install
'pixelfleet[composite]'``.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import rasterio

from pixelfleet.errors import InputError, MissingExtraError
from pixelfleet.imagery.bands import (
    CHANNEL_NAMES,
    BandFile,
    BandReader,
    Channel,
    band_nodata,
    check_aligned,
    normal_band,
    open_band,
)
from pixelfleet.imagery.rasters import GDAL_OPTIONS
from pixelfleet.imagery.stretch import StretchMode, describe, fit_stretch

_COLOURS = {"red": "#d62728", "green": "#2ca02c", "blue": "#1f77b4", "grey": "#555555"}


def scene_histograms(
    bands: Sequence[BandFile],
    channels: Sequence[str],
    *,
    stretch: StretchMode = "percentile",
    percentiles: tuple[float, float] = (2.0, 98.0),
    ranges: Sequence[tuple[float, float]] | None = None,
    sample: int = 8,
    nodata: float | None = None,
    zero_is_nodata: bool = True,
    scene: str = "",
) -> dict[str, Any]:
    """Statistics of a scene's bands from a decimated sample, and of the channels after
    the given stretch (the same numbers a composite would use), without writing anything."""
    by_band = {normal_band(b.band): b for b in bands}
    chans = [Channel(c) for c in channels]
    needed: list[str] = []
    for ch in chans:
        needed.extend(b for b in ch.bands if b not in needed)
    missing = [b for b in needed if b not in by_band]
    if missing:
        raise InputError(
            f"{scene or 'scene'}: no file for band(s) {', '.join(missing)} (found bands: "
            f"{', '.join(by_band) or 'none'})"
        )
    with contextlib.ExitStack() as stack:
        stack.enter_context(rasterio.Env(**GDAL_OPTIONS))
        datasets = {b: open_band(by_band[b], stack) for b in needed}
        check_aligned(needed, datasets, by_band)
        nd = {b: band_nodata(datasets[b], by_band[b], nodata) for b in needed}
        reader = BandReader(datasets, by_band, nd, zero_is_nodata)
        arrays, valid = reader.sample(sample)
        first = datasets[needed[0]]
        stats: dict[str, Any] = {
            "scene": scene,
            "width": first.width,
            "height": first.height,
            "crs": first.crs.to_string() if first.crs else None,
            "sample_step": reader.step(sample),
            "bands": {
                b: dict(describe(arrays[b][valid], valid.size), file=by_band[b].label)
                for b in needed
            },
        }
    names = CHANNEL_NAMES.get(len(chans), tuple(f"channel {i + 1}" for i in range(len(chans))))
    out_channels = []
    for i, ch in enumerate(chans):
        values = ch.values(arrays)
        ok = valid & np.isfinite(values) if values.dtype.kind == "f" else valid
        fixed = ranges[i] if ranges else None
        st = fit_stretch(values[ok], stretch, percentiles, fixed)
        stretched = st.apply(values[ok])
        out_channels.append(
            {
                "name": names[i],
                "source": ch.text,
                "stretch": st.to_dict(),
                "histogram": {"counts": np.bincount(stretched, minlength=256).tolist()},
                "clipped": {
                    "low": float(np.mean(stretched == 0)) if stretched.size else 0.0,
                    "high": float(np.mean(stretched == 255)) if stretched.size else 0.0,
                },
            }
        )
    stats["channels"] = out_channels
    stats["pixels"] = {"sampled": int(valid.size), "valid": int(np.count_nonzero(valid))}
    return stats


def plot_histograms(stats: dict[str, Any], title: str = "") -> bytes:
    """A PNG: raw band histograms with stretch ranges above, stretched channels below."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise MissingExtraError(
            "histogram plots need matplotlib: pip install 'pixelfleet[composite]'"
        ) from exc

    fig = Figure(figsize=(9, 6.5), dpi=100, layout="constrained")
    top, bottom = fig.subplots(2, 1)
    channels = stats.get("channels", [])
    for name, band in stats.get("bands", {}).items():
        hist = band.get("histogram")
        if not hist:
            continue
        edges = np.asarray(hist["edges"])
        counts = np.asarray(hist["counts"])
        colour = next(
            (_COLOURS.get(c["name"]) for c in channels if c["source"].strip() == name), None
        )
        top.stairs(counts, edges, label=f"band {name}", color=colour, linewidth=1.2)
    for ch in channels:
        st = ch["stretch"]
        colour = _COLOURS.get(ch["name"], "#555555")
        if ch["source"].strip() in stats.get("bands", {}):
            for x in (st["low"], st["high"]):
                top.axvline(x, color=colour, linestyle="--", linewidth=0.9)
    step = int(stats.get("sample_step", 1))
    sampled = "every pixel" if step == 1 else f"every {_ordinal(step)} pixel and row"
    top.set_title(f"bands (raw values; {sampled}); dashed: stretch ranges")
    top.set_xlabel("value")
    top.set_ylabel("pixels in sample")
    if stats.get("bands"):
        top.legend(loc="upper right", fontsize=8)
    for ch in channels:
        counts = np.asarray(ch["histogram"]["counts"])
        colour = _COLOURS.get(ch["name"], "#555555")
        bottom.stairs(counts, np.arange(257), label=f"{ch['name']} ({ch['source']})", color=colour)
    bottom.set_xlim(0, 256)
    bottom.set_title("channels after stretch (0-255)")
    bottom.set_xlabel("output value")
    bottom.set_ylabel("pixels")
    if channels:
        bottom.legend(loc="upper right", fontsize=8)
    if title:
        fig.suptitle(title)
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
