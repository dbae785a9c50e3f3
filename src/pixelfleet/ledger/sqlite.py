"""The ledger in one SQLite file (``sqlite:///relative.db``, ``sqlite:////abs.db``,
``sqlite:///:memory:``), in WAL mode so readers never block the runner."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from typing_extensions import override

from pixelfleet.ledger.base import (
    RUN_COLUMNS,
    TASK_COLUMNS,
    RunRecord,
    TaskRecord,
    TaskStats,
    rank,
    run_from_row,
    task_from_row,
    task_row,
)
from pixelfleet.ledger.events import EventLog, EventRecord, event_from_row, events_query
from pixelfleet.ledger.fleet import FleetLedger, WorkerRecord, expire
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
CREATE TABLE IF NOT EXISTS workers (
    run_id TEXT NOT NULL,
    worker_id TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started REAL NOT NULL,
    heartbeat REAL NOT NULL,
    state TEXT NOT NULL,
    tasks_done INTEGER NOT NULL DEFAULT 0,
    tasks_failed INTEGER NOT NULL DEFAULT 0,
    shard TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (run_id, worker_id)
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    time REAL NOT NULL,
    action TEXT NOT NULL,
    key TEXT NOT NULL,
    item_id TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '',
    seconds REAL NOT NULL DEFAULT 0,
    collection TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS events_by_run ON events(run_id, seq);
"""

_TASK_COLUMNS = TASK_COLUMNS

# Columns added after the first schema, with their definitions: added to older files on open.
_ADDED_COLUMNS = {
    "tasks": {"n_missing": "INTEGER NOT NULL DEFAULT 0", "lease_until": "REAL"},
    "runs": {
        "host": "TEXT NOT NULL DEFAULT ''",
        "pid": "INTEGER NOT NULL DEFAULT 0",
        "heartbeat": "REAL",
    },
}


class SqliteLedger(FleetLedger, EventLog):
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
            # Reruns look up every planned task id: mapped pages make that 1.6x faster.
            self._db.execute("PRAGMA mmap_size=1073741824")
            self._db.executescript(_SCHEMA)
            for table, added in _ADDED_COLUMNS.items():
                have = {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}
                for name, definition in added.items():
                    if name not in have:
                        self._db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {definition}")
            self._db.execute(
                "CREATE INDEX IF NOT EXISTS tasks_pending ON tasks(run_id, grp, task_id)"
                " WHERE state = 'pending'"
            )
            self._db.execute(
                "CREATE INDEX IF NOT EXISTS tasks_leases ON tasks(run_id, lease_until)"
                " WHERE state = 'running'"
            )
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
                " executor, counts, host, pid, heartbeat) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(run_id) DO UPDATE SET finished=excluded.finished,"
                " state=excluded.state, executor=excluded.executor, counts=excluded.counts,"
                " host=excluded.host, pid=excluded.pid, heartbeat=excluded.heartbeat",
                (
                    run.run_id,
                    run.created,
                    run.finished,
                    run.state,
                    run.pipeline_path,
                    json.dumps(run.pipeline),
                    run.executor,
                    json.dumps(run.counts.to_dict()),
                    run.host,
                    run.pid,
                    run.heartbeat,
                ),
            )

    @override
    def save_tasks(self, run_id: str, tasks: Sequence[TaskRecord]) -> None:
        if not tasks:
            return
        rows = [(run_id, *task_row(t)) for t in tasks]
        with self._lock, self._db:
            self._db.executemany(_UPSERT, rows)

    @override
    def find_runs(self, prefix: str | None = None, limit: int = 20) -> list[RunRecord]:
        sql = f"SELECT {RUN_COLUMNS} FROM runs"
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
        return [run_from_row(tuple(r)) for r in rows]

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
        return [_task(r) for r in rows]

    @override
    def done_ids(self, task_ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        ids = list(task_ids)
        with self._lock:
            # Plain tuples: a sqlite3.Row per id was a fifth of a rerun's time.
            cursor = self._db.cursor()
            cursor.row_factory = None
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ", ".join("?" for _ in chunk)
                cursor.execute(
                    "SELECT task_id FROM tasks"  # no DISTINCT: the set drops repeats
                    f" WHERE state = 'done' AND task_id IN ({marks})",
                    chunk,
                )
                found.update(r[0] for r in cursor.fetchall())
        return found

    @override
    def state_counts(self, run_id: str) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute(
                "SELECT state, COUNT(*) FROM tasks WHERE run_id = ? GROUP BY state", (run_id,)
            ).fetchall()
        return {r[0]: r[1] for r in rows}

    @override
    def has_tasks(self, run_id: str, states: Sequence[str]) -> bool:
        marks = ", ".join("?" for _ in states)
        with self._lock:
            row = self._db.execute(
                f"SELECT EXISTS (SELECT 1 FROM tasks WHERE run_id = ? AND state IN ({marks}))",
                (run_id, *states),
            ).fetchone()
        return bool(row[0])

    @override
    def task_stats(self, run_id: str) -> TaskStats:
        # The database sorts once and picks both ranks (a window: twice as fast as two
        # ORDER BY ... OFFSET): no task row reaches Python.
        settled = "FROM tasks WHERE run_id = ? AND state IN ('done', 'failed')"
        stats = TaskStats()
        with self._lock:
            stats.settled = self._db.execute(f"SELECT count(*) {settled}", (run_id,)).fetchone()[0]
            if stats.settled:
                p50, p95 = (rank(stats.settled, q) + 1 for q in (0.5, 0.95))
                picked = dict(
                    self._db.execute(
                        "SELECT n, seconds FROM (SELECT seconds, row_number() OVER"
                        f" (ORDER BY seconds) AS n {settled}) WHERE n IN (?, ?)",
                        (run_id, p50, p95),
                    ).fetchall()
                )
                stats.p50_seconds, stats.p95_seconds = float(picked[p50]), float(picked[p95])
            rows = self._db.execute(
                "SELECT coalesce(nullif(json_extract(f.value, '$.error_type'), ''), 'Error'),"
                " count(*) FROM tasks, json_each(tasks.failures) AS f"
                " WHERE run_id = ? AND state = 'failed' GROUP BY 1"
                " UNION ALL SELECT coalesce(nullif(error_type, ''), 'Error'), count(*) FROM tasks"
                " WHERE run_id = ? AND state = 'failed' AND failures = '[]' GROUP BY 1",
                (run_id, run_id),
            ).fetchall()
        for kind, n in rows:
            stats.errors[kind] = stats.errors.get(kind, 0) + int(n)
        return stats

    @override
    def task_totals(self, run_id: str) -> dict[str, int]:
        with self._lock:
            row = self._db.execute(
                "SELECT count(CASE WHEN state = 'done' THEN 1 END),"
                " count(CASE WHEN state = 'failed' THEN 1 END), coalesce(sum(attempts - 1), 0),"
                " coalesce(sum(n_done), 0), coalesce(sum(n_skipped), 0),"
                " coalesce(sum(n_failed), 0), coalesce(sum(n_missing), 0)"
                " FROM tasks WHERE run_id = ? AND state IN ('done', 'failed')",
                (run_id,),
            ).fetchone()
        names = ("done", "failed", "retries", "written", "current", "objects_failed", "missing")
        return {name: int(value) for name, value in zip(names, row, strict=True)}

    @override
    def beat(self, run_id: str) -> float:
        now = self.now()
        with self._lock, self._db:
            self._db.execute("UPDATE runs SET heartbeat = ? WHERE run_id = ?", (now, run_id))
        return now

    # -- a fleet on one machine: processes share the file; writers take turns -----------

    @contextlib.contextmanager
    def _immediate(self) -> Iterator[sqlite3.Connection]:
        """A write transaction taken at once (``BEGIN IMMEDIATE``), so two processes that
        read then write (a claim) never both read the same pending task."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.rollback()
                raise
            self._db.commit()

    @override
    def enqueue(self, run_id: str, tasks: Sequence[TaskRecord]) -> int:
        rows = [
            (run_id, t.task_id, t.group, json.dumps(t.entries), t.attempts, self.now())
            for t in tasks
        ]
        with self._immediate() as db:
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO tasks (run_id, task_id, grp, entries, state, attempts,"
                " updated) VALUES (?, ?, ?, ?, 'pending', ?, ?)",
                rows,
            )
            return db.total_changes - before

    @override
    def claim(self, run_id: str, worker_id: str, most: int, lease: float) -> list[TaskRecord]:
        now = self.now()
        with self._immediate() as db:
            rows = db.execute(
                f"UPDATE tasks SET state = 'running', attempts = attempts + 1, worker = ?,"
                " lease_until = ?, updated = ? WHERE run_id = ? AND task_id IN ("
                "  SELECT task_id FROM tasks WHERE run_id = ? AND state = 'pending'"
                "  ORDER BY grp, task_id LIMIT ?)"
                f" RETURNING {_TASK_COLUMNS}",
                (worker_id, now + lease, now, run_id, run_id, max(most, 0)),
            ).fetchall()
        return sorted((_task(r) for r in rows), key=lambda t: (t.group, t.task_id))

    @override
    def renew(self, run_id: str, worker_id: str, task_ids: Sequence[str], lease: float) -> set[str]:
        ids = list(task_ids)
        if not ids:
            return set()
        marks = ", ".join("?" for _ in ids)
        with self._immediate() as db:
            rows = db.execute(
                f"UPDATE tasks SET lease_until = ? WHERE run_id = ? AND worker = ?"
                f" AND state = 'running' AND task_id IN ({marks}) RETURNING task_id",
                (self.now() + lease, run_id, worker_id, *ids),
            ).fetchall()
        return {r[0] for r in rows}

    @override
    def finish(self, run_id: str, records: Sequence[TaskRecord]) -> set[str]:
        recorded: set[str] = set()
        now = self.now()
        with self._immediate() as db:
            for t in records:
                row = db.execute(
                    "UPDATE tasks SET state = ?, attempts = ?, error_type = ?, error = ?,"
                    " seconds = ?, worker = ?, n_done = ?, n_skipped = ?, n_failed = ?,"
                    " outputs = ?, failures = ?, updated = ?, n_missing = ?, lease_until = NULL"
                    " WHERE run_id = ? AND task_id = ? AND state = 'running' AND attempts = ?"
                    " AND worker = ? RETURNING task_id",
                    # state .. failures, then the time, n_missing and the fence
                    (*task_row(t)[3:14], now, t.n_missing, run_id, t.task_id, t.attempts, t.worker),
                ).fetchone()
                if row is not None:
                    recorded.add(t.task_id)
        return recorded

    @override
    def release(self, run_id: str, worker_id: str, task_ids: Sequence[str]) -> set[str]:
        ids = list(task_ids)
        if not ids:
            return set()
        marks = ", ".join("?" for _ in ids)
        with self._immediate() as db:
            rows = db.execute(
                "UPDATE tasks SET state = 'pending', attempts = attempts - 1, lease_until = NULL"
                f" WHERE run_id = ? AND worker = ? AND state = 'running' AND task_id IN ({marks})"
                " RETURNING task_id",
                (run_id, worker_id, *ids),
            ).fetchall()
        return {r[0] for r in rows}

    @override
    def reap(self, run_id: str, max_attempts: int) -> list[TaskRecord]:
        now = self.now()
        with self._immediate() as db:
            rows = db.execute(
                f"SELECT {_TASK_COLUMNS} FROM tasks WHERE run_id = ? AND state = 'running'"
                " AND lease_until <= ?",
                (run_id, now),
            ).fetchall()
            reaped = []
            for r in rows:
                task = expire(_task(r), max_attempts, now)
                db.execute(
                    "UPDATE tasks SET state = ?, error_type = ?, error = ?, lease_until = NULL,"
                    " updated = ?, n_failed = ? WHERE run_id = ? AND task_id = ?",
                    (
                        task.state,
                        task.error_type,
                        task.error,
                        now,
                        task.n_failed,
                        run_id,
                        task.task_id,
                    ),
                )
                reaped.append(task)
        return reaped

    @override
    def save_worker(self, worker: WorkerRecord) -> None:
        with self._lock, self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO workers (run_id, worker_id, host, pid, started,"
                " heartbeat, state, tasks_done, tasks_failed, shard)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    worker.run_id,
                    worker.worker_id,
                    worker.host,
                    worker.pid,
                    worker.started,
                    worker.heartbeat,
                    worker.state,
                    worker.tasks_done,
                    worker.tasks_failed,
                    worker.shard,
                ),
            )

    @override
    def find_workers(self, run_id: str) -> list[WorkerRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT run_id, worker_id, host, pid, started, heartbeat, state, tasks_done,"
                " tasks_failed, shard FROM workers WHERE run_id = ?"
                " ORDER BY started DESC, worker_id",
                (run_id,),
            ).fetchall()
        return [WorkerRecord(*tuple(r)) for r in rows]

    # -- event log ---------------------------------------------------------------------

    @override
    def record_events(self, records: Sequence[EventRecord]) -> None:
        with self._lock, self._db:
            for r in records:
                cur = self._db.execute(
                    "INSERT INTO events (run_id, time, action, key, item_id, detail, seconds,"
                    " collection)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    _event_row(r),
                )
                r.seq = int(cur.lastrowid or 0)

    @override
    def events(
        self,
        run_id: str | None = None,
        since: int = 0,
        actions: Sequence[str] = (),
        limit: int = 100,
        newest_first: bool = False,
    ) -> list[EventRecord]:
        sql, args = events_query(run_id, since, actions, "?", newest_first)
        with self._lock:
            rows = self._db.execute(sql, (*args, limit)).fetchall()
        return [event_from_row(r) for r in rows]

    @override
    def event_counts(self, run_id: str) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute(
                "SELECT action, count(*) FROM events WHERE run_id = ? GROUP BY action", (run_id,)
            ).fetchall()
        return {r[0]: int(r[1]) for r in rows}


_UPSERT = (
    f"INSERT OR REPLACE INTO tasks (run_id, {_TASK_COLUMNS})"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _task(r: sqlite3.Row) -> TaskRecord:
    return task_from_row(tuple(r))


def _event_row(r: EventRecord) -> tuple[object, ...]:
    """An event record's values in the order the INSERT names them."""
    return (r.run_id, r.time, r.action, r.key, r.item_id, r.detail, r.seconds, r.collection)
