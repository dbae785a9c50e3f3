"""The command line: run, --dry-run, status, retry; one-line errors and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from ops_for_tests import PROBE_OP
from pixelfleet.cli.main import cli


def setup_pipeline(tmp_path: Path) -> str:
    src = tmp_path / "bucket"
    for key in ["al/2013/a.txt", "al/2013/b.txt", "ca/2014/c.txt"]:
        (src / key).parent.mkdir(parents=True, exist_ok=True)
        (src / key).write_text("ok")
    path = tmp_path / "p.toml"
    path.write_text(
        f"""
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
"""
    )
    return str(path)


def test_run_status_and_rerun(tmp_path: Path) -> None:
    runner = CliRunner()
    pipeline = setup_pipeline(tmp_path)
    dry = runner.invoke(cli, ["run", pipeline, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bucket", "p.toml"]  # nothing written
    assert (
        "2 tasks, 3 objects, 6 B; 0 tasks already done, 2 to run. Nothing was written."
        in dry.output
    )
    assert "al/2013: 2 objects" in dry.output

    first = runner.invoke(cli, ["run", pipeline])
    assert first.exit_code == 0, first.output
    assert "2 done, 0 failed" in first.output
    assert "3 written" in first.output

    again = runner.invoke(cli, ["run", pipeline, "--dry-run"])
    assert "2 tasks already done, 0 to run" in again.output

    status = runner.invoke(cli, ["status", "--json"])
    assert status.exit_code == 0, status.output
    data = json.loads(status.output)
    assert data["state"] == "done"
    assert data["tasks"] == {"done": 2}

    human = runner.invoke(cli, ["status", data["run_id"][:15]])
    assert f"run {data['run_id']}: done" in human.output


def test_failed_run_exits_1_and_retry_fixes_it(tmp_path: Path) -> None:
    runner = CliRunner()
    pipeline = setup_pipeline(tmp_path)
    (tmp_path / "out/ca/2014/c.out").mkdir(parents=True)
    failed = runner.invoke(cli, ["run", pipeline])
    assert failed.exit_code == 1, failed.output
    assert "1 done, 1 failed" in failed.output
    assert "ca/2014/c.txt: IsADirectoryError" in failed.output
    run_id = json.loads(runner.invoke(cli, ["status", "--json"]).output)["run_id"]
    assert f"pixelfleet retry {run_id} --failed" in failed.output

    status = runner.invoke(cli, ["status"])
    assert "1 done, 1 failed" in status.output
    assert "ca/2014/c.txt" in status.output

    (tmp_path / "out/ca/2014/c.out").rmdir()
    retried = runner.invoke(cli, ["retry", run_id, "--failed"])
    assert retried.exit_code == 0, retried.output
    assert json.loads(runner.invoke(cli, ["status", "--json"]).output)["state"] == "done"


def test_errors_are_one_line_and_exit_1(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["run", str(tmp_path / "missing.toml")])
    assert result.exit_code == 1
    assert result.output.strip().startswith("error: pipeline file")
    assert "Traceback" not in result.output

    result = runner.invoke(cli, ["status"])
    assert result.exit_code == 1
    assert "no runs yet; start one with: pixelfleet run FILE" in result.output

    pipeline = setup_pipeline(tmp_path)
    result = runner.invoke(cli, ["run", pipeline, "--executor", "spark"])
    assert result.exit_code == 1
    assert "unknown executor 'spark'; choose one of: dask, inline, local" in result.output

    result = runner.invoke(cli, ["run", pipeline, "--shard", "5/2"])
    assert result.exit_code == 1
    assert "--shard '5/2'" in result.output


def test_source_folder_missing(tmp_path: Path) -> None:
    pipeline = setup_pipeline(tmp_path)
    result = CliRunner().invoke(cli, ["run", pipeline, "--set", "source.url=nowhere"])
    assert result.exit_code == 1
    assert "does not exist; check the source url" in result.output
