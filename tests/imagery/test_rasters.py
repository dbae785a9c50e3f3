"""GeoTIFF thumbnails: values, bands, masks, overviews, resampling and limits."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.enums import ColorInterp, Resampling

from imaging_helpers import RGB, TifFactory, config, pixels, ramp, render
from pixelfleet.errors import ImageTooLargeError, InputError
from pixelfleet.imagery import rasters
from pixelfleet.imagery.pictures import fit_size
from pixelfleet.imagery.thumbnails import render_thumbnail
from pixelfleet.settings import Settings

# -- rasters: values, bands, masks ----------------------------------------------------


def test_uint8_rgb_is_shown_as_is(make_tif: TifFactory) -> None:
    data = ramp(3, 48, 64)
    image = render(make_tif(data, colorinterp=RGB), size=64)
    assert image.mode == "RGB"
    assert np.array_equal(pixels(image), data.transpose(1, 2, 0))


def test_size_is_the_longest_side_and_never_enlarged(make_tif: TifFactory) -> None:
    path = make_tif(ramp(3, 60, 120), colorinterp=RGB)
    assert render(path, size=40).size == (40, 20)
    assert render(path, size=512).size == (120, 60)
    assert fit_size(7000, 3, 512) == (512, 1)


def test_reads_the_overview_gdal_should_pick(make_tif: TifFactory) -> None:
    rng = np.random.default_rng(3)
    data = rng.integers(0, 255, (3, 1024, 1024), dtype=np.uint8)
    path = make_tif(data, colorinterp=RGB, block=256, overviews=(2, 4, 8))
    image = pixels(render(path, size=200, resampling="average"))

    def from_level(level: int) -> np.ndarray:
        with rasterio.open(path, overview_level=level) as src:
            read = src.read(out_shape=(3, 200, 200), resampling=Resampling.average)
        return read.transpose(1, 2, 0)

    # 256 px (1/4) is the smallest level at least 200 px; 128 px (1/8) would be blurry.
    assert np.array_equal(image, from_level(1))
    assert not np.array_equal(image, from_level(2))
    with rasterio.open(path) as src:
        assert rasters.overview_factor(src, 1, 200, 200) == 4


def test_colour_interpretation_orders_the_bands(make_tif: TifFactory) -> None:
    data = ramp(3, 32, 32)
    path = make_tif(data, colorinterp=[ColorInterp.blue, ColorInterp.green, ColorInterp.red])
    out = pixels(render(path))
    assert np.array_equal(out[..., 0], data[2])
    assert np.array_equal(out[..., 2], data[0])


def test_default_bands() -> None:
    gray, undefined, alpha = ColorInterp.gray, ColorInterp.undefined, ColorInterp.alpha
    assert rasters.default_bands([gray]) == [1]
    assert rasters.default_bands([gray, alpha]) == [1]
    assert rasters.default_bands([undefined] * 7) == [1, 2, 3]
    assert rasters.default_bands([alpha, gray, undefined, undefined]) == [2, 3, 4]
    assert rasters.default_bands([*RGB, ColorInterp.undefined]) == [1, 2, 3]


def test_bands_option_picks_bands(make_tif: TifFactory) -> None:
    data = ramp(4, 32, 32)
    path = make_tif(data, colorinterp=[*RGB, ColorInterp.undefined])
    grey = render(path, bands=[4])
    assert grey.mode == "L"
    assert np.array_equal(pixels(grey), data[3])
    false_colour = pixels(render(path, bands=[4, 1, 2]))
    assert np.array_equal(false_colour[..., 0], data[3])


def test_bands_beyond_the_file_are_an_input_error(make_tif: TifFactory) -> None:
    path = make_tif(ramp(1, 16, 16))
    with pytest.raises(
        InputError, match=r"has 1 band\(s\) but the step asks for bands \[1, 2, 3\]"
    ):
        render(path, bands=[1, 2, 3])


def test_uint16_stretch_uses_valid_pixels_only(make_tif: TifFactory) -> None:
    data = np.full((1, 50, 100), 0, np.uint16)
    data[0, :, 50:] = np.linspace(1000, 2000, 50, dtype=np.uint16)[None, :]
    image = render(make_tif(data, nodata=0), resampling="nearest")
    assert image.mode == "LA"
    grey, alpha = pixels(image)[..., 0], pixels(image)[..., 1]
    assert (alpha[:, :50] == 0).all() and (alpha[:, 50:] == 255).all()
    # 2nd..98th percentile of 1000..2000 spans 0..255; with the nodata zeros counted
    # the low end would have been 0 and the ramp squeezed into the top half.
    assert grey[:, 50].max() == 0
    assert grey[:, -1].min() == 255
    assert 100 < grey[0, 75] < 155


def test_int16_negative_nodata(make_tif: TifFactory) -> None:
    data = ramp(1, 40, 40, "int16", scale=-7.0)
    data[0, :10] = -9999
    image = render(make_tif(data, nodata=-9999))
    alpha = pixels(image)[..., 1]
    assert (alpha[:10] == 0).all() and (alpha[10:] == 255).all()
    grey = pixels(image)[10:, :, 0]
    assert grey.min() == 0 and grey.max() == 255


def test_float_nan_and_nodata_are_transparent(make_tif: TifFactory) -> None:
    data = ramp(1, 40, 40, "float32", scale=0.01)
    data[0, 0, :] = np.nan
    data[0, 1, :] = -3.4e38
    data[0, 2, :] = np.inf
    image = render(make_tif(data, nodata=-3.4e38))
    alpha = pixels(image)[..., 1]
    assert (alpha[:3] == 0).all() and (alpha[3:] == 255).all()
    grey = pixels(image)[3:, :, 0]
    assert grey.min() == 0 and grey.max() == 255


def test_complex_data_is_shown_as_its_amplitude(make_tif: TifFactory) -> None:
    # Opposite phases side by side: averaging complex values would cancel them to 0.
    left, right = np.full((64, 32), 3 + 4j), np.full((64, 32), -3 - 4j)
    data = np.hstack([left, right])
    data[:32] *= 2  # amplitude 10 on top, 5 below
    data[::2, ::2] *= -1  # phase flips in a checkerboard
    image = render(make_tif(data[None].astype(np.complex64), tiled=False), size=16)
    assert image.mode == "L" and image.size == (16, 16)
    grey = pixels(image)
    assert (grey[:8] == 255).all() and (grey[8:] == 0).all()


@pytest.mark.parametrize("dtype", ["complex_int16", "complex64"])
def test_sar_complex_bands_make_thumbnails(tmp_path: Path, dtype: str) -> None:
    path = tmp_path / "sar.tif"
    rows, cols = np.mgrid[0:40, 0:60]
    with rasterio.open(
        path, "w", driver="GTiff", width=60, height=40, count=1, dtype=dtype,
        crs="EPSG:32633", transform=rasterio.Affine(10, 0, 500000, 0, -10, 4000000),
    ) as dst:  # fmt: skip
        dst.write((rows + 1j * cols).astype(np.complex64)[None])
    image = render(path, size=30)
    assert image.size == (30, 20)
    grey = pixels(image).astype(int)
    assert grey[-1, -1] > grey[0, 0]  # |40 + 60j| > |0|


def test_constant_band_is_mid_grey(make_tif: TifFactory) -> None:
    image = render(make_tif(np.full((1, 16, 16), 700, np.uint16)))
    assert set(np.unique(pixels(image))) == {128}


def test_alpha_band_png_keeps_it_and_jpeg_lays_it_on_background(make_tif: TifFactory) -> None:
    data = np.full((4, 32, 32), 200, np.uint8)
    data[3] = 255
    data[3, :, :16] = 0
    path = make_tif(data, colorinterp=[*RGB, ColorInterp.alpha])
    png = pixels(render(path))
    assert png.shape == (32, 32, 4)
    assert (png[:, :16, 3] == 0).all() and (png[:, 16:, 3] == 255).all()
    jpeg = render_thumbnail(path, config(background="#ff0000", key="{stem}.jpg"), Settings())
    rgb = pixels(Image.open(io.BytesIO(jpeg)))
    assert rgb[:, :12, 0].min() > 240 and rgb[:, :12, 1].max() < 15
    assert abs(int(rgb[:, 20:, 1].mean()) - 200) < 4


def test_internal_mask_is_transparency(make_tif: TifFactory) -> None:
    mask = np.full((32, 32), 255, np.uint8)
    mask[20:] = 0
    image = pixels(render(make_tif(ramp(3, 32, 32), colorinterp=RGB, mask=mask)))
    assert (image[20:, :, 3] == 0).all() and (image[:20, :, 3] == 255).all()


def test_palette_is_applied(make_tif: TifFactory) -> None:
    data = np.zeros((1, 20, 30), np.uint8)
    data[0, :, 10:20] = 1
    data[0, :, 20:] = 2
    cmap = {0: (0, 0, 0, 0), 1: (255, 0, 0, 255), 2: (0, 0, 255, 255)}
    image = pixels(render(make_tif(data, colormap=cmap, nodata=0)))
    assert image.shape == (20, 30, 4)
    assert (image[:, :10, 3] == 0).all()
    assert tuple(image[5, 15]) == (255, 0, 0, 255)
    assert tuple(image[5, 25]) == (0, 0, 255, 255)


def test_strips_and_tiles_give_the_same_thumbnail(make_tif: TifFactory) -> None:
    data = ramp(3, 200, 300)
    tiled = render(make_tif(data, colorinterp=RGB), size=100, resampling="average")
    striped = render(make_tif(data, colorinterp=RGB, tiled=False), size=100, resampling="average")
    assert np.array_equal(pixels(tiled), pixels(striped))


def test_auto_resampling(make_tif: TifFactory) -> None:
    data = ramp(3, 256, 256)
    striped = make_tif(data, tiled=False, colorinterp=RGB)
    tiled = make_tif(data, colorinterp=RGB)
    with_overviews = make_tif(data, tiled=False, colorinterp=RGB, overviews=(2, 4, 8))
    settings = Settings()

    def chosen(path: Path, size: int, resampling: str = "auto") -> tuple[Resampling, Any]:
        with rasterio.open(path) as src:
            plan = rasters.plan_read(src, config(size=size, resampling=resampling), settings, "x")
        return plan.resampling, plan.supersample

    # An overview near the size: GDAL averages it.
    assert chosen(with_overviews, 64) == (Resampling.average, (1, 1))
    assert chosen(striped, 128) == (Resampling.average, (1, 1))
    # No overview near the size: 4 x 4 samples per pixel; on strips only extra columns,
    # which cost nothing, while each extra row is another strip to decode.
    assert chosen(tiled, 64) == (Resampling.nearest, (4, 4))
    assert chosen(striped, 64) == (Resampling.nearest, (1, 4))
    # What is asked for is what is done.
    assert chosen(tiled, 64, "average") == (Resampling.average, (1, 1))
    assert chosen(tiled, 64, "nearest") == (Resampling.nearest, (1, 1))


def test_samples_average_close_to_a_true_average(make_tif: TifFactory) -> None:
    rng = np.random.default_rng(11)
    smooth = ramp(3, 400, 400)
    data = np.clip(smooth.astype(int) % 256 + rng.integers(-20, 21, smooth.shape), 0, 255)
    path = make_tif(data.astype(np.uint8), colorinterp=RGB, block=64)
    average = pixels(render(path, size=50, resampling="average")).astype(int)
    nearest = pixels(render(path, size=50, resampling="nearest")).astype(int)
    sampled = pixels(render(path, size=50)).astype(int)
    assert np.abs(sampled - average).mean() < 0.5 * np.abs(nearest - average).mean()


def test_box_average_weights_by_opacity() -> None:
    data = np.array([[[10.0], [np.nan]], [[30.0], [-3.4e38]]], np.float32)
    alpha = np.array([[255, 0], [255, 0]], np.uint8)
    mean, mean_alpha = rasters.box_average(data, alpha, 2, 2)
    assert mean.shape == (1, 1, 1) and mean[0, 0, 0] == pytest.approx(20.0)
    assert mean_alpha is not None and mean_alpha[0, 0] == 128
    grey = np.arange(16, dtype=np.uint8).reshape(4, 4, 1)
    out, none = rasters.box_average(grey, None, 2, 2)
    assert none is None and out.dtype == np.uint8
    assert out[..., 0].tolist() == [[3, 5], [11, 13]]  # means 2.5, 4.5... rounded up


def test_swaths_give_the_same_thumbnail_as_one_read(
    make_tif: TifFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(5)
    data = rng.integers(0, 255, (3, 500, 400), dtype=np.uint8)
    path = make_tif(data, colorinterp=RGB, block=32)
    whole = pixels(render(path, size=90, resampling="average"))
    monkeypatch.setattr(rasters, "SWATH_BYTES", 4096)
    with rasterio.open(path) as src:
        assert rasters.plan_read(src, config(size=90), Settings(), "x").swath_rows < 90
    swathed = pixels(render(path, size=90, resampling="average"))
    assert np.abs(whole.astype(int) - swathed).max() <= 1


# -- rasters: limits and sources ------------------------------------------------------


def test_pixel_limit_is_checked_before_decoding(make_tif: TifFactory) -> None:
    path = make_tif(ramp(1, 64, 64))
    with pytest.raises(ImageTooLargeError) as info:
        render(path, Settings(max_image_pixels=1000))
    message = str(info.value)
    assert "64x64 = 4,096 pixels" in message and "1,000" in message
    assert "PIXELFLEET_MAX_IMAGE_PIXELS" in message and "gdaladdo" in message


def test_pixel_limit_applies_to_the_overview_read(make_tif: TifFactory) -> None:
    path = make_tif(ramp(1, 512, 512), block=64, overviews=(2, 4, 8))
    settings = Settings(max_image_pixels=5000)
    assert render(path, settings, size=60).size == (60, 60)  # reads the 64 x 64 level
    with pytest.raises(ImageTooLargeError):
        render(path, settings, size=200)


def test_many_bands_count_against_the_limit(make_tif: TifFactory) -> None:
    path = make_tif(ramp(10, 32, 32))
    with pytest.raises(ImageTooLargeError, match="10 bands"):
        render(path, Settings(max_image_pixels=2000))
