"""How runs, tasks and sizes are shown in a terminal.

Keys, groups and error messages come from a bucket and are shown through
:func:`printable`: a key may hold a newline, a tab or a terminal escape sequence.
"""

from __future__ import annotations

import time
import unicodedata

import click

from pixelfleet.humanize import human_bytes, human_seconds
from pixelfleet.ledger import Ledger, RunRecord, TaskRecord, TaskStats
from pixelfleet.models import RunCounts
from pixelfleet.runner import DryRunReport, RunSummary
from pixelfleet.storage.local import path_from_url

_NAMED_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}
#: Bidirectional embeddings, overrides and isolates: they reorder what follows them on a
#: line, so a key could be made to look like another.
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def printable(text: str) -> str:
    """``text`` as one line a terminal shows as it is: control characters (C0, DEL, C1),
    Unicode line and paragraph separators, bidirectional overrides and lone surrogates
    escaped as ``\\n``, ``\\t``, ``\\r``, ``\\xNN`` or ``\\uNNNN``; everything else kept.

    ``printable("new\\nline.jpg")`` -> ``'new\\\\nline.jpg'`` (a backslash and an ``n``).
    """
    if text.isprintable():
        return text
    out = []
    for c in text:
        if c in _NAMED_ESCAPES:
            out.append(_NAMED_ESCAPES[c])
        elif c in _BIDI or unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp"):
            out.append(f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return "".join(out)


def plural(n: int, noun: str) -> str:
    """``plural(2, 'object')`` -> ``'2 objects'``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def where(url: str) -> str:
    """A URL as a user would open it: local paths as paths."""
    return path_from_url(url) if "://" not in url or url.startswith("file://") else url


def show_failures(failures: list[TaskRecord], limit: int = 10) -> None:
    """List failed objects with their reasons, one line each."""
    shown = 0
    for task in failures:
        rows = task.failures or [
            {
                "key": task.group or task.task_id,
                "error_type": task.error_type or "",
                "error": task.error or "",
            }
        ]
        for row in rows:
            if shown >= limit:
                return
            click.echo(
                f"    {printable(row['key'])}: {printable(row['error_type'] or '')}: "
                f"{printable(row['error'] or '')}"
            )
            shown += 1


def show_skipped(skipped: list[TaskRecord], total: int, limit: int = 10) -> None:
    """Objects listed but never read (symbolic links...), one line each with the reason."""
    click.echo(
        f"  skipped: {plural(total, 'object')} not read (not a failure; the reason for each):"
    )
    for task in skipped[:limit]:
        key = task.entries[0]["key"] if task.entries else task.group
        click.echo(f"    {printable(key)}: {printable(task.error or '')}")
    if total > min(limit, len(skipped)):
        click.echo(f"    ... and {total - min(limit, len(skipped))} more")


def show_summary(summary: RunSummary) -> None:
    """The end-of-run summary."""
    c = summary.counts
    colour = "green" if summary.state == "done" else "red"
    click.secho(
        f"run {summary.run_id} {summary.state} in {human_seconds(summary.seconds)}"
        f" ({summary.executor})",
        fg=colour,
        bold=True,
    )
    click.echo(
        f"  tasks:   {c.tasks_done} done, {c.tasks_failed} failed,"
        f" {c.tasks_skipped} already done (skipped), {c.retries} retries"
    )
    click.echo(
        f"  objects: {c.objects_written} written, {c.objects_current} already"
        f" current, {c.objects_failed} failed, {c.objects_skipped} skipped"
        f" with their task; {human_bytes(c.bytes)} of sources processed"
    )
    if c.objects_missing:
        click.echo(
            f"  missing: {plural(c.objects_missing, 'object')} skipped-missing"
            " (listed, but gone when read: not a failure)"
        )
    if c.objects_refused:
        show_skipped(summary.skipped, c.objects_refused)
    click.echo(f"  outputs: {printable(where(summary.output_url))}")
    if c.items_indexed:
        click.echo(f"  catalog: {c.items_indexed} STAC items indexed")
    if summary.stats is not None:
        show_stats(summary.stats, c)
    if summary.failures:
        click.echo("  failures:")
        show_failures(summary.failures)
        click.echo(
            f"  see all with: pixelfleet status {summary.run_id}; "
            f"retry with: pixelfleet retry {summary.run_id} --failed"
        )


def per_object(counts: RunCounts) -> dict[str, float | None]:
    """Source bytes and storage requests per object the workers processed (None before
    any was)."""
    n = counts.objects_written + counts.objects_current + counts.objects_failed
    n += counts.objects_missing
    return {
        "bytes_per_object": counts.bytes / n if n else None,
        "requests_per_object": counts.requests / n if n else None,
    }


def show_stats(stats: TaskStats, counts: RunCounts) -> None:
    """Task time percentiles, bytes and requests per object, and error kinds."""
    parts = []
    if stats.p50_seconds is not None and stats.p95_seconds is not None:
        parts.append(
            f"p50 {_duration(stats.p50_seconds)}, p95 {_duration(stats.p95_seconds)} per task"
        )
    each = per_object(counts)
    if each["bytes_per_object"] is not None:
        parts.append(f"{human_bytes(round(each['bytes_per_object']))} per object")
    if counts.requests and each["requests_per_object"] is not None:
        parts.append(f"{each['requests_per_object']:.1f} storage requests per object")
    if parts:
        click.echo(f"  timing:  {'; '.join(parts)}")
    if stats.errors:
        kinds = sorted(stats.errors.items(), key=lambda kv: (-kv[1], kv[0]))
        click.echo(f"  errors:  {', '.join(f'{printable(k)} {n}' for k, n in kinds)}")


def _duration(seconds: float) -> str:
    return f"{seconds * 1000:.0f}ms" if seconds < 1 else human_seconds(seconds)


def show_dry_run(report: DryRunReport) -> None:
    """What a run would do."""
    todo = report.tasks - report.already_done
    click.echo(
        f"{report.tasks} tasks, {report.objects} objects, {human_bytes(report.bytes)};"
        f" {report.already_done} tasks already done, {todo} to run. Nothing was written."
    )
    for task in report.sample:
        click.echo(
            f"  {task.id[:12]}  {printable(task.group) or '(root)'}:"
            f" {plural(len(task.entries), 'object')},"
            f" {human_bytes(task.size)}"
        )
    if todo > len(report.sample):
        click.echo(f"  ... and {todo - len(report.sample)} more")
    if report.unmatched:
        click.echo(
            f"  {plural(report.unmatched, 'object')} matched no scene pattern and were left out"
        )
    if report.refused:
        click.echo(
            f"  {plural(report.refused, 'object')} would be skipped unread (symbolic links or"
            " other files that are not regular files)"
        )


def show_run(ledger: Ledger, run: RunRecord, limit: int) -> None:
    """One run's state counts and its failures."""
    counts = ledger.state_counts(run.run_id)
    took = (run.finished or time.time()) - run.created
    click.secho(f"run {run.run_id}: {run.state}", bold=True)
    click.echo(f"  pipeline: {printable(run.pipeline_path) or '(none)'}")
    click.echo(
        f"  started:  {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(run.created))}"
        f" ({human_seconds(took)}{'' if run.finished else ' so far'})"
    )
    click.echo(f"  executor: {run.executor}")
    parts = [f"{counts.get(s, 0)} {s}" for s in ("done", "failed", "running", "pending")]
    skipped = run.counts.tasks_skipped
    click.echo(f"  tasks:    {', '.join(parts)}, {skipped} already done (skipped)")
    if run.counts.objects_missing:
        click.echo(f"  objects:  {run.counts.objects_missing} skipped-missing (gone when read)")
    if run.counts.objects_refused:
        unread = ledger.find_tasks(run.run_id, ["skipped"], limit=limit)
        show_skipped(unread, run.counts.objects_refused, limit)
    failed = ledger.find_tasks(run.run_id, ["failed"], limit=limit)
    if failed:
        click.echo("  failures:")
        show_failures(failed, limit)
        click.echo(f"  retry with: pixelfleet retry {run.run_id} --failed")
