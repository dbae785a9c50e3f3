"""The ``blocks`` pipeline step: per scene, resumable, catalogued, failing one scene
with the function's message."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from blocks_helpers import NIR, RED, numpy_ndvi

from pixelfleet.ledger import open_ledger
from pixelfleet.pipeline import pipeline_from_dict
from pixelfleet.runner import Runner, RunSummary
from pixelfleet.storage import open_storage

SCENES = ("LC08_A", "LC08_B")


@pytest.fixture
def bucket(tmp_path: Path) -> Path:
    """Two scenes, each a folder of Landsat band files (red B4, near infrared B5)."""
    root = tmp_path / "bucket"
    for scene in SCENES:
        folder = root / "landsat" / scene
        folder.mkdir(parents=True)
        shutil.copy(RED, folder / f"{scene}_B4.TIF")
        shutil.copy(NIR, folder / f"{scene}_B5.TIF")
    return root


def pipeline(src: str, out: str, catalog: str | None = None, **step: Any) -> Any:
    data: dict[str, Any] = {
        "source": {
            "url": src,
            "include": ["**/*.TIF"],
            "partition": {"by": "scene", "pattern": "{scene}_B{band}.TIF"},
        },
        "output": {"url": out},
        "steps": [
            {
                "op": "blocks",
                "function": "blocks_testfns:ndvi",
                "inputs": {"red": "{scene}_B4.TIF", "nir": "{scene}_b5.tif"},
                "outputs": {
                    "ndvi": {"key": "{scene}_ndvi.tif", "dtype": "float32", "nodata": -9999}
                },
                "block_size": 32,
                "overlap": 0,
                **step,
            }
        ],
        "run": {"executor": "inline", "attempts": 1},
    }
    if catalog:
        data["catalog"] = {"url": catalog, "collection": "ndvi"}
    return pipeline_from_dict(data)


def run(p: Any, ledger: str = "sqlite:///:memory:") -> tuple[RunSummary, list[Any]]:
    with open_ledger(ledger) as led:
        summary = Runner(p, led, progress=False).run()
        failed = led.find_tasks(summary.run_id, ["failed"])
    return summary, failed


def test_every_scene_gets_its_product_and_a_rerun_skips_them(bucket: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary, failed = run(pipeline(str(bucket), str(out)))
    assert not failed and summary.counts.tasks_done == 2
    want = numpy_ndvi()
    for scene in SCENES:
        with rasterio.open(out / "landsat" / scene / f"{scene}_ndvi.tif") as src:
            assert src.read(1).tobytes() == want.tobytes()
            assert src.nodata == -9999 and src.tags(1)["STATISTICS_VALID_PERCENT"]
    entry = open_storage(str(out)).head(f"landsat/{SCENES[0]}/{SCENES[0]}_ndvi.tif")
    assert entry is not None and entry.metadata["op"] == "blocks"
    assert entry.metadata["roles"] == "data" and entry.metadata["asset"] == "ndvi"
    # A rerun with a fresh ledger finds the products current and writes nothing.
    again, _ = run(pipeline(str(bucket), str(out)))
    assert again.counts.objects_written == 0 and again.counts.objects_current == 2
    # A new version of the function redoes every scene.
    redo, _ = run(pipeline(str(bucket), str(out), version="2"))
    assert redo.counts.objects_written == 2
    # So does a changed band file, for its scene only.
    changed = bucket / "landsat" / SCENES[1] / f"{SCENES[1]}_B4.TIF"
    with rasterio.open(changed, "r+") as dst:
        dst.write(np.ones((1, 112, 149), "uint16"))
    after, _ = run(pipeline(str(bucket), str(out), version="2"))
    assert after.counts.objects_written == 1


def test_a_raising_function_fails_its_scene_with_the_message_and_window(
    bucket: Path, tmp_path: Path
) -> None:
    p = pipeline(
        str(bucket),
        str(tmp_path / "out"),
        function="blocks_testfns:raise_on_block",
        outputs={"out": "{scene}_out.tif"},
        args={"index": [3, 1]},
    )
    summary, failed = run(p)
    assert summary.counts.tasks_failed == 2
    error = failed[0].failures[0]["error"] if failed[0].failures else failed[0].error
    assert "blocks_testfns:raise_on_block failed on block (3, 1)" in error
    assert "rows 96-112, columns 32-64" in error and "ZeroDivisionError: no good at (3, 1)" in error
    assert not any((tmp_path / "out").rglob("*.tif"))


def test_a_missing_band_file_is_named(bucket: Path, tmp_path: Path) -> None:
    p = pipeline(
        str(bucket),
        str(tmp_path / "out"),
        inputs={"red": "{scene}_B4.TIF", "swir": "{scene}_B6.TIF"},
    )
    _, failed = run(p)
    error = failed[0].failures[0]["error"] if failed[0].failures else failed[0].error
    assert "LC08_A_B6.TIF: scene 'landsat/LC08_A/LC08_A' has no such file" in error
    assert "LC08_A_B4.TIF, LC08_A_B5.TIF" in error


def test_bad_step_settings_are_refused_on_load(bucket: Path, tmp_path: Path) -> None:
    from pixelfleet.errors import ConfigError

    with pytest.raises(ConfigError, match="function 'nope' must look like 'package.module:name'"):
        pipeline(str(bucket), str(tmp_path), function="nope")
    with pytest.raises(ConfigError, match="grid 'green' is not an input"):
        pipeline(str(bucket), str(tmp_path), grid="green")
    with pytest.raises(ConfigError, match="compress 'jpeg' is not supported"):
        pipeline(str(bucket), str(tmp_path), outputs={"x": {"key": "x.tif", "compress": "jpeg"}})


def test_products_are_assets_of_the_scenes_items(bucket: Path, tmp_path: Path) -> None:
    from pixelfleet.catalog import open_catalog

    catalog = f"sqlite:///{tmp_path / 'catalog.db'}"
    summary, failed = run(pipeline(str(bucket), str(tmp_path / "out"), catalog=catalog, workers=2))
    assert not failed
    with open_catalog(catalog) as cat:
        item = cat.get_item("ndvi", f"landsat/{SCENES[0]}/{SCENES[0]}")
    asset = item["assets"]["ndvi"]
    assert asset["roles"] == ["data"]
    assert asset["type"] == "image/tiff; application=geotiff; profile=cloud-optimized"
    assert asset["href"].endswith(f"{SCENES[0]}_ndvi.tif")


def test_scenes_run_on_worker_processes(bucket: Path, tmp_path: Path) -> None:
    p = pipeline(str(bucket), str(tmp_path / "out"))
    p = pipeline_from_dict({**p.to_json_dict(), "run": {"executor": "local", "workers": 2}})
    summary, failed = run(p)
    assert not failed and summary.counts.tasks_done == 2
    with rasterio.open(tmp_path / "out" / "landsat" / SCENES[1] / f"{SCENES[1]}_ndvi.tif") as src:
        assert src.read(1).tobytes() == numpy_ndvi().tobytes()


@pytest.mark.s3
def test_scenes_from_s3_to_s3(s3_env: Any) -> None:
    client = s3_env.client
    for scene in SCENES:
        for band, path in (("B4", RED), ("B5", NIR)):
            key = f"src/{scene}/{scene}_{band}.TIF"
            client.put_object(Bucket=s3_env.bucket, Key=key, Body=path.read_bytes())
    summary, failed = run(pipeline(f"{s3_env.url}/src", f"{s3_env.url}/out"))
    assert not failed and summary.counts.tasks_done == 2
    body = client.get_object(Bucket=s3_env.bucket, Key=f"out/{SCENES[0]}/{SCENES[0]}_ndvi.tif")
    from rasterio.io import MemoryFile

    with MemoryFile(body["Body"].read()) as mem, mem.open() as src:
        assert src.read(1).tobytes() == numpy_ndvi().tobytes()
        assert src.overviews(1) == []  # 149 x 112: too small for RIOS's first level
