"""The ``thumbnail`` step: its settings, its outputs, and real files good and bad."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageOps
from pydantic import ValidationError

from pixelfleet.errors import (
    ConfigError,
    CorruptInputError,
    ImageTooLargeError,
    InputError,
    UnsupportedFormatError,
)
from pixelfleet.imagery.thumbnails import render_thumbnail
from pixelfleet.models import Entry
from pixelfleet.ops import OpContext, ops
from pixelfleet.ops.thumbnail import ThumbnailConfig, ThumbnailOp
from pixelfleet.pipeline import pipeline_from_dict
from pixelfleet.settings import Settings
from pixelfleet.storage.local import LocalStorage
from pixelfleet.storage.memory import MemoryStorage

DATA = Path(__file__).parents[1] / "data"
BAD = DATA / "bad"
SHARED_BAD = Path(__file__).parents[2].parent / "shared" / "samples" / "bad"

# What each malformed file must do: the error class, or None where the file is in fact
# fine (a format in disguise, or damage the thumbnail never reads).
BAD_OUTCOMES: dict[str, type[InputError] | None] = {
    "broken_data_stream.png": CorruptInputError,
    "corrupt.tif": None,  # only a full-resolution tile is damaged; the overviews are intact
    "corrupt_image.TIF": None,  # a JPEG named .TIF
    "crash-0e16d3bfb83be87356d026d66919deaefca44dac.tif": CorruptInputError,
    "crash-2020-10-test.tif": CorruptInputError,
    "decompression_bomb.gif": ImageTooLargeError,
    "nontiff.jpg": None,  # a PNG named .jpg
    "png_decompression_dos.png": CorruptInputError,
    "reallybig.bmp": ImageTooLargeError,
    "seek_too_large.tif": CorruptInputError,
    "truncated_image.png": CorruptInputError,
    "truncated_jpeg.jpg": CorruptInputError,
}


def decode(data: bytes) -> Image.Image:
    """Decode an encoded thumbnail."""
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def make_op(**kwargs: Any) -> ThumbnailOp:
    """A thumbnail op from config fields."""
    return ThumbnailOp(ThumbnailConfig(**kwargs))


# -- settings -------------------------------------------------------------------------


def test_defaults() -> None:
    cfg = ThumbnailConfig()
    assert (cfg.size, cfg.key, cfg.quality, cfg.output_format) == (
        512,
        "{stem}.thumb.jpg",
        85,
        "jpeg",
    )
    assert cfg.percentiles == (2.0, 98.0) and cfg.bands is None and cfg.resampling == "auto"
    assert ops.get("thumbnail") is ThumbnailOp


@pytest.mark.parametrize(
    ("key", "fmt"),
    [("{stem}.png", "png"), ("{stem}.WEBP", "webp"), ("t/{name}.jpeg", "jpeg")],
)
def test_format_from_the_key(key: str, fmt: str) -> None:
    assert ThumbnailConfig(key=key).output_format == fmt


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"key": "{stem}.gif"}, "end it with one of .jpg, .jpeg, .png, .webp"),
        ({"key": "{stem}", "format": "bmp"}, "'jpeg', 'png' or 'webp'"),
        ({"key": "{stem}.png", "format": "jpeg"}, "does not match the key's extension"),
        ({"size": 4}, "greater than or equal to 8"),
        ({"size": 5000}, "less than or equal to 4096"),
        ({"quality": 0}, "greater than or equal to 1"),
        ({"bands": [1, 2]}, "1 band (grey) or 3 bands"),
        ({"bands": [0, 1, 2]}, "1-based"),
        ({"percentiles": [98, 2]}, "0 <= low < high <= 100"),
        ({"resampling": "mode"}, "'auto'"),
        ({"background": "not-a-colour"}, "'white' or '#rrggbb'"),
        ({"sise": 100}, "Extra inputs are not permitted"),
    ],
)
def test_bad_settings_are_explained(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        ThumbnailConfig(**fields)
    assert message in str(info.value)


def test_format_without_extension_and_bands_as_list() -> None:
    cfg = ThumbnailConfig.model_validate({"key": "{stem}", "format": "webp", "bands": [4, 3, 2]})
    assert cfg.output_format == "webp" and cfg.bands == (4, 3, 2)
    assert cfg.model_dump(mode="json")["bands"] == [4, 3, 2]


def test_bad_step_in_a_pipeline_is_a_config_error() -> None:
    spec = {
        "source": {"url": "memory://src"},
        "output": {"url": "memory://out"},
        "steps": [{"op": "thumbnail", "key": "{stem}.tiff"}],
    }
    with pytest.raises(ConfigError, match="cannot tell the output format"):
        pipeline_from_dict(spec)


def test_settings_hash_changes_with_the_settings() -> None:
    assert make_op().settings_hash == make_op().settings_hash
    assert make_op().settings_hash != make_op(size=256).settings_hash


# -- running --------------------------------------------------------------------------


def test_output_key_mirrors_the_source_folder() -> None:
    entry = Entry("a/b/scene.tif", 1, "e")
    assert make_op().output_keys(entry) == ["a/b/scene.thumb.jpg"]
    assert make_op(key="thumbs/{dir}/{stem}.png").output_keys(entry) == ["thumbs/a/b/scene.png"]


def test_run_with_local_storage(tmp_path: Path) -> None:
    (tmp_path / "src" / "x").mkdir(parents=True)
    (tmp_path / "src" / "x" / "naip.tif").write_bytes(
        (DATA / "naip_m_3607824_se_17_1_20160620_sub.tif").read_bytes()
    )
    ctx = OpContext(
        LocalStorage(str(tmp_path / "src")), LocalStorage(str(tmp_path / "out")), Settings()
    )
    entry = ctx.source.head("x/naip.tif")
    assert entry is not None
    op = make_op(size=128, key="{stem}.webp")
    (record,) = op.run(ctx, entry)
    assert (record.key, record.step) == ("x/naip.webp", "thumbnail")
    written = (tmp_path / "out" / "x" / "naip.webp").read_bytes()
    assert record.size == len(written)
    image = decode(written)
    assert (image.format, image.size) == ("WEBP", (128, 128))
    output = ctx.output.head("x/naip.webp")
    assert output is not None
    if output.metadata:  # file systems without user xattrs keep no metadata
        assert output.metadata["content-type"] == "image/webp"
        assert op.is_current(output, entry)


def test_run_with_remote_storage_matches_local(tmp_path: Path) -> None:
    source = MemoryStorage("memory://thumb-src")
    output = MemoryStorage("memory://thumb-out")
    for name in ("cog_cmap.tif", "flower.jpg"):
        source.write(f"in/{name}", (DATA / name).read_bytes())
    ctx = OpContext(source, output, Settings())
    op = make_op(key="{stem}.png")
    for name in ("cog_cmap.tif", "flower.jpg"):
        entry = source.head(f"in/{name}")
        assert entry is not None
        (record,) = op.run(ctx, entry)
        remote = output.read(record.key)
        assert remote == render_thumbnail(DATA / name, op.options.to_options(), Settings())
        out_entry = output.head(record.key)
        assert out_entry is not None and out_entry.metadata["content-type"] == "image/png"
    MemoryStorage.clear("thumb-src")
    MemoryStorage.clear("thumb-out")


def test_unsupported_object_fails_with_its_name() -> None:
    source = MemoryStorage("memory://thumb-bad")
    source.write("docs/readme.tif", b"<VRTDataset></VRTDataset>")
    ctx = OpContext(source, MemoryStorage("memory://thumb-bad-out"), Settings())
    entry = source.head("docs/readme.tif")
    assert entry is not None
    with pytest.raises(
        UnsupportedFormatError, match=r"memory://thumb-bad/docs/readme.tif is a GDAL VRT"
    ):
        make_op().run(ctx, entry)
    MemoryStorage.clear("thumb-bad")


def test_threads_render_the_same_bytes_as_one_by_one() -> None:
    source = MemoryStorage("memory://thumb-threads")
    names = sorted(p.name for p in DATA.iterdir() if p.is_file() and p.suffix != ".md")
    for name in names:
        source.write(name, (DATA / name).read_bytes())
    op = make_op(size=96, key="{stem}.png")

    def both(name: str) -> tuple[bytes, bytes]:
        entry = source.head(name)
        assert entry is not None
        from pixelfleet.imagery.thumbnails import render_object

        options = op.options.to_options()
        return render_object(source, entry, options, Settings()), render_thumbnail(
            DATA / name, options, Settings()
        )

    expected = [both(n) for n in names]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(both, names * 3))
    assert got == expected * 3
    MemoryStorage.clear("thumb-threads")


# -- real files -----------------------------------------------------------------------


def render_png(name: str, **fields: Any) -> Image.Image:
    """Render a tests/data file as PNG."""
    cfg = ThumbnailConfig(key="{stem}.png", **fields)
    return decode(render_thumbnail(DATA / name, cfg.to_options(), Settings()))


def test_sample_rgba_uint16() -> None:
    image = render_png("RGBA.uint16.tif")
    assert (image.mode, image.size) == ("RGBA", (512, 332))
    rgba = np.asarray(image)
    opaque = rgba[..., 3] == 255
    transparent = rgba[..., 3] == 0
    assert 0.2 < opaque.mean() < 0.8 and 0.2 < transparent.mean() < 0.8  # soft edges between
    # Bands are stored blue, green, red; all three hold the same value: grey.
    assert (rgba[opaque][:, 0] == rgba[opaque][:, 2]).all()


def test_sample_float_with_nodata() -> None:
    image = render_png("float_raster_with_nodata.tif", min_size=0)
    assert (image.mode, image.size) == ("LA", (13, 12))
    grey, alpha = np.asarray(image)[..., 0], np.asarray(image)[..., 1]
    assert alpha.min() == 0 and alpha.max() == 255
    assert grey[alpha == 255].max() == 255


def test_sample_colormap() -> None:
    image = render_png("cog_cmap.tif")
    assert (image.mode, image.size) == ("RGBA", (422, 512))
    rgba = np.asarray(image)
    assert (rgba[..., 3] == 0).any()  # nodata 0 around the data
    colours = {tuple(c) for c in rgba[rgba[..., 3] == 255][:, :3]}
    assert (0, 197, 255) in colours or (0, 168, 132) in colours or len(colours) > 3


def test_sample_naip_shows_rgb_not_nir() -> None:
    image = render_png("naip_m_3607824_se_17_1_20160620_sub.tif")
    assert (image.mode, image.size) == ("RGB", (300, 300))
    import rasterio

    with rasterio.open(DATA / "naip_m_3607824_se_17_1_20160620_sub.tif") as src:
        rgb = src.read([1, 2, 3]).transpose(1, 2, 0)
    assert np.array_equal(np.asarray(image), rgb)


def test_sample_exif_orientation() -> None:
    image = np.asarray(render_png("exif_imagemagick_orientation.png", size=128), int)
    with Image.open(DATA / "exif_imagemagick_orientation.png") as original:
        stored = original.convert("RGB")
    upright = np.asarray(ImageOps.exif_transpose(stored).resize((128, 128)), int)
    as_stored = np.asarray(stored.resize((128, 128)), int)
    assert np.abs(image - upright).mean() < 8
    assert np.abs(image - upright).mean() < 0.5 * np.abs(image - as_stored).mean()


@pytest.mark.parametrize("name", ["cog_rgba.tif", "sr_b4_20200829.tif", "flower.jpg"])
def test_other_samples_render(name: str) -> None:
    data = render_thumbnail(DATA / name, ThumbnailConfig().to_options(), Settings())
    assert decode(data).format == "JPEG"


# -- malformed files ------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
@pytest.mark.parametrize("name", sorted(BAD_OUTCOMES))
def test_malformed_file(name: str) -> None:
    expected = BAD_OUTCOMES[name]
    if expected is None:
        assert decode(render_thumbnail(BAD / name, ThumbnailConfig().to_options(), Settings())).size
        return
    with pytest.raises(expected) as info:
        render_thumbnail(BAD / name, ThumbnailConfig().to_options(), Settings(), name=f"bad/{name}")
    message = str(info.value)
    assert message.startswith(f"bad/{name}: ") and "\n" not in message and len(message) < 500


def test_damaged_full_resolution_is_reported_when_read() -> None:
    with pytest.raises(CorruptInputError, match="corrupt.tif: cannot be read as a GeoTIFF"):
        render_thumbnail(BAD / "corrupt.tif", ThumbnailConfig(size=1024).to_options(), Settings())


def test_every_shared_bad_sample_has_an_expected_outcome() -> None:
    if not SHARED_BAD.is_dir():
        pytest.skip(f"{SHARED_BAD} is not here")
    assert sorted(p.name for p in SHARED_BAD.iterdir()) == sorted(BAD_OUTCOMES)
    for path in SHARED_BAD.iterdir():
        assert (BAD / path.name).read_bytes() == path.read_bytes()


_CHILD = """
import json, sys, warnings
from pathlib import Path
warnings.simplefilter("ignore")
from pixelfleet.imagery.thumbnails import render_thumbnail
from pixelfleet.ops.thumbnail import ThumbnailConfig
from pixelfleet.settings import Settings
outcomes = {}
for path in sorted(Path(sys.argv[1]).iterdir()):
    try:
        render_thumbnail(path, ThumbnailConfig().to_options(), Settings())
        outcomes[path.name] = None
    except Exception as exc:
        outcomes[path.name] = type(exc).__name__
peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"outcomes": outcomes, "peak_kb": peak}))
"""


@pytest.mark.timeout(120)
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_malformed_files_stay_small_in_a_fresh_process() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(BAD)], capture_output=True, text=True, timeout=100
    )
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["outcomes"] == {
        name: (cls.__name__ if cls else None) for name, cls in BAD_OUTCOMES.items()
    }
    assert report["peak_kb"] < 300 * 1024  # imports alone take about 90 MB
