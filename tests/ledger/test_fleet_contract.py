"""The ``FleetLedger`` contract: claims, leases, fenced results, reaping, workers.

Every ledger that can share a run between processes behaves as the memory reference.
A new one joins by adding one line to ``FLEET_LEDGERS``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pixelfleet.ledger import FleetLedger, RunRecord, TaskRecord, WorkerRecord, open_ledger
from pixelfleet.ledger.fleet import LEASE_EXPIRED
from pixelfleet.ledger.memory import MemoryLedger

# Each makes a URL (or a memory name) so that a second ledger object on the same records
# can be opened, as a second process would.
FLEET_LEDGERS = [
    pytest.param("memory", id="memory"),
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]

Opener = Callable[[], FleetLedger]


@pytest.fixture(params=FLEET_LEDGERS)
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    kind = request.param
    if kind == "memory":
        name = f"fleet-{id(request)}"
        url = f"memory://{name}"
    elif kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'fleet.db'}"
    else:
        url = request.getfixturevalue("pg_ledger_url")
    opened: list[FleetLedger] = []

    def open_one() -> FleetLedger:
        led = open_ledger(url)
        assert isinstance(led, FleetLedger)
        opened.append(led)
        return led

    yield open_one
    for led in opened:
        led.close()
    if kind == "memory":
        MemoryLedger.clear(name)


@pytest.fixture
def ledger(opener: Opener) -> FleetLedger:
    led = opener()
    led.save_run(RunRecord("r1", "p.toml", {"steps": []}, "fleet", time.time()))
    return led


def tasks(n: int, group: str = "g", first: int = 0) -> list[TaskRecord]:
    return [
        TaskRecord(f"t{i:03d}", group, [{"key": f"{group}/{i}.tif", "size": 1}])
        for i in range(first, first + n)
    ]


def result(claimed: TaskRecord, state: str = "done") -> TaskRecord:
    """What a worker reports for a task it claimed."""
    out = TaskRecord(**{**claimed.__dict__})
    out.state, out.n_done, out.outputs = state, 1, [f"out/{claimed.task_id}.jpg"]
    out.seconds = 0.5
    return out


def test_enqueue_adds_pending_tasks_once(ledger: FleetLedger) -> None:
    assert ledger.enqueue("r1", tasks(3)) == 3
    assert ledger.enqueue("r1", tasks(5)) == 2  # the first three are left as they were
    assert ledger.state_counts("r1") == {"pending": 5}
    assert ledger.enqueue("r1", []) == 0


def test_claim_takes_pending_tasks_in_order_with_a_lease(ledger: FleetLedger) -> None:
    ledger.enqueue("r1", tasks(3, "b") + tasks(2, "a", first=10))
    before = ledger.now()
    got = ledger.claim("r1", "w1", 3, lease=30.0)
    assert [(t.group, t.task_id) for t in got] == [("a", "t010"), ("a", "t011"), ("b", "t000")]
    for t in got:
        assert (t.state, t.attempts, t.worker) == ("running", 1, "w1")
        assert t.lease_until is not None and before + 29 < t.lease_until < before + 31
        assert t.entries  # the worker gets everything it needs to run the task
    assert ledger.state_counts("r1") == {"running": 3, "pending": 2}
    assert len(ledger.claim("r1", "w2", 10, lease=30.0)) == 2
    assert ledger.claim("r1", "w3", 10, lease=30.0) == []
    assert ledger.claim("r1", "w3", 0, lease=30.0) == []


def test_concurrent_claims_never_share_a_task(opener: Opener, ledger: FleetLedger) -> None:
    ledger.enqueue("r1", tasks(300))
    taken: dict[str, list[str]] = {}
    errors: list[BaseException] = []

    def work(name: str) -> None:
        try:
            led = opener()  # its own connection, as another process would have
            mine = taken.setdefault(name, [])
            while got := led.claim("r1", name, 7, lease=30.0):
                mine.extend(t.task_id for t in got)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    every = [i for ids in taken.values() for i in ids]
    assert len(every) == 300 and len(set(every)) == 300


def test_renew_extends_only_the_leases_a_worker_holds(ledger: FleetLedger) -> None:
    ledger.enqueue("r1", tasks(3))
    mine = ledger.claim("r1", "w1", 2, lease=5.0)
    other = ledger.claim("r1", "w2", 1, lease=5.0)
    ids = [t.task_id for t in mine]
    held = ledger.renew("r1", "w1", [*ids, other[0].task_id, "nope"], lease=100.0)
    assert held == set(ids)
    leases = {t.task_id: t.lease_until for t in ledger.find_tasks("r1")}
    now = ledger.now()
    assert all(leases[i] is not None and leases[i] > now + 90 for i in ids)  # type: ignore[operator]
    assert ledger.renew("r1", "w1", [], lease=1.0) == set()


def test_finish_records_results_fenced_by_attempt_and_worker(ledger: FleetLedger) -> None:
    ledger.enqueue("r1", tasks(4))
    a, b, c, d = ledger.claim("r1", "w1", 4, lease=30.0)
    stale = result(b)
    stale.attempts = 7  # not the attempt the ledger gave out
    stranger = result(c)
    stranger.worker = "w9"
    recorded = ledger.finish("r1", [result(a), stale, stranger, result(d, "failed")])
    assert recorded == {a.task_id, d.task_id}
    by_id = {t.task_id: t for t in ledger.find_tasks("r1")}
    assert by_id[a.task_id].state == "done" and by_id[a.task_id].outputs == [f"out/{a.task_id}.jpg"]
    assert by_id[a.task_id].lease_until is None
    assert by_id[d.task_id].state == "failed"
    assert by_id[b.task_id].state == by_id[c.task_id].state == "running"
    assert ledger.done_ids([a.task_id, b.task_id]) == {a.task_id}
    # A result sent twice is recorded once: the task is no longer running.
    assert ledger.finish("r1", [result(a)]) == set()


def test_a_pending_result_gives_the_task_back_for_another_attempt(ledger: FleetLedger) -> None:
    ledger.enqueue("r1", tasks(1))
    (first,) = ledger.claim("r1", "w1", 1, lease=30.0)
    again = result(first, "pending")
    again.error_type, again.error = "StorageError", "503 SlowDown"
    assert ledger.finish("r1", [again]) == {first.task_id}
    (second,) = ledger.claim("r1", "w2", 1, lease=30.0)
    assert (second.attempts, second.worker, second.error_type) == (2, "w2", "StorageError")


def test_release_gives_tasks_back_without_counting_the_attempt(ledger: FleetLedger) -> None:
    ledger.enqueue("r1", tasks(2))
    got = ledger.claim("r1", "w1", 2, lease=30.0)
    assert ledger.release("r1", "w2", [t.task_id for t in got]) == set()  # not w2's
    assert ledger.release("r1", "w1", [got[0].task_id]) == {got[0].task_id}
    (again,) = ledger.claim("r1", "w2", 5, lease=30.0)
    assert (again.task_id, again.attempts) == (got[0].task_id, 1)


def test_reap_returns_expired_leases_and_fails_the_last_attempt(ledger: FleetLedger) -> None:
    ledger.enqueue("r1", tasks(2))
    short = ledger.claim("r1", "w1", 1, lease=0.2)
    long = ledger.claim("r1", "w1", 1, lease=60.0)
    assert ledger.reap("r1", max_attempts=2) == []
    time.sleep(0.4)
    reaped = ledger.reap("r1", max_attempts=2)
    assert [t.task_id for t in reaped] == [short[0].task_id]
    assert reaped[0].state == "pending" and reaped[0].error_type == LEASE_EXPIRED
    assert "w1" in (reaped[0].error or "")
    # The second attempt runs out too: that was the last one.
    (again,) = ledger.claim("r1", "w2", 5, lease=0.2)
    assert again.attempts == 2
    time.sleep(0.4)
    (final,) = ledger.reap("r1", max_attempts=2)
    assert final.state == "failed" and final.n_failed == 1
    by_id = {t.task_id: t for t in ledger.find_tasks("r1")}
    assert by_id[again.task_id].state == "failed"
    assert by_id[again.task_id].error_type == LEASE_EXPIRED
    assert by_id[long[0].task_id].state == "running"


def test_a_zombie_cannot_overwrite_a_newer_attempt(ledger: FleetLedger) -> None:
    ledger.enqueue("r1", tasks(1))
    (zombie,) = ledger.claim("r1", "w1", 1, lease=0.2)
    time.sleep(0.4)  # w1 is paused past its lease
    assert len(ledger.reap("r1", max_attempts=3)) == 1
    (fresh,) = ledger.claim("r1", "w2", 1, lease=30.0)
    assert fresh.attempts == 2
    assert ledger.renew("r1", "w1", [zombie.task_id], lease=30.0) == set()  # it learns it lost
    assert ledger.finish("r1", [result(fresh)]) == {fresh.task_id}
    late = result(zombie)
    late.outputs = ["out/zombie.jpg"]
    assert ledger.finish("r1", [late]) == set()
    (task,) = ledger.find_tasks("r1")
    assert (task.state, task.attempts, task.worker, task.outputs) == (
        "done",
        2,
        "w2",
        [f"out/{fresh.task_id}.jpg"],
    )


def test_workers_are_recorded(ledger: FleetLedger) -> None:
    now = ledger.now()
    w1 = WorkerRecord("r1", "w1", "host-a", 11, now - 10, now - 1, shard="0/2")
    w2 = WorkerRecord("r1", "w2", "host-b", 12, now - 5, now, tasks_done=3)
    ledger.save_worker(w1)
    ledger.save_worker(w2)
    assert ledger.find_workers("r1") == [w2, w1]
    w1.state, w1.tasks_done, w1.heartbeat = "finished", 9, now
    ledger.save_worker(w1)
    assert ledger.find_workers("r1")[1] == w1
    assert ledger.find_workers("r2") == []


def test_a_heartbeat_changes_nothing_else(ledger: FleetLedger) -> None:
    run = ledger.get_run("r1")
    assert run.heartbeat is None
    beat = ledger.beat("r1")
    assert abs(beat - time.time()) < 60
    again = ledger.get_run("r1")
    assert again.heartbeat == pytest.approx(beat)
    assert (again.state, again.counts, again.finished) == (run.state, run.counts, run.finished)
    ledger.beat("unknown")  # no error, no run made
    assert [r.run_id for r in ledger.find_runs()] == ["r1"]


def test_leases_lists_running_tasks_soonest_first(ledger: FleetLedger) -> None:
    ledger.enqueue("r1", tasks(3))
    ledger.claim("r1", "w1", 1, lease=60.0)
    ledger.claim("r1", "w2", 1, lease=10.0)
    rows = ledger.leases("r1")
    assert [(w, a) for _, w, a, _ in rows] == [("w2", 1), ("w1", 1)]
    assert 5 < rows[0][3] <= 10.5
