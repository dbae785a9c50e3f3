"""Watching a run: Prometheus metrics (serve's /metrics, run --metrics-port), JSON log
lines, and status --json's task time percentiles, per-object figures and error kinds."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from ops_for_tests import PROBE_OP
from pixelfleet import metrics
from pixelfleet.cli.main import cli
from pixelfleet.errors import ObjectNotFoundError, StorageError
from pixelfleet.ledger import RunRecord, TaskRecord, open_ledger
from pixelfleet.metrics.exposition import CONTENT_TYPE, make_registry, render
from pixelfleet.metrics.logs import reset_logging
from pixelfleet.storage.memory import MemoryStorage

TESTS = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def _logging_reset() -> Iterator[None]:
    yield
    reset_logging()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape: ``(name, sorted labels) -> value``."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return samples(render(make_registry())[0].decode())


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str):
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def write_pipeline(tmp_path: Path, texts: dict[str, str], executor: str = "inline") -> Path:
    src = tmp_path / "bucket"
    for key, text in texts.items():
        (src / key).parent.mkdir(parents=True, exist_ok=True)
        (src / key).write_text(text)
    path = tmp_path / "p.toml"
    path.write_text(
        f"""
[source]
url = "{src}"
include = ["**/*.txt"]
partition = {{ by = "object" }}
[output]
url = "{tmp_path / "out"}"
[[steps]]
op = "{PROBE_OP}"
[run]
executor = "{executor}"
ledger = "sqlite:///{tmp_path / "ledger.db"}"
attempts = 2
"""
    )
    return path


# -- the tallies ---------------------------------------------------------------------------


def test_storage_requests_and_errors_are_counted_by_scheme_and_operation() -> None:
    storage = MemoryStorage("memory://metrics-test")
    before = scrape()
    storage.write("a.txt", b"x")
    storage.read("a.txt")
    storage.head("a.txt")
    assert [e.key for e in storage.scan()] == ["a.txt"]
    with pytest.raises(ObjectNotFoundError):  # an answer, not a failed request
        storage.read("missing.txt")
    after = scrape()
    grown = {
        op: value(after, "pixelfleet_storage_requests_total", scheme="memory", operation=op)
        - value(before, "pixelfleet_storage_requests_total", scheme="memory", operation=op)
        for op in ("write", "read", "head", "scan")
    }
    assert grown == {"write": 1, "read": 2, "head": 1, "scan": 1}
    errors = "pixelfleet_storage_errors_total"
    assert value(after, errors, scheme="memory", operation="read") == value(
        before, errors, scheme="memory", operation="read"
    )


def test_a_storage_error_is_counted_and_a_task_tally_keeps_its_own_calls() -> None:
    class Broken(MemoryStorage):
        def read(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
            raise StorageError("connection reset")

    storage = Broken("memory://metrics-broken")
    before = scrape()
    with metrics.task_tally() as counted:
        with pytest.raises(StorageError):
            storage.read("a")
        storage.head("a")
    assert counted == {
        "storage|memory|read": 1,
        "storage_errors|memory|read": 1,
        "storage|memory|head": 1,
    }
    assert metrics.requests_in(counted) == 2
    assert scrape() == before  # the task's calls travel with its result, not here


def test_watch_events_and_labeller_calls() -> None:
    from pixelfleet.labelers.limits import Limits, ThreadLimiter

    before = scrape()
    metrics.event("created")
    metrics.event("dead_lettered")
    with pytest.raises(ValueError, match="not one of created, updated"):
        metrics.event("exploded")
    limiter = ThreadLimiter(Limits("metrics-test-group"))
    with limiter.call():
        pass
    limiter.throttled()
    after = scrape()
    for action in ("created", "dead_lettered"):
        grown = value(after, "pixelfleet_events_total", action=action) - value(
            before, "pixelfleet_events_total", action=action
        )
        assert grown == 1
    assert ("pixelfleet_events_total", (("action", "ignored"),)) in after  # shown at 0
    group = {"group": "metrics-test-group"}
    assert value(after, "pixelfleet_labeller_calls_total", **group) == 1
    assert value(after, "pixelfleet_labeller_throttles_total", **group) == 1


# -- serve: GET /metrics -------------------------------------------------------------------


def test_serve_metrics_after_an_inline_run(tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from pixelfleet.server import create_app

    pipeline = write_pipeline(tmp_path, {"a/1.txt": "x", "a/2.txt": "x", "b/3.txt": "x"})
    (tmp_path / "out/b/3.out").mkdir(parents=True)  # one object fails (twice: retried)
    before = scrape()
    result = CliRunner().invoke(cli, ["run", str(pipeline)])
    assert result.exit_code == 1, result.output
    run_id = json.loads(
        CliRunner()
        .invoke(cli, ["status", "--json", "--ledger", f"sqlite:///{tmp_path / 'ledger.db'}"])
        .output
    )["run_id"]

    app = create_app(
        catalog_url=f"sqlite:///{tmp_path / 'catalog.db'}",
        ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}",
    )
    with TestClient(app) as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE
    after = samples(response.text)

    def grown(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grown("pixelfleet_tasks_total", state="done") == 2
    assert grown("pixelfleet_tasks_total", state="failed") == 1
    assert grown("pixelfleet_objects_total", state="written") == 2
    assert grown("pixelfleet_retries_total") == 1
    assert grown("pixelfleet_failures_total", error_type="IsADirectoryError") == 1
    assert grown("pixelfleet_source_bytes_total") == 3
    assert grown("pixelfleet_task_duration_seconds_count") == 4  # every attempt
    assert grown("pixelfleet_storage_requests_total", scheme="file", operation="read") >= 4
    assert value(after, "pixelfleet_tasks_in_flight") == 0
    # The ledger, read at scrape time.
    assert value(after, "pixelfleet_ledger_up") == 1
    assert value(after, "pixelfleet_run_tasks", run_id=run_id, state="done") == 2
    assert value(after, "pixelfleet_run_tasks", run_id=run_id, state="failed") == 1
    assert value(after, "pixelfleet_run_state", run_id=run_id, state="failed") == 1


def test_serve_metrics_says_when_the_ledger_is_down(tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from pixelfleet.server import create_app

    app = create_app(
        catalog_url=f"sqlite:///{tmp_path / 'catalog.db'}",
        ledger_url="postgresql://nobody@127.0.0.1:1/none?retry=0",
    )
    with TestClient(app) as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    assert value(samples(response.text), "pixelfleet_ledger_up") == 0


# -- run --metrics-port --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_metrics(port: int) -> tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.headers["Content-Type"], samples(response.read().decode())


def test_run_metrics_port_is_scraped_while_the_run_goes(tmp_path: Path) -> None:
    texts = {f"k/{i:02d}.txt": "SLEEP 0.3" for i in range(8)}
    pipeline = write_pipeline(tmp_path, texts, executor="local")
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "pixelfleet.cli.main", "run", str(pipeline), "-w", "1"]
        + ["--no-progress", "--metrics-port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    seen: list[float] = []
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                content_type, found = get_metrics(port)
            except OSError:
                time.sleep(0.05)
                continue
            assert content_type == CONTENT_TYPE
            seen.append(value(found, "pixelfleet_tasks_total", state="done"))
            time.sleep(0.2)
    finally:
        if proc.poll() is None and time.monotonic() > deadline:
            proc.kill()
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    assert len(seen) >= 3, (seen, out.decode())
    assert seen == sorted(seen) and seen[-1] > seen[0]  # counters moved while it ran
    with pytest.raises(OSError):  # and the server went away with the run
        get_metrics(port)


def test_metrics_port_in_use_is_one_clear_error(tmp_path: Path) -> None:
    pipeline = write_pipeline(tmp_path, {"a.txt": "x"})
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(cli, ["run", str(pipeline), "--metrics-port", str(port)])
    assert result.exit_code == 2
    assert f"--metrics-port {port}: cannot listen on 127.0.0.1:{port}" in result.output


# -- logs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["group", "command"])
def test_json_log_lines_carry_run_and_task_ids(tmp_path: Path, where: str) -> None:
    pipeline = write_pipeline(tmp_path, {"a/1.txt": "x", "b/3.txt": "x"})
    (tmp_path / "out/b/3.out").mkdir(parents=True)
    args = ["run", str(pipeline)]
    args = ["--log-format", "json", *args] if where == "group" else [*args, "--log-format", "json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert lines, result.stderr
    run_ids = {line["run_id"] for line in lines}
    assert len(run_ids) == 1 and run_ids.pop() in result.stdout
    by_message = {}
    for line in lines:
        assert {"time", "level", "message", "task_id", "key", "attempt"} <= line.keys()
        by_message.setdefault(line["message"].split(":")[0], []).append(line)
    done = by_message["task done"][0]
    assert done["key"] == "a/1.txt" and done["level"] == "info" and done["attempt"] == 1
    failed = by_message["task failed"][0]
    assert failed["key"] == "b/3.txt" and failed["level"] == "warning"
    assert failed["error_type"] == "IsADirectoryError" and failed["attempt"] == 2
    assert by_message["task retried"][0]["attempt"] == 1


def test_human_logs_are_off_by_default_and_on_with_a_level(tmp_path: Path) -> None:
    pipeline = write_pipeline(tmp_path, {"a/1.txt": "x"})
    quiet = CliRunner().invoke(cli, ["run", str(pipeline)])
    assert quiet.exit_code == 0, quiet.output
    assert "task done" not in quiet.stderr
    (tmp_path / "bucket/a/2.txt").write_text("y")
    loud = CliRunner().invoke(cli, ["--log-level", "info", "run", str(pipeline)])
    assert loud.exit_code == 0, loud.output
    line = next(x for x in loud.stderr.splitlines() if "task done" in x)
    assert " INFO task done [run_id=" in line and "key='a/2.txt'" in line


# -- status --json -------------------------------------------------------------------------


def test_status_json_has_percentiles_per_object_figures_and_error_kinds(tmp_path: Path) -> None:
    texts = {f"a/{i}.txt": "xx" for i in range(4)} | {"b/9.txt": "x"}
    pipeline = write_pipeline(tmp_path, texts, executor="local")  # workers in other processes
    (tmp_path / "out/b/9.out").mkdir(parents=True)
    run = CliRunner().invoke(cli, ["run", str(pipeline)])
    assert run.exit_code == 1
    assert "timing:  p50 " in run.output and "per object" in run.output
    assert "errors:  IsADirectoryError 1" in run.output
    ledger = ["--ledger", f"sqlite:///{tmp_path / 'ledger.db'}"]
    data = json.loads(CliRunner().invoke(cli, ["status", "--json", *ledger]).output)
    stats = data["stats"]
    assert stats["settled"] == 5
    assert 0 < stats["p50_seconds"] <= stats["p95_seconds"]
    assert stats["errors"] == {"IsADirectoryError": 1}
    assert stats["bytes_per_object"] == 9 / 5
    assert stats["requests_per_object"] >= 2  # each object's read and write, from the workers
    human = CliRunner().invoke(cli, ["status", *ledger])
    assert "p95" in human.output and "IsADirectoryError 1" in human.output


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'l.db'}"
    return str(request.getfixturevalue("pg_ledger_url"))


def test_task_stats_agree_across_ledgers(ledger_url: str) -> None:
    with open_ledger(ledger_url) as ledger:
        ledger.save_run(RunRecord("r1", "", {}, "inline", 0.0))
        tasks = [
            TaskRecord(f"t{i}", "g", [{"key": f"k{i}", "size": 1, "etag": "e"}], "done", seconds=i)
            for i in range(1, 21)
        ]
        tasks[0].state = "failed"
        tasks[0].failures = [
            {"key": "k1", "error_type": "CorruptInputError", "error": "bad"},
            {"key": "k1b", "error_type": "CorruptInputError", "error": "bad"},
        ]
        tasks[1].state, tasks[1].error_type = "failed", "WorkerLostError"
        tasks.append(TaskRecord("p", "g", [], "pending", seconds=999.0))  # not settled
        ledger.save_tasks("r1", tasks)
        stats = ledger.task_stats("r1")
        empty = ledger.task_stats("nothing")
    assert (stats.settled, stats.p50_seconds, stats.p95_seconds) == (20, 10.0, 19.0)
    assert stats.errors == {"CorruptInputError": 2, "WorkerLostError": 1}
    assert (empty.settled, empty.p50_seconds, empty.errors) == (0, None, {})
