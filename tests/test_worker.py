"""The worker: what a failed object's result says, and whether retrying it can help."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import ops_for_tests
from ops_for_tests import FAILING_OP, PluginInputError
from pixelfleet.errors import (
    PERMANENT_ERRORS,
    ConfigError,
    InputError,
    StorageError,
    TaskTimeoutError,
    UnknownNameError,
    WorkerLostError,
)
from pixelfleet.ledger import open_ledger
from pixelfleet.models import Task, TaskResult
from pixelfleet.pipeline import pipeline_from_dict
from pixelfleet.runner import Runner
from pixelfleet.storage import open_storage
from pixelfleet.worker import run_task


def failing_pipeline(src: Path, out: Path, **run: Any) -> Any:
    return pipeline_from_dict(
        {
            "source": {"url": str(src), "include": ["*.txt"], "partition": {"by": "object"}},
            "output": {"url": str(out)},
            "steps": [{"op": FAILING_OP}],
            "run": {"executor": "inline", **run},
        }
    )


@pytest.fixture
def src(tmp_path: Path) -> Path:
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "bad.txt").write_text("plugin-input")
    (folder / "flaky.txt").write_text("transient")
    (folder / "good.txt").write_text("fine")
    return folder


def test_permanence_follows_the_error_tree() -> None:
    assert issubclass(PluginInputError, InputError)
    assert isinstance(PluginInputError("x"), PERMANENT_ERRORS)
    for transient in (OSError("x"), StorageError("x"), TimeoutError("x"), RuntimeError("x")):
        assert not isinstance(transient, PERMANENT_ERRORS)
    assert TaskResult.crashed("t", UnknownNameError("no op 'x'")).permanent
    assert TaskResult.crashed("t", ConfigError("bad pipeline")).permanent
    assert not TaskResult.crashed("t", WorkerLostError("pid 7 was killed")).permanent
    assert not TaskResult.crashed("t", TaskTimeoutError("ran 60 s")).permanent


def test_the_worker_decides_and_the_result_carries_it(src: Path, tmp_path: Path) -> None:
    pipeline = failing_pipeline(src, tmp_path / "out")
    context = json.dumps(pipeline.to_json_dict())
    storage = open_storage(str(src))
    results = {}
    for key in ("bad.txt", "flaky.txt", "good.txt"):
        entry = storage.head(key)
        assert entry is not None
        result = run_task(context, Task(id=key, group=key, entries=(entry,)))
        # Results cross processes as JSON: the answer must survive the trip.
        results[key] = TaskResult.from_dict(json.loads(json.dumps(result.to_dict())))
    bad, flaky, good = results["bad.txt"], results["flaky.txt"], results["good.txt"]
    assert bad.state == "failed" and bad.permanent
    assert bad.entries[0].error_type == "PluginInputError" and bad.entries[0].permanent
    assert bad.entries[0].error == "bad.txt: not the kind of input this step takes"
    assert flaky.state == "failed" and not flaky.permanent
    assert flaky.entries[0].error_type == "OSError" and not flaky.entries[0].permanent
    assert good.state == "done" and not good.permanent


def test_plugin_input_error_is_not_retried_but_oserror_is(src: Path, tmp_path: Path) -> None:
    ops_for_tests.FailingOp.runs.clear()
    pipeline = failing_pipeline(src, tmp_path / "out", attempts=3)
    with open_ledger(f"sqlite:///{tmp_path / 'l.db'}") as ledger:
        summary = Runner(pipeline, ledger).run()
    assert summary.state == "failed"
    attempts = {t.group: t.attempts for t in summary.failures}
    assert attempts == {"bad.txt": 1, "flaky.txt": 3}
    assert ops_for_tests.FailingOp.runs == {"bad.txt": 1, "flaky.txt": 3, "good.txt": 1}
    assert summary.counts.retries == 2
    [bad] = [t for t in summary.failures if t.group == "bad.txt"]
    assert bad.failures[0]["error_type"] == "PluginInputError"


# -- what a worker costs per task (issue 14) ------------------------------------------------


def test_result_json_is_the_result_as_a_dict() -> None:
    from pixelfleet.models import EntryResult, OutputRecord
    from pixelfleet.worker import result_json

    result = TaskResult(
        task_id="t",
        state="failed",
        entries=[
            EntryResult(
                key="a.png",
                etag="e",
                state="done",
                outputs=[OutputRecord("a.jpg", 3, "thumbnail", {"x": [1]}, "image/jpeg", ["t"])],
                properties={"labels": [{"name": "dog"}]},
                item={"id": "a.png"},
            ),
            EntryResult(key="b.png", etag="f", state="failed", error_type="E", error="bad"),
        ],
        worker="host:1",
        permanent=True,
    )
    assert json.loads(result_json(result)) == result.to_dict()
    assert TaskResult.from_dict(json.loads(result_json(result))) == result
    # What orjson refuses (a lone surrogate; an integer over 64 bits) is written by json.
    result.entries[1].error = "bad \udcff name"
    result.entries[0].outputs[0].properties = {"big": 2**70}
    assert json.loads(result_json(result)) == result.to_dict()


_LAZY_RASTERIO = """
import json, os, sys, warnings
from pixelfleet.worker import configure_gdal, execute
configure_gdal()
assert "rasterio" not in sys.modules, "configure_gdal imported rasterio"
import rasterio
from rasterio.errors import NotGeoreferencedWarning
assert any(f[2] is NotGeoreferencedWarning for f in warnings.filters), "no filter"
context = json.dumps({"source": {"url": sys.argv[1]}, "output": {"url": sys.argv[2]},
                      "steps": [{"op": "ops_for_tests:ProbeOp"}]})
task = {"id": "t", "group": "", "entries": []}
execute(context, json.dumps(task))
assert os.environ["GDAL_OVERVIEW_OVERSAMPLING_THRESHOLD"] == "1.0"
print("ok")
"""


def test_a_worker_imports_rasterio_only_when_a_step_does(tmp_path: Path) -> None:
    """GDAL's settings cost no rasterio import: its warning filter comes with rasterio,
    and the options every read sets are set process-wide before the next task."""
    import os
    import subprocess
    import sys

    tests = Path(__file__).resolve().parent
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", _LAZY_RASTERIO, str(tmp_path), str(tmp_path / "o")],
        env={**os.environ, "PYTHONPATH": str(tests)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
