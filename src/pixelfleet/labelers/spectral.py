"""The ``spectral`` labeller: land cover of multispectral rasters from band indices.

Each valid pixel of a decimated read (at most ``size`` pixels on the longest side, so
GDAL reads an overview where there is one) gets one class, tested in this order:

- ``snow/ice``: NDSI >= ``ndsi_snow`` (0.4) and NIR reflectance >= 0.11,
  with NDSI = (green - swir1) / (green + swir1);
- ``water``: NDWI >= ``ndwi_water`` (0.0), with NDWI = (green - nir) / (green + nir)
  (McFeeters' index);
- ``vegetation``: NDVI >= ``ndvi_vegetation`` (0.3), with NDVI = (nir - red) / (nir + red);
- ``bare/other``: every other valid pixel (soil, rock, built-up, cloud).

Snow comes first because snow also has a positive NDWI; the NIR floor (the SNOMAP
rule) keeps dark water out of it. A class whose bands the sensor lacks is not tested
(NAIP has no short-wave infrared: no ``snow/ice``). A label's confidence is the
percentage of valid pixels in its class; labels cover 100% between them.

Valid pixels: not masked (nodata, internal or alpha mask), finite, and not zero in
every band used (an undeclared nodata collar).

Band mappings (1-based band indexes of one multiband file), chosen by ``sensor``, or
given whole with ``bands`` (e.g. ``bands = {red = 1, nir = 2, swir1 = 3}`` for a stack of
three Landsat bands; the sensor then still sets the reflectance scale and offset):

- ``landsat8``, ``landsat9``: Collection 2 surface reflectance stacked as SR_B1..SR_B7:
  blue 2, green 3, red 4, nir 5, swir1 6, swir2 7; reflectance = DN x 0.0000275 - 0.2.
- ``sentinel2``: Level-2A stacked as B1, B2, B3, B4, B5, B6, B7, B8, B8A, B9, B11, B12:
  blue 2, green 3, red 4, nir 8, swir1 11, swir2 12; reflectance = DN / 10000 (set
  ``offset = -0.1`` for processing baseline 04.00 and later).
- ``naip``: 4-band R, G, B, NIR: red 1, green 2, blue 3, nir 4; DN / 255 (NAIP is not
  calibrated reflectance; the ratio indices are unaffected by the scale).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from pixelfleet.errors import CorruptInputError, InputError, UnsupportedFormatError
from pixelfleet.labelers.base import ImageRef, Label, Labeler, LabelerConfig
from pixelfleet.models import one_line

Role = Literal["blue", "green", "red", "nir", "swir1", "swir2"]
#: The bands the rules use.
NEEDED = ("green", "red", "nir", "swir1")


@dataclass(frozen=True)
class Sensor:
    """A sensor's band layout in a stacked file, and how DNs become reflectance."""

    bands: dict[str, int]
    scale: float
    offset: float


SENSORS = {
    "landsat8": Sensor(
        {"blue": 2, "green": 3, "red": 4, "nir": 5, "swir1": 6, "swir2": 7}, 0.0000275, -0.2
    ),
    "landsat9": Sensor(
        {"blue": 2, "green": 3, "red": 4, "nir": 5, "swir1": 6, "swir2": 7}, 0.0000275, -0.2
    ),
    "sentinel2": Sensor(
        {"blue": 2, "green": 3, "red": 4, "nir": 8, "swir1": 11, "swir2": 12}, 0.0001, 0.0
    ),
    "naip": Sensor({"red": 1, "green": 2, "blue": 3, "nir": 4}, 1 / 255, 0.0),
}

#: NIR reflectance snow must have (SNOMAP), keeping dark water out of ``snow/ice``.
SNOW_MIN_NIR = 0.11

#: Label names, in the order their rules are tested.
CLASSES = ("snow/ice", "water", "vegetation", "bare/other")


class SpectralConfig(LabelerConfig):
    """Settings of the ``spectral`` labeller (see the module's documentation)."""

    sensor: Literal["landsat8", "landsat9", "sentinel2", "naip"] = "landsat8"
    bands: dict[Role, int] = {}
    scale: float | None = Field(None, gt=0)
    offset: float | None = None
    size: int = Field(512, ge=16, le=8192)
    ndvi_vegetation: float = Field(0.3, ge=-1, le=1)
    ndwi_water: float = Field(0.0, ge=-1, le=1)
    ndsi_snow: float = Field(0.4, ge=-1, le=1)

    @field_validator("bands")
    @classmethod
    def _positive(cls, value: dict[str, int]) -> dict[str, int]:
        bad = {k: v for k, v in value.items() if v < 1}
        if bad:
            raise ValueError(f"bands {bad} must be 1-based band indexes (1 is the first band)")
        return value

    def layout(self) -> Sensor:
        """The sensor preset, with ``bands``, ``scale`` and ``offset`` replacing its own if set."""
        preset = SENSORS[self.sensor]
        return Sensor(
            {str(role): band for role, band in self.bands.items()} or dict(preset.bands),
            preset.scale if self.scale is None else self.scale,
            preset.offset if self.offset is None else self.offset,
        )


@dataclass
class Reflectance:
    """Reflectance of the roles a raster has, at decimated size, and which pixels count."""

    bands: dict[str, np.ndarray]
    valid: np.ndarray


class SpectralLabeler(Labeler):
    """Land-cover fractions (water, vegetation, snow/ice, bare/other) of multispectral rasters."""

    name = "spectral"
    version = "1"
    Config = SpectralConfig
    batch_size = 1

    def prepare(self, image: ImageRef) -> Reflectance:
        """Read the bands the rules need at decimated size, as reflectance."""
        assert isinstance(self.config, SpectralConfig)
        return read_reflectance(image, self.config)

    def label(self, batch: Sequence[Any]) -> list[list[Label]]:
        """Classify every valid pixel; one label per class present, confidence = % of area."""
        assert isinstance(self.config, SpectralConfig)
        return [classify(item, self.config) for item in batch]


def indices(bands: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """NDVI, NDWI and NDSI where the bands they need are present (NaN where undefined)."""

    def ratio(a: str, b: str) -> np.ndarray:
        x, y = bands[a], bands[b]
        total = x + y
        with np.errstate(divide="ignore", invalid="ignore"):
            out = (x - y) / total
        return np.where(total != 0, out, np.nan).astype(np.float32)

    out = {}
    if "nir" in bands and "red" in bands:
        out["ndvi"] = ratio("nir", "red")
    if "green" in bands and "nir" in bands:
        out["ndwi"] = ratio("green", "nir")
    if "green" in bands and "swir1" in bands:
        out["ndsi"] = ratio("green", "swir1")
    return out


def classify(data: Reflectance, config: SpectralConfig) -> list[Label]:
    """The land-cover labels of one raster."""
    valid = data.valid
    total = int(valid.sum())
    if total == 0:
        return []
    index = indices(data.bands)
    unassigned = valid.copy()
    # name -> (the index it needs, the pixels it takes, the rule in words)
    rules: dict[str, tuple[str, Callable[[], np.ndarray], str]] = {
        "snow/ice": (
            "ndsi",
            lambda: (index["ndsi"] >= config.ndsi_snow) & (data.bands["nir"] >= SNOW_MIN_NIR),
            f"NDSI >= {config.ndsi_snow} and NIR >= {SNOW_MIN_NIR}",
        ),
        "water": (
            "ndwi",
            lambda: index["ndwi"] >= config.ndwi_water,
            f"NDWI >= {config.ndwi_water}",
        ),
        "vegetation": (
            "ndvi",
            lambda: index["ndvi"] >= config.ndvi_vegetation,
            f"NDVI >= {config.ndvi_vegetation}",
        ),
    }
    labels = []
    for name in CLASSES[:-1]:
        needed, rule, text = rules[name]
        if needed not in index:
            continue
        members = unassigned & rule()
        unassigned &= ~members
        count = int(members.sum())
        if count:
            mean = float(np.nanmean(index[needed][members]))
            labels.append(
                Label(
                    name,
                    100.0 * count / total,
                    parents=("land cover",),
                    extra={"rule": text, f"mean_{needed}": round(mean, 3)},
                )
            )
    rest = int(unassigned.sum())
    if rest:
        labels.append(Label("bare/other", 100.0 * rest / total, parents=("land cover",)))
    return labels


def read_reflectance(image: ImageRef, config: SpectralConfig) -> Reflectance:
    """Open the raster (GTiff driver only) and read the needed bands, decimated."""
    import rasterio
    from rasterio._err import CPLE_BaseError
    from rasterio.errors import RasterioError

    from pixelfleet.imagery.rasters import GDAL_OPTIONS
    from pixelfleet.imagery.reading import raster_opener, sniff_format

    label = image.label
    path = image.local_path()
    remote = None
    opener = None
    try:
        if path is not None:
            with open(path, "rb") as f:
                head = f.read(64)
        else:
            remote = image.storage.open(image.entry.key, image.entry.size)
            head = remote.read(64)
            remote.seek(0)
            path, opener, _ = raster_opener(remote)  # type: ignore[arg-type]
        if sniff_format(head) != "GTiff":
            raise UnsupportedFormatError(
                f"{label}: spectral labels need a multispectral GeoTIFF, not a photo"
            )
        with (
            rasterio.Env(**GDAL_OPTIONS),
            rasterio.open(path, driver="GTiff", opener=opener) as src,
        ):
            return _read(src, config, label, image.settings.max_image_pixels)
    except UnsupportedFormatError as exc:
        if str(exc).startswith(label):
            raise
        raise UnsupportedFormatError(f"{label} {exc}") from None
    except (RasterioError, CPLE_BaseError) as exc:
        raise CorruptInputError(
            f"{label}: cannot be read as a GeoTIFF ({one_line(str(exc))}); it is truncated "
            "or corrupt: re-create or re-upload it"
        ) from exc
    finally:
        if remote is not None:
            remote.close()


def _read(src: Any, config: SpectralConfig, label: str, max_pixels: int) -> Reflectance:
    layout = config.layout()
    usable = {role: band for role, band in layout.bands.items() if band <= src.count}
    missing = sorted(set(layout.bands) - set(usable))
    if not {"red", "nir"} <= set(usable) and not {"green", "nir"} <= set(usable):
        raise InputError(
            f"{label}: has {src.count} band(s), but sensor {config.sensor!r} needs "
            f"{', '.join(f'{r} = band {layout.bands[r]}' for r in missing)}; set the step's "
            "options.sensor or options.bands (e.g. bands = {red = 1, nir = 4})"
        )
    longest = max(src.width, src.height)
    factor = max(1.0, longest / config.size)
    height = max(1, round(src.height / factor))
    width = max(1, round(src.width / factor))
    if width * height * len(usable) > 4 * max_pixels:
        raise InputError(f"{label}: {width}x{height} pixels to read is over the pixel limit")
    # Only the bands the rules use (blue and swir2 are mapped but never needed).
    roles = sorted(r for r in usable if r in NEEDED)
    indexes = [usable[r] for r in roles]
    from rasterio.enums import MaskFlags, Resampling

    shape = (len(indexes), height, width)
    flags = [src.mask_flag_enums[i - 1] for i in indexes]
    if all(f == [MaskFlags.all_valid] for f in flags):
        raw = src.read(indexes, out_shape=shape, resampling=Resampling.nearest)
        mask = None
    else:
        data = src.read(indexes, out_shape=shape, masked=True, resampling=Resampling.nearest)
        mask = np.ma.getmaskarray(data).any(axis=0)
        raw = np.ma.getdata(data)
    valid = (raw != 0).any(axis=0)
    if mask is not None:
        valid &= ~mask
    if raw.dtype.kind == "f":
        valid &= np.isfinite(raw).all(axis=0)
    scale, offset = np.float32(layout.scale), np.float32(layout.offset)
    bands = {}
    for i, role in enumerate(roles):
        band = raw[i].astype(np.float32)
        band *= scale
        if offset:
            band += offset
        bands[role] = band
    return Reflectance(bands, valid)
