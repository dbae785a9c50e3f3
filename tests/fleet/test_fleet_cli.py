"""The fleet from the command line: fleet-local end to end, status of fleets and of dead
runs, the estimate, and the refusals a user meets first."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from fleet_helpers import make_fleet_bucket, worker_env
from pixelfleet.cli.main import cli
from pixelfleet.ledger import RunRecord, open_ledger
from pixelfleet.ledger.base import STALE_SECONDS, effective_state

PIXELFLEET = [sys.executable, "-m", "pixelfleet.cli.main"]


@pytest.mark.postgres
def test_fleet_local_runs_a_pipeline_and_status_shows_its_workers(
    tmp_path: Path, pg_ledger_url: str
) -> None:
    bucket = make_fleet_bucket(tmp_path, 40)
    done = subprocess.run(
        [*PIXELFLEET, "run", str(bucket.pipeline), "-e", "fleet-local", "-w", "2",
         "--ledger", pg_ledger_url],
        env=worker_env(), capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "started 2 worker processes" in done.stderr
    assert " done in " in done.stdout and "40 done, 0 failed" in done.stdout
    assert len(list(bucket.out.iterdir())) == 40
    status = CliRunner().invoke(cli, ["status", "--ledger", pg_ledger_url])
    assert status.exit_code == 0, status.output
    assert "workers:  2" in status.output and "finished" in status.output
    again = subprocess.run(
        [*PIXELFLEET, "run", str(bucket.pipeline), "-e", "fleet-local", "--ledger", pg_ledger_url],
        env=worker_env(), capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert again.returncode == 0 and "40 already done (skipped)" in again.stdout


def test_a_run_whose_driver_died_shows_as_interrupted(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    now = time.time()
    with open_ledger(url) as ledger:
        run = RunRecord("r1", "p.toml", {}, "local", now - 600, host="box", pid=4242)
        run.heartbeat = now - STALE_SECONDS - 5  # e.g. SIGKILLed 40 s ago
        ledger.save_run(run)
        assert effective_state(ledger.get_run("r1"), ledger.now()) == "interrupted"
        ledger.beat("r1")
        assert effective_state(ledger.get_run("r1"), ledger.now()) == "running"
    with sqlite3.connect(tmp_path / "l.db") as db:
        db.execute("UPDATE runs SET heartbeat = ?", (now - 100,))
    result = CliRunner().invoke(cli, ["status", "r1", "--ledger", url])
    assert result.exit_code == 0, result.output
    assert "r1: interrupted" in result.output
    assert "box pid 4242 died or was killed" in result.output
    as_json = CliRunner().invoke(cli, ["status", "r1", "--ledger", url, "--json"])
    assert '"state": "interrupted"' in as_json.output


def test_a_local_run_records_where_it_runs(tmp_path: Path) -> None:
    bucket = make_fleet_bucket(tmp_path, 3)
    url = f"sqlite:///{tmp_path / 'l.db'}"
    result = CliRunner().invoke(
        cli, ["run", str(bucket.pipeline), "-e", "inline", "--ledger", url, "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    with open_ledger(url) as ledger:
        run = ledger.get_run()
    assert run.host and run.pid > 0 and run.heartbeat is not None


def test_the_estimate_runs_a_sample_and_writes_nothing(tmp_path: Path) -> None:
    bucket = make_fleet_bucket(tmp_path, 30)
    url = f"sqlite:///{tmp_path / 'l.db'}"
    result = CliRunner().invoke(
        cli,
        ["run", str(bucket.pipeline), "--dry-run", "--estimate", "vcpus=4,sample=5",
         "--ledger", url, "--executor", "aws-batch"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = result.output
    assert "30 tasks to run (30 objects" in out
    assert "sample: 5 random objects" in out and "(0 failed)" in out
    assert "requests for the plan" in out and "PUT 30" in out
    assert "on 4 vCPUs" in out and "aws-batch would start 30 workers" in out
    assert "request cost: about $" in out and "assuming S3 Standard list prices" in out
    assert not list(bucket.out.iterdir())  # the sample went to a temporary folder
    assert not (tmp_path / "l.db").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--estimate", "vcpus=4"], "--estimate goes with --dry-run"),
        (["--dry-run", "--estimate", "cpus=4"], "expected NAME=NUMBER"),
        (["--dry-run", "--estimate", "sample=3"], "needs vcpus=N"),
        (["--dry-run", "--estimate", "vcpus=many"], "'many' is not a whole number"),
    ],
)
def test_estimate_refusals_say_what_to_write(tmp_path: Path, args: list[str], message: str) -> None:
    bucket = make_fleet_bucket(tmp_path, 1)
    result = CliRunner().invoke(cli, ["run", str(bucket.pipeline), *args])
    assert result.exit_code != 0
    assert message in result.output


def test_fleets_refuse_ledgers_their_workers_cannot_share(tmp_path: Path) -> None:
    bucket = make_fleet_bucket(tmp_path, 1)
    for executor, ledger, message in (
        ("aws-batch", f"sqlite:///{tmp_path / 'l.db'}", "cannot share the SQLite file"),
        ("fleet-local", "memory://x", "needs a ledger its workers can share"),
    ):
        result = CliRunner().invoke(
            cli, ["run", str(bucket.pipeline), "-e", executor, "--ledger", ledger]
        )
        assert result.exit_code == 1, result.output
        assert message in result.output and "postgresql://" in result.output
    worker = CliRunner().invoke(cli, ["worker", "--ledger", "memory://"])
    assert worker.exit_code == 1 and "postgresql://" in worker.output


def test_an_unknown_executor_lists_the_fleets_too(tmp_path: Path) -> None:
    bucket = make_fleet_bucket(tmp_path, 1)
    result = CliRunner().invoke(cli, ["run", str(bucket.pipeline), "--set", "run.executor=ecs"])
    assert result.exit_code == 1
    assert "aws-batch" in result.output and "fleet-local" in result.output


@pytest.mark.dask
@pytest.mark.postgres
def test_a_dask_cluster_records_into_the_postgresql_ledger(
    tmp_path: Path, pg_ledger_url: str, dask_address: str
) -> None:
    """Dask on many machines: one driver, the shared PostgreSQL ledger, reruns skip."""
    bucket = make_fleet_bucket(tmp_path, 12)
    args = ["run", str(bucket.pipeline), "-e", f"dask://{dask_address}", "--ledger", pg_ledger_url]
    first = CliRunner().invoke(cli, [*args, "--no-progress"])
    assert first.exit_code == 0, first.output
    assert "12 done, 0 failed" in first.output
    again = CliRunner().invoke(cli, [*args, "--no-progress"])
    assert again.exit_code == 0 and "12 already done (skipped)" in again.output
    with open_ledger(pg_ledger_url) as ledger:
        runs = ledger.find_runs()
        assert [r.state for r in runs] == ["done", "done"]
        assert ledger.done_ids([t.task_id for t in ledger.find_tasks(runs[1].run_id)])


def test_a_worker_whose_ledger_is_unreachable_asks_to_be_retried() -> None:
    done = subprocess.run(
        [*PIXELFLEET, "worker", "--ledger", "postgresql://root@127.0.0.1:1/none?retry=0.5"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 75, done.stderr  # EX_TEMPFAIL: Batch's retry strategy retries it
    assert "did not answer" in done.stderr and "?retry=SECONDS" in done.stderr
