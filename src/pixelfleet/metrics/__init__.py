"""What a run did, counted where it happens, for Prometheus to scrape.

This module holds plain tallies (ints in dicts, no dependency) that the code doing the
work feeds; :mod:`pixelfleet.metrics.exposition` turns them into Prometheus metrics at
scrape time (``pixelfleet serve`` at ``/metrics``, ``pixelfleet run --metrics-port N``).
Keeping ``prometheus_client`` out of this module keeps it out of every worker process:
importing it costs ~45 ms, and a worker only counts.

Who feeds what:

- the runner (driver process): :func:`progress` with its :class:`~pixelfleet.models.RunCounts`
  on every flush and when it closes (tasks and objects by state, bytes, retries, tasks
  in flight) and
  :func:`task_settled` for each result (failures by error type, task duration, and what
  the worker counted while it ran the task);
- storage (``storage/base.py``): :func:`storage_call` for every ``scan``, ``head``,
  ``read``, ``write``, ``write_file`` and ``delete`` of a storage class, and errors;
- labellers (``labelers/limits.py``): :func:`labeller_call`, :func:`labeller_throttle`;
- ``pixelfleet watch``: :func:`event` once per event it handles, with its action
  (``created``, ``updated``, ``deleted``, ``ignored`` or ``dead_lettered``), which
  becomes ``pixelfleet_events_total{action="..."}``.

Counts made in a worker process reach the driver with the task's result: while an
executor runs a task it opens a *task tally* on that thread (:func:`task_tally`); storage
and labeller calls on the thread go there instead of the process totals, the tally
travels in :attr:`TaskResult.metrics`, and the runner adds it to the driver's totals. A
task run inline is counted the same way, so nothing is counted twice.
"""

from __future__ import annotations

import bisect
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = [
    "ACTIONS",
    "DURATION_BUCKETS",
    "event",
    "labeller_call",
    "labeller_throttle",
    "progress",
    "snapshot",
    "storage_call",
    "task_settled",
    "task_tally",
]

#: The actions :func:`event` accepts (``pixelfleet_events_total{action=...}``).
ACTIONS = ("created", "updated", "current", "deleted", "ignored", "failed", "dead_lettered")
#: Upper bounds (seconds) of the task duration histogram's buckets.
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
#: RunCounts fields that become ``pixelfleet_tasks_total{state=...}`` and
#: ``pixelfleet_objects_total{state=...}``.
TASK_STATES = {"tasks_done": "done", "tasks_failed": "failed", "tasks_skipped": "skipped"}
OBJECT_STATES = {
    "objects_written": "written",
    "objects_current": "current",
    "objects_failed": "failed",
    "objects_skipped": "skipped",
    "objects_missing": "missing",
    "objects_refused": "refused",
}

_log = logging.getLogger("pixelfleet.runner")
# A library logs nowhere until the application configures logging (``--log-format``).
_log.addHandler(logging.NullHandler())
_LOCK = threading.Lock()
#: Process totals: ``(kind, label, label) -> count``; kinds: ``storage``,
#: ``storage_errors``, ``labeller``, ``throttles``, ``events``, ``failures``,
#: ``tasks``, ``objects``, ``bytes``, ``retries``.
_TOTALS: dict[tuple[str, str, str], int] = {}
#: Task duration histogram: one count per bucket (the last: above every bound), sum.
_DURATIONS = [0] * (len(DURATION_BUCKETS) + 1)
_DURATION_SUM = [0.0]
#: What each run's counts were at its last :func:`progress`, and its tasks in flight.
_SEEN: dict[tuple[str, int], dict[str, int]] = {}
_INFLIGHT: dict[tuple[str, int], int] = {}
_RUNS_KEPT = 64


#: Per-thread storage request counts (one dict per thread that ever counted), so the
#: hottest counter takes no lock: a thread only adds to its own dict, and a scrape
#: copies each (a dict copy is atomic under the GIL).
_THREAD_TOTALS: list[dict[tuple[str, str, str], int]] = []


class _Local(threading.local):
    #: The task tally of the task running on this thread, or None.
    tally: dict[tuple[str, str, str], int] | None = None
    #: This thread's share of the process totals (storage requests), once it counted.
    own: dict[tuple[str, str, str], int] | None = None


_local = _Local()


def _add(key: tuple[str, str, str], n: int = 1) -> None:
    with _LOCK:
        _TOTALS[key] = _TOTALS.get(key, 0) + n


def _own() -> dict[tuple[str, str, str], int]:
    own: dict[tuple[str, str, str], int] = {}
    with _LOCK:
        _THREAD_TOTALS.append(own)
    _local.own = own
    return own


def storage_call(scheme: str, operation: str, failed: bool = False) -> None:
    """Count one storage request (``operation``: scan, head, read, write, write_file,
    delete) against ``scheme``'s storage, and whether it raised."""
    key = ("storage", scheme, operation)
    local = _local
    tally = local.tally
    if tally is None:  # not in a task: this thread's share of the process totals
        tally = local.own
        if tally is None:
            tally = _own()
    tally[key] = tally.get(key, 0) + 1  # this thread's own dict: no lock needed
    if failed:
        _count(("storage_errors", scheme, operation))


def _count(key: tuple[str, str, str]) -> None:
    tally = _local.tally
    if tally is not None:
        tally[key] = tally.get(key, 0) + 1
    else:
        _add(key)


def labeller_call(group: str) -> None:
    """Count one call to a labelling service, under its limits group."""
    _count(("labeller", group, ""))


def labeller_throttle(group: str) -> None:
    """Count one call a labelling service throttled."""
    _count(("throttles", group, ""))


def event(action: str) -> None:
    """Count one event handled by ``pixelfleet watch``: ``created``, ``updated``,
    ``current``, ``deleted``, ``ignored``, ``failed`` or ``dead_lettered`` (:data:`ACTIONS`)."""
    if action not in ACTIONS:
        raise ValueError(f"event action {action!r} is not one of {', '.join(ACTIONS)}")
    _add(("events", action, ""))


@contextmanager
def task_tally() -> Iterator[dict[str, int]]:
    """Collect the storage and labeller calls this thread makes while the block runs; the
    dict it yields is filled when the block ends, with flat ``kind|label|label`` keys (a
    JSON object, for a worker to send with the task's result as ``metrics``)."""
    outer = _local.tally
    tally: dict[tuple[str, str, str], int] = {}
    flat: dict[str, int] = {}
    _local.tally = tally
    try:
        yield flat
    finally:
        _local.tally = outer
        flat.update(("|".join(key), n) for key, n in tally.items())


def requests_in(reported: dict[str, int] | None) -> int:
    """The storage requests a task tally holds."""
    if not reported:
        return 0
    return sum(n for key, n in reported.items() if key.startswith("storage|"))


def task_settled(run_id: str, record: Any, result: Any, outcome: str) -> int:
    """Fold one task result into the totals and log it; return the storage requests the
    worker made for it.

    ``record`` is the task's :class:`~pixelfleet.ledger.TaskRecord` (after the result
    was applied), ``result`` the :class:`~pixelfleet.models.TaskResult`, ``outcome``
    ``done``, ``failed`` or ``retried``.
    """
    seconds = float(result.seconds or 0.0)
    reported: dict[str, int] | None = getattr(result, "metrics", None)
    with _LOCK:
        _DURATIONS[bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1
        _DURATION_SUM[0] += seconds
        if reported:
            for flat, n in reported.items():
                kind, _, rest = flat.partition("|")
                first, _, second = rest.partition("|")
                key = (kind, first, second)
                _TOTALS[key] = _TOTALS.get(key, 0) + int(n)
        if outcome != "retried":
            if result.entries:
                for entry in result.entries:
                    if entry.state == "failed":
                        key = ("failures", entry.error_type or "Error", "")
                        _TOTALS[key] = _TOTALS.get(key, 0) + 1
            elif result.state == "failed":
                key = ("failures", result.error_type or "Error", "")
                _TOTALS[key] = _TOTALS.get(key, 0) + 1
    if _log.isEnabledFor(logging.INFO):
        _log_task(run_id, record, result, outcome)
    return requests_in(reported)


def _log_task(run_id: str, record: Any, result: Any, outcome: str) -> None:
    entries = record.entries
    key = entries[0]["key"] if len(entries) == 1 else record.group
    error = result.error_type or record.error_type
    level = logging.INFO if outcome == "done" else logging.WARNING
    message = f"task {outcome}"
    if outcome != "done" and record.error:
        message += f": {record.error}"
    _log.log(
        level,
        message,
        extra={
            "run_id": run_id,
            "task_id": record.task_id,
            "key": key,
            "attempt": record.attempts,
            "error_type": error if outcome != "done" else None,
            "seconds": round(float(result.seconds or 0.0), 4),
            "objects": len(entries),
        },
    )


def progress(run_id: str, counts: Any, inflight: int) -> None:
    """Take a run's :class:`~pixelfleet.models.RunCounts` as they are now (the runner calls
    this as it flushes): what grew since the last call with the same counts object is
    added to the totals (a retry of a run counts afresh in a new object)."""
    now = counts.to_dict()
    ref = (run_id, id(counts))
    with _LOCK:
        seen = _SEEN.get(ref)
        if seen is None:
            if len(_SEEN) >= _RUNS_KEPT:  # forget the oldest: its counts were added
                oldest = next(iter(_SEEN))
                del _SEEN[oldest]
                _INFLIGHT.pop(oldest, None)
            seen = _SEEN[ref] = {}
        for name, value in now.items():
            grown = value - seen.get(name, 0)
            if grown <= 0:
                continue
            seen[name] = value
            if name in TASK_STATES:
                key = ("tasks", TASK_STATES[name], "")
            elif name in OBJECT_STATES:
                key = ("objects", OBJECT_STATES[name], "")
            elif name in ("bytes", "retries"):
                key = (name, "", "")
            else:
                continue
            _TOTALS[key] = _TOTALS.get(key, 0) + grown
        _INFLIGHT[ref] = inflight


def snapshot() -> dict[str, Any]:
    """A consistent copy of every total, for an exporter: ``totals`` (``(kind, label,
    label) -> count``), ``durations`` (bucket counts, the last above every bound),
    ``duration_sum`` and ``inflight`` (tasks in flight across runs)."""
    with _LOCK:
        totals = dict(_TOTALS)
        for own in _THREAD_TOTALS:
            for key, n in own.copy().items():
                totals[key] = totals.get(key, 0) + n
        return {
            "totals": totals,
            "durations": list(_DURATIONS),
            "duration_sum": _DURATION_SUM[0],
            "inflight": sum(_INFLIGHT.values()),
        }
