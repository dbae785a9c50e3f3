"""``pixelfleet worker`` processes (a fleet's, AWS Batch's) run under the memory cap as a
hard limit (``RLIMIT_DATA``), as local and Dask workers do (issue 12)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from fleet_helpers import worker_env
from memory_helpers import LIMIT_PROBE_OP

DATA = Path(__file__).resolve().parents[1] / "data"


def test_fleet_workers_set_the_pipelines_memory_cap_as_their_hard_limit(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):
        shutil.copy(DATA / "flower.jpg", src / f"f{i}.jpg")
    pipeline = tmp_path / "p.toml"
    pipeline.write_text(
        f"""
[source]
url = "{src}"
partition = {{ by = "object" }}
[output]
url = "{tmp_path / "out"}"
[[steps]]
op = "thumbnail"
size = 32
[[steps]]
op = "{LIMIT_PROBE_OP}"
[run]
memory_cap = "640M"
"""
    )
    ledger = f"sqlite:///{tmp_path / 'l.db'}"
    command = [sys.executable, "-m", "pixelfleet.cli.main", "run", str(pipeline)]
    command += ["-e", "fleet-local", "--workers", "2", "--ledger", ledger, "--no-progress"]
    done = subprocess.run(command, env=worker_env(), capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    reports = [json.loads(p.read_text()) for p in (tmp_path / "out").glob("*.memory.json")]
    assert len(reports) == 4
    assert {r["limit"] for r in reports} == {640 * 1024**2}  # set by the thumbnail's decode
    assert all(r["data"] < 640 * 1024**2 for r in reports)
