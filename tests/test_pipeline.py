"""Pipeline files: validation errors name the file, field, bad value and valid choices."""

from __future__ import annotations

from pathlib import Path

import pytest

from ops_for_tests import PROBE_OP
from pixelfleet.errors import ConfigError
from pixelfleet.pipeline import load_pipeline

GOOD = f"""
[source]
url = "bucket"
include = ["**/*.txt"]
partition = {{ by = "prefix", depth = 2 }}

[output]
url = "out"

[[steps]]
op = "{PROBE_OP}"

[run]
executor = "inline"
ledger = "sqlite:///state/l.db"
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "p.toml"
    path.write_text(text)
    return str(path)


def test_good_pipeline_resolves_relative_paths_against_the_file(tmp_path: Path) -> None:
    p = load_pipeline(write(tmp_path, GOOD))
    assert p.source.url == str(tmp_path / "bucket")
    assert p.output.url == str(tmp_path / "out")
    assert p.run.ledger == f"sqlite:///{tmp_path / 'state/l.db'}"
    assert p.source.partition.depth == 2
    assert p.run.attempts == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            GOOD.replace('by = "prefix"', 'by = "state"'),
            r"source\.partition\.by: .*'object', 'prefix', 'count' or 'scene'.*got 'state'",
        ),
        (
            GOOD.replace('executor = "inline"', 'executor = "spark"'),
            r"unknown executor 'spark'; choose one of: dask, inline, local",
        ),
        (GOOD.replace("[run]", "[run]\nattemps = 3"), r"unknown field 'run\.attemps'"),
        (GOOD.replace("[run]", "[runn]"), r"unknown section \[runn\]"),
        (GOOD.replace('url = "out"', ""), r"output\.url: required field is missing"),
        (
            GOOD.replace(f'op = "{PROBE_OP}"', 'op = "thumbnale"'),
            r"steps\[0\]\.op: unknown op 'thumbnale'; choose one of: .*thumbnail",
        ),
        (
            GOOD.replace(f'op = "{PROBE_OP}"', f'op = "{PROBE_OP}"\nsize = 3'),
            r"unknown field 'steps\[0\]\.size'",
        ),
        (
            GOOD.replace("[run]", "[run]\nattempts = 0"),
            r"run\.attempts: Input should be greater than or equal to 1 \(got 0\)",
        ),
        ("[source\nurl=1", r"not valid TOML"),
    ],
)
def test_errors_name_file_field_value_and_choices(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=expected) as info:
        load_pipeline(path)
    assert str(info.value).startswith(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"pipeline file '.*nope.toml' not found"):
        load_pipeline(str(tmp_path / "nope.toml"))


def test_set_overrides(tmp_path: Path) -> None:
    p = load_pipeline(
        write(tmp_path, GOOD), ["run.attempts=5", "source.partition.by=object", "run.timeout=2.5"]
    )
    assert p.run.attempts == 5
    assert p.source.partition.by == "object"
    assert p.run.timeout == 2.5
    with pytest.raises(ConfigError, match=r"--set steps\.3\.size: '3' is not an index"):
        load_pipeline(write(tmp_path, GOOD), ["steps.3.size=1"])
    with pytest.raises(ConfigError, match="must look like section.field=value"):
        load_pipeline(write(tmp_path, GOOD), ["run.attempts"])


def test_settings_hash_changes_with_steps_not_with_run(tmp_path: Path) -> None:
    base = load_pipeline(write(tmp_path, GOOD))
    assert (
        load_pipeline(write(tmp_path, GOOD), ["run.attempts=9"]).settings_hash == base.settings_hash
    )
    assert (
        load_pipeline(write(tmp_path, GOOD), ["output.url=elsewhere"]).settings_hash
        != base.settings_hash
    )
