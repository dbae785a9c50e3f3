"""The item page's composites: each picture with a histogram of its channels.

A composite step stores, with its picture and its COG, the STAC ``raster:bands`` of
the picture: per channel (red, green, blue, or grey) what it shows, statistics and a
histogram of its output values (see :func:`pixelfleet.imagery.histograms.asset_bands`).
The page draws that histogram as an inline SVG, with the same numbers as a table for
people who cannot see it; nothing is read from the rasters when a page is asked for.
"""

from __future__ import annotations

from typing import Any

#: Line colours of the channels (each at least 3:1 against white, as WCAG asks of graphics).
COLOURS = {"red": "#c62828", "green": "#2e7d32", "blue": "#1565c0", "grey": "#4b5563"}
#: The plot inside the SVG's view box: left, top, width (one unit per output value), height.
LEFT, TOP, WIDTH, HEIGHT = 16, 16, 256, 100
#: The SVG's view box: the plot, and room for the axes' labels.
VIEW_BOX = f"0 0 {LEFT + WIDTH + 12} {TOP + HEIGHT + 16}"
#: Where the value axis is labelled.
TICKS = (0, 64, 128, 192, 255)


def histogram_of(band: dict[str, Any]) -> list[int] | None:
    """The bucket counts of a ``raster:bands`` entry over 0-255, or None when it has none
    (or one this page cannot draw)."""
    hist = band.get("histogram")
    if not isinstance(hist, dict):
        return None
    buckets = hist.get("buckets")
    if not isinstance(buckets, list) or not buckets or 256 % len(buckets):
        return None
    if not all(isinstance(c, int) and c >= 0 for c in buckets):
        return None
    if hist.get("min") != -0.5 or hist.get("max") != 255.5:
        return None
    return buckets


def step_path(counts: list[int], top: int) -> str:
    """An SVG path outlining ``counts`` as steps over the plot (filled down to the axis)."""
    width = WIDTH / len(counts)
    base = TOP + HEIGHT
    parts = [f"M{LEFT},{base}"]
    for i, n in enumerate(counts):
        y = base - HEIGHT * n / top if top else base
        parts.append(f"V{y:.1f}H{LEFT + (i + 1) * width:g}")
    parts.append(f"V{base}Z")
    return "".join(parts)


def _number(value: Any, digits: int = 1) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "—"
    return f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"


def _peak(counts: list[int]) -> str:
    """The output values of the fullest bucket, as ``128–131``."""
    width = 256 // len(counts)
    i = max(range(len(counts)), key=counts.__getitem__)
    return f"{i * width}–{i * width + width - 1}" if width > 1 else str(i)


def channel_rows(bands: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A composite's channels as the page shows them: name, colour, what each shows, its
    statistics, and its histogram (None when the band has none)."""
    rows: list[dict[str, Any]] = []
    for band in bands:
        name = str(band.get("name") or f"channel {len(rows) + 1}")
        found = band.get("statistics")
        stats: dict[str, Any] = found if isinstance(found, dict) else {}
        counts = histogram_of(band)
        rows.append(
            {
                "name": name,
                "colour": COLOURS.get(name, COLOURS["grey"]),
                "shows": str(band.get("description") or "—"),
                "mean": _number(stats.get("mean")),
                "stddev": _number(stats.get("stddev")),
                "range": f"{_number(stats.get('minimum'))}–{_number(stats.get('maximum'))}",
                "valid": _number(stats.get("valid_percent")),
                "counts": counts,
                "peak": _peak(counts) if counts and any(counts) else None,
            }
        )
    return rows


def histogram_chart(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """What the page's SVG draws: a step outline per channel, on one scale (the fullest
    bucket of any channel at the top), with the value axis ticks. None without counts."""
    drawn = [r for r in rows if r["counts"]]
    if not drawn:
        return None
    top = max(max(r["counts"]) for r in drawn)
    base = TOP + HEIGHT
    buckets = len(drawn[0]["counts"])
    return {
        "view_box": VIEW_BOX,
        "paths": [{"d": step_path(r["counts"], top), "colour": r["colour"]} for r in drawn],
        "axis": {"x1": LEFT, "x2": LEFT + WIDTH, "y": base, "top": TOP},
        "ticks": [{"x": LEFT + v * WIDTH / 255, "label": str(v)} for v in TICKS],
        "top": f"{top:,}",
        "buckets": buckets,
        "bucket_rows": [
            {
                "span": f"{i * (256 // buckets)}–{(i + 1) * (256 // buckets) - 1}",
                "counts": [
                    f"{r['counts'][i]:,}" if len(r["counts"]) == buckets else "—" for r in drawn
                ],
            }
            for i in range(buckets)
        ],
        "columns": [r["name"] for r in drawn],
    }


def describe_chart(name: str, rows: list[dict[str, Any]]) -> str:
    """The chart in words, for its text alternative."""
    parts = [
        f"{r['name']} ({r['shows']}): mean {r['mean']}, most pixels at {r['peak']}"
        for r in rows
        if r["peak"]
    ]
    n = len(next((r["counts"] for r in rows if r["counts"]), []))
    return (
        f"Histogram of the {name} composite's channels: pixels per output value, 0 to 255, "
        f"in {n} buckets. " + "; ".join(parts) + "."
    )


def composite_group(name: str) -> str:
    """The composite an asset belongs to: its name without ``-image``, ``-cog``,
    ``-histogram`` or ``-stats`` (``true-color-image`` -> ``true-color``)."""
    for suffix in ("-image", "-cog", "-histogram", "-stats"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def composites_of(item: dict[str, Any], link: Any, title: str) -> list[dict[str, Any]]:
    """The item's composites, in asset order: each is the assets whose ``raster:bands``
    carry histograms (a composite's picture and COG), grouped by composite. ``link(name)``
    gives an asset's URL for the page (or None)."""
    assets = item.get("assets") or {}
    groups: dict[str, dict[str, Any]] = {}
    for name, asset in assets.items():
        bands = asset.get("raster:bands")
        if not isinstance(bands, list) or not any(
            isinstance(b, dict) and histogram_of(b) for b in bands
        ):
            continue
        group = groups.setdefault(composite_group(name), {"picture": None, "bands": None})
        roles = asset.get("roles") or []
        if "overview" in roles and group["picture"] is None:
            group["picture"] = link(name)
        if group["bands"] is None or "overview" in roles:
            group["bands"] = [b for b in bands if isinstance(b, dict)]
    out = []
    for recipe, group in groups.items():
        rows = channel_rows(group["bands"])
        plot = f"{recipe}-histogram"
        shows = ", ".join(f"{r['name']} = {r['shows'].split(',')[0]}" for r in rows)
        out.append(
            {
                "name": recipe,
                "picture": group["picture"],
                "alt": f"The {recipe} composite of {title} ({shows})",
                "rows": rows,
                "chart": histogram_chart(rows),
                "summary": describe_chart(recipe, rows),
                "plot": link(plot) if plot in assets else None,
            }
        )
    return out
