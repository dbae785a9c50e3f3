"""Thumbnails as a person sees them: tiny images enlarged to a readable size, and nodata,
collars and transparency in one colour in JPEGs (kept transparent in PNG and WebP)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rasterio.enums import ColorInterp

from imaging_helpers import RGB, PhotoFactory, TifFactory, config, pixels, ramp, render
from pixelfleet.imagery.thumbnails import render_object, render_thumbnail
from pixelfleet.ops.thumbnail import ThumbnailConfig
from pixelfleet.settings import Settings
from pixelfleet.storage.memory import MemoryStorage


def jpeg(path: Path, **fields: object) -> np.ndarray:
    """``path``'s JPEG thumbnail (the step's defaults, but for ``fields``) as RGB pixels."""
    options = ThumbnailConfig(key="{stem}.jpg", **fields).to_options()  # type: ignore[arg-type]
    data = render_thumbnail(path, options, Settings())
    return pixels(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)


# -- tiny images ------------------------------------------------------------------------


def test_a_tiny_raster_is_enlarged_by_a_whole_factor_with_sharp_pixels(
    make_tif: TifFactory,
) -> None:
    data = ramp(1, 12, 13)
    image = render(make_tif(data), min_size=64)
    assert image.size == (65, 60)  # 13 x 12 times 5: the longest side reaches 64
    # Nearest neighbour: every source pixel is a 5 x 5 square of its own value.
    assert (pixels(image)[::5, ::5] == data[0]).all()
    assert (pixels(image)[4::5, 4::5] == data[0]).all()


def test_the_step_enlarges_tiny_images_by_default() -> None:
    assert ThumbnailConfig().min_size == 64
    storage = MemoryStorage("memory://tiny")
    buf = io.BytesIO()
    Image.new("RGB", (13, 12), (10, 200, 30)).save(buf, "PNG")
    entry = storage.write("tiny.png", buf.getvalue())
    data = render_object(storage, entry, ThumbnailConfig().to_options(), Settings())
    assert Image.open(io.BytesIO(data)).size == (65, 60)


@pytest.mark.parametrize(
    ("fields", "size"),
    [
        ({"min_size": 0}, (13, 12)),  # 0: never enlarged
        ({"min_size": 64, "size": 40}, (39, 36)),  # never beyond size: 3 times
        ({"min_size": 13}, (13, 12)),  # already long enough
        ({"min_size": 100}, (104, 96)),  # 8 times
    ],
)
def test_enlarging_respects_min_size_and_size(
    make_photo: PhotoFactory, fields: dict[str, int], size: tuple[int, int]
) -> None:
    path = make_photo(Image.new("RGB", (13, 12), "red"), "PNG", suffix=".png")
    assert render(path, **fields).size == size


def test_larger_images_are_only_reduced(make_photo: PhotoFactory) -> None:
    path = make_photo(Image.new("RGB", (300, 100), "red"), "PNG", suffix=".png")
    assert render(path, min_size=64, size=512).size == (300, 100)
    assert render(path, min_size=64, size=150).size == (150, 50)


# -- nodata, collars and transparency ----------------------------------------------------


def collar_raster(fill: int, dtype: str = "uint16") -> np.ndarray:
    """A 40 x 40 scene of values 2000-2078 (or 100-178 for uint8) in a diamond, framed by
    ``fill``; a fill of 0 is also in one pixel inside the scene (another fill there would
    be in the data's range, and no collar)."""
    rows, cols = np.mgrid[0:40, 0:40]
    inside = (abs(rows - 19.5) + abs(cols - 19.5)) < 18
    low = 100 if dtype == "uint8" else 2000
    data = np.where(inside, low + rows + cols, fill).astype(dtype)
    if fill == 0:
        data[20, 20] = fill  # not reached from an edge: stays opaque
    return np.stack([data, data, data])


@pytest.mark.parametrize(("fill", "dtype"), [(0, "uint16"), (1, "uint16"), (0, "uint8")])
def test_a_collar_without_declared_nodata_is_transparent(
    make_tif: TifFactory, fill: int, dtype: str
) -> None:
    path = make_tif(collar_raster(fill, dtype), colorinterp=RGB)
    png = pixels(render(path))
    assert png.shape == (40, 40, 4)
    assert png[0, 0, 3] == 0 and png[39, 39, 3] == 0 and png[0, 20, 3] == 0
    assert png[20, 20, 3] == 255 and png[20, 10, 3] == 255
    rgb = jpeg(path, min_size=0)
    assert (rgb[:3, :3] > 245).all()  # the collar: white, the documented background
    if fill == 0:
        assert rgb[20, 20].max() < 120  # the fill value inside the scene: dark, as it is


def test_uniform_8bit_corners_of_a_valid_value_are_not_a_collar(make_tif: TifFactory) -> None:
    path = make_tif(collar_raster(90, "uint8"), colorinterp=RGB)
    assert render(path).mode == "RGB"  # no transparency made up


def test_a_fill_value_inside_the_data_range_is_not_a_collar(make_tif: TifFactory) -> None:
    path = make_tif(collar_raster(2030), colorinterp=RGB)
    assert render(path).mode == "RGB"


def test_a_constant_raster_stays_opaque(make_tif: TifFactory) -> None:
    path = make_tif(np.zeros((1, 20, 20), np.uint16))
    assert render(path).mode == "L"


@pytest.mark.parametrize("kind", ["nodata", "alpha", "collar", "photo"])
def test_every_kind_of_missing_pixel_is_white_in_a_jpeg(
    make_tif: TifFactory, make_photo: PhotoFactory, kind: str
) -> None:
    data = np.full((3, 32, 32), 3000, np.uint16)
    if kind == "nodata":
        data[:, :, :16] = 7
        path = make_tif(data, nodata=7, colorinterp=RGB)
    elif kind == "alpha":
        data8 = np.full((4, 32, 32), 60, np.uint8)
        data8[3] = 255
        data8[3, :, :16] = 0
        path = make_tif(data8, colorinterp=[*RGB, ColorInterp.alpha])
    elif kind == "collar":
        data[:, :, :16] = 0
        data[:, :, -2:] = 0  # the four corners hold the fill value
        path = make_tif(data, colorinterp=RGB)
    else:
        image = Image.new("RGBA", (32, 32), (60, 60, 60, 255))
        image.paste((0, 0, 0, 0), (0, 0, 16, 32))
        path = make_photo(image, "PNG", suffix=".png")
    rgb = jpeg(path, min_size=0)
    assert (rgb[:, :12] > 245).all(), kind


def test_png_and_webp_keep_transparency_for_a_collar(make_tif: TifFactory) -> None:
    path = make_tif(collar_raster(0), colorinterp=RGB)
    for key in ("{stem}.png", "{stem}.webp"):
        data = render_thumbnail(path, config(key=key), Settings())
        image = Image.open(io.BytesIO(data))
        assert image.mode == "RGBA" and image.getpixel((0, 0))[3] == 0, key


# -- the composite's title ---------------------------------------------------------------


def test_the_composite_title_is_above_the_picture_not_over_it(make_tif: TifFactory) -> None:
    from pixelfleet.imagery.cogs import render_image

    data = np.full((4, 60, 90), 255, np.uint8)  # white and opaque: any cover would show
    path = make_tif(data, colorinterp=[*RGB, ColorInterp.alpha])
    plain = Image.open(io.BytesIO(render_image(str(path), 90, "png")))
    titled = Image.open(io.BytesIO(render_image(str(path), 90, "png", title="LC08 true-color")))
    assert plain.size == (90, 60)
    band = titled.height - 60
    assert titled.width == 90 and band >= 11
    below = pixels(titled.convert("RGB"))
    assert (below[band:] == 255).all()  # every row of the picture, the top one too
    assert below[: band - 1].mean() < 80  # the dark band with the white title
    assert below[: band - 1].max() > 200
