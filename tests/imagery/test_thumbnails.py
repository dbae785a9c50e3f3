"""Thumbnail rendering as a whole: format sniffing, sources (paths, files, storage), encoding."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imaging_helpers import (
    RGB,
    PhotoFactory,
    RecordingStorage,
    TifFactory,
    config,
    pixels,
    ramp,
    render,
)
from pixelfleet.errors import CorruptInputError, StorageError, UnsupportedFormatError
from pixelfleet.imagery.pictures import encode
from pixelfleet.imagery.reading import sniff_format
from pixelfleet.imagery.thumbnails import render_object, render_thumbnail
from pixelfleet.models import Entry
from pixelfleet.settings import Settings
from pixelfleet.storage.memory import MemoryStorage

# -- sniffing -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "fmt"),
    [
        (b"II*\x00\x08\x00\x00\x00", "GTiff"),
        (b"MM\x00*\x00\x00\x00\x08", "GTiff"),
        (b"II+\x00\x08\x00\x00\x00", "GTiff"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "JPEG"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "PNG"),
        (b"RIFF\x10\x00\x00\x00WEBPVP8 ", "WEBP"),
        (b"GIF89a\x01\x00\x01\x00", "GIF"),
        (b"BM" + bytes(30), "BMP"),
    ],
)
def test_sniff_recognises_supported_formats(head: bytes, fmt: str) -> None:
    assert sniff_format(head) == fmt


@pytest.mark.parametrize(
    ("head", "named"),
    [
        (b"", "empty object"),
        (b'<VRTDataset rasterXSize="1">', "GDAL VRT"),
        (b"\xef\xbb\xbf<?xml version='1.0'?>", "XML"),
        (b"PK\x03\x04\x14\x00", "ZIP"),
        (b"%PDF-1.7\n", "PDF"),
        (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
        (b"\x00\x00\x00\x1cftypavif", "HEIF/AVIF"),
        (b"\x89HDF\r\n\x1a\n", "HDF5"),
        (b"hello world", "unknown format"),
    ],
)
def test_sniff_names_what_it_refuses(head: bytes, named: str) -> None:
    with pytest.raises(UnsupportedFormatError) as info:
        sniff_format(head)
    message = str(info.value)
    assert named in message
    assert "GeoTIFF/COG, JPEG, PNG, WebP, GIF and BMP" in message


def test_vrt_named_tif_is_refused_before_gdal_sees_it(tmp_path: Path, make_tif: TifFactory) -> None:
    target = make_tif(ramp(1, 32, 32))
    vrt = tmp_path / "innocent.tif"
    vrt.write_text(
        f'<VRTDataset rasterXSize="32" rasterYSize="32"><VRTRasterBand dataType="Byte" band="1">'
        f"<SimpleSource><SourceFilename>{target}</SourceFilename><SourceBand>1</SourceBand>"
        "</SimpleSource></VRTRasterBand></VRTDataset>"
    )
    with pytest.raises(UnsupportedFormatError, match="GDAL VRT"):
        render(vrt)


def test_format_comes_from_bytes_not_name(make_photo: PhotoFactory) -> None:
    path = make_photo(Image.new("RGB", (40, 20), "red"), "PNG", suffix=".tif")
    assert render(path).size == (40, 20)


def test_tiff_magic_with_garbage_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "junk.tif"
    path.write_bytes(b"II*\x00" + b"\xff" * 100)
    with pytest.raises(CorruptInputError, match="junk.tif") as info:
        render(path)
    assert "\n" not in str(info.value)


# -- sources -----------------------------------------------------------------------


def test_file_like_source_reads_like_a_path(make_tif: TifFactory) -> None:
    path = make_tif(ramp(3, 64, 64), colorinterp=RGB, overviews=(2,))
    from_path = render_thumbnail(path, config(size=32), Settings())
    from_file = render_thumbnail(io.BytesIO(path.read_bytes()), config(size=32), Settings())
    from_bytes = render_thumbnail(path.read_bytes(), config(size=32), Settings())
    assert from_path == from_file == from_bytes


def test_remote_raster_reads_ranges_of_its_own_key_only(make_tif: TifFactory) -> None:
    rng = np.random.default_rng(9)
    data = rng.integers(0, 255, (3, 1024, 1024), dtype=np.uint8)
    path = make_tif(data, colorinterp=RGB, block=256, overviews=(2, 4, 8), compress="none")
    storage = RecordingStorage("memory://imaging-ranges")
    storage.write("a/scene.tif", path.read_bytes())
    storage.write("a/scene.tif.aux.xml", b"<PAMDataset/>")
    storage.write("a/scene.tif.ovr", b"II*\x00junk")
    entry = storage.head("a/scene.tif")
    assert entry is not None
    thumb = render_object(storage, entry, config(size=100), Settings())
    assert thumb == render_thumbnail(path, config(size=100), Settings())
    assert {key for key, _, _ in storage.reads} == {"a/scene.tif"}
    fetched = sum((end or entry.size) - (start or 0) for _, start, end in storage.reads)
    assert fetched < entry.size / 4  # the header and a 128 px overview, not the 3 MB
    MemoryStorage.clear("imaging-ranges")


def test_storage_error_during_read_is_not_called_corrupt(make_tif: TifFactory) -> None:
    path = make_tif(ramp(3, 512, 512), colorinterp=RGB, block=256, compress="none")
    storage = RecordingStorage("memory://imaging-fail", fail_after=300_000)
    storage.write("scene.tif", path.read_bytes())
    entry = storage.head("scene.tif")
    assert entry is not None
    with pytest.raises(StorageError, match="connection reset"):
        render_object(storage, entry, config(size=300), Settings())
    MemoryStorage.clear("imaging-fail")


def test_photo_from_storage(make_photo: PhotoFactory) -> None:
    path = make_photo(Image.new("RGB", (300, 200), "purple"))
    storage = MemoryStorage("memory://imaging-photo")
    storage.write("p/x.jpg", path.read_bytes())
    entry = storage.head("p/x.jpg")
    assert isinstance(entry, Entry)
    assert render_object(storage, entry, config(), Settings()) == render_thumbnail(
        path, config(), Settings()
    )
    MemoryStorage.clear("imaging-photo")


# -- encoding -------------------------------------------------------------------------


def test_encode_drops_an_opaque_alpha_and_converts_grey_for_webp() -> None:
    opaque = Image.new("RGBA", (8, 8), (1, 2, 3, 255))
    assert Image.open(io.BytesIO(encode(opaque, "png", 85, "white"))).mode == "RGB"
    grey = Image.new("L", (8, 8), 100)
    assert Image.open(io.BytesIO(encode(grey, "webp", 85, "white"))).mode == "RGB"
    assert Image.open(io.BytesIO(encode(grey, "jpeg", 85, "white"))).mode == "L"
    with pytest.raises(ValueError, match="jpeg, png, webp"):
        encode(grey, "tiff", 85, "white")


def test_grey_with_alpha_jpeg_uses_the_background_luminance() -> None:
    image = Image.new("LA", (8, 8), (0, 0))
    out = Image.open(io.BytesIO(encode(image, "jpeg", 95, "white")))
    assert out.mode == "L" and pixels(out).min() > 250
