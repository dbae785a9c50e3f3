"""What a block-processing run is asked to do: its inputs, outputs, grid and options.

These are plain values a user builds (``Input``, ``Output``, ``Grid``) and their JSON
forms, which is how a strip of work reaches a worker process or a Dask worker: nothing
crosses a process as a pickle of pixelfleet's objects, and the user's function travels
by reference (``package.module:name``).
"""

from __future__ import annotations

import base64
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from pixelfleet.errors import ConfigError

#: Footprints: the inputs' common area, all of it, or the reference grid's own bounds.
Footprint = Literal["intersection", "union", "reference"]
FOOTPRINTS = ("intersection", "union", "reference")

#: Resampling methods for inputs not on the reference grid (GDAL's names).
RESAMPLING = (
    "nearest",
    "bilinear",
    "cubic",
    "cubic_spline",
    "lanczos",
    "average",
    "mode",
    "min",
    "max",
    "med",
    "q1",
    "q3",
    "sum",
    "rms",
)

#: Lossless codecs whose tiles can be copied between files as they are.
COMPRESSIONS = {
    "deflate": "DEFLATE",
    "zstd": "ZSTD",
    "lzw": "LZW",
    "packbits": "PACKBITS",
    "none": "NONE",
}

#: Overview aggregations: the pixel nearest each cell's centre (RIOS's default), or the
#: mean of the cell's valid pixels.
AGGREGATIONS = ("nearest", "average")

#: Creation options pixelfleet sets itself (they must be the same in every file it
#: assembles), so they cannot be given in ``creation_options``.
_RESERVED_OPTIONS = {
    "TILED",
    "BLOCKXSIZE",
    "BLOCKYSIZE",
    "COMPRESS",
    "SPARSE_OK",
    "COPY_SRC_OVERVIEWS",
    "NUM_THREADS",
    "BIGTIFF",
    "JPEG_QUALITY",
    "PHOTOMETRIC",
    "PROFILE",
}

_DTYPES = (
    "uint8",
    "int8",
    "uint16",
    "int16",
    "uint32",
    "int32",
    "uint64",
    "int64",
    "float32",
    "float64",
)


def check_resampling(value: str, what: str = "resampling") -> str:
    """Return ``value`` if it names a resampling method, else raise a :class:`ConfigError`."""
    if value not in RESAMPLING:
        raise ConfigError(f"{what} {value!r} is not known; choose one of: {', '.join(RESAMPLING)}")
    return value


@dataclass(frozen=True)
class Input:
    """One input raster.

    - ``url``: a path, ``file://``, ``s3://`` or ``memory://`` URL;
    - ``bands``: the bands to read (1 is the first; default all);
    - ``nodata``: the value that marks missing pixels, instead of the file's own (needed
      to tell missing from real zeros in a file that declares none);
    - ``resampling``: for this input, instead of the run's.
    """

    url: str
    bands: tuple[int, ...] | None = None
    nodata: float | None = None
    resampling: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or not self.url:
            raise ConfigError(f"an input's url must be a path or URL (got {self.url!r})")
        if self.bands is not None:
            bands = tuple(int(b) for b in self.bands)
            if not bands or any(b < 1 for b in bands):
                raise ConfigError(f"input {self.url}: bands {list(self.bands)} must be 1 or more")
            object.__setattr__(self, "bands", bands)
        if self.resampling is not None:
            check_resampling(self.resampling, f"input {self.url}: resampling")

    def to_dict(self) -> dict[str, Any]:
        """The input as JSON-ready data."""
        return {
            "url": self.url,
            "bands": list(self.bands) if self.bands else None,
            "nodata": self.nodata,
            "resampling": self.resampling,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Input:
        """The inverse of :meth:`to_dict`."""
        bands = data.get("bands")
        return cls(
            url=data["url"],
            bands=tuple(bands) if bands else None,
            nodata=data.get("nodata"),
            resampling=data.get("resampling"),
        )


@dataclass(frozen=True)
class Output:
    """One output raster: a tiled GeoTIFF laid out as a Cloud Optimized GeoTIFF.

    - ``url``: where it goes (path, ``file://``, ``s3://``, ``memory://``);
    - ``dtype``: the pixel type (default: the type of the arrays the function returns);
    - ``nodata``: the value written as the file's nodata (statistics and averaged
      overviews leave those pixels out);
    - ``tile_size``: tiles of the file, pixels (a multiple of 16);
    - ``compress``: ``deflate`` (default, as RIOS), ``zstd``, ``lzw``, ``packbits`` or ``none``;
    - ``creation_options``: other GDAL GTiff creation options, e.g. ``{"ZLEVEL": 1,
      "PREDICTOR": 3}``, ``{"INTERLEAVE": "BAND"}``;
    - ``overviews``: ``"auto"`` (RIOS's rule: factors 4, 8, 16... while the smaller side
      of the level stays over 128 pixels), a list of factors, or ``[]`` for none;
    - ``overview_resampling``: ``nearest`` (RIOS's default) or ``average``;
    - ``statistics``: write per-band minimum, maximum, mean, standard deviation and
      valid percentage into the file (``STATISTICS_*``, read by GDAL and QGIS).
    """

    url: str
    dtype: str | None = None
    nodata: float | None = None
    tile_size: int = 512
    compress: str = "deflate"
    creation_options: Mapping[str, Any] = field(default_factory=dict)
    overviews: str | Sequence[int] = "auto"
    overview_resampling: str = "nearest"
    statistics: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or not self.url:
            raise ConfigError(f"an output's url must be a path or URL (got {self.url!r})")
        if self.dtype is not None:
            name = np.dtype(self.dtype).name if _is_dtype(self.dtype) else str(self.dtype)
            if name not in _DTYPES:
                raise ConfigError(
                    f"output {self.url}: dtype {self.dtype!r} is not supported; choose one of: "
                    f"{', '.join(_DTYPES)}"
                )
            object.__setattr__(self, "dtype", name)
        if not 16 <= self.tile_size <= 4096 or self.tile_size % 16:
            raise ConfigError(
                f"output {self.url}: tile_size {self.tile_size} must be a multiple of 16 "
                "from 16 to 4096, such as 512"
            )
        if self.compress.lower() not in COMPRESSIONS:
            raise ConfigError(
                f"output {self.url}: compress {self.compress!r} is not supported; choose one "
                f"of: {', '.join(COMPRESSIONS)} (lossless codecs, whose tiles can be copied)"
            )
        object.__setattr__(self, "compress", self.compress.lower())
        options = {str(k).upper(): v for k, v in dict(self.creation_options).items()}
        reserved = sorted(set(options) & _RESERVED_OPTIONS)
        if reserved:
            raise ConfigError(
                f"output {self.url}: creation options {', '.join(reserved)} are set by "
                "pixelfleet (use tile_size and compress)"
            )
        object.__setattr__(self, "creation_options", options)
        if isinstance(self.overviews, str):
            if self.overviews != "auto":
                raise ConfigError(
                    f"output {self.url}: overviews {self.overviews!r} must be 'auto', a list "
                    "of factors such as [4, 8, 16], or [] for none"
                )
        else:
            factors = [int(f) for f in self.overviews]
            previous = 1
            for f in factors:
                if f < 2 or f % previous:
                    raise ConfigError(
                        f"output {self.url}: overview factors {factors} must rise, each a "
                        "multiple of the one before, from 2 up, such as [4, 8, 16]"
                    )
                previous = f
            object.__setattr__(self, "overviews", tuple(factors))
        if self.overview_resampling not in AGGREGATIONS:
            raise ConfigError(
                f"output {self.url}: overview_resampling {self.overview_resampling!r} must "
                f"be one of: {', '.join(AGGREGATIONS)}"
            )

    def factors(self, width: int, height: int) -> list[int]:
        """The overview factors of a ``width`` x ``height`` output."""
        if isinstance(self.overviews, str):  # "auto": RIOS's rule
            factors = []
            f = 4
            while min(width, height) // f > 128:
                factors.append(f)
                f *= 2
            return factors
        return [f for f in self.overviews if f < max(width, height)]

    def to_dict(self) -> dict[str, Any]:
        """The output as JSON-ready data."""
        return {
            "url": self.url,
            "dtype": self.dtype,
            "nodata": self.nodata,
            "tile_size": self.tile_size,
            "compress": self.compress,
            "creation_options": dict(self.creation_options),
            "overviews": self.overviews
            if isinstance(self.overviews, str)
            else list(self.overviews),
            "overview_resampling": self.overview_resampling,
            "statistics": self.statistics,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Output:
        """The inverse of :meth:`to_dict`."""
        overviews = data.get("overviews", "auto")
        return cls(
            url=data["url"],
            dtype=data.get("dtype"),
            nodata=data.get("nodata"),
            tile_size=int(data.get("tile_size", 512)),
            compress=data.get("compress", "deflate"),
            creation_options=dict(data.get("creation_options") or {}),
            overviews=overviews if isinstance(overviews, str) else tuple(overviews),
            overview_resampling=data.get("overview_resampling", "nearest"),
            statistics=bool(data.get("statistics", True)),
        )


def _is_dtype(value: object) -> bool:
    try:
        np.dtype(value)  # type: ignore[call-overload]
    except TypeError:
        return False
    return True


@dataclass(frozen=True)
class Grid:
    """An explicit reference grid, instead of one input's.

    ``crs`` (anything rasterio's ``CRS.from_user_input`` takes, e.g. ``"EPSG:32633"``),
    ``resolution`` (one size, or ``(x, y)``), and optionally ``bounds`` (left, bottom,
    right, top): the output's extent. Without bounds the extent comes from the inputs
    (the footprint) and pixel edges fall on multiples of the resolution.
    """

    crs: str
    resolution: float | tuple[float, float]
    bounds: tuple[float, float, float, float] | None = None

    def __post_init__(self) -> None:
        res = self.resolution
        pair = (float(res), float(res)) if isinstance(res, int | float) else tuple(map(float, res))
        if len(pair) != 2 or min(pair) <= 0:
            raise ConfigError(f"grid resolution {self.resolution!r} must be one or two sizes > 0")
        object.__setattr__(self, "resolution", pair)
        if self.bounds is not None:
            left, bottom, right, top = map(float, self.bounds)
            if right <= left or top <= bottom:
                raise ConfigError(
                    f"grid bounds {self.bounds!r} must be (left, bottom, right, top) with "
                    "left < right and bottom < top"
                )
            object.__setattr__(self, "bounds", (left, bottom, right, top))


# -- the user's arguments, as JSON ------------------------------------------------------


def encode_args(value: Any, where: str = "args") -> Any:
    """``args`` as JSON-ready data: numbers, strings, booleans, None, lists, dicts with
    string keys, numpy arrays and scalars, and ``SimpleNamespace`` objects (RIOS's
    ``otherArgs``). Anything else raises a :class:`ConfigError` naming where it is."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        array = np.ascontiguousarray(value)
        if array.dtype.kind not in "biufc":
            raise ConfigError(f"{where}: arrays of {array.dtype} cannot be sent to workers")
        return {
            "__ndarray__": base64.b64encode(array.tobytes()).decode("ascii"),
            "dtype": array.dtype.str,
            "shape": list(array.shape),
        }
    if isinstance(value, types.SimpleNamespace):
        return {"__namespace__": encode_args(vars(value), where)}
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConfigError(f"{where}: dictionary keys must be strings (got {key!r})")
            out[key] = encode_args(item, f"{where}[{key!r}]")
        return out
    if isinstance(value, list | tuple):
        return [encode_args(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise ConfigError(
        f"{where}: a {type(value).__name__} cannot be sent to worker processes; use numbers, "
        "strings, lists, dicts, numpy arrays or a SimpleNamespace of them, or run with "
        "executor='inline' or 'threads'"
    )


def decode_args(value: Any) -> Any:
    """The inverse of :func:`encode_args`."""
    if isinstance(value, list):
        return [decode_args(item) for item in value]
    if isinstance(value, dict):
        if "__ndarray__" in value:
            raw = base64.b64decode(value["__ndarray__"])
            return np.frombuffer(raw, np.dtype(value["dtype"])).reshape(value["shape"]).copy()
        if "__namespace__" in value:
            return types.SimpleNamespace(**decode_args(value["__namespace__"]))
        return {key: decode_args(item) for key, item in value.items()}
    return value
