"""Scene partitions, environment overrides, --only, and the histogram command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from composite_helpers import SCENE, write_scene
from pixelfleet.cli.main import cli
from pixelfleet.errors import ConfigError
from pixelfleet.models import Entry
from pixelfleet.pipeline import Partition, load_pipeline
from pixelfleet.plan import PlanStats, plan
from pixelfleet.settings import Settings
from pixelfleet.sources.scenes import ScenePattern

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "landsat-composites.toml"


def entries(*keys: str) -> list[Entry]:
    return [Entry(k, 10, f"e-{k}") for k in sorted(keys)]


def test_pattern_matches_names_case_insensitively() -> None:
    p = ScenePattern("{scene}_B{band}.TIF")
    m = p.match("a/LC08_L1TP_047027_20200829_20200906_02_T1_B10.tif")
    assert m is not None
    assert (m.group, m.scene, m.band) == (
        "a/LC08_L1TP_047027_20200829_20200906_02_T1",
        m.scene,
        "10",
    )
    assert p.match("a/LC08_X_QA_PIXEL.TIF") is None
    assert p.match("a/LC08_X_B4.TIF.ovr") is None
    both = ScenePattern(["{scene}_B{band}.TIF", "sr_b{band}_{scene}.tif"])
    m2 = both.match("x/sr_b5_20200829.tif")
    assert m2 is not None and (m2.group, m2.band) == ("x/20200829", "5")
    assert ScenePattern("{scene}.tif").match("s/one.tif").band is None  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("{band}.TIF", "must hold {scene} once"),
        ("{scene}_{scene}.tif", "must hold {scene} once"),
        ("{scene}_{date}.tif", "unknown field"),
    ],
)
def test_bad_patterns(pattern: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        ScenePattern(pattern)


def test_scene_partition_groups_band_files_and_counts_the_rest() -> None:
    keys = entries(
        "p1/S1_B2.TIF",
        "p1/S1_B3.TIF",
        "p1/S2_B2.TIF",
        "p1/S1_MTL.txt",
        "p1/sub/S1_B2.TIF",  # same scene name, other folder: another scene
        "p2/S3_B4.TIF",
        "S0_B1.TIF",
    )
    stats = PlanStats()
    part = Partition(by="scene", pattern="{scene}_B{band}.TIF")
    tasks = list(plan(keys, part, "h", stats))
    assert [(t.group, len(t.entries)) for t in tasks] == [
        ("p1/S1", 2),
        ("p1/S2", 1),
        ("p1/sub/S1", 1),
        ("S0", 1),  # the root's scenes come out last, with the last folder's, sorted
        ("p2/S3", 1),
    ]
    assert stats.unmatched == 1
    # Ids are stable and change with a band file's etag.
    again = list(plan(keys, part, "h"))
    assert [t.id for t in again] == [t.id for t in tasks]


def test_scene_partition_needs_a_pattern() -> None:
    with pytest.raises(ValueError, match="a scene partition needs a pattern"):
        Partition(by="scene")


# -- overrides from the environment -------------------------------------------------------


def test_env_overrides_like_set(tmp_path: Path) -> None:
    env = {
        "PIXELFLEET_SET": "source.url=s3://bucket/scenes; run.attempts=4",
        "PIXELFLEET_SET_STEPS__0__RECIPE": "swir2-nir-green",
    }
    overrides = Settings.from_env(env).pipeline_overrides
    assert overrides == (
        ("PIXELFLEET_SET", "source.url=s3://bucket/scenes"),
        ("PIXELFLEET_SET", "run.attempts=4"),
        ("PIXELFLEET_SET_STEPS__0__RECIPE", "steps.0.recipe=swir2-nir-green"),
    )
    p = load_pipeline(str(EXAMPLE), ["run.attempts=5"], env_overrides=overrides)
    assert p.source.url == "s3://bucket/scenes"
    assert p.steps[0].recipe == "swir2-nir-green"  # type: ignore[attr-defined]
    assert p.run.attempts == 5  # --set wins


def test_env_overrides_are_validated_like_set(monkeypatch: pytest.MonkeyPatch) -> None:
    import pixelfleet.settings as settings_mod

    monkeypatch.setenv("PIXELFLEET_SET_STEPS__9__RECIPE", "true-color")
    monkeypatch.setattr(settings_mod, "_current", None)
    with pytest.raises(ConfigError, match=r"PIXELFLEET_SET_STEPS__9__RECIPE steps\.9\.recipe"):
        load_pipeline(str(EXAMPLE))
    monkeypatch.setenv("PIXELFLEET_SET_STEPS__9__RECIPE", "")
    monkeypatch.delenv("PIXELFLEET_SET_STEPS__9__RECIPE")
    monkeypatch.setenv("PIXELFLEET_SET_STEPS__0__RECIPE", "glacier")
    monkeypatch.setattr(settings_mod, "_current", None)
    with pytest.raises(ConfigError, match="unknown recipe 'glacier'"):
        load_pipeline(str(EXAMPLE))
    with pytest.raises(ConfigError, match="names no field"):
        Settings.from_env({"PIXELFLEET_SET_": "x"})


# -- the CLI: run --only, --set, and histogram --------------------------------------------


def test_run_only_one_scene_with_set(tmp_path: Path) -> None:
    src = tmp_path / "bucket"
    write_scene(src / "a", scene="SCENE_A")
    write_scene(src / "b", scene="SCENE_B")
    out = tmp_path / "out"
    args = [
        "run",
        str(EXAMPLE),
        "--set",
        f"source.url={src}",
        "--set",
        f"output.url={out}",
        "--set",
        "steps.0.recipe=swir2-nir-green",
        "--executor",
        "inline",
        "--ledger",
        f"sqlite:///{tmp_path / 'l.db'}",
        "--no-progress",
    ]
    result = CliRunner().invoke(cli, [*args, "--only", "SCENE_B", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "1 tasks, 5 objects" in result.output
    result = CliRunner().invoke(cli, [*args, "--only", "SCENE_B"])
    assert result.exit_code == 0, result.output
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.*"))
    assert "b/SCENE_B_swir2-nir-green.tif" in written
    assert not any(w.startswith("a/") for w in written)


def test_histogram_command_writes_plot_and_stats(tmp_path: Path) -> None:
    write_scene(tmp_path / "scene", bands=(2, 3, 4))
    plot = tmp_path / "h.png"
    result = CliRunner().invoke(
        cli, ["histogram", str(tmp_path / "scene") + "/", "--bands", "4,3,2", "-o", str(plot)]
    )
    assert result.exit_code == 0, result.output
    assert "steps.0.stretch=fixed" in result.output
    assert plot.stat().st_size > 10_000
    stats = json.loads(plot.with_suffix(".json").read_text())
    assert stats["scene"] == SCENE and list(stats["bands"]) == ["4", "3", "2"]
    band = stats["bands"]["4"]
    assert band["min"] <= band["percentiles"]["p2"] <= band["percentiles"]["p98"] <= band["max"]
    assert [c["name"] for c in stats["channels"]] == ["red", "green", "blue"]
    assert 0.015 < stats["channels"][0]["clipped"]["high"] < 0.025  # 98th percentile


def test_histogram_command_explains_bad_input(tmp_path: Path) -> None:
    write_scene(tmp_path / "scene", bands=(2, 3))
    result = CliRunner().invoke(cli, ["histogram", str(tmp_path / "scene"), "--bands", "4,3,2"])
    assert result.exit_code == 1
    assert "no file for band(s) 4" in result.output
    result = CliRunner().invoke(cli, ["histogram", str(tmp_path / "nothing-here")])
    assert result.exit_code == 1 and "error:" in result.output


@pytest.mark.s3
def test_histogram_of_a_scene_in_s3(tmp_path: Path, s3_env: object) -> None:
    env = s3_env
    write_scene(tmp_path / "scene", bands=(2, 3, 4))
    for p in (tmp_path / "scene").iterdir():
        env.client.put_object(  # type: ignore[attr-defined]
            Bucket=env.bucket,  # type: ignore[attr-defined]
            Key=f"c2/{SCENE}/{p.name}",
            Body=p.read_bytes(),
        )
    plot = tmp_path / "h.png"
    url = f"{env.url}/c2/{SCENE}/"  # type: ignore[attr-defined]
    result = CliRunner().invoke(cli, ["histogram", url, "-o", str(plot), "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    assert list(stats["bands"]) == ["4", "3", "2"]
    assert stats["bands"]["4"]["file"].startswith("s3://")
    # One multi-band file by its URL (here: a single band file, band 1).
    single = f"{env.url}/c2/{SCENE}/{SCENE}_B4.TIF"  # type: ignore[attr-defined]
    result = CliRunner().invoke(cli, ["histogram", single, "--bands", "1", "-o", str(plot)])
    assert result.exit_code == 0, result.output


def test_histogram_ranges_accept_negative_numbers() -> None:
    from pixelfleet.cli.histogram import _range

    assert _range("5900-11000") == (5900.0, 11000.0)
    assert _range("-0.2:0.8") == _range("-0.2-0.8") == (-0.2, 0.8)
    with pytest.raises(ConfigError, match="LOW must be below HIGH"):
        _range("3-1")
    with pytest.raises(ConfigError, match="must look like"):
        _range("a-b")
