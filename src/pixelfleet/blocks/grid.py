"""The reference grid every block is read on, and how it is cut into blocks and strips.

The grid is one input's pixel grid (its CRS, pixel size and pixel edges) or an explicit
:class:`~pixelfleet.blocks.spec.Grid`; its extent is the footprint of the inputs
(intersection or union of their bounds, each transformed into the grid's CRS) or the
reference's own bounds. Extents are snapped to the grid's pixel edges by rounding to
the nearest edge, half away from zero, as RIOS does.

Blocks are ``block_size`` windows from the top-left corner. Strips, the unit of work
a worker takes, are runs of whole block rows that are also whole rows of output tiles
(and of the first overview level's cells), so each worker compresses the tiles of its
own strip and the final file is put together by copying them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from pixelfleet.blocks.spec import Grid
from pixelfleet.errors import ConfigError, InputError

#: Two pixel grids are aligned when their edges differ by less than this many pixels.
ALIGN_TOLERANCE = 1e-6


@dataclass(frozen=True)
class RasterInfo:
    """What planning needs to know about one input raster (read from its header)."""

    name: str
    label: str
    crs: CRS | None
    transform: Affine
    width: int
    height: int
    count: int
    dtypes: tuple[str, ...]
    nodata: float | None

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in the raster's CRS."""
        t = self.transform
        xs = (t.c, t.c + t.a * self.width)
        ys = (t.f, t.f + t.e * self.height)
        return min(xs), min(ys), max(xs), max(ys)


@dataclass(frozen=True)
class GridSpec:
    """A resolved pixel grid: CRS, north-up transform and size."""

    crs: CRS | None
    transform: Affine
    width: int
    height: int

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top)."""
        t = self.transform
        return t.c, t.f + t.e * self.height, t.c + t.a * self.width, t.f

    def aligned(self, info: RasterInfo) -> tuple[int, int] | None:
        """The (column, row) of this grid's origin in ``info``'s pixels when ``info`` is
        on the same pixel grid (same CRS and pixel size, edges on whole pixels), else None."""
        if not same_crs(self.crs, info.crs):
            return None
        g, t = self.transform, info.transform
        if t.b or t.d or not math.isclose(g.a, t.a, rel_tol=1e-9):
            return None
        if not math.isclose(g.e, t.e, rel_tol=1e-9):
            return None
        col = (g.c - t.c) / t.a
        row = (g.f - t.f) / t.e
        if abs(col - round(col)) > ALIGN_TOLERANCE or abs(row - round(row)) > ALIGN_TOLERANCE:
            return None
        return round(col), round(row)

    def to_dict(self) -> dict[str, Any]:
        """The grid as JSON-ready data."""
        return {
            "crs": self.crs.to_wkt() if self.crs else None,
            "transform": list(self.transform)[:6],
            "width": self.width,
            "height": self.height,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GridSpec:
        """The inverse of :meth:`to_dict`."""
        return cls(
            crs=CRS.from_wkt(data["crs"]) if data.get("crs") else None,
            transform=Affine(*data["transform"]),
            width=int(data["width"]),
            height=int(data["height"]),
        )


def same_crs(a: CRS | None, b: CRS | None) -> bool:
    """Tell whether two CRSs are the same (both missing counts as the same)."""
    if a is None or b is None:
        return a is None and b is None
    return bool(a == b)


def round_half_away(value: float) -> int:
    """Round to the nearest whole number, halves away from zero (RIOS's snapping)."""
    # A nudge well below a pixel keeps 2.9999999999 (float noise) from becoming 2.5-ish.
    value = round(value, 6)
    return int(math.floor(value + 0.5)) if value >= 0 else -int(math.floor(-value + 0.5))


def resolve_grid(
    infos: Mapping[str, RasterInfo], grid: str | Grid | None, footprint: str | None
) -> tuple[GridSpec, str]:
    """The grid blocks are read on, and the footprint that made its extent.

    ``grid`` names an input (default: the first) or is a :class:`Grid`; ``footprint``
    is ``intersection`` (default), ``union`` or ``reference`` (default for a ``Grid``
    with bounds, the only footprint it takes).
    """
    if not infos:
        raise ConfigError("no inputs: give at least one, e.g. inputs={'red': 'B4.TIF'}")
    if isinstance(grid, Grid):
        crs = CRS.from_user_input(grid.crs)
        xres, yres = grid.resolution  # type: ignore[misc]
        anchor = Affine(xres, 0.0, 0.0, 0.0, -yres, 0.0)
        if grid.bounds is not None:
            if footprint not in (None, "reference"):
                raise ConfigError(
                    f"footprint {footprint!r} cannot be used with a grid that has bounds: the "
                    "bounds are the extent (footprint 'reference'); leave the bounds out to "
                    "take the extent from the inputs"
                )
            left, bottom, right, top = grid.bounds
            anchor = Affine(xres, 0.0, left, 0.0, -yres, top)
            return _snap(anchor, crs, grid.bounds, "grid bounds"), "reference"
        reference = None
    else:
        name = grid if grid is not None else next(iter(infos))
        if name not in infos:
            raise ConfigError(
                f"grid {name!r} is not an input; choose one of: {', '.join(infos)}, "
                "or give a pixelfleet.blocks.Grid"
            )
        reference = infos[name]
        t = reference.transform
        if t.b or t.d or t.e >= 0:
            raise InputError(
                f"{reference.label}: its pixel grid is rotated or not north-up, so it cannot be "
                "the reference grid; use another input or an explicit Grid"
            )
        crs, anchor = reference.crs, t
    chosen = footprint or "intersection"
    if chosen not in ("intersection", "union", "reference"):
        raise ConfigError(
            f"footprint {chosen!r} is not known; choose one of: intersection, union, reference"
        )
    if chosen == "reference":
        if reference is None:
            raise ConfigError("footprint 'reference' needs a grid with bounds, or an input's name")
        return _snap(anchor, crs, reference.bounds, reference.label), chosen
    boxes = {name: bounds_in(info, crs) for name, info in infos.items()}
    lefts, bottoms, rights, tops = zip(*boxes.values(), strict=True)
    if chosen == "intersection":
        box = (max(lefts), max(bottoms), min(rights), min(tops))
        if box[0] >= box[2] or box[1] >= box[3]:
            listed = "; ".join(f"{n}: {_fmt(b)}" for n, b in boxes.items())
            raise InputError(
                f"the inputs do not overlap, so their intersection is empty ({listed}); "
                "use footprint='union' or check the inputs"
            )
    else:
        box = (min(lefts), min(bottoms), max(rights), max(tops))
    return _snap(anchor, crs, box, f"the {chosen} of the inputs"), chosen


def bounds_in(info: RasterInfo, crs: CRS | None) -> tuple[float, float, float, float]:
    """An input's bounds in ``crs`` (edges densified, so curved edges are covered)."""
    if same_crs(info.crs, crs):
        return info.bounds
    if info.crs is None or crs is None:
        raise InputError(
            f"{info.label}: has no CRS, so it cannot be placed on a grid in another one; "
            "give it a CRS or make it the reference grid"
        )
    left, bottom, right, top = transform_bounds(info.crs, crs, *info.bounds, densify_pts=21)
    return left, bottom, right, top


def _snap(anchor: Affine, crs: CRS | None, box: Sequence[float], what: str) -> GridSpec:
    """The grid of ``anchor``'s pixels covering ``box``, edges rounded to the nearest."""
    left, bottom, right, top = box
    col0 = round_half_away((left - anchor.c) / anchor.a)
    col1 = round_half_away((right - anchor.c) / anchor.a)
    row0 = round_half_away((top - anchor.f) / anchor.e)
    row1 = round_half_away((bottom - anchor.f) / anchor.e)
    width, height = col1 - col0, row1 - row0
    if width <= 0 or height <= 0:
        raise InputError(f"{what} {_fmt(box)} is less than a pixel of the grid")
    transform = anchor @ Affine.translation(col0, row0)
    return GridSpec(crs, transform, width, height)


def _fmt(box: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in box) + ")"


# -- blocks and strips ---------------------------------------------------------------


@dataclass(frozen=True)
class BlockRef:
    """One block: its window on the grid (without the overlap) and its (row, column) index."""

    window: Window
    index: tuple[int, int]


def strip_rows(block_rows: int, tile_rows: Sequence[int], first_factors: Sequence[int]) -> int:
    """Rows per strip: whole block rows, whole rows of every output's tiles, and whole
    cells of every output's first overview level."""
    rows = block_rows
    for n in [*tile_rows, *first_factors]:
        rows = math.lcm(rows, n)
    return rows


def strips(height: int, rows: int) -> list[tuple[int, int]]:
    """The strips of a grid ``height`` rows tall, as (first row, end row)."""
    return [(r, min(r + rows, height)) for r in range(0, height, rows)]


def blocks_of(width: int, row0: int, row1: int, block_cols: int, block_rows: int) -> list[BlockRef]:
    """The blocks of the strip ``[row0, row1)``, row by row."""
    out = []
    for r in range(row0, row1, block_rows):
        for c in range(0, width, block_cols):
            window = Window(c, r, min(block_cols, width - c), min(block_rows, row1 - r))
            out.append(BlockRef(window, (r // block_rows, c // block_cols)))
    return out
