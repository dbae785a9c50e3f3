"""``pixelfleet batch``: AWS Batch helpers for those who manage Batch with other tools."""

from __future__ import annotations

import json

import click

from pixelfleet.executors.batch import DEFAULT_DEFINITION, job_definition
from pixelfleet.pipeline import load_pipeline


@click.group()
def batch() -> None:
    """AWS Batch: the job definition the aws-batch executor uses."""


@batch.command("job-definition")
@click.argument("pipeline_file", metavar="PIPELINE", type=click.Path(dir_okay=False))
@click.option("--image", required=True, metavar="URI", help="The worker image (e.g. an ECR URI).")
@click.option("--name", default=DEFAULT_DEFINITION, show_default=True, help="Definition name.")
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="FIELD=VALUE",
    help="Override a pipeline field, e.g. --set run.batch.memory=4096 (repeatable).",
)
def job_definition_command(
    pipeline_file: str, image: str, name: str, overrides: tuple[str, ...]
) -> None:
    """Print the RegisterJobDefinition JSON for PIPELINE's [run.batch] settings.

    Register it with `aws batch register-job-definition --cli-input-json file://def.json`,
    or copy its fields into Terraform; then set run.batch.job_definition to its name.
    """
    pipeline = load_pipeline(pipeline_file, overrides)
    settings = pipeline.run.batch.model_dump(mode="json")
    click.echo(json.dumps(job_definition(settings, image, name), indent=2))
