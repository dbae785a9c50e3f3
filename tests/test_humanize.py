"""Sizes and durations as the terminal and the web pages show them."""

from __future__ import annotations

import pytest

from pixelfleet.humanize import human_bytes, human_seconds


@pytest.mark.parametrize(
    ("n", "text"), [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KB"), (5 * 1024**3, "5.0 GB")]
)
def test_human_bytes(n: int, text: str) -> None:
    assert human_bytes(n) == text


@pytest.mark.parametrize(
    ("s", "text"), [(0.25, "0.2s"), (59.94, "59.9s"), (75, "1m15s"), (3900, "1h05m")]
)
def test_human_seconds(s: float, text: str) -> None:
    assert human_seconds(s) == text
