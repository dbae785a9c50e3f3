"""The event log's contract, for every ledger that keeps one."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pixelfleet.ledger import open_ledger
from pixelfleet.ledger.events import EventLog, EventRecord


@pytest.fixture(
    params=[
        pytest.param("memory", id="memory"),
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventLog]:
    if request.param == "memory":
        url = "memory://"
    elif request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'l.db'}"
    else:
        url = request.getfixturevalue("pg_ledger_url")
    ledger = open_ledger(url)
    assert isinstance(ledger, EventLog)
    yield ledger
    ledger.close()


def record(run: str, action: str, key: str, detail: str = "") -> EventRecord:
    return EventRecord(run, time.time(), action, key, key, detail, 0.25)


def test_records_get_increasing_sequence_numbers_and_read_back(log: EventLog) -> None:
    assert log.latest_seq() == 0
    first = [record("r1", "created", "a/b c.png"), record("r2", "deleted", "x")]
    log.record_events(first)
    log.record_events([record("r1", "dead-lettered", "", "malformed message: not JSON")])
    assert first[0].seq < first[1].seq
    every = log.events()
    assert [e.action for e in every] == ["created", "deleted", "dead-lettered"]
    assert [e.seq for e in every] == sorted(e.seq for e in every)
    assert every[0].key == "a/b c.png" and every[0].seconds == 0.25
    assert [e.action for e in log.events("r1")] == ["created", "dead-lettered"]
    assert [e.key for e in log.events(since=every[0].seq)] == ["x", ""]
    dead = log.events(actions=["dead-lettered"])
    assert len(dead) == 1 and dead[0].detail == "malformed message: not JSON"
    assert log.events(limit=1)[0].seq == every[0].seq


def test_counts_and_the_newest(log: EventLog) -> None:
    log.record_events([record("r", "created", f"k{i}") for i in range(7)])
    log.record_events([record("r", "deleted", "k1"), record("other", "created", "z")])
    assert log.event_counts("r") == {"created": 7, "deleted": 1}
    newest = log.last_events("r", limit=3)
    assert [e.key for e in newest] == ["k5", "k6", "k1"]
    assert log.event_counts("none") == {}
    assert log.latest_seq() == log.events(limit=1000)[-1].seq
