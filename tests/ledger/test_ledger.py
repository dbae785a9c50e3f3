"""Ledger URLs and what only the SQLite ledger does (the shared behaviour is in
test_ledger_contract.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from pixelfleet.ledger import RunRecord, TaskRecord, open_ledger
from pixelfleet.ledger.memory import MemoryLedger
from pixelfleet.ledger.sqlite import SqliteLedger


def _run(run_id: str, created: float) -> RunRecord:
    return RunRecord(run_id, "p.toml", {"a": 1}, "inline", created)


def test_bad_url_names_the_fix() -> None:
    with pytest.raises(LookupError, match="unknown ledger URL scheme 'mysql'"):
        open_ledger("mysql://x")
    with pytest.raises(ValueError, match="sqlite:///pixelfleet.db"):
        open_ledger("sqlite:///")
    with pytest.raises(LookupError, match="choose one of: memory, postgres, postgresql, sqlite"):
        open_ledger("ledger.db")


@pytest.mark.parametrize("url", ["memory://", "memory", "MEMORY://", "memory:///"])
def test_memory_urls_open_a_fresh_ledger(url: str) -> None:
    with open_ledger(url) as ledger, open_ledger(url) as other:
        assert isinstance(ledger, MemoryLedger)
        ledger.save_run(_run("r1", 1.0))
        assert other.find_runs() == []


def test_named_memory_ledgers_share_records_in_the_process() -> None:
    try:
        with open_ledger("memory://shared") as writer:
            writer.save_run(_run("r1", 1.0))
            writer.save_tasks("r1", [TaskRecord("t1", "g", [], state="done")])
        with open_ledger("memory://shared/") as reader:
            assert reader.get_run().run_id == "r1"
            assert reader.done_ids(["t1"]) == {"t1"}
        assert open_ledger("memory://other").find_runs() == []
    finally:
        MemoryLedger.clear("shared")
    assert open_ledger("memory://shared").find_runs() == []


def test_sqlite_file_keeps_everything_after_closing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sub' / 'l.db'}"
    with open_ledger(url) as ledger:
        assert isinstance(ledger, SqliteLedger)
        ledger.save_run(_run("r1", 1.0))
        ledger.save_tasks("r1", [TaskRecord("t1", "g", [], state="done", n_missing=2)])
    with open_ledger(url) as ledger:
        assert ledger.get_run("r1").pipeline == {"a": 1}
        assert ledger.find_tasks("r1")[0].n_missing == 2
        assert ledger.done_ids(["t1"]) == {"t1"}


def test_sqlite_file_of_an_older_version_gains_new_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with open_ledger(f"sqlite:///{path}") as ledger:
        ledger.save_run(_run("r1", 1.0))
        ledger.save_tasks("r1", [TaskRecord("t1", "g", [], state="failed")])
    with sqlite3.connect(path) as db:  # as a version without n_missing left it
        db.execute("ALTER TABLE tasks DROP COLUMN n_missing")
    with open_ledger(f"sqlite:///{path}") as ledger:
        (task,) = ledger.find_tasks("r1")
        assert (task.state, task.n_missing) == ("failed", 0)
