"""The labels step: registry, settings, sidecars, skip-if-labelled, batching, limits."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from pixelfleet.errors import ConfigError, MissingExtraError, UnknownNameError
from pixelfleet.labelers import labelers
from pixelfleet.labelers import limits as limits_mod
from pixelfleet.labelers.limits import FileLimiter, Limits, ThreadLimiter
from pixelfleet.ledger import open_ledger
from pixelfleet.pipeline import load_pipeline, pipeline_from_dict
from pixelfleet.runner import Runner

SLOW = "labelers_for_tests:SlowLabeler"


@pytest.fixture(autouse=True)
def _limits_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rate-limit files in the test's folder (worker processes inherit the variable)."""
    import pixelfleet.settings as settings_mod

    monkeypatch.setenv("PIXELFLEET_LIMITS_DIR", str(tmp_path / "limits"))
    monkeypatch.setattr(settings_mod, "_current", None)


def make_bucket(root: Path, names: list[str]) -> Path:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not really an image: " + name.encode())
    return root


def pipeline(
    src: Path, out: Path, step: dict[str, Any], executor: str = "inline", **kw: Any
) -> Any:
    return pipeline_from_dict(
        {
            "source": {"url": str(src), "partition": kw.pop("partition", {"by": "object"})},
            "output": {"url": str(out)},
            "steps": [{"op": "labels", **step}],
            "run": {"executor": executor, **kw},
        }
    )


def run(p: Any, tmp_path: Path) -> Any:
    with open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}") as ledger:
        return Runner(p, ledger, progress=False).run()


def test_registry_names_and_bad_name() -> None:
    assert {"imagenet", "spectral", "rekognition", "static"} <= set(labelers.names())
    with pytest.raises(UnknownNameError, match="choose one of: .*imagenet.*spectral"):
        labelers.get("nope")
    assert labelers.get(SLOW).name == "test-slow"


def test_bad_labeler_and_options_are_refused_on_load(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown labeler 'nope'; choose one of"):
        pipeline(tmp_path, tmp_path / "o", {"labeler": "nope"})
    with pytest.raises(ConfigError, match="unknown option 'sensr'"):
        pipeline(tmp_path, tmp_path / "o", {"labeler": "spectral", "options": {"sensr": "x"}})
    with pytest.raises(ConfigError, match="sensor"):
        pipeline(tmp_path, tmp_path / "o", {"labeler": "spectral", "options": {"sensor": "x"}})


def test_missing_extra_names_the_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a)
    )
    with pytest.raises(MissingExtraError, match=r"pip install 'pixelfleet\[ml\]'"):
        pipeline(tmp_path, tmp_path / "o", {"labeler": "imagenet"})


def test_static_labels_sidecar_properties_and_skip(tmp_path: Path) -> None:
    src = make_bucket(tmp_path / "src", ["naip/a.tif", "photos/b.jpg"])
    out = tmp_path / "out"
    step = {
        "labeler": "static",
        "options": {"labels": {"image": 100, "faint": 1}, "match": {"naip/**": {"aerial": 90}}},
        "min_confidence": 5,
    }
    p = pipeline(src, out, step)
    first = run(p, tmp_path)
    assert first.state == "done" and first.counts.objects_written == 2
    doc = json.loads((out / "naip" / "a.labels.json").read_text())
    assert doc["labeler"] == {"name": "static", "version": "1"}
    assert doc["source"]["key"] == "naip/a.tif" and doc["source"]["etag"]
    assert [lab["name"] for lab in doc["labels"]] == ["image", "aerial"]  # faint is dropped
    assert [
        lab["name"] for lab in json.loads((out / "photos/b.labels.json").read_text())["labels"]
    ] == ["image"]

    # Changing nothing: tasks are skipped; a lost ledger still rewrites nothing.
    again = run(p, tmp_path / "other-ledger")
    assert again.counts.objects_written == 0 and again.counts.objects_current == 2

    # A new labeller version relabels.
    bumped = pipeline(src, out, {**step, "options": {**step["options"], "version": "2"}})
    assert bumped.steps[0].labeler_version == "2"
    third = run(bumped, tmp_path)
    assert third.counts.objects_written == 2
    assert json.loads((out / "naip/a.labels.json").read_text())["labeler"]["version"] == "2"


def test_labels_reach_the_task_result(tmp_path: Path) -> None:
    from pixelfleet.models import Task
    from pixelfleet.ops.labels import LABELS_PROPERTY
    from pixelfleet.storage import open_storage
    from pixelfleet.worker import run_task

    src = make_bucket(tmp_path / "src", ["x.jpg"])
    p = pipeline(src, tmp_path / "out", {"labeler": "static", "options": {"labels": {"cat": 80}}})
    entry = open_storage(str(src)).head("x.jpg")
    assert entry is not None
    result = run_task(json.dumps(p.to_json_dict()), Task("t", "", (entry,)))
    (er,) = result.entries
    assert er.properties[LABELS_PROPERTY] == [{"name": "cat", "confidence": 80.0}]
    # ... and survive the JSON trip to the runner.
    from pixelfleet.models import TaskResult

    back = TaskResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert back.entries[0].properties == er.properties


def test_batches_within_a_task_and_a_bad_image_fails_alone(tmp_path: Path) -> None:
    names = [f"img{i:02d}.jpg" for i in range(7)] + ["bad.jpg"]
    src = make_bucket(tmp_path / "src", names)
    log = tmp_path / "calls.log"
    step = {"labeler": SLOW, "options": {"log": str(log), "seconds": 0}, "batch_size": 4}
    p = pipeline(src, tmp_path / "out", step, partition={"by": "count", "size": 100})
    summary = run(p, tmp_path)
    assert summary.counts.objects_written == 7 and summary.counts.objects_failed == 1
    sizes = [int(line.split()[3]) for line in log.read_text().splitlines()]
    # bad.jpg sorts first: its batch of 4 fails, is split into calls of 1, the rest goes in 4s.
    assert sizes[0] == 4 and sizes.count(1) == 4 and sum(sizes) == 8 + 4
    assert summary.failures[0].failures[0]["key"] == "bad.jpg"


def test_throttled_calls_pause_and_retry(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(limits_mod, "FIRST_PAUSE", 0.05)
    src = make_bucket(tmp_path / "src", ["a.jpg"])
    counter = tmp_path / "counter"
    step = {
        "labeler": "labelers_for_tests:ThrottlingLabeler",
        "options": {"counter": str(counter), "refusals": 3},
        "max_concurrency": 1,
    }
    summary = run(pipeline(src, tmp_path / "out", step), tmp_path)
    assert summary.state == "done"
    assert counter.read_text() == "xxxx"
    # Too few retries: the object fails, with a hint.
    counter.unlink()
    failing = pipeline(src, tmp_path / "out2", {**step, "retries": 1}, attempts=1)
    summary = run(failing, tmp_path / "l2")
    assert summary.counts.objects_failed == 1
    assert "still throttled after 2 attempts" in summary.failures[0].failures[0]["error"]


def starts_and_overlap(log: Path) -> tuple[list[float], int, set[str]]:
    calls = [line.split() for line in log.read_text().splitlines()]
    events = sorted([(float(c[1]), 1) for c in calls] + [(float(c[2]), -1) for c in calls])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return sorted(float(c[1]) for c in calls), peak, {c[0] for c in calls}


def max_in_window(starts: list[float], seconds: float = 1.0) -> int:
    """Most starts in any window of ``seconds`` (less 50 ms for the jitter between the
    limiter letting a call go and the call noting its start under a loaded machine)."""
    window = seconds - 0.05
    return max(sum(1 for t in starts if s <= t < s + window) for s in starts)


def test_limits_hold_across_two_worker_processes(tmp_path: Path) -> None:
    src = make_bucket(tmp_path / "src", [f"img{i:02d}.jpg" for i in range(16)])
    log = tmp_path / "calls.log"
    step = {
        "labeler": SLOW,
        "options": {"log": str(log), "seconds": 0.2},
        "max_concurrency": 2,
        "max_calls_per_second": 6,
        "limit_group": f"test-{tmp_path.name}",
    }
    # 2 processes x 4 threads: 8 calls at once without the limits.
    p = pipeline(src, tmp_path / "out", step, executor="local", workers=2, threads=4)
    started = time.monotonic()
    summary = run(p, tmp_path)
    assert summary.state == "done" and summary.counts.objects_written == 16
    starts, peak, pids = starts_and_overlap(log)
    assert len(starts) == 16 and len(pids) == 2
    assert peak == 2  # never more than the cap, and the cap is reached
    assert max_in_window(starts) <= 6
    assert time.monotonic() - started >= 15 / 6 - 0.1  # the rate was what bounded the run


def test_thread_and_file_limiters_share_the_same_rules(tmp_path: Path) -> None:
    import threading

    limits = Limits("t", max_concurrency=3, max_calls_per_second=10)
    for limiter in (ThreadLimiter(limits), FileLimiter(limits, str(tmp_path / "f"))):
        spans: list[tuple[float, float]] = []
        lock = threading.Lock()

        def work(
            limiter: Any = limiter,
            spans: list[tuple[float, float]] = spans,
            lock: threading.Lock = lock,
        ) -> None:
            for _ in range(3):
                with limiter.call():
                    start = time.monotonic()
                    time.sleep(0.05)
                    with lock:
                        spans.append((start, time.monotonic()))

        threads = [threading.Thread(target=work) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        starts = sorted(s for s, _ in spans)
        assert len(starts) == 18 and max_in_window(starts) <= 10
        peak = max(sum(1 for s, e in spans if s <= t < e) for t in starts)
        assert peak <= 3


def test_file_limiter_throttle_pause_is_shared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits_mod, "FIRST_PAUSE", 0.3)
    limits = Limits("p", max_concurrency=1)
    one, two = FileLimiter(limits, str(tmp_path)), FileLimiter(limits, str(tmp_path))
    pause = one.throttled()
    started = time.monotonic()
    with two.call():
        waited = time.monotonic() - started
    assert 0.2 <= pause <= 0.3 and waited >= pause - 0.05
    one.succeeded()
    assert json.loads((tmp_path / "rate.json").read_text())["failures"] == 0


def test_example_pipelines_load() -> None:
    repo = Path(__file__).resolve().parents[2]
    for name in ("label-photos.toml", "label-landcover.toml", "label-inventory.toml"):
        p = load_pipeline(str(repo / "examples" / name))
        assert any(s.op == "labels" for s in p.steps)


@pytest.mark.dask
def test_limits_hold_across_dask_workers(tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    src = make_bucket(tmp_path / "src", [f"img{i:02d}.jpg" for i in range(12)])
    log = tmp_path / "calls.log"
    step = {
        "labeler": SLOW,
        "options": {"log": str(log), "seconds": 0.2},
        "max_concurrency": 2,
        "max_calls_per_second": 5,
        "limit_group": f"dask-{tmp_path.name}",
    }
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=4,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
    ) as cluster:
        address = cluster.scheduler_address.removeprefix("tcp://")
        p = pipeline(src, tmp_path / "out", step, executor=f"dask://{address}")
        summary = run(p, tmp_path)
    assert summary.state == "done" and summary.counts.objects_written == 12
    starts, peak, pids = starts_and_overlap(log)
    assert len(starts) == 12 and len(pids) == 2
    assert peak <= 2 and max_in_window(starts) <= 5
    # The cluster-wide limiter was used, not the machine's files.
    assert not (tmp_path / "limits").exists()
