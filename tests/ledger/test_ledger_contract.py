"""The ``Ledger`` contract: every ledger behaves as the memory reference does.

A new ledger joins by adding one line to ``LEDGERS``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pixelfleet.errors import LedgerError
from pixelfleet.ledger import Ledger, RunRecord, TaskRecord, open_ledger
from pixelfleet.ledger.memory import MemoryLedger
from pixelfleet.models import Entry, EntryResult, RunCounts, Task, TaskResult

MakeLedger = Callable[[Path], Ledger]

LEDGERS = [
    pytest.param(lambda tmp: MemoryLedger(), id="memory"),
    pytest.param(lambda tmp: open_ledger(f"sqlite:///{tmp / 'l.db'}"), id="sqlite-file"),
    pytest.param(lambda tmp: open_ledger("sqlite:///:memory:"), id="sqlite-memory"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


@pytest.fixture(params=LEDGERS)
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    if request.param == "postgres":  # a fresh schema of the session's test database
        with open_ledger(request.getfixturevalue("pg_ledger_url")) as led:
            yield led
        return
    make: MakeLedger = request.param
    with make(tmp_path) as led:
        yield led


def run_record(run_id: str, created: float, **changes: object) -> RunRecord:
    run = RunRecord(run_id, "p.toml", {"a": 1, "steps": [{"op": "thumbnail"}]}, "inline", created)
    return dataclasses.replace(run, **changes)  # type: ignore[arg-type]


def task_record(task_id: str, group: str = "g", state: str = "pending") -> TaskRecord:
    return TaskRecord(task_id, group, [{"key": f"{group}/{task_id}.tif", "size": 1}], state=state)


def ids(tasks: list[TaskRecord]) -> list[str]:
    return [t.task_id for t in tasks]


# -- runs -------------------------------------------------------------------------------


def test_an_empty_ledger(ledger: Ledger) -> None:
    assert ledger.find_runs() == []
    assert ledger.find_runs("2026") == []
    assert ledger.find_tasks("nope") == []
    assert ledger.done_ids(["a", "b"]) == set()
    assert ledger.state_counts("nope") == {}
    with pytest.raises(LedgerError, match="pixelfleet run"):
        ledger.get_run()
    with pytest.raises(LookupError):  # what a caller who knows no pixelfleet catches
        ledger.get_run("nope")


def test_a_run_round_trips(ledger: Ledger) -> None:
    run = run_record(
        "r1",
        1700000000.25,
        state="done",
        finished=1700000100.5,
        counts=RunCounts(tasks_done=3, objects_written=7),
    )
    ledger.save_run(run)
    assert ledger.find_runs() == [run]
    assert ledger.get_run("r1") == run


def test_saving_a_run_again_updates_its_outcome_only(ledger: Ledger) -> None:
    first = run_record("r1", 10.0)
    ledger.save_run(first)
    outcome = {
        "executor": "local",
        "state": "interrupted",
        "finished": 20.0,
        "counts": RunCounts(retries=2),
    }
    ledger.save_run(
        run_record("r1", 99.0, pipeline_path="other.toml", pipeline={"b": 2}, **outcome)
    )
    assert ledger.find_runs() == [dataclasses.replace(first, **outcome)]  # type: ignore[arg-type]


def test_runs_newest_first_and_prefix_lookup(ledger: Ledger) -> None:
    ledger.save_run(run_record("20260101-000000-aaaa", 1.0))
    ledger.save_run(run_record("20260102-000000-bbbb", 2.0))
    assert ledger.get_run().run_id == "20260102-000000-bbbb"
    assert ledger.get_run("20260101").run_id == "20260101-000000-aaaa"
    with pytest.raises(LedgerError, match="ambiguous"):
        ledger.get_run("2026")
    with pytest.raises(LedgerError, match="no run 'nope'"):
        ledger.get_run("nope")


def test_find_runs_orders_and_limits(ledger: Ledger) -> None:
    for n, created in enumerate([5.0, 1.0, 9.0, 3.0]):
        ledger.save_run(run_record(f"run-{n}", created))
    assert [r.run_id for r in ledger.find_runs()] == ["run-2", "run-0", "run-3", "run-1"]
    assert [r.run_id for r in ledger.find_runs(limit=2)] == ["run-2", "run-0"]
    assert [r.run_id for r in ledger.find_runs("run-", limit=3)] == ["run-2", "run-0", "run-3"]
    assert ledger.find_runs("run-4") == []


def test_an_exact_id_comes_first_and_is_never_ambiguous(ledger: Ledger) -> None:
    ledger.save_run(run_record("abc", 1.0))
    ledger.save_run(run_record("abcd", 2.0))
    assert [r.run_id for r in ledger.find_runs("abc")] == ["abc", "abcd"]
    assert ledger.get_run("abc").run_id == "abc"
    assert ledger.get_run("abcd").run_id == "abcd"


@pytest.mark.parametrize("prefix", ["run_", "run%", "r_n", "%", "_", "RUN", "run\\"])
def test_a_prefix_is_plain_text(ledger: Ledger, prefix: str) -> None:
    for run_id in ["run-1", "runx2", "run_3", "run%4", "run\\5"]:
        ledger.save_run(run_record(run_id, 1.0))
    want = sorted(r for r in ["run-1", "runx2", "run_3", "run%4", "run\\5"] if r.startswith(prefix))
    assert sorted(r.run_id for r in ledger.find_runs(prefix)) == want


# -- tasks ------------------------------------------------------------------------------


def test_a_task_round_trips_with_every_field(ledger: Ledger) -> None:
    ledger.save_run(run_record("r1", 1.0))
    task = TaskRecord(
        task_id="t1",
        group="al/2013",
        entries=[{"key": "al/2013/a.tif", "size": 10, "etag": "e1", "mtime": 1.5}],
        state="failed",
        attempts=3,
        error_type="CorruptInputError",
        error="al/2013/a.tif: truncated",
        seconds=1.25,
        worker="host:123",
        n_done=1,
        n_skipped=2,
        n_failed=1,
        outputs=["al/2013/a.thumb.jpg", "ünï/x y.json"],
        failures=[{"key": "al/2013/a.tif", "error_type": "CorruptInputError", "error": "bad"}],
        updated=1700000000.5,
        n_missing=4,
    )
    ledger.save_tasks("r1", [task])
    assert ledger.find_tasks("r1") == [task]


def test_saving_tasks_again_replaces_them(ledger: Ledger) -> None:
    ledger.save_run(run_record("r1", 1.0))
    first = dataclasses.replace(task_record("t1"), state="failed", error_type="X", error="boom")
    ledger.save_tasks("r1", [first, task_record("t2")])
    ledger.save_tasks("r1", [first])  # the same again: nothing changes
    assert ids(ledger.find_tasks("r1")) == ["t1", "t2"]
    fixed = dataclasses.replace(task_record("t1"), state="done", attempts=2)
    ledger.save_tasks("r1", [fixed])
    assert ledger.find_tasks("r1", ["done"]) == [fixed]  # error fields cleared too
    assert ledger.state_counts("r1") == {"done": 1, "pending": 1}
    ledger.save_tasks("r1", [])


def test_the_last_of_one_task_in_a_batch_wins(ledger: Ledger) -> None:
    ledger.save_run(run_record("r1", 1.0))
    ledger.save_tasks("r1", [task_record("t1"), task_record("t1", state="running")])
    assert [t.state for t in ledger.find_tasks("r1")] == ["running"]


def test_tasks_belong_to_their_run(ledger: Ledger) -> None:
    for run_id in ("r1", "r2"):
        ledger.save_run(run_record(run_id, 1.0))
    ledger.save_tasks("r1", [task_record("t1", state="failed")])
    ledger.save_tasks("r2", [task_record("t1", state="done"), task_record("t2")])
    assert [t.state for t in ledger.find_tasks("r1")] == ["failed"]
    assert ids(ledger.find_tasks("r2")) == ["t1", "t2"]
    assert ledger.state_counts("r1") == {"failed": 1}


def test_find_tasks_puts_failed_first_then_group_and_id(ledger: Ledger) -> None:
    ledger.save_run(run_record("r1", 1.0))
    tasks = [
        task_record("t5", "b", "done"),
        task_record("t4", "a", "failed"),
        task_record("t3", "b", "failed"),
        task_record("t2", "a", "pending"),
        task_record("t1", "b", "running"),
        task_record("t0", "a", "done"),
        task_record("t9", "a", "failed"),
    ]
    ledger.save_tasks("r1", tasks)
    assert ids(ledger.find_tasks("r1")) == ["t4", "t9", "t3", "t0", "t2", "t1", "t5"]
    assert ids(ledger.find_tasks("r1", ["failed"])) == ["t4", "t9", "t3"]
    assert ids(ledger.find_tasks("r1", ["done", "pending"])) == ["t0", "t2", "t5"]
    assert ids(ledger.find_tasks("r1", ["failed"], limit=2)) == ["t4", "t9"]
    assert ids(ledger.find_tasks("r1", limit=4)) == ["t4", "t9", "t3", "t0"]
    assert ledger.find_tasks("r1", ["nope"]) == []
    assert ledger.find_tasks("r1", []) == []
    assert ledger.state_counts("r1") == {"done": 2, "failed": 3, "pending": 1, "running": 1}


def test_tasks_results_and_done_ids(ledger: Ledger) -> None:
    ledger.save_run(run_record("r1", time.time()))
    task = Task("t1", "al/2013", (Entry("al/2013/a.tif", 1, "e"), Entry("al/2013/b.tif", 1, "e")))
    rec = TaskRecord.pending(task)
    ledger.save_tasks("r1", [rec, TaskRecord.pending(Task("t2", "g", (Entry("k", 1, "e"),)))])
    assert ledger.state_counts("r1") == {"pending": 2}
    result = TaskResult(
        "t1",
        "failed",
        entries=[
            EntryResult("al/2013/a.tif", "e", "done"),
            EntryResult(
                "al/2013/b.tif", "e", "failed", error_type="CorruptInputError", error="bad"
            ),
        ],
    )
    rec.apply(result, 2, "failed", time.time())
    ledger.save_tasks("r1", [rec])
    failed = ledger.find_tasks("r1", ["failed"])
    assert len(failed) == 1
    assert failed[0].attempts == 2
    assert failed[0].error == "al/2013/b.tif: bad"
    assert failed[0].failures == [
        {"key": "al/2013/b.tif", "error_type": "CorruptInputError", "error": "bad"}
    ]
    assert failed[0].to_task() == task
    assert ledger.done_ids(["t1", "t2"]) == set()
    rec.apply(TaskResult("t1", "done", entries=[]), 3, "done", time.time())
    ledger.save_tasks("r1", [rec])
    assert ledger.done_ids(["t1", "t2", "zz"]) == {"t1"}


# -- done ids ---------------------------------------------------------------------------


def test_done_in_any_run_counts(ledger: Ledger) -> None:
    for run_id in ("r1", "r2"):
        ledger.save_run(run_record(run_id, 1.0))
    ledger.save_tasks("r1", [task_record("a", state="done"), task_record("b", state="failed")])
    ledger.save_tasks("r2", [task_record("a", state="failed"), task_record("c", state="running")])
    assert ledger.done_ids(["a", "b", "c", "d"]) == {"a"}
    # Done in r1 no longer; nowhere else either.
    ledger.save_tasks("r1", [task_record("a", state="pending")])
    assert ledger.done_ids(["a"]) == set()
    ledger.save_tasks("r2", [task_record("b", state="done")])
    assert ledger.done_ids(["a", "b", "b"]) == {"b"}
    assert ledger.done_ids([]) == set()


def test_done_ids_of_many_tasks(ledger: Ledger) -> None:
    ledger.save_run(run_record("r1", 1.0))
    tasks = [
        task_record(f"t{n:05d}", state="done" if n % 3 == 0 else "failed") for n in range(1500)
    ]
    ledger.save_tasks("r1", tasks)
    asked = [f"t{n:05d}" for n in range(0, 1600, 2)]
    assert ledger.done_ids(asked) == {f"t{n:05d}" for n in range(0, 1500, 6)}


# -- copies -----------------------------------------------------------------------------


def test_records_are_copies(ledger: Ledger) -> None:
    run = run_record("r1", 1.0, counts=RunCounts(tasks_done=1))
    task = task_record("t1")
    ledger.save_run(run)
    ledger.save_tasks("r1", [task])
    run.counts.tasks_done = 99
    run.state = "done"
    task.entries.append({"key": "sneaked-in"})
    task.state = "done"
    (found,) = ledger.find_runs()
    (held,) = ledger.find_tasks("r1")
    assert (found.counts, found.state) == (RunCounts(tasks_done=1), "running")
    assert (len(held.entries), held.state) == (1, "pending")
    assert ledger.done_ids(["t1"]) == set()
    found.pipeline["a"] = 2
    held.outputs.append("x")
    assert ledger.find_runs()[0].pipeline["a"] == 1
    assert ledger.find_tasks("r1")[0].outputs == []


def test_has_tasks_and_task_totals(ledger: Ledger) -> None:
    ledger.save_run(run_record("r1", 1.0))
    assert not ledger.has_tasks("r1", ["pending", "running"])
    done = task_record("a", state="done")
    done.attempts, done.n_done, done.n_skipped = 2, 3, 1
    failed = task_record("b", state="failed")
    failed.attempts, failed.n_failed, failed.n_missing = 1, 2, 1
    ledger.save_tasks("r1", [done, failed, task_record("c", state="pending")])
    assert ledger.has_tasks("r1", ["pending", "running"])
    assert not ledger.has_tasks("r1", ["running"])
    assert not ledger.has_tasks("r2", ["pending"])
    assert ledger.task_totals("r1") == {
        "done": 1,
        "failed": 1,
        "retries": 1,
        "written": 3,
        "current": 1,
        "objects_failed": 2,
        "missing": 1,
    }
    assert ledger.task_totals("nope")["done"] == 0
