"""The SQLite ledger: runs, tasks, done ids, lookups by prefix."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pixelfleet.errors import LedgerError
from pixelfleet.ledger import RunRecord, TaskRecord, open_ledger
from pixelfleet.models import Entry, EntryResult, Task, TaskResult


def _run(run_id: str, created: float) -> RunRecord:
    return RunRecord(run_id, "p.toml", {"a": 1}, "inline", created)


@pytest.fixture(params=["file", "memory"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'l.db'}" if request.param == "file" else "sqlite:///:memory:"
    with open_ledger(url) as led:
        yield led


def test_runs_newest_first_and_prefix_lookup(ledger) -> None:  # type: ignore[no-untyped-def]
    ledger.save_run(_run("20260101-000000-aaaa", 1.0))
    ledger.save_run(_run("20260102-000000-bbbb", 2.0))
    assert ledger.get_run().run_id == "20260102-000000-bbbb"
    assert ledger.get_run("20260101").run_id == "20260101-000000-aaaa"
    with pytest.raises(LedgerError, match="ambiguous"):
        ledger.get_run("2026")
    with pytest.raises(LedgerError, match="no run 'nope'"):
        ledger.get_run("nope")


def test_empty_ledger_says_how_to_start(ledger) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(LedgerError, match="pixelfleet run"):
        ledger.get_run()


def test_tasks_results_and_done_ids(ledger) -> None:  # type: ignore[no-untyped-def]
    ledger.save_run(_run("r1", time.time()))
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


def test_bad_url_names_the_fix() -> None:
    with pytest.raises(LookupError, match="unknown ledger URL scheme 'mysql'"):
        open_ledger("mysql://x")
    with pytest.raises(ValueError, match="sqlite:///pixelfleet.db"):
        open_ledger("sqlite:///")
