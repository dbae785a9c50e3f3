"""Fixtures for the executor tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from executor_helpers import Bucket, make_bucket


@pytest.fixture
def bucket(tmp_path: Path) -> Bucket:
    """The probe's source and output folders, and the pipeline that runs it."""
    return make_bucket(tmp_path)
