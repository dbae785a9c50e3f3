"""The ledger in one SQLite file (``sqlite:///relative.db``, ``sqlite:////abs.db``,
``sqlite:///:memory:``), in WAL mode so readers never block the runner."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Sequence
from typing import Any

from typing_extensions import override

from pixelfleet.ledger.base import Ledger, RunRecord, TaskRecord
from pixelfleet.models import RunCounts
from pixelfleet.urls import sqlite_path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    finished REAL,
    state TEXT NOT NULL,
    pipeline_path TEXT NOT NULL,
    pipeline TEXT NOT NULL,
    executor TEXT NOT NULL,
    counts TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS tasks (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    task_id TEXT NOT NULL,
    grp TEXT NOT NULL,
    entries TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    error_type TEXT,
    error TEXT,
    seconds REAL NOT NULL DEFAULT 0,
    worker TEXT NOT NULL DEFAULT '',
    n_done INTEGER NOT NULL DEFAULT 0,
    n_skipped INTEGER NOT NULL DEFAULT 0,
    n_failed INTEGER NOT NULL DEFAULT 0,
    outputs TEXT NOT NULL DEFAULT '[]',
    failures TEXT NOT NULL DEFAULT '[]',
    updated REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, task_id)
);
CREATE INDEX IF NOT EXISTS tasks_by_state ON tasks(run_id, state);
CREATE INDEX IF NOT EXISTS tasks_done ON tasks(task_id) WHERE state = 'done';
"""

_TASK_COLUMNS = (
    "task_id, grp, entries, state, attempts, error_type, error, seconds, worker, "
    "n_done, n_skipped, n_failed, outputs, failures, updated, n_missing"
)

# Columns added after the first schema, with their definitions: added to older files on open.
_ADDED_TASK_COLUMNS = {"n_missing": "INTEGER NOT NULL DEFAULT 0"}


class SqliteLedger(Ledger):
    """Runs and tasks in a SQLite database file."""

    def __init__(self, url: str):
        self.url = url
        path = sqlite_path(url)
        if path != ":memory:":
            folder = os.path.dirname(os.path.abspath(path))
            os.makedirs(folder, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, timeout=30.0)
        self._db.row_factory = sqlite3.Row
        with self._lock:
            if path != ":memory:":
                self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            have = {r[1] for r in self._db.execute("PRAGMA table_info(tasks)")}
            for name, definition in _ADDED_TASK_COLUMNS.items():
                if name not in have:
                    self._db.execute(f"ALTER TABLE tasks ADD COLUMN {name} {definition}")
            self._db.commit()

    @override
    def close(self) -> None:
        with self._lock:
            self._db.close()

    @override
    def save_run(self, run: RunRecord) -> None:
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO runs (run_id, created, finished, state, pipeline_path, pipeline,"
                " executor, counts) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(run_id) DO UPDATE SET finished=excluded.finished,"
                " state=excluded.state, executor=excluded.executor, counts=excluded.counts",
                (
                    run.run_id,
                    run.created,
                    run.finished,
                    run.state,
                    run.pipeline_path,
                    json.dumps(run.pipeline),
                    run.executor,
                    json.dumps(run.counts.to_dict()),
                ),
            )

    @override
    def save_tasks(self, run_id: str, tasks: Sequence[TaskRecord]) -> None:
        if not tasks:
            return
        rows = [
            (
                run_id,
                t.task_id,
                t.group,
                json.dumps(t.entries),
                t.state,
                t.attempts,
                t.error_type,
                t.error,
                t.seconds,
                t.worker,
                t.n_done,
                t.n_skipped,
                t.n_failed,
                json.dumps(t.outputs),
                json.dumps(t.failures),
                t.updated,
                t.n_missing,
            )
            for t in tasks
        ]
        with self._lock, self._db:
            self._db.executemany(
                f"INSERT OR REPLACE INTO tasks (run_id, {_TASK_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

    @override
    def find_runs(self, prefix: str | None = None, limit: int = 20) -> list[RunRecord]:
        sql = "SELECT * FROM runs"
        args: list[Any] = []
        if prefix is not None:
            # substr, not LIKE: LIKE ignores case and needs its wildcards escaped.
            sql += " WHERE substr(run_id, 1, length(?1)) = ?1"
            # An exact match sorts first so a full id is never "ambiguous".
            sql += " ORDER BY run_id = ?1 DESC, created DESC LIMIT ?2"
            args += [prefix, limit]
        else:
            sql += " ORDER BY created DESC LIMIT ?"
            args.append(limit)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [
            RunRecord(
                run_id=r["run_id"],
                pipeline_path=r["pipeline_path"],
                pipeline=json.loads(r["pipeline"]),
                executor=r["executor"],
                created=r["created"],
                state=r["state"],
                finished=r["finished"],
                counts=RunCounts.from_dict(json.loads(r["counts"])),
            )
            for r in rows
        ]

    @override
    def find_tasks(
        self, run_id: str, states: Sequence[str] | None = None, limit: int | None = None
    ) -> list[TaskRecord]:
        sql = f"SELECT {_TASK_COLUMNS} FROM tasks WHERE run_id = ?"
        args: list[Any] = [run_id]
        if states is not None:
            sql += f" AND state IN ({', '.join('?' for _ in states)})"
            args += list(states)
        sql += " ORDER BY state = 'failed' DESC, grp, task_id"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [
            TaskRecord(
                task_id=r["task_id"],
                group=r["grp"],
                entries=json.loads(r["entries"]),
                state=r["state"],
                attempts=r["attempts"],
                error_type=r["error_type"],
                error=r["error"],
                seconds=r["seconds"],
                worker=r["worker"],
                n_done=r["n_done"],
                n_skipped=r["n_skipped"],
                n_failed=r["n_failed"],
                outputs=json.loads(r["outputs"]),
                failures=json.loads(r["failures"]),
                updated=r["updated"],
                n_missing=r["n_missing"],
            )
            for r in rows
        ]

    @override
    def done_ids(self, task_ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        ids = list(task_ids)
        with self._lock:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ", ".join("?" for _ in chunk)
                rows = self._db.execute(
                    "SELECT DISTINCT task_id FROM tasks"
                    f" WHERE state = 'done' AND task_id IN ({marks})",
                    chunk,
                ).fetchall()
                found.update(r[0] for r in rows)
        return found

    @override
    def state_counts(self, run_id: str) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute(
                "SELECT state, COUNT(*) FROM tasks WHERE run_id = ? GROUP BY state", (run_id,)
            ).fetchall()
        return {r[0]: r[1] for r in rows}
