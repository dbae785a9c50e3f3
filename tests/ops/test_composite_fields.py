"""A composite's picture and COG carry their channels' statistics and histogram as STAC
``raster:bands``, stored in the objects' metadata within S3's 2 KB, so an output found
current (a rerun, ``pixelfleet index``) describes itself as the one just written."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from composite_helpers import SCENE, composite_pipeline, run, write_scene
from pixelfleet.imagery.bands import Channel
from pixelfleet.imagery.histograms import asset_bands
from pixelfleet.imagery.stretch import Stretch
from pixelfleet.ops.composite import FIELDS_BUDGET, CompositeConfig, CompositeOp
from pixelfleet.storage import open_storage


def test_asset_bands_count_the_stretched_sample() -> None:
    rng = np.random.default_rng(3)
    sample = {"4": rng.integers(0, 1000, (50, 40)).astype(np.uint16)}
    valid = sample["4"] != 0
    valid[:5] = False
    stretch = Stretch("fixed", 100.0, 900.0)
    (band,) = asset_bands([Channel("4")], [stretch], sample, valid)
    expected = np.bincount(stretch.apply(sample["4"][valid]), minlength=256)
    assert band["name"] == "grey"
    assert band["description"] == "band 4, fixed stretch 100 to 900"
    assert band["histogram"]["buckets"] == expected.reshape(64, 4).sum(axis=1).tolist()
    assert sum(band["histogram"]["buckets"]) == int(valid.sum())
    values = stretch.apply(sample["4"][valid]).astype(float)
    assert band["statistics"]["mean"] == round(float(values.mean()), 2)
    assert band["statistics"]["stddev"] == round(float(values.std()), 2)
    assert band["statistics"]["valid_percent"] == round(100 * valid.sum() / valid.size, 2)


def test_a_channel_without_valid_pixels_has_no_histogram() -> None:
    sample = {"1": np.zeros((4, 4), np.uint8)}
    (band,) = asset_bands([Channel("1")], [Stretch("fixed", 0, 1)], sample, sample["1"] != 0)
    assert "histogram" not in band and "statistics" not in band


def test_packing_round_trips_and_fits_the_budget() -> None:
    op = CompositeOp(CompositeConfig())
    band = {
        "name": "red",
        "description": "band 4, percentile stretch 7012 to 11240",
        "data_type": "uint8",
        "statistics": {
            "minimum": 0,
            "maximum": 255,
            "mean": 120.5,
            "stddev": 40.25,
            "valid_percent": 97.5,
        },
        "histogram": {"count": 64, "min": -0.5, "max": 255.5, "buckets": list(range(64))},
    }
    fields = {"raster:bands": [band, {**band, "name": "green"}, {**band, "name": "blue"}]}
    packed = op.pack_fields(fields)
    assert op.unpack_fields(packed) == fields
    # Counts of a huge sample: buckets are merged in pairs until the value fits.
    big = [{**b, "histogram": {**b["histogram"], "buckets": [10**9 + i for i in range(64)]}}
           for b in fields["raster:bands"]]  # fmt: skip
    packed = op.pack_fields({"raster:bands": big})
    assert len(packed["raster-bands"]) <= FIELDS_BUDGET
    back = op.unpack_fields(packed)["raster:bands"][0]["histogram"]
    assert back["count"] == len(back["buckets"]) < 64
    assert sum(back["buckets"]) == sum(big[0]["histogram"]["buckets"])
    assert op.unpack_fields({"raster-bands": "not json"}) == {}
    assert op.unpack_fields({"raster-bands": '[["red", "x", null, 5]]'}) == {}
    assert op.unpack_fields({}) == {}


def test_written_and_current_outputs_describe_themselves_alike(tmp_path: Path) -> None:
    write_scene(tmp_path / "src", bands=(2, 3, 4))
    pipeline = composite_pipeline(tmp_path / "src", tmp_path / "out")
    summary = run(pipeline)
    assert summary.state == "done", summary.failures
    out = open_storage(str(tmp_path / "out"))
    op = CompositeOp(pipeline.steps[0])
    described = {}
    for key in (f"{SCENE}_true-color.png", f"{SCENE}_true-color.tif"):
        stored = out.head(key)
        assert stored is not None
        # The whole metadata of the object stays under S3's 2 KB.
        assert sum(len(k) + len(v) for k, v in stored.metadata.items()) < 2048
        described[key] = op.current_record(stored).fields
    png, tif = described.values()
    assert png == tif
    red, green, blue = png["raster:bands"]
    assert (red["name"], green["name"], blue["name"]) == ("red", "green", "blue")
    assert red["histogram"]["count"] == 64
    assert red["description"].startswith("band 4, percentile stretch")
