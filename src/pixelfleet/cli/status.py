"""``pixelfleet status [RUN]``: task counts by state and failures with their reasons."""

from __future__ import annotations

import json
import time

import click

from pixelfleet.cli.display import show_run
from pixelfleet.cli.options import ledger_option, resolve_ledger


@click.command()
@click.argument("run_id", metavar="[RUN]", required=False)
@click.option("--limit", default=20, show_default=True, help="Failures to list.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@ledger_option
def status(run_id: str | None, limit: int, as_json: bool, ledger_url: str | None) -> None:
    """Show a run (the latest by default; a unique prefix of its id is enough)."""
    with resolve_ledger(ledger_url) as ledger:
        run = ledger.get_run(run_id)
        if as_json:
            failed = ledger.find_tasks(run.run_id, ["failed"], limit=limit)
            click.echo(
                json.dumps(
                    {
                        "run_id": run.run_id,
                        "state": run.state,
                        "pipeline": run.pipeline_path,
                        "created": run.created,
                        "finished": run.finished,
                        "tasks": ledger.state_counts(run.run_id),
                        "counts": run.counts.to_dict(),
                        "failures": [
                            {
                                "task_id": t.task_id,
                                "group": t.group,
                                "error_type": t.error_type,
                                "error": t.error,
                                "objects": t.failures,
                            }
                            for t in failed
                        ],
                    },
                    indent=2,
                )
            )
            return
        show_run(ledger, run, limit)
        if run_id is None:
            others = ledger.find_runs(limit=6)[1:]
            if others:
                click.echo("earlier runs:")
                for r in others:
                    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created))
                    click.echo(f"  {r.run_id}  {r.state:<11} {when}  {r.pipeline_path}")
