"""A labelling API's caps hold across a fleet: workers on several "machines" (processes
with different ``PIXELFLEET_LIMITS_DIR``) share them through the PostgreSQL ledger."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from fleet_helpers import FleetBucket, fleet_ledger, plan_run, start_worker, worker_env
from pixelfleet.labelers import limits as limits_mod
from pixelfleet.labelers.limits import Limits, PostgresLimiter, open_limiter
from pixelfleet.settings import Settings

pytestmark = pytest.mark.postgres

SLOW = "labelers_for_tests:SlowLabeler"


def calls(log: Path) -> list[tuple[str, float, float]]:
    """``(pid, start, end)`` of every call the fake labelling service saw."""
    return [(c[0], float(c[1]), float(c[2])) for c in map(str.split, log.read_text().splitlines())]


def peak_in_flight(spans: list[tuple[str, float, float]]) -> int:
    events = sorted([(s, 1) for _, s, _ in spans] + [(e, -1) for _, _, e in spans])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def most_in_a_second(starts: list[float]) -> int:
    """Most starts in any window of 1 s (less 50 ms of jitter on a loaded machine)."""
    return max(sum(1 for t in starts if s <= t < s + 0.95) for s in starts)


def test_caps_hold_across_three_machines_of_four_threads(
    tmp_path: Path, pg_ledger_url: str
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    keys = [f"img{i:02d}.jpg" for i in range(24)]
    for key in keys:
        (src / key).write_bytes(b"not an image: " + key.encode())
    log = tmp_path / "calls.log"
    pipeline = tmp_path / "p.toml"
    pipeline.write_text(
        f"""
[source]
url = "{src}"
partition = {{ by = "object" }}
[output]
url = "{tmp_path / "out"}"
[[steps]]
op = "labels"
labeler = "{SLOW}"
options = {{ log = "{log}", seconds = 0.15 }}
max_concurrency = 3
max_calls_per_second = 8
limit_group = "fleet-{tmp_path.name}"
"""
    )
    bucket = FleetBucket(tmp_path, pipeline, keys)
    run_id = plan_run(bucket, pg_ledger_url)
    machines = [
        start_worker(
            pg_ledger_url,
            run_id,
            threads=4,
            env=worker_env(tmp_path / f"limits-{i}", PIXELFLEET_LIMITS_URL=pg_ledger_url),
        )
        for i in range(3)
    ]
    for proc in machines:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    spans = calls(log)
    assert len(spans) == 24 and len({pid for pid, _, _ in spans}) >= 2
    assert peak_in_flight(spans) <= 3  # 12 threads would make 12 calls at once
    assert most_in_a_second([s for _, s, _ in spans]) <= 8
    # The database held the limits, not any machine's files.
    assert not any((tmp_path / f"limits-{i}").exists() for i in range(3))
    with fleet_ledger(pg_ledger_url) as ledger:
        assert ledger.state_counts(run_id) == {"done": 24}


def test_the_postgres_limiter_follows_the_same_rules(pg_ledger_url: str) -> None:
    limits = Limits(f"rules-{time.monotonic_ns()}", max_concurrency=3, max_calls_per_second=10)
    one, two = PostgresLimiter(limits, pg_ledger_url), PostgresLimiter(limits, pg_ledger_url)
    spans: list[tuple[str, float, float]] = []
    lock = threading.Lock()

    def work(limiter: Any) -> None:
        for _ in range(3):
            with limiter.call():
                start = time.monotonic()
                time.sleep(0.05)
                with lock:
                    spans.append(("", start, time.monotonic()))

    threads = [threading.Thread(target=work, args=(x,)) for x in (one, two) * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    one.close()
    two.close()
    assert len(spans) == 18
    assert peak_in_flight(spans) <= 3
    assert most_in_a_second([s for _, s, _ in spans]) <= 10


def test_a_throttling_pause_reaches_every_machine(
    pg_ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits_mod, "FIRST_PAUSE", 0.3)
    limits = Limits(f"pause-{time.monotonic_ns()}", max_concurrency=1)
    one, two = PostgresLimiter(limits, pg_ledger_url), PostgresLimiter(limits, pg_ledger_url)
    pause = one.throttled()
    started = time.monotonic()
    with two.call():
        waited = time.monotonic() - started
    one.succeeded()
    one.close()
    two.close()
    assert 0.2 <= pause <= 0.3 and waited >= pause - 0.05


def test_the_limits_url_chooses_the_database() -> None:
    limits = Limits("x", max_concurrency=1)
    settings = Settings(limits_url=None)
    assert type(open_limiter(limits, settings)).__name__ == "FileLimiter"
