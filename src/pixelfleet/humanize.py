"""Sizes and durations as people read them, in the terminal and on the web pages."""

from __future__ import annotations


def human_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 KB'``."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PB"  # pragma: no cover


def human_seconds(s: float) -> str:
    """``75`` -> ``'1m15s'``; ``3900`` -> ``'1h05m'``."""
    if s < 60:
        return f"{s:.1f}s"
    minutes, seconds = divmod(int(s), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"
