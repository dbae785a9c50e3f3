"""Shared fixtures: tiny rasters and photos built in memory, sample paths, clean settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
SHARED_SAMPLES = REPO.parent / "shared" / "samples"


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every test gets its own ledger path and fresh settings."""
    import pixelfleet.settings as settings_mod

    for name in list(os.environ):
        if name.startswith("PIXELFLEET_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PIXELFLEET_LEDGER", f"sqlite:///{tmp_path / 'ledger.db'}")
    monkeypatch.setattr(settings_mod, "_current", None)
