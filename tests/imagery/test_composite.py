"""The composite step: pixels against a numpy reference, every stretch, COG validity,
transparency, outputs and reruns, and bad scenes failing alone."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image
from rio_cogeo.cogeo import cog_validate

from composite_helpers import (
    SCENE,
    band_data,
    composite_pipeline,
    exact_percentiles,
    read,
    reference,
    run,
    write_band,
    write_scene,
)
from pixelfleet.errors import ConfigError
from pixelfleet.imagery import bands as band_files
from pixelfleet.imagery.composite import BandFile, CompositeSpec, make_composite
from pixelfleet.pipeline import pipeline_from_dict

REPO = Path(__file__).resolve().parents[2]
LC8 = REPO / "demo" / "bucket" / "landsat" / "LC81070352015122LGN00"


def cog_of(out: Path, recipe: str = "true-color") -> Path:
    return out / f"{SCENE}_{recipe}.tif"


@pytest.mark.parametrize(
    ("blocksize", "source_block"),
    [(512, 64), (64, 64), (64, None)],
    ids=["one-stripe", "stripes", "striped-source"],
)
def test_true_color_matches_numpy_reference(
    tmp_path: Path, blocksize: int, source_block: int | None
) -> None:
    data = write_scene(tmp_path / "src", block=source_block)
    summary = run(composite_pipeline(tmp_path / "src", tmp_path / "out", blocksize=blocksize))
    assert summary.state == "done", summary.failures
    got = read(cog_of(tmp_path / "out"))
    bands = [data[4], data[3], data[2]]
    lows, highs = exact_percentiles(bands)  # small scene: the sample is every pixel
    want = reference(bands, lows, highs)
    assert got.shape == want.shape == (4, 300, 260)
    assert np.abs(got.astype(int) - want).max() <= 1
    assert np.mean(got != want) < 0.001
    ok, errors, _warnings = cog_validate(str(cog_of(tmp_path / "out")))
    assert ok, errors


def test_fixed_ranges_and_gamma_match_reference(tmp_path: Path) -> None:
    data = write_scene(tmp_path / "src")
    ranges = [[5900, 11000], [6200, 11000], [7600, 11000]]
    run(
        composite_pipeline(
            tmp_path / "src",
            tmp_path / "out",
            stretch="fixed",
            ranges=ranges,
            gamma=1.8,
            image_key="",
        )
    )
    got = read(cog_of(tmp_path / "out"))
    want = reference(
        [data[4], data[3], data[2]],
        [r[0] for r in ranges],
        [r[1] for r in ranges],
        gamma=1.8,
    )
    assert np.abs(got.astype(int) - want).max() <= 1


def test_per_channel_modes_and_equalisation(tmp_path: Path) -> None:
    data = write_scene(tmp_path / "src")
    run(
        composite_pipeline(
            tmp_path / "src",
            tmp_path / "out",
            recipe="swir2-nir-green",
            stretch=["equalize", "fixed", "percentile"],
            ranges=[[0, 1], [7000, 12000], [0, 1]],
        )
    )
    got = read(cog_of(tmp_path / "out", "swir2-nir-green"))
    valid = got[3] == 255
    red = got[0][valid]
    # Equalised: output levels spread evenly (each eighth of 0-255 holds ~1/8 of pixels).
    shares = np.histogram(red, bins=8, range=(0, 256))[0] / red.size
    assert shares.min() > 0.09 and shares.max() < 0.16, shares
    # ... and the mapping keeps the order of the input values.
    raw = data[7][valid]
    order = np.argsort(raw, kind="stable")
    assert np.all(np.diff(red[order].astype(int)) >= 0)
    want_green = reference([data[5]], [7000], [12000], valid=got[3] == 255)[0]
    assert np.abs(got[1].astype(int) - want_green).max() <= 1


def test_band_math_grey_index(tmp_path: Path) -> None:
    data = write_scene(tmp_path / "src")
    run(
        composite_pipeline(
            tmp_path / "src",
            tmp_path / "out",
            bands=["(b5 - b4) / (b5 + b4)"],
            stretch="fixed",
            ranges=[[-0.2, 0.3]],
            key="{scene}_index.tif",
            image_key="{scene}_index.webp",
        )
    )
    got = read(tmp_path / "out" / f"{SCENE}_index.tif")
    assert got.shape[0] == 2  # grey + alpha
    b4, b5 = data[4].astype(np.float64), data[5].astype(np.float64)
    valid = (data[4] != 0) & (data[5] != 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        index = (b5 - b4) / (b5 + b4)
    t = np.clip((index + 0.2) / 0.5, 0, 1)
    want = np.where(valid, np.floor(t * 255 + 0.5), 0)
    assert np.abs(got[0].astype(int) - want).max() <= 1
    assert np.array_equal(got[1] == 255, valid)
    with Image.open(tmp_path / "out" / f"{SCENE}_index.webp") as im:
        assert im.format == "WEBP"


def test_nodata_and_zero_fill_are_transparent(tmp_path: Path) -> None:
    data = write_scene(tmp_path / "src", bands=(2, 3, 4))
    data[3][100:110, 100:110] = 0  # a hole in one band only
    write_band(tmp_path / "src" / f"{SCENE}_B3.TIF", data[3])
    run(composite_pipeline(tmp_path / "src", tmp_path / "out", image_size=300))
    got = read(cog_of(tmp_path / "out"))
    assert (got[3][:5, :5] == 0).all() and (got[:3, :5, :5] == 0).all()  # the collar
    assert (got[3][100:110, 100:110] == 0).all()
    assert (got[3][200:, 200:] == 255).all()
    with Image.open(tmp_path / "out" / f"{SCENE}_true-color.png") as picture:
        assert picture.mode == "RGBA" and picture.size == (260, 300)
        alpha = np.asarray(picture)[..., 3]
    assert alpha[0, 0] == 0 and alpha[-1, -1] == 255


def test_declared_nodata_is_transparent_and_zero_can_be_data(tmp_path: Path) -> None:
    data = {b: band_data(b) for b in (2, 3, 4)}
    for b, arr in data.items():
        arr[arr == 0] = 5  # zero collar becomes real data
        arr[:20, :] = 65535
        write_band(tmp_path / "src" / f"{SCENE}_B{b}.TIF", arr, nodata=65535)
    run(composite_pipeline(tmp_path / "src", tmp_path / "out", zero_is_nodata=False))
    alpha = read(cog_of(tmp_path / "out"))[3]
    assert (alpha[:20] == 0).all() and (alpha[20:] == 255).all()


def test_outputs_title_histograms_and_rerun(tmp_path: Path) -> None:
    write_scene(tmp_path / "src", bands=(2, 3, 4))
    pipe = composite_pipeline(
        tmp_path / "src",
        tmp_path / "out",
        image_key="{scene}.jpg",
        title="{scene} {recipe}",
        histogram_key="{scene}.hist.png",
    )
    first = run(pipe, ledger=f"sqlite:///{tmp_path / 'l.db'}")
    assert first.counts.objects_written == 1
    out = tmp_path / "out"
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        [f"{SCENE}_true-color.tif", f"{SCENE}.jpg", f"{SCENE}.hist.png", f"{SCENE}.hist.json"]
    )
    stats = json.loads((out / f"{SCENE}.hist.json").read_text())
    assert set(stats["bands"]) == {"4", "3", "2"}
    assert stats["bands"]["4"]["percentiles"]["p2"] == pytest.approx(
        stats["channels"][0]["stretch"]["low"]
    )
    assert sum(stats["channels"][0]["histogram"]["counts"]) == stats["pixels"]["valid"]
    with Image.open(out / f"{SCENE}.hist.png") as plot:
        assert plot.size[0] > 500
    # The title is drawn on a dark band at the top.
    with Image.open(out / f"{SCENE}.jpg") as im:
        jpg = np.asarray(im.convert("L"))
    assert jpg[:4].mean() < 70
    mtimes = {p: p.stat().st_mtime_ns for p in out.iterdir()}

    # A new run of the same pipeline (no ledger memory): outputs are current, not rewritten.
    again = run(pipe)
    assert again.counts.objects_current == 1 and again.counts.objects_written == 0
    assert {p: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes
    # A changed band file makes the scene's outputs stale.
    src = tmp_path / "src" / f"{SCENE}_B3.TIF"
    os.utime(src, ns=(src.stat().st_atime_ns, src.stat().st_mtime_ns + 10**9))
    third = run(pipe)
    assert third.counts.objects_written == 1


def test_picture_only(tmp_path: Path) -> None:
    write_scene(tmp_path / "src", bands=(2, 3, 4))
    summary = run(composite_pipeline(tmp_path / "src", tmp_path / "out", key="", image_size=64))
    assert summary.state == "done", summary.failures
    assert [p.name for p in (tmp_path / "out").iterdir()] == [f"{SCENE}_true-color.png"]
    with Image.open(tmp_path / "out" / f"{SCENE}_true-color.png") as im:
        assert max(im.size) == 64


def test_results_carry_media_types_and_roles(tmp_path: Path) -> None:
    from pixelfleet.plan import plan
    from pixelfleet.storage import open_storage
    from pixelfleet.worker import execute

    write_scene(tmp_path / "src", bands=(2, 3, 4))
    pipe = composite_pipeline(tmp_path / "src", tmp_path / "out", histogram_key="{scene}.h.png")
    entries = list(open_storage(str(tmp_path / "src")).scan())
    (task,) = plan(entries, pipe.source.partition, pipe.settings_hash)
    result = json.loads(execute(json.dumps(pipe.to_json_dict()), json.dumps(task.to_dict())))
    (scene,) = result["entries"]
    assert scene["key"] == SCENE and scene["state"] == "done"
    outputs = {o["key"]: (o["media_type"], o["roles"]) for o in scene["outputs"]}
    assert outputs == {
        f"{SCENE}_true-color.tif": (
            "image/tiff; application=geotiff; profile=cloud-optimized",
            ["visual"],
        ),
        f"{SCENE}_true-color.png": ("image/png", ["overview", "thumbnail"]),
        f"{SCENE}.h.png": ("image/png", ["metadata"]),
        f"{SCENE}.h.json": ("application/json", ["metadata"]),
    }


def test_ledger_records_outputs(tmp_path: Path) -> None:
    from pixelfleet.ledger import open_ledger

    write_scene(tmp_path / "src", bands=(2, 3, 4))
    ledger = f"sqlite:///{tmp_path / 'l.db'}"
    summary = run(composite_pipeline(tmp_path / "src", tmp_path / "out"), ledger=ledger)
    with open_ledger(ledger) as led:
        (task,) = led.find_tasks(summary.run_id, ["done"])
    assert sorted(task.outputs) == [f"{SCENE}_true-color.png", f"{SCENE}_true-color.tif"]


def test_multiband_file_is_a_scene(tmp_path: Path) -> None:
    stack = np.stack([band_data(b) for b in (1, 2, 3)])
    write_band(tmp_path / "src" / "scene.tif", stack)
    pipe = pipeline_from_dict(
        {
            "source": {"url": str(tmp_path / "src"), "partition": {"by": "object"}},
            "output": {"url": str(tmp_path / "out")},
            "steps": [{"op": "composite", "bands": [3, 2, 1], "stretch": "percentile"}],
            "run": {"executor": "inline"},
        }
    )
    summary = run(pipe)
    assert summary.state == "done", summary.failures
    got = read(tmp_path / "out" / "scene_b3-b2-b1.tif")
    bands = [stack[2], stack[1], stack[0]]
    lows, highs = exact_percentiles(bands)
    assert np.abs(got.astype(int) - reference(bands, lows, highs)).max() <= 1


def test_sample_percentiles_agree_with_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    """A decimated sample of a real Landsat band (every 2nd pixel and row here, where a
    whole scene gets every 8th) stays within 1% of the range of exact percentiles."""
    monkeypatch.setattr(band_files, "MIN_SAMPLE", 500_000)
    files = [
        BandFile(str(b), str(b), str(LC8 / f"LC81070352015122LGN00_B{b}.tif")) for b in (4, 3, 2)
    ]
    spec = CompositeSpec(channels=["4", "3", "2"], stretch=["percentile"] * 3, cog=False)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        result = make_composite(files, spec, tmp)
    assert result.stats["sample_step"] == 2
    bands = [rasterio.open(f.path).read(1) for f in files]
    lows, highs = exact_percentiles(bands)
    for ch, low, high in zip(result.stats["channels"], lows, highs, strict=True):
        span = high - low
        assert abs(ch["stretch"]["low"] - low) / span < 0.01
        assert abs(ch["stretch"]["high"] - high) / span < 0.01
    with Image.open(io.BytesIO(result.image or b"")) as picture:
        assert picture.size == (1006, 1024)


# -- bad input: the scene fails with a clear message, other scenes carry on ---------------


def _two_scenes(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    write_scene(src / "good", bands=(2, 3, 4), scene="GOOD")
    write_scene(src / "bad", bands=(2, 3, 4), scene="BAD")
    return src


def _failure(summary: object) -> str:
    failures = summary.failures  # type: ignore[attr-defined]
    assert len(failures) == 1
    (row,) = failures[0].failures
    assert row["key"] == "bad/BAD"
    return f"{row['error_type']}: {row['error']}"


def test_missing_band_fails_the_scene(tmp_path: Path) -> None:
    src = _two_scenes(tmp_path)
    (src / "bad" / "BAD_B2.TIF").unlink()
    summary = run(composite_pipeline(src, tmp_path / "out"))
    assert summary.counts.tasks_done == 1 and summary.counts.tasks_failed == 1
    message = _failure(summary)
    assert "InputError" in message and "band(s) 2" in message and "found bands: 3, 4" in message
    assert (tmp_path / "out" / "good" / "GOOD_true-color.tif").exists()


def test_mismatched_sizes_fail_the_scene(tmp_path: Path) -> None:
    src = _two_scenes(tmp_path)
    write_band(src / "bad" / "BAD_B3.TIF", band_data(3, height=150, width=130))
    message = _failure(run(composite_pipeline(src, tmp_path / "out")))
    assert "BAD_B3.TIF: is 130x150 pixels but" in message and "BAD_B4.TIF is 260x300" in message


def test_mismatched_crs_fails_the_scene(tmp_path: Path) -> None:
    src = _two_scenes(tmp_path)
    write_band(src / "bad" / "BAD_B2.TIF", band_data(2), crs="EPSG:32655")
    message = _failure(run(composite_pipeline(src, tmp_path / "out")))
    assert "BAD_B2.TIF: its CRS EPSG:32655 differs" in message


def test_corrupt_band_fails_the_scene(tmp_path: Path) -> None:
    src = _two_scenes(tmp_path)
    path = src / "bad" / "BAD_B3.TIF"
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])  # truncated: the header survives, tiles do not
    message = _failure(run(composite_pipeline(src, tmp_path / "out")))
    assert message.startswith("CorruptInputError") and "BAD_B3.TIF" in message


def test_not_a_tiff_fails_the_scene(tmp_path: Path) -> None:
    src = _two_scenes(tmp_path)
    (src / "bad" / "BAD_B4.TIF").write_bytes(b"<VRTDataset>nope</VRTDataset>")
    message = _failure(run(composite_pipeline(src, tmp_path / "out")))
    assert "BAD_B4.TIF" in message and "GDAL VRT" in message


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        ({"recipe": "glacier"}, "unknown recipe 'glacier'; choose one of: true-color"),
        ({"bands": [4, 3]}, "must list 3 channels"),
        ({"stretch": "fixed"}, "a fixed stretch needs ranges"),
        ({"bands": ["b4 + os.system(1)"]}, "is not allowed"),
        ({"recipe": "true-color", "bands": [1, 2, 3]}, "either recipe or bands"),
        ({"image_key": "{scene}.gif"}, "must end with one of"),
        ({"gamma": 0}, "must be above 0"),
        ({"key": "{stem}.tif"}, "use the fields {scene}, {recipe}, {dir}"),
        ({"title": "{date}"}, "use the fields {scene}, {recipe}, {dir}"),
    ],
)
def test_bad_settings_are_caught_on_load(tmp_path: Path, step: dict, expected: str) -> None:
    pattern = expected.replace("(", r"\(").replace("+", r"\+").replace("{", r"\{")
    with pytest.raises(ConfigError, match=pattern):
        composite_pipeline(tmp_path, tmp_path / "out", **step)


def test_scenes_filter_picks_the_step(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_scene(src, bands=(2, 3, 4), scene="LC08_A")
    write_scene(src, bands=(4, 5, 6), scene="SR_B")
    pipe = pipeline_from_dict(
        {
            "source": {
                "url": str(src),
                "partition": {"by": "scene", "pattern": "{scene}_B{band}.TIF"},
            },
            "output": {"url": str(tmp_path / "out")},
            "steps": [
                {"op": "composite", "recipe": "true-color", "scenes": ["LC08*"]},
                {"op": "composite", "recipe": "swir1-nir-red", "scenes": ["SR_*"]},
            ],
            "run": {"executor": "inline"},
        }
    )
    summary = run(pipe)
    assert summary.state == "done", summary.failures
    assert sorted(p.name for p in (tmp_path / "out").glob("*.tif")) == [
        "LC08_A_true-color.tif",
        "SR_B_swir1-nir-red.tif",
    ]


def test_remote_band_files_through_ranged_reads(tmp_path: Path) -> None:
    from pixelfleet.storage.memory import MemoryStorage

    data = write_scene(tmp_path / "src", bands=(2, 3, 4))
    bucket = MemoryStorage("memory://composite-remote")
    for p in (tmp_path / "src").iterdir():
        bucket.write(f"scenes/{p.name}", p.read_bytes())
    try:
        summary = run(composite_pipeline("memory://composite-remote", tmp_path / "out"))
        assert summary.state == "done", summary.failures
        got = read(tmp_path / "out" / "scenes" / f"{SCENE}_true-color.tif")
        bands = [data[4], data[3], data[2]]
        lows, highs = exact_percentiles(bands)
        assert np.abs(got.astype(int) - reference(bands, lows, highs)).max() <= 1
    finally:
        MemoryStorage.clear("composite-remote")


@pytest.mark.s3
def test_scene_in_s3_to_s3(tmp_path: Path, s3_env: object) -> None:
    env = s3_env
    data = write_scene(tmp_path / "src", bands=(2, 3, 4))
    for p in (tmp_path / "src").iterdir():
        env.client.put_object(  # type: ignore[attr-defined]
            Bucket=env.bucket,  # type: ignore[attr-defined]
            Key=f"c2/047/027/{p.name}",
            Body=p.read_bytes(),
        )
    url = env.url  # type: ignore[attr-defined]
    summary = run(composite_pipeline(f"{url}/c2", f"{url}/out", histogram_key="{scene}.h.png"))
    assert summary.state == "done", summary.failures
    key = f"out/047/027/{SCENE}_true-color.tif"
    body = env.client.get_object(Bucket=env.bucket, Key=key)  # type: ignore[attr-defined]
    assert body["ContentType"].startswith("image/tiff")
    cog = tmp_path / "got.tif"
    cog.write_bytes(body["Body"].read())
    bands = [data[4], data[3], data[2]]
    lows, highs = exact_percentiles(bands)
    assert np.abs(read(cog).astype(int) - reference(bands, lows, highs)).max() <= 1
    again = run(composite_pipeline(f"{url}/c2", f"{url}/out", histogram_key="{scene}.h.png"))
    assert again.counts.objects_current == 1
