"""``pixelfleet histogram URL --bands 4,3,2``: look at a scene before choosing a stretch."""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import re
from typing import Any

import click

from pixelfleet.errors import ConfigError, InputError
from pixelfleet.models import Entry
from pixelfleet.ops.composite import RECIPES, band_files, recipe_bands
from pixelfleet.settings import get_settings
from pixelfleet.sources.scenes import LANDSAT_PATTERN, ScenePattern
from pixelfleet.storage import Storage, open_storage


@click.command()
@click.argument("url")
@click.option(
    "--bands",
    default=None,
    metavar="B,B,B",
    help="Bands (or band-math expressions) as channels, e.g. 4,3,2 (default: true-color).",
)
@click.option("--recipe", type=click.Choice(list(RECIPES)), default=None, help="Named bands.")
@click.option(
    "--pattern",
    "patterns",
    multiple=True,
    metavar="PATTERN",
    help=f"Band file names in a folder (repeatable; default {LANDSAT_PATTERN}).",
)
@click.option("--scene", default=None, help="Which scene, when the folder holds several.")
@click.option(
    "--stretch",
    type=click.Choice(["percentile", "fixed", "equalize"]),
    default="percentile",
    show_default=True,
)
@click.option("--percentiles", default="2,98", show_default=True, metavar="LOW,HIGH")
@click.option(
    "--ranges",
    default=None,
    metavar="LO-HI,...",
    help="Fixed ranges per channel, e.g. 5900-11000,6200-11000,7600-11000 (or -0.2:0.8).",
)
@click.option(
    "--sample",
    default=8,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Every Nth pixel and row.",
)
@click.option(
    "--output",
    "-o",
    default=None,
    metavar="PATH.png",
    help="Plot to write (JSON beside it, .json); default ./SCENE.hist.png.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as JSON.")
def histogram(
    url: str,
    bands: str | None,
    recipe: str | None,
    patterns: tuple[str, ...],
    scene: str | None,
    stretch: str,
    percentiles: str,
    ranges: str | None,
    sample: int,
    output: str | None,
    as_json: bool,
) -> None:
    """Histograms and statistics of a scene's bands, and of the channels after a stretch.

    URL is a scene's folder or prefix (band files found by --pattern), or one
    multi-band file. Writes a PNG plot and JSON statistics, prints a summary and the
    --set options that would fix the stretch at the ranges shown.
    """
    from pixelfleet.imagery.histograms import plot_histograms, scene_histograms

    if bands and recipe:
        raise ConfigError("give --bands or --recipe, not both")
    channels = (
        [b.strip() for b in bands.split(",")]
        if bands
        else list(recipe_bands(recipe or "true-color"))
    )
    low_high = _pair(percentiles, "--percentiles", ",")
    fixed = [_range(r) for r in ranges.split(",")] if ranges else None
    if stretch == "fixed" and not fixed:
        raise ConfigError("--stretch fixed needs --ranges, e.g. 5900-11000,6200-11000,7600-11000")
    if fixed and len(fixed) == 1:
        fixed = fixed * len(channels)
    from pixelfleet.imagery.composite import parse_channels

    needed = parse_channels(channels)
    storage, group, entries, pattern = _find_scene(url, patterns or (LANDSAT_PATTERN,), scene)
    with contextlib.ExitStack() as stack:
        files = band_files(storage, pattern, group, entries, needed, stack)
        stats = scene_histograms(
            files,
            channels,
            stretch=stretch,  # type: ignore[arg-type]
            percentiles=low_high,
            ranges=fixed,
            sample=sample,
            scene=group,
        )
    name = group.rsplit("/", 1)[-1]
    plot_path = output or f"{name}.hist.png"
    json_path = os.path.splitext(plot_path)[0] + ".json"
    with open(plot_path, "wb") as f:
        f.write(plot_histograms(stats, title=f"{name}: {','.join(channels)}"))
    with open(json_path, "w") as f:
        json.dump(stats, f, indent=1)
    if as_json:
        click.echo(json.dumps(stats, indent=1))
        return
    _show(stats)
    click.echo(f"plot:  {plot_path}\nstats: {json_path}")


def _pair(text: str, option: str, sep: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(sep))
    except ValueError:
        raise ConfigError(f"{option} {text!r} must look like LOW{sep}HIGH") from None
    if high <= low:
        raise ConfigError(f"{option} {text!r}: LOW must be below HIGH")
    return low, high


_RANGE = re.compile(r"\s*(-?[0-9.]+(?:e-?[0-9]+)?)\s*[:-]\s*(-?[0-9.]+(?:e-?[0-9]+)?)\s*", re.I)


def _range(text: str) -> tuple[float, float]:
    """``5900-11000`` or ``-0.2:0.8`` -> (low, high)."""
    m = _RANGE.fullmatch(text)
    if m is None:
        raise ConfigError(f"--ranges item {text!r} must look like LOW-HIGH or LOW:HIGH")
    low, high = float(m.group(1)), float(m.group(2))
    if high <= low:
        raise ConfigError(f"--ranges item {text!r}: LOW must be below HIGH")
    return low, high


def _find_scene(
    url: str, patterns: tuple[str, ...], scene: str | None
) -> tuple[Storage, str, list[Entry], ScenePattern | None]:
    """The storage, scene id and band files (or single multi-band file) URL names."""
    settings = get_settings()
    _scheme, sep, rest = url.partition("://")
    parent, name = url, ""
    if not url.endswith("/") and not (sep and "/" not in rest):  # not a folder or a bucket
        parent, name = posixpath.split(url)
    if name:
        storage = open_storage(parent or ".", settings)
        entry = storage.head(name)
        if entry is not None:
            stem = posixpath.splitext(name)[0]
            return storage, stem, [entry], None
    storage = open_storage(url, settings)
    pattern = ScenePattern(patterns)
    scenes: dict[str, list[Entry]] = {}
    for entry in storage.scan(""):
        match = pattern.match(entry.key)
        if match is not None and match.band is not None:
            scenes.setdefault(match.group, []).append(entry)
    if scene:
        chosen = {
            g: e
            for g, e in scenes.items()
            if scene.lower() in (g.lower(), g.rsplit("/", 1)[-1].lower())
        }
        if not chosen:
            raise InputError(
                f"{url}: no scene {scene!r}; found: {', '.join(sorted(scenes)) or 'none'}"
            )
        scenes = chosen
    if not scenes:
        raise InputError(
            f"{url}: no band files match {', '.join(patterns)}; give --pattern, e.g. "
            "--pattern 'sr_b{band}_{scene}.tif', or the URL of one multi-band file"
        )
    if len(scenes) > 1:
        raise InputError(
            f"{url} holds {len(scenes)} scenes ({', '.join(sorted(scenes)[:5])}...); "
            "choose one with --scene"
        )
    group, entries = next(iter(scenes.items()))
    return storage, group, entries, pattern


def _show(stats: dict[str, Any]) -> None:
    click.secho(
        f"{stats['scene']}: {stats['width']}x{stats['height']} px, {stats['crs']}; "
        f"sample: every {stats['sample_step']} px of every {stats['sample_step']} rows "
        f"({stats['pixels']['valid']:,} valid of {stats['pixels']['sampled']:,})",
        bold=True,
    )
    click.echo(f"{'band':>6} {'min':>9} {'p2':>9} {'p50':>9} {'p98':>9} {'max':>9} {'mean':>9}")
    for name, b in stats["bands"].items():
        if b["min"] is None:
            click.echo(f"{name:>6}  (no valid pixels)")
            continue
        p = b["percentiles"]
        click.echo(
            f"{name:>6} {b['min']:>9.6g} {p['p2']:>9.6g} {p['p50']:>9.6g} {p['p98']:>9.6g} "
            f"{b['max']:>9.6g} {b['mean']:>9.6g}"
        )
    click.echo(f"{'channel':>8} {'source':>10} {'stretch':>26} {'black %':>8} {'white %':>8}")
    ranges = []
    for ch in stats["channels"]:
        st = ch["stretch"]
        ranges.append(f"[{st['low']:.6g}, {st['high']:.6g}]")
        described = f"{st['mode']} {st['low']:.6g}-{st['high']:.6g}"
        click.echo(
            f"{ch['name']:>8} {ch['source']:>10} {described:>26} "
            f"{100 * ch['clipped']['low']:>8.2f} {100 * ch['clipped']['high']:>8.2f}"
        )
    if all(ch["stretch"]["mode"] == "percentile" for ch in stats["channels"]):
        click.echo(
            "to fix these ranges in a pipeline: --set steps.0.stretch=fixed "
            f"--set 'steps.0.ranges=[{', '.join(ranges)}]'"
        )
