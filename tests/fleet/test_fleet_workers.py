"""``pixelfleet worker`` processes sharing one PostgreSQL ledger, and broken on purpose:
SIGKILLed, paused past their lease (zombies), stopped with SIGTERM, and the database
restarted under them."""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from fleet_helpers import (
    fleet_ledger,
    make_fleet_bucket,
    pid_of,
    plan_run,
    start_worker,
    wait_for,
    worker_env,
)

pytestmark = pytest.mark.postgres

#: ``make test`` runs the chaos test in a short form; PIXELFLEET_SOAK=1 runs the long one.
SOAK = os.environ.get("PIXELFLEET_SOAK") == "1"
KILLS, OBJECTS = (40, 1500) if SOAK else (10, 300)


def finish(procs: list[subprocess.Popen[str]], timeout: float = 120) -> list[tuple[int, str]]:
    """Wait for worker processes; their exit codes and stderr."""
    out = []
    for proc in procs:
        _, err = proc.communicate(timeout=timeout)
        out.append((proc.returncode, err))
    return out


def test_four_workers_share_a_run_and_write_each_output_once(
    tmp_path: Path, pg_ledger_url: str
) -> None:
    bucket = make_fleet_bucket(tmp_path, 2000)
    run_id = plan_run(bucket, pg_ledger_url)
    procs = [
        start_worker(pg_ledger_url, run_id, threads=4, env=worker_env(tmp_path / f"limits-{i}"))
        for i in range(4)
    ]
    results = finish(procs)
    assert [code for code, _ in results] == [0, 0, 0, 0], results
    with fleet_ledger(pg_ledger_url) as ledger:
        tasks = ledger.find_tasks(run_id)
        assert len(tasks) == 2000
        assert {t.state for t in tasks} == {"done"}
        assert all(t.attempts == 1 and t.n_done == 1 for t in tasks)
        run = ledger.get_run(run_id)
        assert run.state == "done"  # the last worker out closed it
        assert run.counts.tasks_done == 2000 and run.counts.objects_written == 2000
        workers = ledger.find_workers(run_id)
        assert len(workers) == 4 and {w.state for w in workers} == {"finished"}
        assert sum(w.tasks_done for w in workers) == 2000
        assert all(w.tasks_done > 0 for w in workers)  # the work was shared
        # Every output was written once, by the process the ledger says ran its task.
        writes = bucket.writes()
        expected = {k.replace(".txt", ".out") for k in bucket.keys}
        assert set(writes) == expected and set(writes.values()) == {1}
        for task in tasks[::50]:
            key = task.outputs[0]
            assert bucket.writer_pid(key) == pid_of(task.worker)


@pytest.mark.slow
def test_sigkilled_workers_lose_nothing(tmp_path: Path, pg_ledger_url: str) -> None:
    """SIGKILLs of workers holding tasks; replacements come up as Batch would start them."""
    rng = random.Random(7)
    bucket = make_fleet_bucket(tmp_path, OBJECTS, words="SLEEP 0.1", attempts=6)
    run_id = plan_run(bucket, pg_ledger_url)
    procs = [start_worker(pg_ledger_url, run_id, lease=1.5) for _ in range(3)]
    kills = 0
    with fleet_ledger(pg_ledger_url) as ledger:
        while kills < KILLS:
            time.sleep(rng.uniform(0.1, 0.5))
            holders = {pid_of(worker) for _, worker, _, _ in ledger.leases(run_id)}
            alive = [p for p in procs if p.poll() is None and p.pid in holders]
            if not alive:
                if ledger.state_counts(run_id).get("pending", 0) == 0:
                    break
                continue
            victim = rng.choice(alive)
            victim.send_signal(signal.SIGKILL)
            victim.communicate()  # reaps it and closes its pipes
            kills += 1
            procs.append(start_worker(pg_ledger_url, run_id, lease=1.5))
        results = finish([p for p in procs if p.returncode is None], timeout=180)
        assert all(code == 0 for code, _ in results), results
        tasks = ledger.find_tasks(run_id)
        assert {t.state for t in tasks} == {"done"}, ledger.state_counts(run_id)
        assert all(t.n_done + t.n_skipped == 1 for t in tasks)
        assert ledger.get_run(run_id).state == "done"
        reaped = [t for t in tasks if t.attempts > 1]
    assert kills == KILLS
    # Every output exists, and none was written twice: an attempt after a kill finds the
    # output its predecessor finished current, or writes it itself if none was.
    outputs = {p.name for p in bucket.out.iterdir()}
    assert outputs == {k.replace(".txt", ".out") for k in bucket.keys}
    assert max(bucket.writes().values()) == 1
    assert len(reaped) >= KILLS  # each kill took at least one task down mid-way


def test_a_zombie_cannot_overwrite_a_newer_attempt(tmp_path: Path, pg_ledger_url: str) -> None:
    bucket = make_fleet_bucket(tmp_path, 3, slow={0: "STARTED SLEEP 4"})
    run_id = plan_run(bucket, pg_ledger_url)
    zombie = start_worker(pg_ledger_url, run_id, lease=2.0, threads=1)
    marker = tmp_path / "marks" / "obj-0000.txt.started"
    wait_for(marker.exists, 30, "the slow task starting")
    zombie.send_signal(signal.SIGSTOP)  # paused mid-task, past its lease
    try:
        fresh = start_worker(pg_ledger_url, run_id, lease=2.0, threads=1)
        ((code, err),) = finish([fresh], timeout=60)
        assert code == 0, err
    finally:
        zombie.send_signal(signal.SIGCONT)
    ((code, err),) = finish([zombie], timeout=60)
    assert code == 0, err
    refused = re.search(r"(\d+) results refused", err)
    assert refused and int(refused.group(1)) >= 1, err
    with fleet_ledger(pg_ledger_url) as ledger:
        (slow,) = [t for t in ledger.find_tasks(run_id) if t.entries[0]["key"] == "obj-0000.txt"]
        assert (slow.state, slow.attempts) == ("done", 2)
        assert pid_of(slow.worker) == fresh.pid
    # The output is the newer attempt's, written once: the zombie's write was refused.
    assert bucket.writer_pid("obj-0000.out") == fresh.pid
    assert bucket.writes()["obj-0000.out"] == 1


def test_sigterm_gives_unfinished_tasks_back(tmp_path: Path, pg_ledger_url: str) -> None:
    bucket = make_fleet_bucket(tmp_path, 2, slow={0: "STARTED SLEEP 30", 1: "STARTED SLEEP 30"})
    run_id = plan_run(bucket, pg_ledger_url)
    proc = start_worker(pg_ledger_url, run_id, threads=2, drain=0.5)
    wait_for((tmp_path / "marks" / "obj-0001.txt.started").exists, 30, "both tasks starting")
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    ((code, err),) = finish([proc], timeout=30)
    assert time.monotonic() - started < 10
    assert code == 75, err  # Batch retries the worker
    assert "2 released" in err
    with fleet_ledger(pg_ledger_url) as ledger:
        tasks = ledger.find_tasks(run_id)
        assert {(t.state, t.attempts) for t in tasks} == {("pending", 0)}  # not counted
        assert ledger.find_workers(run_id)[0].state == "stopped"
    assert not list(bucket.out.iterdir())


def _pg_restart_command() -> list[str]:
    cluster = shutil.which("pg_ctlcluster")
    versions = os.listdir("/etc/postgresql") if os.path.isdir("/etc/postgresql") else []
    if cluster is None or not versions or os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("restarting PostgreSQL needs pg_ctlcluster and root (CI has both)")
        pytest.skip("restarting PostgreSQL needs pg_ctlcluster and root")
    return [
        cluster,
        "--skip-systemctl-redirect",
        sorted(versions)[-1],
        "main",
        "restart",
        "-m",
        "immediate",
    ]


def test_workers_ride_out_a_database_restart(tmp_path: Path, pg_ledger_url: str) -> None:
    restart = _pg_restart_command()
    bucket = make_fleet_bucket(tmp_path, 300, words="SLEEP 0.03")
    run_id = plan_run(bucket, pg_ledger_url)
    procs = [start_worker(pg_ledger_url, run_id, lease=5.0) for _ in range(2)]
    wait_for(lambda: len(bucket.writes()) > 40, 60, "the run getting going")
    assert len(bucket.writes()) < 250, "the run was nearly over before the restart"
    subprocess.run(restart, check=True, capture_output=True, timeout=120)
    results = finish(procs, timeout=180)
    assert [code for code, _ in results] == [0, 0], results
    with fleet_ledger(pg_ledger_url) as ledger:
        tasks = ledger.find_tasks(run_id)
        assert {t.state for t in tasks} == {"done"}  # 0 stuck
        assert ledger.get_run(run_id).state == "done"
    assert max(bucket.writes().values()) == 1  # 0 double claims
    outputs = {p.name for p in bucket.out.iterdir()}
    assert outputs == {k.replace(".txt", ".out") for k in bucket.keys}
