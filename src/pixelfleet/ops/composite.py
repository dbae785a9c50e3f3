"""The ``composite`` step: a true- or false-colour composite of a whole scene.

A task-scope op (``scope = "task"``): the worker hands it all of a scene's band files
at once (``partition = { by = "scene", pattern = "{scene}_B{band}.TIF" }``), or a
single multi-band file whose bands it indexes. The work itself is in
:mod:`pixelfleet.imagery.composite`; this module holds the settings, the named recipes,
output keys, and the wiring to storage.
"""

from __future__ import annotations

import contextlib
import json
import posixpath
import tempfile
from collections.abc import Sequence
from typing import Any, Literal, cast

from pydantic import Field, field_validator, model_validator

from pixelfleet.errors import ConfigError, InputError, UnknownNameError, UnsupportedFormatError
from pixelfleet.imagery.bandmath import is_expression
from pixelfleet.imagery.bands import BandFile, Channel, band_sort, normal_band, stored_band_count
from pixelfleet.imagery.composite import CompositeSpec, make_composite, parse_channels
from pixelfleet.imagery.pictures import CONTENT_TYPES
from pixelfleet.imagery.reading import raster_opener, sniff_format
from pixelfleet.imagery.stretch import StretchMode
from pixelfleet.models import Entry, OutputRecord
from pixelfleet.ops.base import (
    Colour,
    Op,
    OpConfig,
    OpContext,
    Percentiles,
    group_entry,
    scene_id,
    scene_selected,
)
from pixelfleet.sources.scenes import ScenePattern, scene_name
from pixelfleet.storage.base import Storage, check_key

#: Named band combinations for Landsat 8 and 9 (OLI band numbers).
RECIPES: dict[str, tuple[str, ...]] = {
    "true-color": ("4", "3", "2"),
    "swir2-nir-green": ("7", "5", "3"),  # snow and ice cyan, vegetation green, water black
    "swir1-nir-red": ("6", "5", "4"),  # land/water, vegetation green, ice cyan-blue
    "color-infrared": ("5", "4", "3"),  # vegetation red
    "agriculture": ("6", "5", "2"),
    "swir2-swir1-red": ("7", "6", "4"),  # shortwave infrared: burn scars, geology
}

#: Media types and STAC roles of the outputs.
COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
_IMAGE_EXTENSIONS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}


def recipe_bands(name: str) -> tuple[str, ...]:
    """The bands of a named recipe; an unknown name lists the valid ones."""
    try:
        return RECIPES[name]
    except KeyError:
        raise UnknownNameError(
            f"unknown recipe {name!r}; choose one of: {', '.join(RECIPES)} "
            "(or give bands = [7, 5, 3] yourself)"
        ) from None


class CompositeConfig(OpConfig):
    """Settings of the ``composite`` step.

    - ``recipe``: a named band combination (:data:`RECIPES`, Landsat 8/9 band numbers),
      or ``bands``: 3 bands (red, green, blue) or 1 (grey), each a band number or name
      (``4``, ``"8A"``) or a band-math expression (``"(b5 - b4) / (b5 + b4)"``).
      Default: ``true-color``.
    - ``stretch``: ``percentile`` (between ``percentiles`` of a sample of every
      ``sample``-th pixel), ``fixed`` (``ranges``: one ``[low, high]`` per channel, or
      one for all) or ``equalize`` (histogram equalisation); one mode, or one per
      channel. ``gamma``: one value or one per channel (>1 brightens the mid-tones).
    - ``nodata``: the value that marks missing pixels (default: each file's own);
      ``zero_is_nodata``: 0 in an integer band is fill, as in Landsat products.
      Missing pixels are transparent.
    - Outputs (key templates with ``{scene}``, ``{recipe}``, ``{dir}``; in the scene's
      folder unless ``{dir}`` is used; set one to ``""`` to skip it):
      ``key``: the full-resolution Cloud Optimized GeoTIFF (``compress``, ``blocksize``);
      ``image_key``: a PNG, JPEG or WebP of longest side ``image_size``, with ``title``
      (a template too) written on a band added above the picture (which it makes that
      much taller, hiding none of it); ``histogram_key``: a PNG plot of the
      histograms, with the statistics as JSON beside it (same name, ``.json``).
    - ``scenes``: globs on scene names this step applies to (other scenes are left
      alone), e.g. ``["LC08*", "LC09*"]`` where a bucket mixes sensors.
    """

    op: Literal["composite"] = "composite"
    recipe: str | None = None
    bands: tuple[int | str, ...] | None = None
    stretch: StretchMode | tuple[StretchMode, ...] = "percentile"
    percentiles: Percentiles = (2.0, 98.0)
    ranges: tuple[tuple[float, float], ...] | None = None
    gamma: float | tuple[float, ...] = 1.0
    nodata: float | None = None
    zero_is_nodata: bool = True
    sample: int = Field(8, ge=1, le=64)
    key: str = "{scene}_{recipe}.tif"
    image_key: str = "{scene}_{recipe}.png"
    image_size: int = Field(1024, ge=16, le=8192)
    quality: int = Field(90, ge=1, le=100)
    title: str | None = None
    background: Colour = "black"
    histogram_key: str = ""
    compress: Literal["deflate", "zstd", "lzw", "webp", "none"] = "deflate"
    blocksize: int = Field(512, ge=64, le=4096, multiple_of=16)
    scenes: tuple[str, ...] = ("*",)

    @field_validator("recipe")
    @classmethod
    def _check_recipe(cls, value: str | None) -> str | None:
        if value is not None and value not in RECIPES:
            raise ValueError(
                f"unknown recipe {value!r}; choose one of: {', '.join(RECIPES)} "
                "(or give bands = [7, 5, 3] yourself)"
            )
        return value

    @model_validator(mode="after")
    def _check_all(self) -> CompositeConfig:
        if self.recipe is not None and self.bands is not None:
            raise ValueError("give either recipe or bands, not both")
        channels = self.channels
        if len(channels) not in (1, 3):
            raise ValueError(f"bands {list(channels)} must list 3 channels (R, G, B) or 1 (grey)")
        try:
            parse_channels(channels)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        n = len(channels)
        for name, value in (("stretch", self.stretch), ("gamma", self.gamma)):
            if isinstance(value, tuple) and len(value) != n:
                raise ValueError(f"{name} lists {len(value)} values for {n} channel(s)")
        if any(g <= 0 for g in self.gammas):
            raise ValueError(f"gamma {self.gamma} must be above 0 (1 leaves values as they are)")
        if "fixed" in self.stretches:
            if not self.ranges or len(self.ranges) not in (1, n):
                raise ValueError(
                    f"a fixed stretch needs ranges: one [low, high] per channel ({n}) or one "
                    "for all, e.g. ranges = [[5900, 11000], [6200, 11000], [7600, 11000]]"
                )
            if any(high <= low for low, high in self.ranges):
                raise ValueError(f"ranges {self.ranges} must each be [low, high] with low < high")
        if not (self.key or self.image_key or self.histogram_key):
            raise ValueError("key, image_key and histogram_key are all empty: nothing to write")
        if self.image_key and posixpath.splitext(self.image_key)[1].lower() not in (
            _IMAGE_EXTENSIONS
        ):
            raise ValueError(
                f"image_key {self.image_key!r} must end with one of {', '.join(_IMAGE_EXTENSIONS)}"
            )
        if self.histogram_key and not self.histogram_key.lower().endswith(".png"):
            raise ValueError(f"histogram_key {self.histogram_key!r} must end with .png")
        for template in (self.key, self.image_key, self.histogram_key, self.title):
            if template:
                try:
                    scene_key(template, "path/row/scene", "recipe")
                except (ConfigError, ValueError) as exc:
                    raise ValueError(str(exc)) from None
        return self

    @property
    def channels(self) -> tuple[str, ...]:
        """The channels as band names or expressions."""
        if self.bands is not None:
            return tuple(str(b) for b in self.bands)
        return recipe_bands(self.recipe or "true-color")

    @property
    def recipe_name(self) -> str:
        """``{recipe}`` in key templates: the recipe, or the bands joined (``b7-b5-b3``)."""
        if self.bands is None:
            return self.recipe or "true-color"
        if any(is_expression(str(b)) for b in self.bands):
            return "custom"
        return "-".join(f"b{normal_band(str(b)).lower()}" for b in self.bands)

    @property
    def stretches(self) -> list[StretchMode]:
        """One stretch mode per channel."""
        n = len(self.channels)
        return list(self.stretch) if isinstance(self.stretch, tuple) else [self.stretch] * n

    @property
    def gammas(self) -> list[float]:
        """One gamma per channel."""
        n = len(self.channels)
        return list(self.gamma) if isinstance(self.gamma, tuple) else [self.gamma] * n


class CompositeOp(Op):
    """Make a composite COG, picture and histograms per scene."""

    name = "composite"
    Config = CompositeConfig
    scope = "task"

    @property
    def options(self) -> CompositeConfig:
        """The step's settings, typed."""
        return cast(CompositeConfig, self.config)

    def applies_to(self, group: str) -> bool:
        """Tell whether the step's ``scenes`` globs take this scene."""
        return scene_selected(group, self.options.scenes)

    def output_keys_group(self, group: str, entries: Sequence[Entry]) -> list[str]:
        """COG, picture, histogram plot and statistics keys of one scene."""
        group = scene_id(group, entries)
        if not self.applies_to(group):
            return []
        o = self.options
        keys = [scene_key(t, group, o.recipe_name) for t in (o.key, o.image_key) if t]
        if o.histogram_key:
            plot = scene_key(o.histogram_key, group, o.recipe_name)
            keys += [plot, plot[: -len(".png")] + ".json"]
        return keys

    def check_inputs(self, ctx: OpContext, group: str, entries: Sequence[Entry]) -> None:
        """Check that every band the channels read is in the scene: a band file the
        scene pattern names, or a band number within a multi-band file's band count
        (read from its header). A dry run calls it on the first scenes."""
        group = scene_id(group, entries)
        if not entries or not self.applies_to(group):
            return
        needed = parse_channels(self.options.channels)
        pattern = ScenePattern(ctx.scene_pattern) if ctx.scene_pattern else None
        named: dict[str, Entry] = {}
        for entry in entries:
            match = pattern.match(entry.key) if pattern else None
            if match is not None and match.band is not None:
                named.setdefault(normal_band(match.band), entry)
        if named:
            missing = next((b for b in needed if b not in named), None)
            if missing is not None:
                found = sorted(named, key=band_sort)
                raise ConfigError(
                    f"{self._asks_for(missing)}, but scene {scene_name(group)!r} has no file "
                    f"for it (its bands: {', '.join(found)}, such as "
                    f"{ctx.source.describe(named[found[0]].key)}); choose bands or a recipe "
                    "it has, or fix partition.pattern"
                )
            return
        if len(entries) != 1:
            return  # no band names and several files: the run says how to group them
        label = ctx.source.describe(entries[0].key)
        for band in needed:
            if not band.isdigit():
                raise ConfigError(
                    f"{self._asks_for(band)}, but {label} is one multi-band file, whose bands "
                    "have numbers, not names: use band numbers (1 is the first band)"
                )
        try:
            count = stored_band_count(ctx.source, entries[0])
        except InputError:
            return  # not a GeoTIFF, or corrupt: that object fails on its own in the run
        if count is None:
            return
        over = next((b for b in needed if int(b) > count), None)
        if over is not None:
            example = "[1, 2, 3]" if count >= 3 else "[1]"
            has = f"{count} band{'s' * (count != 1)}"
            raise ConfigError(
                f"{self._asks_for(over)}, but {label} has {has}; use band numbers from 1 to "
                f"{count} (e.g. bands = {example})"
            )

    def _asks_for(self, band: str) -> str:
        """Which setting asks for ``band``: ``recipe 'true-color' (bands 4, 3, 2) asks
        for band 4``, naming the expression when the band is read inside one."""
        o = self.options
        if o.bands is None:
            setting = f"recipe {o.recipe or 'true-color'!r} (bands {', '.join(o.channels)})"
        else:
            setting = f"bands = {json.dumps(list(o.bands))}"
        inside = next(
            (c for c in o.channels if is_expression(c) and band in Channel(c).bands), None
        )
        where = f" (in {inside!r})" if inside is not None else ""
        return f"{setting} asks for band {band}{where}"

    def output_keys(self, entry: Entry) -> list[str]:
        """A single multi-band file as a scene of its own (named by its stem)."""
        return self.output_keys_group(scene_id(entry.key, [entry]), [entry])

    def run(self, ctx: OpContext, entry: Entry) -> list[OutputRecord]:
        """A single multi-band file as a scene of its own."""
        return self.run_group(ctx, scene_id(entry.key, [entry]), [entry])

    def run_group(self, ctx: OpContext, group: str, entries: Sequence[Entry]) -> list[OutputRecord]:
        """Make and write the scene's outputs; bad band files raise an ``InputError``."""
        keys = self.output_keys_group(group, entries)
        if not keys:
            return []
        group = scene_id(group, entries)
        o = self.options
        combined = group_entry(group, entries)
        scene = scene_name(group)
        title = o.title.format(scene=scene, recipe=o.recipe_name) if o.title else None
        image_format = (
            _IMAGE_EXTENSIONS[posixpath.splitext(o.image_key)[1].lower()] if o.image_key else "png"
        )
        spec = CompositeSpec(
            channels=list(o.channels),
            stretch=o.stretches,
            percentiles=o.percentiles,
            ranges=_per_channel(o.ranges, len(o.channels)),
            gamma=o.gammas,
            nodata=o.nodata,
            zero_is_nodata=o.zero_is_nodata,
            sample=o.sample,
            cog=bool(o.key),
            compress=o.compress,
            blocksize=o.blocksize,
            image_size=o.image_size if o.image_key else None,
            image_format=image_format,
            image_quality=o.quality,
            title=title,
            background=o.background,
            histogram=bool(o.histogram_key),
        )
        needed = parse_channels(spec.channels)
        with contextlib.ExitStack() as stack:
            pattern = None
            if ctx.scene_pattern:
                pattern = ScenePattern(ctx.scene_pattern)
            bands = band_files(ctx.source, pattern, group, entries, needed, stack)
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="pixelfleet-"))
            result = make_composite(bands, spec, workdir, ctx.settings, scene=group)
            out: list[OutputRecord] = []
            keys_iter = iter(keys)
            # As read back from the objects' metadata, so a rerun describes them alike.
            fields = self.unpack_fields(self.pack_fields({"raster:bands": result.bands}))
            if o.key and result.cog_path:
                out.append(
                    ctx.write_file(
                        self,
                        combined,
                        next(keys_iter),
                        result.cog_path,
                        COG_MEDIA_TYPE,
                        roles=["visual"],
                        asset=f"{o.recipe_name}-cog",
                        fields=fields,
                    )
                )
            if o.image_key and result.image is not None:
                out.append(
                    ctx.write(
                        self,
                        combined,
                        next(keys_iter),
                        result.image,
                        CONTENT_TYPES[image_format],
                        roles=["overview", "thumbnail"],
                        asset=f"{o.recipe_name}-image",
                        fields=fields,
                    )
                )
            if o.histogram_key and result.histogram_png is not None:
                plot_key, stats_key = next(keys_iter), next(keys_iter)
                out.append(
                    ctx.write(
                        self,
                        combined,
                        plot_key,
                        result.histogram_png,
                        "image/png",
                        roles=["metadata"],
                        asset=f"{o.recipe_name}-histogram",
                    )
                )
                stats = json.dumps(result.stats, indent=1).encode()
                out.append(
                    ctx.write(
                        self,
                        combined,
                        stats_key,
                        stats,
                        "application/json",
                        roles=["metadata"],
                        asset=f"{o.recipe_name}-stats",
                    )
                )
        return out

    def pack_fields(self, fields: dict[str, Any]) -> dict[str, str]:
        """``raster:bands`` as one compact metadata value: per channel its name,
        description, statistics and histogram buckets in base 36. S3 keeps 2 KB of
        metadata per object, so buckets are merged in pairs until the value fits in
        :data:`FIELDS_BUDGET` characters (see docs/DESIGN.md for measured sizes)."""
        bands = fields.get("raster:bands")
        if not bands:
            return {}
        rows = [
            [
                b.get("name"),
                b.get("description"),
                [b["statistics"][k] for k in _STATISTICS] if b.get("statistics") else None,
                list((b.get("histogram") or {}).get("buckets") or []),
            ]
            for b in bands
        ]
        while True:
            packed = json.dumps(
                [[*row[:3], ".".join(_base36(c) for c in row[3])] for row in rows],
                separators=(",", ":"),
            )
            if len(packed) <= FIELDS_BUDGET or len(rows[0][3]) <= 8:
                return {"raster-bands": packed}
            for row in rows:
                row[3] = [a + b for a, b in zip(row[3][::2], row[3][1::2], strict=True)]

    def unpack_fields(self, metadata: dict[str, str]) -> dict[str, Any]:
        """The ``raster:bands`` :meth:`pack_fields` stored (none if absent or unreadable)."""
        try:
            rows = json.loads(metadata.get("raster-bands") or "[]")
            bands = []
            for name, description, statistics, buckets in rows:
                band: dict[str, Any] = {
                    "name": name,
                    "description": description,
                    "data_type": "uint8",
                }
                if statistics:
                    band["statistics"] = dict(zip(_STATISTICS, statistics, strict=True))
                counts = [int(c, 36) for c in buckets.split(".")] if buckets else []
                if counts:
                    band["histogram"] = {
                        "count": len(counts),
                        "min": -0.5,
                        "max": 255.5,
                        "buckets": counts,
                    }
                bands.append(band)
        except (ValueError, TypeError, AttributeError):
            return {}
        return {"raster:bands": bands} if bands else {}


#: Most characters of a picture's ``raster:bands`` in its object's metadata.
FIELDS_BUDGET = 1400
_STATISTICS = ("minimum", "maximum", "mean", "stddev", "valid_percent")


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(int(n), 36)
        out = digits[r] + out
        if not n:
            return out


def scene_key(template: str, group: str, recipe: str) -> str:
    """Render an output key template for a scene, in the scene's folder unless it
    uses ``{dir}``. Fields: ``{scene}``, ``{recipe}``, ``{dir}``."""
    folder, scene = posixpath.split(group)
    try:
        rendered = template.format(scene=scene, recipe=recipe, dir=folder)
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(
            f"key template {template!r} is invalid ({exc}); use the fields "
            "{scene}, {recipe}, {dir}"
        ) from None
    if "{dir}" not in template and folder:
        rendered = f"{folder}/{rendered}"
    return check_key("/".join(part for part in rendered.split("/") if part))


def band_files(
    storage: Storage,
    pattern: ScenePattern | None,
    group: str,
    entries: Sequence[Entry],
    needed: Sequence[str],
    stack: contextlib.ExitStack,
) -> list[BandFile]:
    """Where each needed band of a scene is: one file per band (named by ``pattern``),
    or bands inside one multi-band file."""
    named: dict[str, Entry] = {}
    for entry in entries:
        match = pattern.match(entry.key) if pattern else None
        if match is None or match.band is None:
            continue
        band = normal_band(match.band)
        if band in named:
            raise InputError(
                f"{storage.describe(entry.key)}: scene {group!r} has two files for band "
                f"{band} (also {named[band].key}); remove one, or make the pattern stricter"
            )
        named[band] = entry
    out: list[BandFile] = []
    if named:
        for band in needed:
            if band in named:
                out.append(band_file(storage, named[band], band, 1, stack))
        return out
    if len(entries) != 1:
        raise InputError(
            f"scene {group!r}: {len(entries)} files and no band names; group band files with "
            'partition = { by = "scene", pattern = "{scene}_B{band}.TIF" }'
        )
    for band in needed:
        if not band.isdigit():
            raise InputError(
                f"{storage.describe(entries[0].key)}: band {band!r} of a multi-band file must "
                "be a band number (1 is the first band)"
            )
        out.append(band_file(storage, entries[0], band, int(band), stack))
    return out


def band_file(
    storage: Storage, entry: Entry, band: str, index: int, stack: contextlib.ExitStack
) -> BandFile:
    """A band file to read from ``storage``: by local path, or through ranged reads
    (kept open until ``stack`` closes). Only TIFFs are accepted, sniffed from the bytes."""
    label = storage.describe(entry.key)
    head = storage.read(entry.key, 0, 64)
    try:
        fmt = sniff_format(head)
    except UnsupportedFormatError as exc:
        raise UnsupportedFormatError(f"{label} {exc}".replace("thumbnails", "composites")) from None
    if fmt != "GTiff":
        raise UnsupportedFormatError(
            f"{label}: is a {fmt} file; composites are made from GeoTIFF band files"
        )
    path = storage.local_path(entry.key)
    if path is not None:
        return BandFile(band, label, path, None, index)
    remote = stack.enter_context(storage.open(entry.key, entry.size))
    fake_path, opener, _failures = raster_opener(remote)  # type: ignore[arg-type]
    return BandFile(band, label, fake_path, opener, index)


def _per_channel(
    ranges: tuple[tuple[float, float], ...] | None, n: int
) -> list[tuple[float, float]] | None:
    if not ranges:
        return None
    return list(ranges) * n if len(ranges) == 1 else list(ranges)
