"""The tallies of :mod:`pixelfleet.metrics` as Prometheus metrics (``prometheus_client``).

Metrics, all prefixed ``pixelfleet_``:

==================================================  ============================================
``tasks_total{state}``                              tasks settled ``done``, ``failed``, or
                                                    ``skipped`` as done by an earlier run
``tasks_in_flight``                                 tasks submitted and not settled (gauge)
``objects_total{state}``                            ``written``, ``current``, ``failed``,
                                                    ``skipped``, ``missing``, ``refused``
                                                    (listed, never read: symbolic links)
``source_bytes_total``                              bytes of the source objects submitted
``retries_total``                                   attempts run again
``failures_total{error_type}``                      failed objects (or whole tasks) by error
``task_duration_seconds``                           histogram of task attempts' wall time
``storage_requests_total{scheme,operation}``        storage calls, drivers' and workers'
``storage_errors_total{scheme,operation}``          storage calls that raised (not "not found")
``labeller_calls_total{group}``                     labelling service calls, by limits group
``labeller_throttles_total{group}``                 calls the service throttled
``events_total{action}``                            events handled by ``pixelfleet watch``
==================================================  ============================================
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, choose_encoder
from prometheus_client.registry import Collector

from pixelfleet import metrics

__all__ = ["CONTENT_TYPE", "TallyCollector", "make_registry", "render", "serve"]

#: The Prometheus text format's content type (version 0.0.4), served unless a scraper
#: asks for another (OpenMetrics) in its Accept header.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

#: ``kind -> (metric name, help, label names)`` of the labelled counters.
_COUNTERS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "tasks": ("pixelfleet_tasks", "Tasks settled, by final state.", ("state",)),
    "objects": ("pixelfleet_objects", "Source objects, by outcome.", ("state",)),
    "failures": (
        "pixelfleet_failures",
        "Failed objects (or whole tasks), by error type.",
        ("error_type",),
    ),
    "storage": (
        "pixelfleet_storage_requests",
        "Storage requests, by storage scheme and operation.",
        ("scheme", "operation"),
    ),
    "storage_errors": (
        "pixelfleet_storage_errors",
        "Storage requests that failed, by storage scheme and operation.",
        ("scheme", "operation"),
    ),
    "labeller": ("pixelfleet_labeller_calls", "Labelling service calls.", ("group",)),
    "throttles": (
        "pixelfleet_labeller_throttles",
        "Labelling service calls that were throttled.",
        ("group",),
    ),
    "events": ("pixelfleet_events", "Events handled by pixelfleet watch.", ("action",)),
}
#: Label values every scrape shows, even at zero, so alerts can use rate() from the start.
_ALWAYS = {
    "tasks": [("done",), ("failed",), ("skipped",)],
    "objects": [(s,) for s in metrics.OBJECT_STATES.values()],
    "events": [(a,) for a in metrics.ACTIONS],
}


class TallyCollector(Collector):
    """Reads :func:`pixelfleet.metrics.snapshot` at every scrape."""

    def collect(self) -> Iterator[Any]:
        """The metric families as they are now."""
        snap = metrics.snapshot()
        totals: dict[tuple[str, str, str], int] = snap["totals"]
        for kind, (name, text, labels) in _COUNTERS.items():
            family = CounterMetricFamily(name, text, labels=list(labels))
            values: dict[tuple[str, ...], int] = dict.fromkeys(_ALWAYS.get(kind, []), 0)
            for (k, first, second), n in totals.items():
                if k == kind:
                    values[(first, second)[: len(labels)]] = n
            for label_values, n in sorted(values.items()):
                family.add_metric(list(label_values), n)
            yield family
        yield CounterMetricFamily(
            "pixelfleet_source_bytes",
            "Bytes of the source objects submitted to workers.",
            value=totals.get(("bytes", "", ""), 0),
        )
        yield CounterMetricFamily(
            "pixelfleet_retries",
            "Task attempts run again after a transient failure.",
            value=totals.get(("retries", "", ""), 0),
        )
        yield GaugeMetricFamily(
            "pixelfleet_tasks_in_flight",
            "Tasks submitted to workers and not settled yet.",
            value=snap["inflight"],
        )
        buckets, running = [], 0
        for bound, n in zip(
            (*map(str, metrics.DURATION_BUCKETS), "+Inf"), snap["durations"], strict=True
        ):
            running += n
            buckets.append((bound, running))
        yield HistogramMetricFamily(
            "pixelfleet_task_duration_seconds",
            "Wall time of task attempts in workers.",
            buckets=buckets,
            sum_value=snap["duration_sum"],
        )


class _FunctionCollector(Collector):
    """Families made by a function at each scrape (the server's ledger metrics)."""

    def __init__(self, make: Callable[[], Iterable[Any]]):
        self._make = make

    def collect(self) -> Iterator[Any]:
        """The families the function makes now."""
        yield from self._make()


def make_registry(*extra: Callable[[], Iterable[Any]]) -> CollectorRegistry:
    """A registry holding this process's tallies, plus families made at scrape time by
    each of ``extra`` (functions returning metric families)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TallyCollector())
    for make in extra:
        registry.register(_FunctionCollector(make))
    return registry


def render(registry: CollectorRegistry, accept: str = "") -> tuple[bytes, str]:
    """The registry's metrics and their content type: the Prometheus text format
    (:data:`CONTENT_TYPE`), or what the ``accept`` header asks for (OpenMetrics)."""
    encode, content_type = choose_encoder(accept)
    return bytes(encode(registry)), content_type


def serve(port: int, addr: str = "127.0.0.1", registry: CollectorRegistry | None = None) -> Any:
    """Serve ``/metrics`` on ``addr:port`` from a thread until the returned server's
    ``shutdown()`` (``pixelfleet run --metrics-port``)."""
    server, _thread = start_http_server(port, addr=addr, registry=registry or make_registry())
    return server
