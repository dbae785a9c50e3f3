"""The in-memory ledger (``memory://``): the reference behaviour every ledger must match.

``memory://name`` ledgers with the same name share their records within one process
(as ``memory://name`` storages share objects), so a reader opened after a run sees
it; ``memory://`` alone is a fresh ledger of its own. Nothing outlives the process.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from typing_extensions import override

from pixelfleet.errors import ConfigError
from pixelfleet.ledger.base import Ledger, RunRecord, TaskRecord


@dataclass
class _Book:
    """What one memory ledger holds, and the lock that guards it."""

    runs: dict[str, RunRecord] = field(default_factory=dict)
    #: run id -> task id -> task
    tasks: dict[str, dict[str, TaskRecord]] = field(default_factory=dict)
    #: task id -> runs that hold it as done: the index ``done_ids`` answers from.
    done: dict[str, set[str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


_BOOKS: dict[str, _Book] = {}
_BOOKS_LOCK = threading.Lock()


def memory_name(url: str) -> str:
    """The name in ``memory://name`` (empty for ``memory://`` or ``memory``)."""
    scheme, sep, rest = url.partition("://")
    if scheme.lower() != "memory" or (not sep and url.lower() != "memory"):
        raise ConfigError(f"ledger URL {url!r} is not a memory URL; use memory:// or memory://name")
    return rest.strip("/")


class MemoryLedger(Ledger):
    """Runs and tasks in dicts of this process."""

    def __init__(self, url: str = "memory://"):
        self.url = url
        name = memory_name(url)
        if name:
            with _BOOKS_LOCK:
                self._book = _BOOKS.setdefault(name, _Book())
        else:
            self._book = _Book()

    @override
    def save_run(self, run: RunRecord) -> None:
        book = self._book
        with book.lock:
            old = book.runs.get(run.run_id)
            new = copy.deepcopy(run)
            if old is not None:
                new.created, new.pipeline_path = old.created, old.pipeline_path
                new.pipeline = old.pipeline
            book.runs[run.run_id] = new

    @override
    def save_tasks(self, run_id: str, tasks: Sequence[TaskRecord]) -> None:
        book = self._book
        copies = copy.deepcopy(list(tasks))
        with book.lock:
            held = book.tasks.setdefault(run_id, {})
            for task in copies:
                held[task.task_id] = task
                runs = book.done.setdefault(task.task_id, set())
                if task.state == "done":
                    runs.add(run_id)
                else:
                    runs.discard(run_id)
                    if not runs:
                        del book.done[task.task_id]

    @override
    def find_runs(self, prefix: str | None = None, limit: int = 20) -> list[RunRecord]:
        with self._book.lock:
            runs = [
                r for r in self._book.runs.values() if prefix is None or r.run_id.startswith(prefix)
            ]
            runs.sort(key=lambda r: (r.run_id != prefix, -r.created))
            return copy.deepcopy(runs[: max(limit, 0)])

    @override
    def find_tasks(
        self, run_id: str, states: Sequence[str] | None = None, limit: int | None = None
    ) -> list[TaskRecord]:
        wanted = None if states is None else set(states)
        with self._book.lock:
            tasks = [
                t
                for t in self._book.tasks.get(run_id, {}).values()
                if wanted is None or t.state in wanted
            ]
            tasks.sort(key=lambda t: (t.state != "failed", t.group, t.task_id))
            return copy.deepcopy(tasks if limit is None else tasks[: max(limit, 0)])

    @override
    def done_ids(self, task_ids: Sequence[str]) -> set[str]:
        with self._book.lock:
            return {i for i in task_ids if i in self._book.done}

    @staticmethod
    def clear(name: str | None = None) -> None:
        """Forget every record of one named memory ledger, or of all of them."""
        with _BOOKS_LOCK:
            if name is None:
                _BOOKS.clear()
            else:
                _BOOKS.pop(name, None)
