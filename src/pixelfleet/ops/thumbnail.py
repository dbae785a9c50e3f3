"""The ``thumbnail`` step: one small JPEG, PNG or WebP per source image.

The rendering itself lives in :mod:`pixelfleet.imagery.thumbnails` (usable without a
pipeline); this module holds the step's settings and wires them to storage.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from typing import Literal, cast

from pydantic import Field, field_validator, model_validator

from pixelfleet.errors import ConfigError, InputError
from pixelfleet.imagery.pictures import CONTENT_TYPES, ThumbnailOptions
from pixelfleet.imagery.thumbnails import render_object
from pixelfleet.models import Entry, OutputRecord
from pixelfleet.ops.base import Colour, Op, OpConfig, OpContext, Percentiles, render_key

#: File extensions that name an output format, for ``format`` inference.
EXTENSIONS = {".jpg": "jpeg", ".jpeg": "jpeg", ".png": "png", ".webp": "webp"}

Resampling = Literal["auto", "nearest", "bilinear", "cubic", "lanczos", "average"]


class ThumbnailConfig(OpConfig):
    """Settings of the ``thumbnail`` step.

    - ``size``: length of the thumbnail's longest side in pixels at most.
    - ``min_size``: images whose longest side is shorter (a 13 x 12 raster) are enlarged
      by the smallest whole factor that reaches it, nearest neighbour, so each source
      pixel stays a sharp square (13 x 12 -> 65 x 60 with the default 64); never beyond
      ``size``. 0 keeps them as they are. Larger images are only ever reduced.
    - ``key``: output key template (see :func:`~pixelfleet.ops.base.render_key`).
    - ``format``: ``jpeg``, ``png`` or ``webp``; by default taken from the key's
      extension. PNG and WebP keep transparency; JPEG lays it on ``background``.
    - ``quality``: JPEG/WebP quality, 1-100.
    - ``bands``: 1-based raster bands to show, one (grey) or three (red, green, blue).
      By default: the red/green/blue bands by colour interpretation, else bands
      1, 2, 3 skipping alpha; a single band is grey, or coloured by its palette.
      Complex bands (SAR) show their amplitude.
    - ``percentiles``: ``[low, high]`` percentiles of the valid pixels that become
      black and white when data is not 8-bit (stretched per band).
    - ``resampling``: ``auto`` is bicubic for photos; for rasters it averages an
      overview near the thumbnail's size, and where there is none (4x or more larger)
      it averages 4 x 4 nearest samples per pixel (1 x 4 on striped files, so that only
      the rows it samples are decoded). Other names are used as they are. Palette
      rasters always use nearest; complex rasters sample and average amplitudes.
    - ``background``: the one colour of every pixel without data in a JPEG (CSS name or
      ``#rrggbb``; white by default): nodata values, masks, alpha, a photo's transparency,
      and a raster's fill collar when it declares none
      (:func:`~pixelfleet.imagery.rasters.fill_collar`). PNG and WebP keep them transparent.
    """

    op: Literal["thumbnail"] = "thumbnail"
    size: int = Field(512, ge=8, le=4096)
    min_size: int = Field(64, ge=0, le=4096)
    key: str = "{stem}.thumb.jpg"
    format: Literal["jpeg", "png", "webp"] | None = None
    quality: int = Field(85, ge=1, le=100)
    bands: tuple[int, ...] | None = None
    percentiles: Percentiles = (2.0, 98.0)
    resampling: Resampling = "auto"
    background: Colour = "white"

    @field_validator("bands")
    @classmethod
    def _check_bands(cls, value: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if value is None:
            return None
        if len(value) not in (1, 3):
            raise ValueError(
                f"bands {list(value)} must list 1 band (grey) or 3 bands (red, green, blue)"
            )
        if any(b < 1 for b in value):
            raise ValueError(f"bands {list(value)} must be 1-based indexes (1 is the first band)")
        return value

    @model_validator(mode="after")
    def _check_format(self) -> ThumbnailConfig:
        # A bad template ("{stme}") fails when the pipeline loads (and so a dry run), not on
        # every object of the run.
        render_key(self.key, "folder/photo.tif")
        ext = posixpath.splitext(self.key)[1].lower()
        implied = EXTENSIONS.get(ext)
        if self.format is None and implied is None:
            raise ValueError(
                f"cannot tell the output format from key {self.key!r}; end it with one of "
                f"{', '.join(EXTENSIONS)} or set format to jpeg, png or webp"
            )
        if self.format is not None and implied is not None and implied != self.format:
            raise ValueError(
                f"format {self.format!r} does not match the key's extension {ext!r}; "
                "change one of them"
            )
        return self

    @property
    def output_format(self) -> str:
        """The output format: ``format`` if set, else the one the key's extension names."""
        if self.format is not None:
            return self.format
        return EXTENSIONS[posixpath.splitext(self.key)[1].lower()]

    def to_options(self) -> ThumbnailOptions:
        """The rendering options these settings describe (what :mod:`pixelfleet.imagery` takes)."""
        return ThumbnailOptions(
            size=self.size,
            min_size=self.min_size,
            output_format=self.output_format,
            quality=self.quality,
            bands=self.bands,
            percentiles=self.percentiles,
            resampling=self.resampling,
            background=self.background,
        )


class ThumbnailOp(Op):
    """Render one thumbnail per source image (GeoTIFF/COG or photo)."""

    name = "thumbnail"
    Config = ThumbnailConfig

    def __init__(self, config: OpConfig):
        super().__init__(config)
        # Made once per step, not per photo (a pydantic model's fields read and a
        # dataclass built each time cost as much as a tiny photo's decode).
        self._rendering = cast(ThumbnailConfig, config).to_options()
        self._content_type = CONTENT_TYPES[self._rendering.output_format]

    @property
    def options(self) -> ThumbnailConfig:
        """The step's settings, typed."""
        return cast(ThumbnailConfig, self.config)

    @property
    def rendering(self) -> ThumbnailOptions:
        """The rendering options of :attr:`options` (:meth:`ThumbnailConfig.to_options`),
        made once when the step is."""
        return self._rendering

    def output_keys(self, entry: Entry) -> list[str]:
        """The one thumbnail key for ``entry``."""
        return [render_key(self.options.key, entry.key)]

    def check_inputs(self, ctx: OpContext, group: str, entries: Sequence[Entry]) -> None:
        """Check ``bands`` against the band count of each sampled GeoTIFF (read from its
        header; photos have no band numbers to check). A dry run calls it."""
        bands = self.options.bands
        if not bands:
            return
        from pixelfleet.imagery.bands import stored_band_count  # rasterio: only when needed

        for entry in entries:
            try:
                count = stored_band_count(ctx.source, entry)
            except InputError:
                continue  # not an image, or corrupt: that object fails on its own in the run
            over = next((b for b in bands if count is not None and b > count), None)
            if count is not None and over is not None:
                example = "[1, 2, 3]" if count >= 3 else "[1]"
                raise ConfigError(
                    f"bands = {list(bands)} asks for band {over}, but "
                    f"{ctx.source.describe(entry.key)} has {count} band{'s' * (count != 1)}; "
                    f"use band numbers from 1 to {count} (e.g. bands = {example}), or leave "
                    "bands out to show the file's colour bands"
                )

    def asset_roles(self, key: str) -> list[str]:
        """Thumbnails are STAC ``thumbnail`` assets."""
        return ["thumbnail"]

    def run(self, ctx: OpContext, entry: Entry) -> list[OutputRecord]:
        """Render ``entry``'s thumbnail and write it; bad input raises an ``InputError``."""
        (key,) = self.output_keys(entry)
        data = render_object(ctx.source, entry, self._rendering, ctx.settings)
        return [
            ctx.write(
                self, entry, key, data, self._content_type, title="Thumbnail", asset="thumbnail"
            )
        ]
