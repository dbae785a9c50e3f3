"""The ``aws-batch`` executor: against moto's Batch API on 127.0.0.1, then the array job's
children started here as Batch would start them (moto runs no containers)."""

from __future__ import annotations

import fnmatch
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from click.testing import CliRunner

from fleet_helpers import fleet_ledger, make_fleet_bucket, wait_for, worker_env
from pixelfleet.cli.main import cli
from pixelfleet.executors.batch import MAX_ARRAY, array_sizes, job_definition, retry_strategy
from pixelfleet.executors.launchers import EXIT_RETRY

PIXELFLEET = [sys.executable, "-m", "pixelfleet.cli.main"]


def test_the_retry_strategy_retries_lost_hosts_and_exit_75_only() -> None:
    strategy = retry_strategy(2)
    assert strategy["attempts"] == 2
    rules = strategy["evaluateOnExit"]
    assert rules[0] == {"onStatusReason": "Host EC2*", "action": "RETRY"}
    assert rules[1] == {"onExitCode": str(EXIT_RETRY), "action": "RETRY"}
    assert rules[-1] == {"onReason": "*", "action": "EXIT"}


def test_children_past_ten_thousand_make_several_array_jobs() -> None:
    assert array_sizes(1) == [1]
    assert array_sizes(MAX_ARRAY) == [MAX_ARRAY]
    assert array_sizes(25_001) == [MAX_ARRAY, MAX_ARRAY, 5_001]


def test_job_definition_command_prints_what_batch_takes(tmp_path: Path) -> None:
    bucket = make_fleet_bucket(tmp_path, 1)
    result = CliRunner().invoke(
        cli,
        [
            "batch",
            "job-definition",
            str(bucket.pipeline),
            "--image",
            "123.dkr.ecr.us-east-1.amazonaws.com/pixelfleet:1.0",
            "--set",
            "run.batch.memory=4096",
            "--set",
            "run.batch.vcpus=2",
            "--set",
            "run.batch.timeout=3600",
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    container = doc["containerProperties"]
    assert container["image"].endswith("pixelfleet:1.0")
    assert container["command"] == ["worker"]
    assert {"type": "MEMORY", "value": "4096"} in container["resourceRequirements"]
    assert {"type": "VCPU", "value": "2"} in container["resourceRequirements"]
    assert doc["retryStrategy"] == retry_strategy(2)
    assert doc["timeout"] == {"attemptDurationSeconds": 3600}
    assert doc == job_definition(
        {"memory": 4096, "vcpus": 2, "timeout": 3600}, container["image"], doc["jobDefinitionName"]
    )


def test_a_missing_queue_names_the_setting(tmp_path: Path, pg_ledger_url: str) -> None:
    bucket = make_fleet_bucket(tmp_path, 2)
    result = CliRunner().invoke(
        cli, ["run", str(bucket.pipeline), "--executor", "aws-batch", "--ledger", pg_ledger_url]
    )
    assert result.exit_code == 1
    assert "run.batch.job_queue" in result.output


# -- against moto's Batch -----------------------------------------------------------------


def _batch_setup(endpoint: str) -> tuple[Any, str]:
    """Docker-less Batch on the moto server, an unmanaged compute environment and a queue."""
    httpx.post(
        f"{endpoint}/moto-api/config", json={"batch": {"use_docker": False}}
    ).raise_for_status()
    kw: dict[str, Any] = {
        "region_name": "us-east-1",
        "endpoint_url": endpoint,
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }
    iam = boto3.client("iam", **kw)
    tag = str(time.monotonic_ns())
    role = iam.create_role(RoleName=f"batch-{tag}", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    batch = boto3.client("batch", **kw)
    env = batch.create_compute_environment(
        computeEnvironmentName=f"ce-{tag}", type="UNMANAGED", state="ENABLED", serviceRole=role
    )
    queue = f"q-{tag}"
    batch.create_job_queue(
        jobQueueName=queue,
        state="ENABLED",
        priority=1,
        computeEnvironmentOrder=[{"order": 1, "computeEnvironment": env["computeEnvironmentArn"]}],
    )
    return batch, queue


def _matches(rule: dict[str, str], code: int, reason: str) -> bool:
    if "onExitCode" in rule:
        return fnmatch.fnmatch(str(code), rule["onExitCode"])
    if "onStatusReason" in rule:
        return fnmatch.fnmatch(reason, rule["onStatusReason"])
    return fnmatch.fnmatch(reason, rule.get("onReason", "*"))


def _emulate_children(
    command: list[str],
    size: int,
    strategy: dict[str, Any],
    env: dict[str, str],
    sigterm: int,
    ledger_url: str,
    run_id: str,
) -> list[list[int]]:
    """Run an array job's children here as Batch would: each with its array index, retried
    as ``strategy`` says. Child ``sigterm`` is stopped with SIGTERM once (a Spot reclaim).
    Returns each child's exit codes, attempt by attempt."""
    codes: list[list[int]] = [[] for _ in range(size)]

    def start(i: int) -> subprocess.Popen[str]:
        child_env = {
            **env,
            "AWS_BATCH_JOB_ARRAY_INDEX": str(i),
            "AWS_BATCH_JOB_ARRAY_SIZE": str(size),
        }
        return subprocess.Popen(
            [*PIXELFLEET, *command], env=child_env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    running = {i: start(i) for i in range(size)}
    with fleet_ledger(ledger_url) as ledger:  # once it works (its handler is set): stop it
        wait_for(
            lambda: any(w.shard == f"{sigterm}/{size}" for w in ledger.find_workers(run_id)),
            60,
            f"child {sigterm} starting",
        )
    running[sigterm].send_signal(signal.SIGTERM)
    while running:
        for i, proc in list(running.items()):
            if proc.poll() is None:
                continue
            proc.communicate()
            codes[i].append(proc.returncode)
            del running[i]
            reason = f"Essential container in task exited with code {proc.returncode}"
            rules = strategy["evaluateOnExit"]
            actions = [r["action"].upper() for r in rules if _matches(r, proc.returncode, reason)]
            action = actions[0] if actions else "EXIT"
            if proc.returncode != 0 and action == "RETRY" and len(codes[i]) < strategy["attempts"]:
                running[i] = start(i)
        time.sleep(0.05)
    return codes


@pytest.mark.s3
@pytest.mark.postgres
def test_an_array_job_of_workers_finishes_the_run(
    tmp_path: Path, s3_server: str, pg_ledger_url: str
) -> None:
    batch, queue = _batch_setup(s3_server)
    bucket = make_fleet_bucket(tmp_path, 60, words="SLEEP 0.05")
    env = worker_env(
        AWS_ENDPOINT_URL_BATCH=s3_server,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_REGION="us-east-1",
    )
    submit = [
        *PIXELFLEET,
        "run",
        str(bucket.pipeline),
        "--executor",
        "aws-batch",
        "--ledger",
        pg_ledger_url,
        "--no-follow",
        "--set",
        f"run.batch.job_queue={queue}",
        "--set",
        "run.batch.image=123.dkr.ecr.us-east-1.amazonaws.com/pixelfleet:test",
        "--set",
        "run.batch.array_size=3",
        "--set",
        "run.batch.tags.team=imagery",
    ]
    done = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    run_id = re.search(r"run (\S+) started", done.stdout).group(1)  # type: ignore[union-attr]
    job_id = re.search(r"array job \S+ \((\S+)\) with 3 workers", done.stderr).group(1)  # type: ignore[union-attr]

    (job,) = batch.describe_jobs(jobs=[job_id])["jobs"]
    assert job["jobQueue"].endswith(queue)
    assert job["arrayProperties"]["size"] == 3
    (definition,) = batch.describe_job_definitions(jobDefinitions=[job["jobDefinition"]])[
        "jobDefinitions"
    ]
    assert definition["containerProperties"]["image"].endswith("pixelfleet:test")
    # moto keeps the strategy of the definition (actions lower-cased) and not the job's.
    strategy = job.get("retryStrategy") or definition["retryStrategy"]
    assert strategy["attempts"] == 2
    rules = [
        (r.get("onExitCode"), r.get("onStatusReason"), r["action"].upper())
        for r in strategy["evaluateOnExit"]
    ]
    assert rules == [(None, "Host EC2*", "RETRY"), ("75", None, "RETRY"), (None, None, "EXIT")]
    command = job["container"]["command"]
    assert command == ["worker", "--ledger", pg_ledger_url, "--run", run_id]
    variables = {v["name"]: v["value"] for v in job["container"]["environment"]}
    assert variables["PIXELFLEET_RUN"] == run_id
    assert variables["PIXELFLEET_LIMITS_URL"] == pg_ledger_url  # fleet-wide rate limits
    assert job["tags"]["pixelfleet-run"] == run_id and job["tags"]["team"] == "imagery"

    # moto runs no containers: start the children here, as Batch would, retries included.
    codes = _emulate_children(command, 3, strategy, {**env, **variables}, 1, pg_ledger_url, run_id)
    assert codes[1][0] == EXIT_RETRY and codes[1][-1] == 0  # stopped, retried, finished
    assert all(c[-1] == 0 for c in codes)
    with fleet_ledger(pg_ledger_url) as ledger:
        assert ledger.state_counts(run_id) == {"done": 60}
        assert ledger.get_run(run_id).state == "done"
        shards = sorted(w.shard for w in ledger.find_workers(run_id))
        assert shards == ["0/3", "1/3", "1/3", "2/3"]
    assert len(list(bucket.out.iterdir())) == 60

    # A second run reuses the job definition it registered (same image and settings).
    (bucket.root / "src" / "new.txt").write_text("x")
    again = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    job2_id = re.search(r"job \S+ \((\S+)\) with 1 worker", again.stderr).group(1)  # type: ignore[union-attr]
    (job2,) = batch.describe_jobs(jobs=[job2_id])["jobs"]
    assert job2["jobDefinition"] == job["jobDefinition"]
    assert "arrayProperties" not in job2 or not job2["arrayProperties"].get("size")
