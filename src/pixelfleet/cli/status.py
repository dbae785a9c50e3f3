"""``pixelfleet status [RUN]``: task counts by state, task time percentiles, bytes and
requests per object, error kinds, failures with their reasons, and the objects skipped
unread (symbolic links) with theirs."""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

import click

from pixelfleet.cli.display import per_object, printable, show_run, show_stats
from pixelfleet.cli.options import plain_ledger_option, resolve_ledger
from pixelfleet.humanize import human_seconds
from pixelfleet.ledger import FleetLedger, WorkerRecord
from pixelfleet.ledger.base import STALE_SECONDS, effective_state
from pixelfleet.ledger.events import EventLog


@click.command()
@click.argument("run_id", metavar="[RUN]", required=False)
@click.option("--limit", default=20, show_default=True, help="Failures to list.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@plain_ledger_option
def status(run_id: str | None, limit: int, as_json: bool, ledger_url: str | None) -> None:
    """Show a run (the latest by default; a unique prefix of its id is enough)."""
    with resolve_ledger(ledger_url) as ledger:
        run = ledger.get_run(run_id)
        workers = ledger.find_workers(run.run_id) if isinstance(ledger, FleetLedger) else []
        now = ledger.now()
        recorded = run.state
        run.state = effective_state(run, now, [w.heartbeat for w in workers])
        stats = ledger.task_stats(run.run_id)
        if as_json:
            failed = ledger.find_tasks(run.run_id, ["failed"], limit=limit)
            skipped = []
            if run.counts.objects_refused:
                skipped = ledger.find_tasks(run.run_id, ["skipped"], limit=limit)
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
                        # p50/p95 task seconds, error kinds; per object: once counted
                        "stats": {**stats.to_dict(), **per_object(run.counts)},
                        "driver": {"host": run.host, "pid": run.pid, "heartbeat": run.heartbeat},
                        "workers": [dataclasses.asdict(w) for w in workers],
                        **watch_facts(ledger, run, limit),
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
                        # Objects listed but never read (symbolic links), with the reason.
                        "skipped": [
                            {"task_id": t.task_id, "key": t.group, "reason": t.error}
                            for t in skipped
                        ],
                    },
                    indent=2,
                )
            )
            return
        show_run(ledger, run, limit)
        show_stats(stats, run.counts)
        show_events(ledger, run, limit)
        if run.state == "interrupted" and recorded == "running":
            heard = max([run.heartbeat or 0.0, *(w.heartbeat for w in workers)])
            click.echo(
                f"  (recorded as running, but nothing of it was heard from for"
                f" {human_seconds(now - heard)}: its driver on {run.host or '?'} pid {run.pid}"
                " died or was killed; run the pipeline again to resume it"
                + (f", or start workers: pixelfleet worker --run {run.run_id})" if workers else ")")
            )
        if workers and isinstance(ledger, FleetLedger):
            show_fleet(ledger, run.run_id, workers, now)
        if run_id is None:
            others = ledger.find_runs(limit=6)[1:]
            if others:
                click.echo("earlier runs:")
                for r in others:
                    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created))
                    click.echo(f"  {r.run_id}  {r.state:<11} {when}  {r.pipeline_path}")


def watch_facts(ledger: Any, run: Any, limit: int) -> dict[str, Any]:
    """A watcher's events by action and its dead letters with reasons (for ``--json``)."""
    if not isinstance(ledger, EventLog):
        return {}
    counts = ledger.event_counts(run.run_id)
    if not counts:
        return {}  # not a watcher's run (or one that has seen nothing yet)
    dead = ledger.last_events(run.run_id, ["dead-lettered"], limit=limit)
    return {
        "events": counts,
        "dead_letters": [{"time": d.time, "key": d.key, "reason": d.detail} for d in dead],
    }


def show_events(ledger: Any, run: Any, limit: int) -> None:
    """A watcher's events by action, its dead letters and failures with their reasons."""
    counts = ledger.event_counts(run.run_id) if isinstance(ledger, EventLog) else {}
    if not counts:
        return  # not a watcher's run (or one that has seen nothing yet)
    line = ", ".join(f"{action} {n:,}" for action, n in sorted(counts.items())) or "none yet"
    click.echo(f"  events:   {line}")
    failed = ledger.last_events(run.run_id, ["failed", "dead-lettered"], limit=limit)
    if failed:
        click.echo("  dead letters and failures (newest last):")
        for record in failed:
            when = time.strftime("%H:%M:%S", time.localtime(record.time))
            what = printable(record.key) if record.key else "message"
            click.echo(f"    {when}  {record.action:<13} {what}: {printable(record.detail)}")


def show_fleet(ledger: FleetLedger, run_id: str, workers: list[WorkerRecord], now: float) -> None:
    """A fleet run's workers (with their shard and heartbeat) and the leases they hold."""
    leases = ledger.leases(run_id)
    held: dict[str, int] = {}
    for _, worker, _, _ in leases:
        held[worker] = held.get(worker, 0) + 1
    click.echo(f"  workers:  {len(workers)}")
    for w in workers[:20]:
        state = w.state
        if state == "running" and now - w.heartbeat > STALE_SECONDS:
            state = "lost"
        shard = f" shard {w.shard}" if w.shard else ""
        click.echo(
            f"    {w.worker_id:<28} {state:<8}{shard} {w.tasks_done} done, {w.tasks_failed}"
            f" failed, {held.get(w.worker_id, 0)} in hand; heard"
            f" {human_seconds(max(0.0, now - w.heartbeat))} ago"
        )
    if len(workers) > 20:
        click.echo(f"    ... and {len(workers) - 20} more")
    if leases:
        click.echo(f"  leases:   {len(leases)} tasks claimed; soonest to run out:")
        for task_id, worker, attempt, left in leases[:5]:
            when = f"in {human_seconds(left)}" if left > 0 else "now (to be reaped)"
            click.echo(f"    {task_id[:12]}  attempt {attempt}  {worker}  ends {when}")
