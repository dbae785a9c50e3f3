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
from pixelfleet.imagery.stretch import Stretch, StretchMode, describe, fit_stretch

_COLOURS = {"red": "#d62728", "green": "#2ca02c", "blue": "#1f77b4", "grey": "#555555"}

#: Buckets of the histogram a composite's picture carries (STAC ``raster:bands``): four
#: output values each, from 0 to 255.
ASSET_BUCKETS = 64


def asset_bands(
    channels: Sequence[Channel],
    stretches: Sequence[Stretch],
    sample: dict[str, np.ndarray],
    valid: np.ndarray,
    buckets: int = ASSET_BUCKETS,
) -> list[dict[str, Any]]:
    """The STAC ``raster:bands`` of a composite's picture, one per channel: its name,
    what it shows (``band 4, percentile stretch 7012 to 11240``), statistics and a
    histogram of the output values (0-255, in ``buckets`` equal buckets; alpha left out).

    Counted on the sample the stretch was fitted on (the decimated read of
    :meth:`~pixelfleet.imagery.bands.BandReader.sample`), so it costs no extra read.
    Pixels without data (transparent in the picture) are left out of the counts;
    ``valid_percent`` says how many of the sampled pixels have data.
    """
    if 256 % buckets:
        raise ValueError(f"buckets {buckets} must divide 256 (e.g. 64)")
    names = CHANNEL_NAMES.get(
        len(channels), tuple(f"channel {i + 1}" for i in range(len(channels)))
    )
    out = []
    for name, ch, st in zip(names, channels, stretches, strict=True):
        values = ch.values(sample)
        ok = valid & np.isfinite(values) if values.dtype.kind == "f" else valid
        counts = np.bincount(st.apply(values[ok]), minlength=256).astype(np.int64)
        total = int(counts.sum())
        source = f"band {ch.text}" if ch.expression is None else _shorten(ch.text, 80)
        band: dict[str, Any] = {
            "name": name,
            "description": f"{source}, {st.mode} stretch {st.low:.6g} to {st.high:.6g}"
            + (f", gamma {st.gamma:g}" if st.gamma != 1.0 else ""),
            "data_type": "uint8",
        }
        if total:
            levels = np.arange(256, dtype=np.float64)
            mean = float(levels @ counts) / total
            std = float(np.sqrt(((levels - mean) ** 2) @ counts / total))
            used = np.flatnonzero(counts)
            band["statistics"] = {
                "minimum": int(used[0]),
                "maximum": int(used[-1]),
                "mean": round(mean, 2),
                "stddev": round(std, 2),
                "valid_percent": round(100.0 * total / max(1, valid.size), 2),
            }
            band["histogram"] = {
                "count": buckets,
                "min": -0.5,
                "max": 255.5,
                "buckets": [int(c) for c in counts.reshape(buckets, -1).sum(axis=1)],
            }
        out.append(band)
    return out


def _shorten(text: str, most: int) -> str:
    return text if len(text) <= most else text[: most - 3] + "..."


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
