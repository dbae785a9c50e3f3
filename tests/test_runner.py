"""The runner end to end with a probe op: skip, resume, retry, failures, dry runs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from ops_for_tests import PROBE_OP
from pixelfleet.errors import ConfigError
from pixelfleet.ledger import open_ledger
from pixelfleet.pipeline import pipeline_from_dict
from pixelfleet.runner import Runner


def make_bucket(root: Path, objects: dict[str, str]) -> None:
    for key, text in objects.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def make_pipeline(src: Path, out: Path, **run: Any) -> Any:
    return pipeline_from_dict(
        {
            "source": {"url": str(src), "include": ["**/*.txt"], "partition": {"by": "object"}},
            "output": {"url": f"file://{out}"},
            "steps": [{"op": PROBE_OP}],
            "run": {"executor": "inline", **run},
        }
    )


@pytest.fixture
def bucket(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    make_bucket(src, {f"al/2013/{i}.txt": "ok" for i in range(5)} | {"ca/2014/x.txt": "ok"})
    return src


def mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*.out")}


def test_run_then_rerun_skips_everything(bucket: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    pipeline = make_pipeline(bucket, out)
    with open_ledger(f"sqlite:///{tmp_path / 'l.db'}") as ledger:
        first = Runner(pipeline, ledger).run()
        assert first.state == "done"
        assert first.counts.tasks_done == 6
        assert first.counts.objects_written == 6
        before = mtimes(out)
        assert sorted(before) == sorted([f"al/2013/{i}.out" for i in range(5)] + ["ca/2014/x.out"])
        second = Runner(pipeline, ledger).run()
        assert second.counts.tasks_skipped == 6
        assert second.counts.tasks_done == 0
        assert mtimes(out) == before


def test_lost_ledger_rewrites_nothing(bucket: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    pipeline = make_pipeline(bucket, out)
    with open_ledger(f"sqlite:///{tmp_path / 'a.db'}") as ledger:
        Runner(pipeline, ledger).run()
    before = mtimes(out)
    with open_ledger(f"sqlite:///{tmp_path / 'b.db'}") as ledger:
        again = Runner(pipeline, ledger).run()
    assert again.counts.objects_current == 6
    assert again.counts.objects_written == 0
    assert mtimes(out) == before


def test_changed_source_is_redone_alone(bucket: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    pipeline = make_pipeline(bucket, out)
    with open_ledger(f"sqlite:///{tmp_path / 'l.db'}") as ledger:
        Runner(pipeline, ledger).run()
        before = mtimes(out)
        changed = bucket / "al/2013/3.txt"
        changed.write_text("ok, changed")
        os.utime(changed, ns=(1, 1))
        summary = Runner(pipeline, ledger).run()
    assert summary.counts.tasks_done == 1
    assert summary.counts.tasks_skipped == 5
    after = mtimes(out)
    assert [k for k in after if after[k] != before[k]] == ["al/2013/3.out"]


def test_changed_settings_redo(bucket: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with open_ledger(f"sqlite:///{tmp_path / 'l.db'}") as ledger:
        Runner(make_pipeline(bucket, out), ledger).run()
        other = pipeline_from_dict(
            {
                "source": {"url": str(bucket), "include": ["**/*.txt"]},
                "output": {"url": f"file://{out}"},
                "steps": [{"op": PROBE_OP, "marks_dir": str(tmp_path)}],
                "run": {"executor": "inline"},
            }
        )
        summary = Runner(other, ledger).run()
    assert summary.counts.objects_written == 6


def test_failures_are_recorded_and_retry_settles_them(bucket: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    # A folder where the output file should go makes the write fail (an OSError: retryable).
    blocker = out / "al/2013/2.out"
    blocker.mkdir(parents=True)
    pipeline = make_pipeline(bucket, out, attempts=3)
    with open_ledger(f"sqlite:///{tmp_path / 'l.db'}") as ledger:
        summary = Runner(pipeline, ledger).run()
        assert summary.state == "failed"
        assert summary.counts.tasks_failed == 1
        assert summary.counts.retries == 2
        [failed] = summary.failures
        assert failed.attempts == 3
        assert failed.failures[0]["key"] == "al/2013/2.txt"
        assert failed.error_type in {"IsADirectoryError", "OSError"}
        blocker.rmdir()
        retried = Runner(pipeline, ledger).retry(summary.run_id)
        assert retried.state == "done"
        assert retried.counts.tasks_done == 1
        assert ledger.state_counts(summary.run_id) == {"done": 6}
        assert ledger.get_run(summary.run_id).state == "done"


def test_dry_run_writes_nothing(bucket: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    pipeline = make_pipeline(bucket, out)
    with open_ledger("sqlite:///:memory:") as ledger:
        report = Runner(pipeline, ledger).dry_run()
        assert (report.tasks, report.objects, report.already_done) == (6, 6, 0)
        assert report.bytes == 12
        assert ledger.find_runs() == []
    assert not out.exists()


def test_memory_storage_needs_inline(tmp_path: Path) -> None:
    pipeline = pipeline_from_dict(
        {
            "source": {"url": "memory://x"},
            "output": {"url": "memory://y"},
            "steps": [{"op": PROBE_OP}],
            "run": {"executor": "local"},
        }
    )
    with (
        open_ledger("sqlite:///:memory:") as ledger,
        pytest.raises(ConfigError, match="memory:// storage, which lives inside one process"),
    ):
        Runner(pipeline, ledger)


def test_interrupted_run_resumes(
    bucket: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    pipeline = make_pipeline(bucket, out)
    import pixelfleet.worker as worker

    calls = {"n": 0}
    real = worker.execute

    def flaky(context: str, payload: str) -> str:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(context, payload)

    monkeypatch.setattr(worker, "execute", flaky)
    with open_ledger(f"sqlite:///{tmp_path / 'l.db'}") as ledger:
        with pytest.raises(KeyboardInterrupt):
            Runner(pipeline, ledger).run()
        run = ledger.get_run()
        assert run.state == "interrupted"
        assert ledger.state_counts(run.run_id).get("done") == 2
        monkeypatch.setattr(worker, "execute", real)
        resumed = Runner(pipeline, ledger).run()
    assert resumed.counts.tasks_skipped == 2
    assert resumed.counts.tasks_done == 4
    assert len(mtimes(out)) == 6


# -- many small objects (issue 14) ----------------------------------------------------------


def test_auto_batches_a_listing_but_not_a_source_that_never_ends(
    bucket: Path, tmp_path: Path
) -> None:
    from pixelfleet.sources.memory import MemorySource

    pipeline = pipeline_from_dict(
        {
            "source": {"url": str(bucket), "include": ["**/*.txt"]},
            "output": {"url": str(tmp_path / "out")},
            "steps": [{"op": PROBE_OP}],
            "run": {"executor": "inline"},
        }
    )
    with open_ledger("memory://") as ledger:
        assert Runner(pipeline, ledger).partition.by == "auto"
        live = Runner(pipeline, ledger, source=MemorySource())
        assert live.partition.by == "object"  # an entry never waits for a batch to fill
        summary = Runner(pipeline, ledger).run()
    assert summary.counts.objects_written == 6 and summary.counts.tasks_done < 6


def test_a_rerun_acknowledges_every_skipped_entry(bucket: Path, tmp_path: Path) -> None:
    from pixelfleet.sources.memory import MemorySource

    pipeline = make_pipeline(bucket, tmp_path / "out")
    entries = list(pipeline.make_source().entries())
    with open_ledger(f"sqlite:///{tmp_path / 'l.db'}") as ledger:
        Runner(pipeline, ledger).run()
        source = MemorySource(entries, end=True)
        again = Runner(pipeline, ledger, source=source).run()
    assert again.counts.tasks_skipped == 6
    assert source.acked == entries


class CountingLedger:
    """A ledger that remembers which task ids each ``save_tasks`` call wrote."""

    def __init__(self, inner: Any):
        self._inner = inner
        self.saves: list[list[str]] = []

    def save_tasks(self, run_id: str, tasks: Any) -> None:
        self.saves.append([t.task_id for t in tasks])
        self._inner.save_tasks(run_id, tasks)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_a_task_is_written_once_per_flush(bucket: Path, tmp_path: Path) -> None:
    """Admitted (running) and settled (done) between two flushes: one row, not two."""
    pipeline = make_pipeline(bucket, tmp_path / "out")
    with open_ledger(f"sqlite:///{tmp_path / 'l.db'}") as inner:
        ledger = CountingLedger(inner)
        summary = Runner(pipeline, ledger).run()  # type: ignore[arg-type]
        assert inner.state_counts(summary.run_id) == {"done": 6}
    assert ledger.saves and all(len(ids) == len(set(ids)) for ids in ledger.saves)


def test_a_source_that_fails_fails_the_run_with_its_error(tmp_path: Path) -> None:
    from collections.abc import Iterator

    from pixelfleet.models import Entry
    from pixelfleet.sources.base import Source

    class Broken(Source):
        def entries(self) -> Iterator[Entry]:
            yield Entry("a.txt", 2, "e")
            raise OSError("the listing broke off")

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("ok")
    pipeline = make_pipeline(tmp_path / "src", tmp_path / "out")
    with open_ledger("memory://") as ledger:
        with pytest.raises(OSError, match="broke off"):
            Runner(pipeline, ledger, source=Broken()).run()
        assert ledger.get_run().state == "interrupted"
