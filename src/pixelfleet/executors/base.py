"""The ``Executor`` interface: run worker calls somewhere and hand back their results.

An executor knows nothing about pipelines. It is started with a *context* (a JSON
string every worker needs, here the pipeline) and then receives *jobs* (a task as a
JSON string). For each job it eventually returns exactly one :class:`TaskResult`:
the worker's own, or one it makes itself when the worker died
(:class:`~pixelfleet.errors.WorkerLostError`) or ran too long
(:class:`~pixelfleet.errors.TaskTimeoutError`). Retrying is the runner's business.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

from pixelfleet import metrics
from pixelfleet.models import TaskResult

#: The function every executor calls in its workers, by reference (never pickled): the
#: worker's ``execute``, counted (:func:`execute_counted`).
WORKER_FUNCTION = "pixelfleet.executors.base:execute_counted"
#: The worker's own entry point, JSON text in, JSON text out.
WORKER_EXECUTE = "pixelfleet.worker:execute"
#: What a worker process calls once with the context, before its first job (by reference).
WORKER_PREPARE = "pixelfleet.worker:prepare"


def execute_counted(context: str, task_json: str) -> str:
    """Run a task with the worker's ``execute`` while counting the storage and labeller
    calls made on this thread, and add the counts to the result (``"metrics"``), so the
    driver's metrics include what workers in other processes did."""
    from pixelfleet.registry import load_reference

    execute: Callable[[str, str], str] = load_reference(WORKER_EXECUTE)  # looked up each time
    with metrics.task_tally() as counted:
        text = execute(context, task_json)
    if not counted or not text.endswith("}"):
        return text
    return f'{text[:-1]}, "metrics": {json.dumps(counted)}}}'


@dataclass(frozen=True)
class Job:
    """One task to run: its id and its JSON text.

    ``isolate`` asks the executor to run it with nothing else beside it in the same
    worker process: used for a task whose previous attempt died with its worker, so a
    crashing input cannot take innocent neighbours down with it again.
    """

    task_id: str
    payload: str
    isolate: bool = False


class Executor(ABC):
    """Runs jobs and reports their results as they complete."""

    #: Short name shown in summaries.
    name: str = "executor"

    @abstractmethod
    def start(self, context: str, timeout: float) -> None:
        """Start workers; ``context`` is given to each worker once, ``timeout`` bounds each job."""

    @abstractmethod
    def submit(self, job: Job) -> None:
        """Queue a job. Never blocks for long."""

    @abstractmethod
    def results(self, wait: float) -> list[TaskResult]:
        """Return the results that completed, waiting up to ``wait`` seconds for the first."""

    @abstractmethod
    def close(self) -> None:
        """Stop the workers and release every resource. Safe to call twice."""

    def capacity(self) -> int:
        """How many jobs the runner should keep queued so no worker waits for work."""
        return 2

    def describe(self) -> str:
        """One line for the run summary, e.g. ``local: 2 processes x 4 threads``."""
        return self.name

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
