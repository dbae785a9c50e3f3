"""Fixtures the imagery tests share: factories of small GeoTIFFs and photos."""

from __future__ import annotations

from pathlib import Path

import pytest

from imaging_helpers import PhotoFactory, TifFactory


@pytest.fixture
def make_tif(tmp_path: Path) -> TifFactory:
    """Factory: write a small GeoTIFF (see :class:`TifFactory`)."""
    return TifFactory(tmp_path)


@pytest.fixture
def make_photo(tmp_path: Path) -> PhotoFactory:
    """Factory: save a small photo (see :class:`PhotoFactory`)."""
    return PhotoFactory(tmp_path)
