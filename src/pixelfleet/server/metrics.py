"""``GET /metrics``: the server's own tallies and the latest runs from the ledger, in the
Prometheus text format (see :mod:`pixelfleet.metrics.exposition` for the tallies).

Ledger metrics are read at scrape time, a few indexed queries per run:

- ``pixelfleet_ledger_up``: 1 when the ledger answered, else 0 (and nothing below);
- ``pixelfleet_run_tasks{run_id,state}``: tasks of the latest runs by state;
- ``pixelfleet_run_state{run_id,state}``: 1 for each latest run's state as ``status``
  shows it (``interrupted`` once its driver stopped beating);
- ``pixelfleet_run_heartbeat_age_seconds{run_id}``: for runs still ``running``, seconds
  since their driver was last heard from (alert on it growing).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client.core import GaugeMetricFamily

from pixelfleet.metrics.exposition import make_registry, render

router = APIRouter()
log = logging.getLogger("pixelfleet.server")

#: How many of the latest runs the ledger metrics describe.
LATEST_RUNS = 5


def ledger_families(ledger_url: str) -> Iterator[Any]:
    """Metric families describing the latest runs of the ledger at ``ledger_url``."""
    from pixelfleet.ledger import open_ledger
    from pixelfleet.ledger.base import effective_state

    up = GaugeMetricFamily("pixelfleet_ledger_up", "1 if the ledger answered the scrape.")
    tasks = GaugeMetricFamily(
        "pixelfleet_run_tasks", "Tasks of the latest runs, by state.", labels=["run_id", "state"]
    )
    states = GaugeMetricFamily(
        "pixelfleet_run_state",
        "1 for the state each of the latest runs is in.",
        labels=["run_id", "state"],
    )
    ages = GaugeMetricFamily(
        "pixelfleet_run_heartbeat_age_seconds",
        "Seconds since a running run's driver was last heard from.",
        labels=["run_id"],
    )
    try:
        with open_ledger(ledger_url) as ledger:
            now = ledger.now()
            for run in ledger.find_runs(limit=LATEST_RUNS):
                for state, n in sorted(ledger.state_counts(run.run_id).items()):
                    tasks.add_metric([run.run_id, state], n)
                state = effective_state(run, now)
                states.add_metric([run.run_id, state], 1)
                if state == "running" and run.heartbeat is not None:
                    ages.add_metric([run.run_id], max(0.0, now - run.heartbeat))
    except Exception as exc:  # noqa: BLE001 - a scrape reports the ledger down, never a 500
        log.warning("metrics: ledger %s did not answer: %s", ledger_url, exc)
        up.add_metric([], 0)
        yield up
        return
    up.add_metric([], 1)
    yield from (up, tasks, states, ages)


@router.get("/metrics", include_in_schema=False)
def metrics_endpoint(request: Request) -> Response:
    """Prometheus metrics: this process's tallies and the ledger's latest runs."""
    registry = getattr(request.app.state, "metrics_registry", None)
    if registry is None:
        url = request.app.state.ledger_url
        registry = request.app.state.metrics_registry = make_registry(lambda: ledger_families(url))
    body, content_type = render(registry, request.headers.get("accept", ""))
    return Response(body, headers={"Content-Type": content_type})
