"""Run every job in the calling thread: slow, but a debugger and tracebacks work."""

from __future__ import annotations

import json
from collections import deque

from typing_extensions import override

from pixelfleet.executors.base import WORKER_FUNCTION, Executor, Job
from pixelfleet.models import TaskResult
from pixelfleet.registry import load_reference


class InlineExecutor(Executor):
    """Jobs run one by one, in this process, when results are asked for."""

    name = "inline"

    def __init__(self, address: str = "", workers: int | None = None, threads: int = 1):
        self._queue: deque[Job] = deque()
        self._context = ""
        self._execute = load_reference(WORKER_FUNCTION)

    @override
    def start(self, context: str, timeout: float) -> None:
        self._context = context

    @override
    def submit(self, job: Job) -> None:
        self._queue.append(job)

    @override
    def results(self, wait: float) -> list[TaskResult]:
        if not self._queue:
            return []
        job = self._queue.popleft()
        try:
            text = self._execute(self._context, job.payload)
        except Exception as exc:  # noqa: BLE001 - as other executors do: the job fails, not the run
            return [TaskResult.crashed(job.task_id, exc)]
        return [TaskResult.from_dict(json.loads(text))]

    @override
    def close(self) -> None:
        self._queue.clear()

    @override
    def capacity(self) -> int:
        return 1

    @override
    def describe(self) -> str:
        return "inline: 1 thread in this process"
