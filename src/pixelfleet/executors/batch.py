"""``--executor aws-batch``: the workers of a fleet run as one AWS Batch array job.

Each child of the array job runs ``pixelfleet worker --ledger URL --run RUN_ID`` and
claims tasks from the shared ledger until none are left, so children need no shard of
their own and a slow child never holds up the rest. The driver follows progress from
the ledger; Batch is asked only about the array job itself (one ``DescribeJobs`` call
per poll, however many children it has).

The retry strategy retries a child whose host went away (``Host EC2*``: Spot reclaims,
instance failures) and one that exited with 75 (the worker's "try me again": its ledger
was unreachable past its retries), and lets every other exit end the child: a task that
fails is retried by the ledger, not by Batch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from typing_extensions import override

from pixelfleet.errors import ConfigError
from pixelfleet.executors.launchers import (
    EXIT_RETRY,
    FleetState,
    Launcher,
    LaunchRequest,
    worker_arguments,
)

#: The most children one array job may have (an AWS Batch quota).
MAX_ARRAY = 10_000
#: The job definition registered when ``[run.batch]`` names an image but no definition.
DEFAULT_DEFINITION = "pixelfleet-worker"


def retry_strategy(attempts: int) -> dict[str, Any]:
    """Retry lost hosts and exit code 75; end the child on anything else."""
    return {
        "attempts": attempts,
        "evaluateOnExit": [
            {"onStatusReason": "Host EC2*", "action": "RETRY"},
            {"onExitCode": str(EXIT_RETRY), "action": "RETRY"},
            {"onReason": "*", "action": "EXIT"},
        ],
    }


def _resources(settings: Mapping[str, Any]) -> list[dict[str, str]]:
    vcpus = float(settings.get("vcpus") or 1.0)
    return [
        {"type": "VCPU", "value": f"{vcpus:g}"},
        {"type": "MEMORY", "value": str(int(settings.get("memory") or 2048))},
    ]


def _environment(settings: Mapping[str, Any], extra: Mapping[str, str]) -> list[dict[str, str]]:
    merged = {**dict(settings.get("environment") or {}), **extra}
    return [{"name": k, "value": v} for k, v in sorted(merged.items())]


def job_definition(
    settings: Mapping[str, Any], image: str, name: str = DEFAULT_DEFINITION
) -> dict[str, Any]:
    """The ``RegisterJobDefinition`` request for a worker image, from ``[run.batch]``
    (what ``pixelfleet batch job-definition`` prints, for Terraform or CloudFormation)."""
    platform = str(settings.get("platform") or "EC2")
    container: dict[str, Any] = {
        "image": image,
        "command": ["worker"],
        "resourceRequirements": _resources(settings),
        "environment": _environment(settings, {}),
    }
    if settings.get("job_role_arn"):
        container["jobRoleArn"] = settings["job_role_arn"]
    if settings.get("execution_role_arn"):
        container["executionRoleArn"] = settings["execution_role_arn"]
    if platform == "FARGATE":
        container["fargatePlatformConfiguration"] = {"platformVersion": "LATEST"}
        container["networkConfiguration"] = {"assignPublicIp": "ENABLED"}
    definition: dict[str, Any] = {
        "jobDefinitionName": name,
        "type": "container",
        "platformCapabilities": [platform],
        "containerProperties": container,
        "retryStrategy": retry_strategy(int(settings.get("attempts") or 2)),
        "propagateTags": True,
    }
    if settings.get("timeout"):
        definition["timeout"] = {"attemptDurationSeconds": int(settings["timeout"])}
    if settings.get("tags"):
        definition["tags"] = dict(settings["tags"])
    return definition


def array_sizes(children: int) -> list[int]:
    """Children split into array jobs of at most :data:`MAX_ARRAY` each."""
    sizes = []
    while children > 0:
        sizes.append(min(children, MAX_ARRAY))
        children -= sizes[-1]
    return sizes


def batch_client() -> Any:
    """A boto3 Batch client (region and endpoint from the usual AWS variables;
    ``AWS_ENDPOINT_URL_BATCH`` points it at a test server)."""
    try:
        import boto3
    except ModuleNotFoundError:
        raise ConfigError(
            "executor 'aws-batch' needs boto3: pip install 'pixelfleet[aws]'"
        ) from None
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    endpoint = os.environ.get("AWS_ENDPOINT_URL_BATCH") or os.environ.get("AWS_ENDPOINT_URL")
    return boto3.client("batch", region_name=region, endpoint_url=endpoint or None)


class BatchLauncher(Launcher):
    """Submits the run's workers as an AWS Batch array job (several past 10,000)."""

    name = "aws-batch"

    def __init__(self, address: str = "", workers: int | None = None, client: Any = None):
        self.workers = workers
        self._client = client
        self.job_ids: list[str] = []
        self.children = 0
        self.queue = ""

    @property
    def client(self) -> Any:
        """The Batch API client, made on first use."""
        if self._client is None:
            self._client = batch_client()
        return self._client

    def resolve_definition(self, settings: Mapping[str, Any]) -> str:
        """The job definition to submit with: as named, else registered (or an identical
        active revision reused) from ``image``."""
        named = settings.get("job_definition")
        if named:
            return str(named)
        image = settings.get("image")
        if not image:
            raise ConfigError(
                "executor 'aws-batch' needs a job definition: set run.batch.job_definition"
                " (--set run.batch.job_definition=NAME) or run.batch.image to register one"
            )
        wanted = job_definition(settings, str(image))
        found = self.client.describe_job_definitions(
            jobDefinitionName=DEFAULT_DEFINITION, status="ACTIVE"
        ).get("jobDefinitions", [])
        for existing in sorted(found, key=lambda d: -int(d.get("revision", 0))):
            if _same_definition(existing, wanted):
                return str(existing["jobDefinitionArn"])
        return str(self.client.register_job_definition(**wanted)["jobDefinitionArn"])

    @override
    def launch(self, request: LaunchRequest) -> list[str]:
        settings = request.settings
        queue = settings.get("job_queue")
        if not queue:
            raise ConfigError(
                "executor 'aws-batch' needs a job queue: set run.batch.job_queue"
                " (--set run.batch.job_queue=NAME)"
            )
        self.queue = str(queue)
        definition = self.resolve_definition(settings)
        wanted = request.workers or self.workers or settings.get("array_size") or request.tasks
        self.children = max(1, min(int(wanted), max(request.tasks, 1)))
        base_name = settings.get("job_name") or f"pixelfleet-{request.run_id}"
        lines = []
        for part, size in enumerate(array_sizes(self.children)):
            name = base_name if part == 0 else f"{base_name}-{part + 1}"
            job: dict[str, Any] = {
                "jobName": _job_name(name),
                "jobQueue": self.queue,
                "jobDefinition": definition,
                "retryStrategy": retry_strategy(int(settings.get("attempts") or 2)),
                "propagateTags": True,
                "containerOverrides": {
                    "command": worker_arguments(request.run_id, request.ledger_url),
                    "environment": _environment(
                        settings, {**request.environment, "PIXELFLEET_RUN": request.run_id}
                    ),
                    "resourceRequirements": _resources(settings),
                },
            }
            if size > 1:
                job["arrayProperties"] = {"size": size}
            if settings.get("timeout"):
                job["timeout"] = {"attemptDurationSeconds": int(settings["timeout"])}
            tags = {**dict(settings.get("tags") or {}), "pixelfleet-run": request.run_id}
            job["tags"] = tags
            answer = self.client.submit_job(**job)
            self.job_ids.append(str(answer["jobId"]))
            lines.append(
                f"submitted AWS Batch {'array ' if size > 1 else ''}job {answer['jobName']}"
                f" ({answer['jobId']}) with {size} worker{'s' if size > 1 else ''}"
                f" to queue {self.queue}"
            )
        return lines

    @override
    def state(self) -> FleetState:
        if not self.job_ids:
            return FleetState()
        jobs = self.client.describe_jobs(jobs=self.job_ids).get("jobs", [])
        state = FleetState(started=self.children)
        summary: dict[str, int] = {}
        for job in jobs:
            counts = (job.get("arrayProperties") or {}).get("statusSummary") or {}
            if not counts:  # a single job
                counts = {job.get("status", "UNKNOWN"): 1}
            for status, n in counts.items():
                summary[status] = summary.get(status, 0) + int(n)
        state.succeeded = summary.get("SUCCEEDED", 0)
        state.failed = summary.get("FAILED", 0)
        state.running = summary.get("RUNNING", 0)
        finished = {"SUCCEEDED", "FAILED"}
        state.ended = len(jobs) == len(self.job_ids) and all(
            j.get("status") in finished for j in jobs
        )
        state.detail = "batch: " + ", ".join(f"{k} {v}" for k, v in sorted(summary.items()) if v)
        return state

    @override
    def stop(self) -> None:
        pass  # the fleet goes on without its driver; `aws batch terminate-job` stops it

    @override
    def describe(self) -> str:
        return f"aws-batch: {self.children} workers on queue {self.queue}"


def _job_name(name: str) -> str:
    """Batch job names: letters, digits, - and _, at most 128."""
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in name)
    return safe[:128]


def _same_definition(existing: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """Tell whether a registered revision does what ``wanted`` asks (Batch fills in fields
    of its own, orders keys its way and may change the case of retry actions)."""

    def canon(value: Any) -> str:
        return json.dumps(value, sort_keys=True).lower()

    have = existing.get("containerProperties") or {}
    want = wanted["containerProperties"]
    same_lists = all(
        sorted(map(canon, have.get(k) or [])) == sorted(map(canon, want.get(k) or []))
        for k in ("resourceRequirements", "environment")
    )
    keys = ("image", "command", "jobRoleArn", "executionRoleArn")
    return (
        same_lists
        and all(have.get(k) == want.get(k) for k in keys)
        and canon(existing.get("retryStrategy")) == canon(wanted.get("retryStrategy"))
        and canon(existing.get("timeout")) == canon(wanted.get("timeout"))
        and (existing.get("platformCapabilities") or ["EC2"]) == wanted["platformCapabilities"]
    )
