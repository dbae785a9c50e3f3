"""Small things a person meets on the command line: a mistyped URL scheme, a misspelt field,
a dry run that checks what the run would, help texts that read whole."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from composite_helpers import SCENE, band_data, write_band, write_scene
from pixelfleet.cli.main import cli
from pixelfleet.errors import ConfigError
from pixelfleet.pipeline import load_pipeline, pipeline_from_dict
from pixelfleet.storage import open_storage
from pixelfleet.urls import check_storage_url

PIPELINE = """
[source]
url = "{source}"
[output]
url = "out"
[[steps]]
op = "thumbnail"
{step}
[run]
executor = "inline"
"""


def write_pipeline(tmp_path: Path, source: str = "photos", step: str = "") -> str:
    (tmp_path / "photos").mkdir(exist_ok=True)
    path = tmp_path / "p.toml"
    path.write_text(PIPELINE.format(source=source, step=step))
    return str(path)


@pytest.mark.parametrize(
    ("url", "fixed"),
    [
        ("s3:/bucket", "s3://bucket"),
        ("s3//bucket/prefix", "s3://bucket/prefix"),
        ("s3:bucket", "s3://bucket"),
        ("S3:/bucket", "s3://bucket"),
        ("file:/data/photos", "file:///data/photos"),
        ("memory:/x", "memory://x"),
    ],
)
def test_a_mistyped_scheme_shows_the_fix(url: str, fixed: str) -> None:
    with pytest.raises(ConfigError, match="scheme looks mistyped") as info:
        check_storage_url(url)
    assert repr(fixed) in str(info.value)
    with pytest.raises(ConfigError, match="scheme looks mistyped"):
        open_storage(url)


@pytest.mark.parametrize(
    "url", ["s3://bucket", "photos", "/abs/photos", "C:/data", "shots:2024", "memory://x"]
)
def test_urls_and_paths_pass_unchanged(url: str) -> None:
    assert check_storage_url(url) == url


def test_run_with_a_mistyped_source_scheme_says_so(tmp_path: Path) -> None:
    pipeline = write_pipeline(tmp_path, source="s3:/bucket")
    result = CliRunner().invoke(cli, ["run", pipeline, "--dry-run"])
    assert result.exit_code == 1
    assert "source.url 's3:/bucket': the scheme looks mistyped" in result.output
    assert "did you mean 's3://bucket'?" in result.output
    assert "does not exist" not in result.output


def test_a_mistyped_output_scheme_in_data_says_so() -> None:
    data = {"source": {"url": "/s"}, "output": {"url": "s3//b"}, "steps": [{"op": "thumbnail"}]}
    with pytest.raises(ConfigError, match=r"output\.url: .*did you mean 's3://b'"):
        pipeline_from_dict(data)


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ({"source": {"url": "/s", "inclde": ["*"]}}, "'source.inclde'; did you mean 'include'?"),
        ({"steps": [{"op": "thumbnail", "sise": 64}]}, "'steps[0].sise'; did you mean 'size'?"),
        ({"run": {"worker": 2}}, "'run.worker'; did you mean 'workers'?"),
        ({"run": {"batch": {"jobqueue": "q"}}}, "'run.batch.jobqueue'; did you mean 'job_queue'?"),
        ({"source": {"url": "/s", "partition": {"bye": 1}}}, "did you mean 'by'?"),
        ({"catalog": {"collection": "c", "titel": "x"}}, "did you mean 'title'?"),
        ({"catalg": {}}, "unknown section [catalg]; did you mean [catalog]?"),
    ],
)
def test_unknown_fields_suggest_the_nearest_name(patch: dict[str, object], expected: str) -> None:
    data: dict[str, object] = {
        "source": {"url": "/s"},
        "output": {"url": "/o"},
        "steps": [{"op": "thumbnail"}],
    }
    data.update(patch)
    with pytest.raises(ConfigError) as info:
        pipeline_from_dict(data)
    assert expected in str(info.value)


def test_an_unknown_field_far_from_any_lists_the_valid_ones(tmp_path: Path) -> None:
    path = write_pipeline(tmp_path, step="zzzz = 1")
    with pytest.raises(ConfigError) as info:
        load_pipeline(path)
    assert "did you mean" not in str(info.value)
    assert "valid fields here: op, size, min_size, key" in str(info.value)


def test_a_dry_run_fails_on_a_bad_key_template(tmp_path: Path) -> None:
    pipeline = write_pipeline(tmp_path, step='key = "{stme}.thumb.jpg"')
    result = CliRunner().invoke(cli, ["run", pipeline, "--dry-run"])
    assert result.exit_code == 1
    assert "key template '{stme}.thumb.jpg' has an unknown field {stme}" in result.output
    assert "{stem}, {name}, {ext}, {dir}, {key}" in result.output


def test_a_dry_run_passes_a_good_key_template(tmp_path: Path) -> None:
    pipeline = write_pipeline(tmp_path, step='key = "{dir}/small/{stem}.jpg"')
    result = CliRunner().invoke(cli, ["run", pipeline, "--dry-run"])
    assert result.exit_code == 0, result.output


def test_search_limit_is_a_number_in_a_range() -> None:
    runner = CliRunner()
    help_text = runner.invoke(cli, ["search", "--help"]).output
    assert "-n, --limit INTEGER RANGE" in help_text
    assert "1<=x<=1000" in help_text
    result = runner.invoke(cli, ["search", "--limit", "many"])
    assert result.exit_code == 2
    assert "'many' is not a valid integer" in result.output


def test_top_level_help_shows_whole_sentences() -> None:
    text = CliRunner().invoke(cli, ["--help"]).output.partition("Commands:")[2]
    assert "..." not in text
    flat = " ".join(text.split())
    assert "Run PIPELINE: list the source, skip what is current, process the rest." in flat
    assert "Show a run (the latest by default; a unique prefix of its id is enough)." in flat


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("status", "Ledger to use (default: $PIXELFLEET_LEDGER, else sqlite:///pixelfleet.db)."),
        ("serve", "(default: with --events, that pipeline's run.ledger; else $PIXELFLEET_LEDGER"),
        ("run", "(default: the pipeline's run.ledger, else $PIXELFLEET_LEDGER"),
    ],
)
def test_ledger_help_fits_the_command(command: str, expected: str) -> None:
    text = " ".join(CliRunner().invoke(cli, [command, "--help"]).output.split())
    assert expected in text


COMPOSITE = """
[source]
url = "bands"
{partition}
[output]
url = "out"
[[steps]]
op = "composite"
{step}
[run]
executor = "inline"
"""


def write_composite(tmp_path: Path, step: str, partition: str = "") -> str:
    path = tmp_path / "c.toml"
    path.write_text(COMPOSITE.format(step=step, partition=partition))
    return str(path)


def rgb_file(folder: Path, name: str = "rgb.tif") -> Path:
    """A 3-band GeoTIFF."""
    return write_band(folder / name, np.stack([band_data(b, 40, 30) for b in (1, 2, 3)]))


def dry_run(pipeline: str) -> Any:
    return CliRunner().invoke(cli, ["run", pipeline, "--dry-run"])


def test_a_dry_run_checks_composite_band_numbers_against_the_file(tmp_path: Path) -> None:
    rgb_file(tmp_path / "bands")
    result = dry_run(write_composite(tmp_path, "bands = [4, 3, 2]"))
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert "steps[0] (composite): bands = [4, 3, 2] asks for band 4" in text
    assert "rgb.tif has 3 bands; use band numbers from 1 to 3 (e.g. bands = [1, 2, 3])" in text
    assert not (tmp_path / "out").exists()
    # Numbers the file has pass.
    assert dry_run(write_composite(tmp_path, "bands = [3, 2, 1]")).exit_code == 0


def test_a_dry_run_checks_the_bands_an_expression_names(tmp_path: Path) -> None:
    rgb_file(tmp_path / "bands")
    result = dry_run(write_composite(tmp_path, 'bands = ["(b5 - b3) / (b5 + b3)"]'))
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert "asks for band 5 (in '(b5 - b3) / (b5 + b3)')" in text
    assert "rgb.tif has 3 bands" in text
    assert dry_run(write_composite(tmp_path, 'bands = ["(b3 - b1) / (b3 + b1)"]')).exit_code == 0


def test_a_dry_run_checks_a_recipe_against_the_scene_band_files(tmp_path: Path) -> None:
    write_scene(tmp_path / "bands", bands=(2, 3, 4), height=40, width=30)
    partition = 'partition = { by = "scene", pattern = "{scene}_B{band}.TIF" }'
    result = dry_run(write_composite(tmp_path, 'recipe = "swir2-nir-green"', partition))
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert "recipe 'swir2-nir-green' (bands 7, 5, 3) asks for band 7" in text
    assert f"scene '{SCENE}' has no file for it (its bands: 2, 3, 4, such as" in text
    assert f"{SCENE}_B2.TIF" in text
    assert "choose bands or a recipe it has, or fix partition.pattern" in text
    assert dry_run(write_composite(tmp_path, 'recipe = "true-color"', partition)).exit_code == 0


def test_a_dry_run_checks_thumbnail_bands_on_rasters_only(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (20, 10), "red").save(photos / "a.jpg")
    # A photo has no band numbers to check.
    assert dry_run(write_pipeline(tmp_path, step="bands = [4, 3, 2]")).exit_code == 0
    rgb_file(photos, "b.tif")
    result = dry_run(write_pipeline(tmp_path, step="bands = [4, 3, 2]"))
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert "steps[0] (thumbnail): bands = [4, 3, 2] asks for band 4, but" in text
    assert "b.tif has 3 bands; use band numbers from 1 to 3" in text


def test_a_corrupt_sample_is_left_to_the_run(tmp_path: Path) -> None:
    (tmp_path / "bands").mkdir()
    (tmp_path / "bands" / "bad.tif").write_bytes(b"II*\x00" + b"\x00" * 60)
    assert dry_run(write_composite(tmp_path, "bands = [4, 3, 2]")).exit_code == 0
