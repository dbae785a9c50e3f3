"""The driver of a fleet run: plan into the shared ledger, start workers, follow the ledger.

``pixelfleet run PIPELINE --executor aws-batch --ledger postgresql://...`` comes here. The
plan is the same as for a local run (the same source, partition, ``--shard`` and
``--only``; tasks some earlier run finished are skipped), but instead of running the
tasks the driver writes them to the ledger as ``pending``, asks a launcher to start
workers (:mod:`pixelfleet.executors.launchers`), and then follows progress from the ledger
alone: it renews its own heartbeat, reaps leases of dead workers, and ends the run when
every task is done or failed -- or when every worker is gone with tasks left (then the
run is ``interrupted`` and ``pixelfleet worker --run RUN`` resumes it).
"""

from __future__ import annotations

import itertools
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from pixelfleet.errors import ConfigError
from pixelfleet.executors.launchers import Launcher, LaunchRequest
from pixelfleet.ledger import FleetLedger, Ledger, RunRecord, TaskRecord
from pixelfleet.ledger.base import HEARTBEAT_SECONDS, STALE_SECONDS
from pixelfleet.models import RunCounts, Task
from pixelfleet.pipeline import Pipeline
from pixelfleet.plan import skip_reason
from pixelfleet.runner import Runner, RunSummary, progress_bar, skipped_record
from pixelfleet.urls import scheme_of, sqlite_path

#: Tasks written to the ledger per transaction while planning.
ENQUEUE_CHUNK = 5000


def fleet_ledger(ledger: Ledger, url: str, executor: str) -> FleetLedger:
    """The ledger as a fleet's, or a clear refusal when workers could not share it."""
    scheme = url.split(":", 1)[0].lower()
    if not isinstance(ledger, FleetLedger) or scheme == "memory":
        raise ConfigError(
            f"executor {executor!r} needs a ledger its workers can share, not {url!r};"
            " use --ledger postgresql://user@host/database"
        )
    if scheme == "sqlite" and executor != "fleet-local":
        raise ConfigError(
            f"executor {executor!r} runs workers on other machines, which cannot share the"
            f" SQLite file {url!r}; use --ledger postgresql://user@host/database"
            " (a SQLite ledger serves only --executor fleet-local)"
        )
    return ledger


def shareable_url(url: str) -> str:
    """The ledger URL as workers started elsewhere must be given it (absolute paths)."""
    if url.split(":", 1)[0].lower() == "sqlite":
        path = sqlite_path(url)
        if path != ":memory:":
            return "sqlite:///" + os.path.abspath(path)
    return url


class FleetDriver:
    """Plans a run into a shared ledger, starts its workers and follows it to the end."""

    def __init__(
        self,
        pipeline: Pipeline,
        ledger: Ledger,
        ledger_url: str,
        launcher: Launcher,
        executor: str,
        workers: int | None = None,
        progress: bool | None = None,
        shard: tuple[int, int] | None = None,
        only: Iterable[str] = (),
        follow: bool = True,
        poll: float = 0.5,
        log: Callable[[str], None] | None = None,
    ):
        self.pipeline = pipeline
        self.ledger = fleet_ledger(ledger, ledger_url, executor)
        self.ledger_url = shareable_url(ledger_url)
        self.launcher = launcher
        self.workers = workers
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.follow = follow
        self.poll = poll
        self.log = log or (lambda line: None)
        for section, url in (("source", pipeline.source.url), ("output", pipeline.output.url)):
            if scheme_of(url) == "memory":
                raise ConfigError(
                    f"{section}.url {url!r} is memory:// storage, which lives inside one"
                    f" process; executor {executor!r} runs workers in other processes."
                    " Use a file:// or s3:// URL."
                )
        # The local runner's planning, unchanged: same source, partitions, shard, --only.
        self.runner = Runner(pipeline, ledger, executor="inline", shard=shard, only=tuple(only))

    def run(self) -> RunSummary:
        """Plan, launch, follow; returns the summary (state ``running`` if not following)."""
        started = time.monotonic()
        record = self.runner.new_record(self.launcher.name)
        early = self.launcher.starts_before_plan
        if early:  # workers start (import, connect) while the plan is written
            record.state = "planning"
        self.ledger.save_run(record)
        if early:
            self._launch(record, 0)
        counts = self._enqueue(record.run_id, self.runner.planned_tasks())
        record.counts = counts
        if early:
            record.state = "running"  # workers that find no task now may end
            self.ledger.save_run(record)
        todo = counts.tasks_planned - counts.tasks_skipped
        if early and not todo:
            self.launcher.wait(timeout=10.0)
        if todo:
            if not early:
                self._launch(record, todo)
            if not self.follow:
                ledger = shlex.quote(self.ledger_url)
                self.log(f"follow it with: pixelfleet status {record.run_id} --ledger {ledger}")
                return self._summary(record, started)
            try:
                self._follow(record, todo)
            except KeyboardInterrupt:
                self.launcher.stop()
                self._finish(record, "interrupted" if not self._alive(record) else "running")
                raise
            self.launcher.wait(timeout=10.0)  # workers started here end with the run
        self._finish(record, final_state(self.ledger.state_counts(record.run_id)))
        return self._summary(record, started)

    def _launch(self, record: RunRecord, todo: int) -> None:
        request = LaunchRequest(
            run_id=record.run_id,
            ledger_url=self.ledger_url,
            tasks=todo,
            workers=self.workers,
            settings=self.pipeline.run.batch.model_dump(mode="json"),
            environment=worker_environment(self.ledger_url),
        )
        for line in self.launcher.launch(request):
            self.log(line)
        record.executor = self.launcher.describe()
        self.ledger.save_run(record)

    def _enqueue(self, run_id: str, tasks: Iterator[Task]) -> RunCounts:
        counts = RunCounts()
        bar = progress_bar(self.progress)
        last_beat = time.monotonic()
        try:
            while chunk := list(itertools.islice(tasks, ENQUEUE_CHUNK)):
                if time.monotonic() - last_beat > HEARTBEAT_SECONDS:
                    self.ledger.beat(run_id)  # a long plan is not a dead driver
                    last_beat = time.monotonic()
                done = self.ledger.done_ids([t.id for t in chunk])
                refused = [skipped_record(t, why) for t in chunk if (why := skip_reason(t))]
                if refused:  # objects never to be read (symbolic links): recorded as skipped
                    self.ledger.save_tasks(run_id, refused)
                    counts.objects_refused += len(refused)
                    chunk = [t for t in chunk if skip_reason(t) is None]
                fresh = [TaskRecord.pending(t) for t in chunk if t.id not in done]
                self.ledger.enqueue(run_id, fresh)
                counts.tasks_planned += len(chunk)
                counts.tasks_skipped += len(chunk) - len(fresh)
                counts.objects_skipped += sum(len(t.entries) for t in chunk if t.id in done)
                counts.bytes += sum(t.size for t in chunk if t.id not in done)
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
        return counts

    def _follow(self, record: RunRecord, todo: int) -> None:
        bar = progress_bar(self.progress)
        if bar is not None:
            bar.total = todo
            bar.set_description("pixelfleet", refresh=False)
        last_beat = 0.0
        try:
            while True:
                if time.monotonic() - last_beat > HEARTBEAT_SECONDS / 2:
                    self.ledger.beat(record.run_id)
                    last_beat = time.monotonic()
                self.ledger.reap(record.run_id, self.pipeline.run.attempts)
                states = self.ledger.state_counts(record.run_id)
                settled = states.get("done", 0) + states.get("failed", 0)
                if bar is not None:
                    bar.n = settled
                    bar.set_postfix_str(
                        f"ok={states.get('done', 0)} failed={states.get('failed', 0)}"
                        f" running={states.get('running', 0)}",
                        refresh=False,
                    )
                    bar.refresh()
                if not states.get("pending") and not states.get("running"):
                    return
                fleet = self.launcher.state()
                if fleet.ended and not self._alive(record):
                    left = states.get("pending", 0) + states.get("running", 0)
                    self.log(
                        f"every worker ended with {left} tasks left ({fleet.failed} workers"
                        f" failed); resume with: pixelfleet worker --ledger"
                        f" {shlex.quote(self.ledger_url)}"
                        f" --run {record.run_id}"
                    )
                    return
                time.sleep(self.poll)
        finally:
            if bar is not None:
                bar.close()

    def _alive(self, record: RunRecord) -> bool:
        """Tell whether a worker of the run was heard from lately."""
        now = self.ledger.now()
        return any(
            w.state == "running" and now - w.heartbeat <= STALE_SECONDS
            for w in self.ledger.find_workers(record.run_id)
        )

    def _finish(self, record: RunRecord, state: str) -> None:
        planned = record.counts
        record.counts = totals(self.ledger, record.run_id, planned)
        record.state = state
        if state != "running":
            record.finished = time.time()
        record.heartbeat = self.ledger.now()
        self.ledger.save_run(record)

    def _summary(self, record: RunRecord, started: float) -> RunSummary:
        return RunSummary(
            run_id=record.run_id,
            state=record.state,
            executor=record.executor,
            output_url=self.pipeline.output.url,
            seconds=time.monotonic() - started,
            counts=record.counts,
            failures=self.ledger.find_tasks(record.run_id, ["failed"], limit=20),
        )


def final_state(states: dict[str, int]) -> str:
    """A fleet run's state once it is followed no more, from its tasks' states."""
    if states.get("pending") or states.get("running"):
        return "interrupted"
    return "failed" if states.get("failed") else "done"


def close_run(ledger: FleetLedger, run_id: str) -> bool:
    """Record a fleet run as ended when none of its tasks is left to run (what the last
    worker does, so a run submitted without its driver following it ends too). Returns
    True if the run was closed now."""
    states = ledger.state_counts(run_id)
    if states.get("pending") or states.get("running"):
        return False
    run = ledger.get_run(run_id)
    if run.state != "running":
        return False
    run.counts = totals(ledger, run_id, run.counts)
    run.state = final_state(states)
    run.finished = time.time()
    ledger.save_run(run)
    return True


def totals(ledger: Ledger, run_id: str, planned: RunCounts) -> RunCounts:
    """A fleet run's counts, from its tasks in the ledger plus what planning counted."""
    sums = ledger.task_totals(run_id)
    return RunCounts(
        tasks_planned=planned.tasks_planned,
        tasks_skipped=planned.tasks_skipped,
        objects_skipped=planned.objects_skipped,
        bytes=planned.bytes,
        tasks_done=sums["done"],
        tasks_failed=sums["failed"],
        retries=sums["retries"],
        objects_written=sums["written"],
        objects_current=sums["current"],
        objects_failed=sums["objects_failed"],
        objects_missing=sums["missing"],
        objects_refused=planned.objects_refused,
    )


def worker_environment(ledger_url: str) -> dict[str, Any]:
    """Variables every worker of a fleet gets: the labellers' rate limits are kept in the
    shared PostgreSQL ledger, so they hold across every machine (unless set otherwise)."""
    env: dict[str, Any] = {}
    if ledger_url.split(":", 1)[0].lower() in ("postgresql", "postgres"):
        env["PIXELFLEET_LIMITS_URL"] = os.environ.get("PIXELFLEET_LIMITS_URL", ledger_url)
    return env
