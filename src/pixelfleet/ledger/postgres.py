"""The ledger in PostgreSQL (``postgresql://user@host:port/database``): one run shared by
workers on many machines.

Tables live in their own schema (``pixelfleet`` unless the URL says ``?schema=name``),
created and migrated on open under an advisory lock, with the schema's version in
``schema_version``. Tasks are claimed with ``FOR UPDATE SKIP LOCKED`` in short
transactions, so workers never wait on each other's claims; leases and heartbeats use the
database server's clock.

A dropped connection (a restarted server, a network blip) is retried with backoff for
up to ``retry`` seconds (``?retry=60`` by default) before :class:`LedgerUnavailableError`
is raised; every statement is safe to send again (a claim whose answer was lost only
leaves a lease that runs out and is reaped).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from typing_extensions import override

from pixelfleet.errors import ConfigError, LedgerUnavailableError
from pixelfleet.ledger.base import (
    RUN_COLUMNS,
    TASK_COLUMNS,
    RunRecord,
    TaskRecord,
    TaskStats,
    run_from_row,
    task_from_row,
    task_row,
)
from pixelfleet.ledger.events import EventLog, EventRecord, event_from_row, events_query
from pixelfleet.ledger.fleet import FleetLedger, WorkerRecord, expire

T = TypeVar("T")

#: The schema's versions, in order: each script moves the tables from the one before.
MIGRATIONS: list[str] = [
    # 1: runs, tasks, workers
    """
    CREATE TABLE IF NOT EXISTS runs (
        run_id TEXT PRIMARY KEY,
        created DOUBLE PRECISION NOT NULL,
        finished DOUBLE PRECISION,
        state TEXT NOT NULL,
        pipeline_path TEXT NOT NULL,
        pipeline TEXT NOT NULL,
        executor TEXT NOT NULL,
        counts TEXT NOT NULL DEFAULT '{}',
        host TEXT NOT NULL DEFAULT '',
        pid INTEGER NOT NULL DEFAULT 0,
        heartbeat DOUBLE PRECISION
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
        seconds DOUBLE PRECISION NOT NULL DEFAULT 0,
        worker TEXT NOT NULL DEFAULT '',
        n_done INTEGER NOT NULL DEFAULT 0,
        n_skipped INTEGER NOT NULL DEFAULT 0,
        n_failed INTEGER NOT NULL DEFAULT 0,
        outputs TEXT NOT NULL DEFAULT '[]',
        failures TEXT NOT NULL DEFAULT '[]',
        updated DOUBLE PRECISION NOT NULL DEFAULT 0,
        n_missing INTEGER NOT NULL DEFAULT 0,
        lease_until DOUBLE PRECISION,
        PRIMARY KEY (run_id, task_id)
    );
    CREATE INDEX IF NOT EXISTS tasks_by_state ON tasks (run_id, state);
    CREATE INDEX IF NOT EXISTS tasks_done ON tasks (task_id) WHERE state = 'done';
    CREATE INDEX IF NOT EXISTS tasks_pending
        ON tasks (run_id, grp COLLATE "C", task_id COLLATE "C") WHERE state = 'pending';
    CREATE TABLE IF NOT EXISTS workers (
        run_id TEXT NOT NULL,
        worker_id TEXT NOT NULL,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        started DOUBLE PRECISION NOT NULL,
        heartbeat DOUBLE PRECISION NOT NULL,
        state TEXT NOT NULL,
        tasks_done INTEGER NOT NULL DEFAULT 0,
        tasks_failed INTEGER NOT NULL DEFAULT 0,
        shard TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (run_id, worker_id)
    );
    """,
    # 2: the fleet-wide rate limits of labellers (see pixelfleet.labelers.limits)
    """
    CREATE TABLE IF NOT EXISTS limit_state (
        grp TEXT PRIMARY KEY,
        pause_until DOUBLE PRECISION NOT NULL DEFAULT 0,
        failures INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE IF NOT EXISTS limit_starts (
        grp TEXT NOT NULL,
        started DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX IF NOT EXISTS limit_starts_by_group ON limit_starts (grp, started);
    """,
    # 3: reaping reads only the leases that ran out, however many workers hold tasks
    """
    CREATE INDEX IF NOT EXISTS tasks_leases ON tasks (run_id, lease_until)
        WHERE state = 'running';
    """,
    # 4: with an index on (run_id, state) the planner, misled by a run's stale statistics,
    # sorted every pending task of the run on each claim; claims now always walk the
    # pending index in order, and the other look-ups use the primary key or their own.
    """
    DROP INDEX IF EXISTS tasks_by_state;
    """,
    # 5: the log of bucket events (see pixelfleet.ledger.events)
    """
    CREATE TABLE IF NOT EXISTS events (
        seq BIGSERIAL PRIMARY KEY,
        run_id TEXT NOT NULL,
        time DOUBLE PRECISION NOT NULL,
        action TEXT NOT NULL,
        key TEXT NOT NULL,
        item_id TEXT NOT NULL DEFAULT '',
        detail TEXT NOT NULL DEFAULT '',
        seconds DOUBLE PRECISION NOT NULL DEFAULT 0,
        collection TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX IF NOT EXISTS events_by_run ON events (run_id, seq);
    """,
]

#: The database server's clock, in epoch seconds.
NOW = "extract(epoch from clock_timestamp())::double precision"

_TASK_COLUMNS = TASK_COLUMNS
_RUN_COLUMNS = RUN_COLUMNS
_WORKER_COLUMNS = (
    "run_id, worker_id, host, pid, started, heartbeat, state, tasks_done, tasks_failed, shard"
)
_ORDER = 'state = \'failed\' DESC, grp COLLATE "C", task_id COLLATE "C"'


def split_url(url: str) -> tuple[str, str, float]:
    """``(connection URL, schema, retry seconds)`` from a ledger URL; our own query
    parameters (``schema``, ``retry``) are taken out, libpq's are kept."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConfigError(f"ledger URL {url!r} is not a postgresql:// URL")
    query = parse_qsl(parts.query, keep_blank_values=True)
    ours = {k: v for k, v in query if k in ("schema", "retry")}
    rest = [(k, v) for k, v in query if k not in ("schema", "retry")]
    schema = ours.get("schema", "pixelfleet")
    if not schema.replace("_", "").isalnum() or not schema[0].isalpha():
        raise ConfigError(
            f"schema {schema!r} in ledger URL {url!r} is not a plain name;"
            " use letters, digits and _ (e.g. ?schema=pixelfleet)"
        )
    try:
        retry = float(ours.get("retry", "60"))
    except ValueError:
        raise ConfigError(
            f"retry={ours['retry']!r} in ledger URL {url!r} is not a number of seconds"
        ) from None
    conninfo = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(rest), ""))
    return conninfo, schema, retry


class PostgresLedger(FleetLedger, EventLog):
    """Runs, tasks and workers in PostgreSQL; safe to share between many processes."""

    def __init__(self, url: str):
        self.url = url
        self._conninfo, self.schema, self.retry_seconds = split_url(url)
        self._lock = threading.RLock()
        self._conn: Any = None
        self._analyzed = -1e9
        self._run(self._migrate)

    # -- connection --------------------------------------------------------------------

    def _connect(self) -> Any:
        if self._conn is None or self._conn.closed:
            conn = psycopg.connect(
                self._conninfo, autocommit=True, connect_timeout=10, application_name="pixelfleet"
            )
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self.schema}")
            conn.execute(f"SET search_path TO {self.schema}, public")
            self._conn = conn
        return self._conn

    def _run(self, work: Callable[[Any], T]) -> T:
        """Run ``work(connection)``, reconnecting and trying again with backoff while the
        database cannot be reached (for up to ``retry_seconds``)."""
        rollback = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)
        retryable = (psycopg.OperationalError, psycopg.InterfaceError, *rollback)
        deadline = time.monotonic() + self.retry_seconds
        pause = 0.1
        with self._lock:
            while True:
                try:
                    return work(self._connect())
                except retryable as exc:
                    if self._conn is not None and not isinstance(exc, rollback):
                        try:
                            self._conn.close()
                        finally:
                            self._conn = None
                    if time.monotonic() + pause > deadline:
                        raise LedgerUnavailableError(
                            f"the PostgreSQL ledger {_safe(self.url)} did not answer for "
                            f"{self.retry_seconds:g} s: {' '.join(str(exc).split())}; check the "
                            "server, or give a longer ?retry=SECONDS in the ledger URL"
                        ) from exc
                    time.sleep(pause * (0.5 + random.random()))
                    pause = min(pause * 2, 5.0)

    def _migrate(self, conn: Any) -> None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"pf:{self.schema}",))
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
            have = row[0] or 0
            if have > len(MIGRATIONS):
                raise ConfigError(
                    f"the ledger {_safe(self.url)} has schema version {have}, newer than this "
                    f"pixelfleet knows ({len(MIGRATIONS)}); upgrade pixelfleet"
                )
            for version in range(have + 1, len(MIGRATIONS) + 1):
                conn.execute(MIGRATIONS[version - 1])
                conn.execute("INSERT INTO schema_version VALUES (%s)", (version,))

    @override
    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    @override
    def now(self) -> float:
        return float(self._run(lambda c: c.execute(f"SELECT {NOW}").fetchone()[0]))

    # -- runs and tasks ----------------------------------------------------------------

    @override
    def save_run(self, run: RunRecord) -> None:
        args = (
            run.run_id,
            run.pipeline_path,
            json.dumps(run.pipeline),
            run.executor,
            run.created,
            run.state,
            run.finished,
            json.dumps(run.counts.to_dict()),
            run.host,
            run.pid,
            run.heartbeat,
        )
        self._run(
            lambda c: c.execute(
                f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES"
                " (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (run_id) DO UPDATE SET finished = excluded.finished,"
                " state = excluded.state, executor = excluded.executor,"
                " counts = excluded.counts, host = excluded.host, pid = excluded.pid,"
                " heartbeat = excluded.heartbeat",
                args,
            )
        )

    @override
    def save_tasks(self, run_id: str, tasks: Sequence[TaskRecord]) -> None:
        if not tasks:
            return
        rows = [(run_id, *task_row(t)) for t in tasks]
        sets = ", ".join(f"{c} = excluded.{c}" for c in _TASK_COLUMNS.split(", ")[1:])

        def save(conn: Any) -> None:
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(
                    f"INSERT INTO tasks (run_id, {_TASK_COLUMNS}) VALUES ("
                    + ", ".join(["%s"] * 18)
                    + f") ON CONFLICT (run_id, task_id) DO UPDATE SET {sets}",
                    rows,
                )

        self._run(save)

    @override
    def find_runs(self, prefix: str | None = None, limit: int = 20) -> list[RunRecord]:
        if prefix is None:
            sql = f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY created DESC LIMIT %s"
            args: tuple[Any, ...] = (max(limit, 0),)
        else:
            sql = (
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE left(run_id, length(%s)) = %s"
                " ORDER BY run_id = %s DESC, created DESC LIMIT %s"
            )
            args = (prefix, prefix, prefix, max(limit, 0))
        rows = self._run(lambda c: c.execute(sql, args).fetchall())
        return [run_from_row(r) for r in rows]

    @override
    def find_tasks(
        self, run_id: str, states: Sequence[str] | None = None, limit: int | None = None
    ) -> list[TaskRecord]:
        sql = f"SELECT {_TASK_COLUMNS} FROM tasks WHERE run_id = %s"
        args: list[Any] = [run_id]
        if states is not None:
            sql += " AND state = ANY(%s)"
            args.append(list(states))
        sql += f" ORDER BY {_ORDER}"
        if limit is not None:
            sql += " LIMIT %s"
            args.append(max(limit, 0))
        rows = self._run(lambda c: c.execute(sql, args).fetchall())
        return [task_from_row(r) for r in rows]

    @override
    def done_ids(self, task_ids: Sequence[str]) -> set[str]:
        ids = list(task_ids)
        if not ids:
            return set()
        rows = self._run(
            lambda c: c.execute(
                "SELECT DISTINCT task_id FROM tasks WHERE state = 'done' AND task_id = ANY(%s)",
                (ids,),
            ).fetchall()
        )
        return {r[0] for r in rows}

    @override
    def state_counts(self, run_id: str) -> dict[str, int]:
        rows = self._run(
            lambda c: c.execute(
                "SELECT state, count(*) FROM tasks WHERE run_id = %s GROUP BY state", (run_id,)
            ).fetchall()
        )
        return {r[0]: int(r[1]) for r in rows}

    @override
    def has_tasks(self, run_id: str, states: Sequence[str]) -> bool:
        # One EXISTS per state, so pending and running are each answered by their own
        # partial index, however many settled tasks the run has.
        parts = " OR ".join(
            "EXISTS (SELECT 1 FROM tasks WHERE run_id = %s AND state = %s)" for _ in states
        )
        args = [a for state in states for a in (run_id, state)]
        row = self._run(lambda c: c.execute(f"SELECT {parts or 'false'}", args).fetchone())
        return bool(row[0])

    @override
    def task_stats(self, run_id: str) -> TaskStats:
        def query(c: Any) -> tuple[Any, list[Any]]:
            # percentile_disc is the nearest rank, as the other ledgers compute it.
            row = c.execute(
                "SELECT count(*), percentile_disc(ARRAY[0.5, 0.95]) WITHIN GROUP"
                " (ORDER BY seconds) FROM tasks"
                " WHERE run_id = %s AND state IN ('done', 'failed')",
                (run_id,),
            ).fetchone()
            kinds = c.execute(
                "SELECT coalesce(nullif(f ->> 'error_type', ''), 'Error'), count(*)"
                " FROM tasks, json_array_elements(failures::json) AS f"
                " WHERE run_id = %s AND state = 'failed' GROUP BY 1"
                " UNION ALL SELECT coalesce(nullif(error_type, ''), 'Error'), count(*)"
                " FROM tasks WHERE run_id = %s AND state = 'failed' AND failures = '[]'"
                " GROUP BY 1",
                (run_id, run_id),
            ).fetchall()
            return row, kinds

        row, kinds = self._run(query)
        stats = TaskStats(settled=int(row[0]))
        if stats.settled and row[1]:
            stats.p50_seconds, stats.p95_seconds = (float(v) for v in row[1])
        for kind, n in kinds:
            stats.errors[kind] = stats.errors.get(kind, 0) + int(n)
        return stats

    @override
    def task_totals(self, run_id: str) -> dict[str, int]:
        row = self._run(
            lambda c: c.execute(
                "SELECT count(*) FILTER (WHERE state = 'done'),"
                " count(*) FILTER (WHERE state = 'failed'), coalesce(sum(attempts - 1), 0),"
                " coalesce(sum(n_done), 0), coalesce(sum(n_skipped), 0),"
                " coalesce(sum(n_failed), 0), coalesce(sum(n_missing), 0)"
                " FROM tasks WHERE run_id = %s AND state IN ('done', 'failed')",
                (run_id,),
            ).fetchone()
        )
        names = ("done", "failed", "retries", "written", "current", "objects_failed", "missing")
        return {name: int(value) for name, value in zip(names, row, strict=True)}

    @override
    def beat(self, run_id: str) -> float:
        row = self._run(
            lambda c: c.execute(
                f"UPDATE runs SET heartbeat = {NOW} WHERE run_id = %s RETURNING heartbeat",
                (run_id,),
            ).fetchone()
        )
        return float(row[0]) if row else self.now()

    # -- a fleet ------------------------------------------------------------------------

    @override
    def enqueue(self, run_id: str, tasks: Sequence[TaskRecord]) -> int:
        if not tasks:
            return 0

        def add(conn: Any) -> int:
            with conn.transaction(), conn.cursor() as cur:
                cur.execute(
                    "CREATE TEMP TABLE IF NOT EXISTS incoming (task_id TEXT, grp TEXT,"
                    " entries TEXT, attempts INTEGER) ON COMMIT DELETE ROWS"
                )
                with cur.copy("COPY incoming FROM STDIN") as copy:
                    for t in tasks:
                        copy.write_row((t.task_id, t.group, json.dumps(t.entries), t.attempts))
                cur.execute(
                    "INSERT INTO tasks (run_id, task_id, grp, entries, state, attempts, updated)"
                    f" SELECT %s, task_id, grp, entries, 'pending', attempts, {NOW}"
                    " FROM incoming ON CONFLICT (run_id, task_id) DO NOTHING",
                    (run_id,),
                )
                return int(cur.rowcount)

        added = self._run(add)
        # Without fresh statistics the planner takes a new table's thousands of pending
        # tasks for one and sorts them all on every claim (45 ms instead of 0.3 ms at
        # 32,000 tasks): analyze after a large enqueue, at most once a minute.
        if added >= 500 and time.monotonic() - self._analyzed > 60:
            self._run(lambda c: c.execute("ANALYZE tasks"))
            self._analyzed = time.monotonic()
        return added

    @override
    def claim(self, run_id: str, worker_id: str, most: int, lease: float) -> list[TaskRecord]:
        if most <= 0:
            return []
        rows = self._run(
            lambda c: c.execute(
                # The rows are updated by their ctid (a TID scan): a join on task_id lets the
                # planner walk every task of the run for each claim.
                "WITH picked AS (SELECT ctid FROM tasks WHERE run_id = %s AND state = 'pending'"
                ' ORDER BY grp COLLATE "C", task_id COLLATE "C" LIMIT %s FOR UPDATE SKIP LOCKED)'
                " UPDATE tasks t SET state = 'running', attempts = t.attempts + 1, worker = %s,"
                f" lease_until = {NOW} + %s, updated = {NOW}"
                " WHERE t.ctid = ANY(ARRAY(SELECT ctid FROM picked))"
                f" RETURNING {', '.join('t.' + c for c in _TASK_COLUMNS.split(', '))}",
                (run_id, most, worker_id, lease),
            ).fetchall()
        )
        return sorted((task_from_row(r) for r in rows), key=lambda t: (t.group, t.task_id))

    @override
    def renew(self, run_id: str, worker_id: str, task_ids: Sequence[str], lease: float) -> set[str]:
        ids = list(task_ids)
        if not ids:
            return set()
        rows = self._run(
            lambda c: c.execute(
                f"UPDATE tasks SET lease_until = {NOW} + %s WHERE run_id = %s AND worker = %s"
                " AND state = 'running' AND task_id = ANY(%s) RETURNING task_id",
                (lease, run_id, worker_id, ids),
            ).fetchall()
        )
        return {r[0] for r in rows}

    @override
    def finish(self, run_id: str, records: Sequence[TaskRecord]) -> set[str]:
        if not records:
            return set()
        data = json.dumps(
            [
                {
                    "task_id": t.task_id,
                    "state": t.state,
                    "attempts": t.attempts,
                    "error_type": t.error_type,
                    "error": t.error,
                    "seconds": t.seconds,
                    "worker": t.worker,
                    "n_done": t.n_done,
                    "n_skipped": t.n_skipped,
                    "n_failed": t.n_failed,
                    "outputs": json.dumps(t.outputs),
                    "failures": json.dumps(t.failures),
                    "n_missing": t.n_missing,
                }
                for t in records
            ]
        )
        rows = self._run(
            lambda c: c.execute(
                "UPDATE tasks t SET state = v.state, error_type = v.error_type, error = v.error,"
                " seconds = v.seconds, n_done = v.n_done, n_skipped = v.n_skipped,"
                " n_failed = v.n_failed, outputs = v.outputs, failures = v.failures,"
                f" n_missing = v.n_missing, lease_until = NULL, updated = {NOW}"
                " FROM jsonb_to_recordset(%s::jsonb) AS v(task_id TEXT, state TEXT,"
                " attempts INTEGER, error_type TEXT, error TEXT, seconds DOUBLE PRECISION,"
                " worker TEXT, n_done INTEGER, n_skipped INTEGER, n_failed INTEGER,"
                " outputs TEXT, failures TEXT, n_missing INTEGER)"
                " WHERE t.run_id = %s AND t.task_id = ANY(%s) AND t.task_id = v.task_id"
                " AND t.state = 'running' AND t.attempts = v.attempts AND t.worker = v.worker"
                " RETURNING t.task_id",
                (data, run_id, [t.task_id for t in records]),
            ).fetchall()
        )
        return {r[0] for r in rows}

    @override
    def release(self, run_id: str, worker_id: str, task_ids: Sequence[str]) -> set[str]:
        ids = list(task_ids)
        if not ids:
            return set()
        rows = self._run(
            lambda c: c.execute(
                "UPDATE tasks SET state = 'pending', attempts = attempts - 1, lease_until = NULL"
                " WHERE run_id = %s AND worker = %s AND state = 'running' AND task_id = ANY(%s)"
                " RETURNING task_id",
                (run_id, worker_id, ids),
            ).fetchall()
        )
        return {r[0] for r in rows}

    @override
    def reap(self, run_id: str, max_attempts: int) -> list[TaskRecord]:
        def reap(conn: Any) -> list[TaskRecord]:
            with conn.transaction():
                rows = conn.execute(
                    f"SELECT {_TASK_COLUMNS}, {NOW} FROM tasks WHERE run_id = %s"
                    f" AND state = 'running' AND lease_until <= {NOW} FOR UPDATE SKIP LOCKED",
                    (run_id,),
                ).fetchall()
                reaped = []
                for r in rows:
                    task = expire(task_from_row(r), max_attempts, r[-1])
                    conn.execute(
                        "UPDATE tasks SET state = %s, error_type = %s, error = %s,"
                        " lease_until = NULL, updated = %s, n_failed = %s"
                        " WHERE run_id = %s AND task_id = %s",
                        (
                            task.state,
                            task.error_type,
                            task.error,
                            task.updated,
                            task.n_failed,
                            run_id,
                            task.task_id,
                        ),
                    )
                    reaped.append(task)
                return reaped

        return self._run(reap)

    @override
    def save_worker(self, worker: WorkerRecord) -> None:
        args = (
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
        )
        sets = ", ".join(f"{c} = excluded.{c}" for c in _WORKER_COLUMNS.split(", ")[2:])
        self._run(
            lambda c: c.execute(
                f"INSERT INTO workers ({_WORKER_COLUMNS}) VALUES"
                " (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                f" ON CONFLICT (run_id, worker_id) DO UPDATE SET {sets}",
                args,
            )
        )

    @override
    def find_workers(self, run_id: str) -> list[WorkerRecord]:
        rows = self._run(
            lambda c: c.execute(
                f"SELECT {_WORKER_COLUMNS} FROM workers WHERE run_id = %s"
                ' ORDER BY started DESC, worker_id COLLATE "C"',
                (run_id,),
            ).fetchall()
        )
        return [WorkerRecord(*r) for r in rows]

    # -- event log ---------------------------------------------------------------------

    @override
    def record_events(self, records: Sequence[EventRecord]) -> None:
        if not records:
            return

        def add(conn: Any) -> list[int]:
            with conn.transaction(), conn.cursor() as cur:
                seqs = []
                for r in records:
                    cur.execute(
                        "INSERT INTO events (run_id, time, action, key, item_id, detail, seconds,"
                        " collection)"
                        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING seq",
                        _event_row(r),
                    )
                    seqs.append(int(cur.fetchone()[0]))
                return seqs

        for record, seq in zip(records, self._run(add), strict=True):
            record.seq = seq

    @override
    def events(
        self,
        run_id: str | None = None,
        since: int = 0,
        actions: Sequence[str] = (),
        limit: int = 100,
        newest_first: bool = False,
    ) -> list[EventRecord]:
        sql, args = events_query(run_id, since, actions, "%s", newest_first)
        rows = self._run(lambda c: c.execute(sql, (*args, limit)).fetchall())
        return [event_from_row(r) for r in rows]

    @override
    def event_counts(self, run_id: str) -> dict[str, int]:
        rows = self._run(
            lambda c: c.execute(
                "SELECT action, count(*) FROM events WHERE run_id = %s GROUP BY action", (run_id,)
            ).fetchall()
        )
        return {r[0]: int(r[1]) for r in rows}

    def execute(self, work: Callable[[Any], T]) -> T:
        """Run ``work(connection)`` with this ledger's reconnecting retries (for the
        fleet-wide rate limits, which keep their state in the ledger's database)."""
        return self._run(work)


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password:
        host = parts.netloc.rsplit("@", 1)[-1]
        user = parts.username or ""
        return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, ""))
    return url


def _event_row(r: EventRecord) -> tuple[object, ...]:
    """An event record's values in the order the INSERT names them."""
    return (r.run_id, r.time, r.action, r.key, r.item_id, r.detail, r.seconds, r.collection)
