"""Fixtures for block processing: rasters made to order (helpers in blocks_helpers)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from affine import Affine

HERE = Path(__file__).resolve().parent
# The tests' block functions (blocks_testfns) are named by reference; worker processes
# (spawned, and Dask's) inherit sys.path, so they import them too.
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from blocks_helpers import write_raster  # noqa: E402


@pytest.fixture
def make_raster(tmp_path: Path) -> Callable[..., Path]:
    """``make_raster(name, data, transform, crs=..., nodata=...)`` -> path in tmp_path."""

    def make(name: str, data: np.ndarray, transform: Affine, **kw: Any) -> Path:
        return write_raster(tmp_path / name, data, transform, **kw)

    return make
