"""Photo thumbnails: orientation, JPEG draft, modes, formats and the size limits."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from imaging_helpers import PhotoFactory, config, pixels, png_header_only, render
from pixelfleet.errors import CorruptInputError, ImageTooLargeError
from pixelfleet.imagery.thumbnails import render_thumbnail
from pixelfleet.settings import Settings

# -- photos ---------------------------------------------------------------------------


def test_exif_orientation_is_honoured(make_photo: PhotoFactory) -> None:
    image = Image.new("RGB", (200, 100), "blue")
    image.paste((255, 0, 0), (0, 0, 100, 100))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = make_photo(image, exif=exif.tobytes(), quality=95)
    thumb = render(path)
    assert thumb.size == (100, 200)
    top, bottom = thumb.getpixel((50, 20)), thumb.getpixel((50, 180))
    assert isinstance(top, tuple) and isinstance(bottom, tuple)
    assert top[0] > 200 and top[2] < 60  # the stored left half is now on top
    assert bottom[2] > 200 and bottom[0] < 60


def test_jpeg_is_drafted_then_resized_exactly(
    make_photo: PhotoFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make_photo(Image.new("RGB", (2000, 1000), "green"))
    calls = []
    original = JpegImagePlugin.JpegImageFile.draft

    def spy(self: Any, mode: Any, size: Any) -> Any:
        calls.append(size)
        return original(self, mode, size)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    assert render(path).size == (512, 256)
    assert calls == [(512, 256)]


def test_photo_transparency_kept_in_png_and_flattened_in_jpeg(make_photo: PhotoFactory) -> None:
    image = Image.new("RGBA", (40, 40), (0, 255, 0, 255))
    image.paste((0, 0, 0, 0), (0, 0, 20, 40))
    path = make_photo(image, "PNG", suffix=".png")
    png = pixels(render(path))
    assert png[:, :20, 3].max() == 0 and png[:, 20:, 3].min() == 255
    data = render_thumbnail(path, config(background="#0000ff", key="{stem}.jpg"), Settings())
    rgb = pixels(Image.open(io.BytesIO(data)))
    assert rgb[:, :15, 2].min() > 230 and rgb[:, 25:, 1].min() > 230


def test_palette_photo_with_transparency(make_photo: PhotoFactory) -> None:
    image = Image.new("P", (30, 30), 1)
    image.putpalette([0, 0, 0, 255, 0, 0])
    image.paste(0, (0, 0, 10, 30))
    path = make_photo(image, "PNG", suffix=".png", transparency=0)
    out = pixels(render(path))
    assert out.shape == (30, 30, 4) and out[:, :10, 3].max() == 0
    assert tuple(out[5, 20]) == (255, 0, 0, 255)


def test_16_bit_grey_photo_is_stretched(make_photo: PhotoFactory) -> None:
    values = np.tile(np.linspace(1000, 3000, 64), (32, 1)).astype(np.uint16)
    path = make_photo(Image.fromarray(values), "PNG", suffix=".png")
    out = pixels(render(path))
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255


@pytest.mark.parametrize(("fmt", "suffix"), [("GIF", ".gif"), ("BMP", ".bmp"), ("WEBP", ".webp")])
def test_other_photo_formats(make_photo: PhotoFactory, fmt: str, suffix: str) -> None:
    path = make_photo(Image.new("RGB", (1000, 500), (10, 120, 200)), fmt, suffix=suffix)
    out = render(path, size=100)
    assert out.size == (100, 50)
    assert abs(int(pixels(out)[..., 2].mean()) - 200) < 10


def test_photo_pixel_limit(make_photo: PhotoFactory) -> None:
    path = make_photo(Image.new("RGB", (100, 100)), "PNG", suffix=".png")
    with pytest.raises(ImageTooLargeError, match="PIXELFLEET_MAX_IMAGE_PIXELS"):
        render(path, Settings(max_image_pixels=5000))


def test_header_bomb_is_refused_without_decoding() -> None:
    with pytest.raises(ImageTooLargeError, match=r"50000x50000 = 2,500,000,000 pixels"):
        render(png_header_only(50_000, 50_000))


def test_only_pixelfleets_limit_applies(tmp_path: Path) -> None:
    # 90 Mpx is over Pillow's own warning threshold (89 Mpx) but under ours: no warning
    # (an error under pytest), just a truncated file.
    with pytest.raises(CorruptInputError, match="truncated"):
        render(png_header_only(10_000, 9_000)[:-12], Settings(max_image_pixels=100_000_000))


def test_photo_object_size_limit(make_photo: PhotoFactory) -> None:
    path = make_photo(Image.new("RGB", (64, 64)))
    settings = Settings(max_object_bytes=100)
    for source in (path, io.BytesIO(path.read_bytes())):
        with pytest.raises(ImageTooLargeError, match="PIXELFLEET_MAX_OBJECT_BYTES"):
            render(source, settings)
