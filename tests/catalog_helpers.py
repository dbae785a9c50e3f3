"""Synthetic STAC items and a throw-away PostgreSQL database for catalog tests."""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator
from typing import Any

import pytest

PG_ADMIN = "postgresql://root@127.0.0.1:5432/postgres"

WORDS = ["glacier", "water", "dog", "forest", "city", "desert", "snow", "river"]


def make_item(n: int, collection: str = "test", **props: Any) -> dict[str, Any]:
    """Item ``i<n>``: a 1 x 1 degree box at lon n % 40, lat n % 20, one day per n in 2013."""
    lon, lat = float(n % 40) - 100, float(n % 20) + 20
    day = 1 + n % 28
    month = 1 + (n // 28) % 12
    properties = {
        "datetime": f"2013-{month:02d}-{day:02d}T00:00:00Z",
        "title": f"scene {n} {WORDS[n % len(WORDS)]}",
        "description": f"synthetic item {n}",
        "cloud": n % 10,
        "kind": "photo" if n % 3 == 0 else "raster",
        **props,
    }
    ring = [[lon, lat], [lon + 1, lat], [lon + 1, lat + 1], [lon, lat + 1], [lon, lat]]
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "stac_extensions": [],
        "id": f"i{n:04d}",
        "collection": collection,
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "bbox": [lon, lat, lon + 1, lat + 1],
        "properties": properties,
        "links": [],
        "assets": {"thumbnail": {"href": f"https://example.test/{n}.jpg", "roles": ["thumbnail"]}},
    }


def pg_reachable() -> bool:
    """Whether PostgreSQL answers on 127.0.0.1:5432."""
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


def pg_database() -> Iterator[str]:
    """Create ``pixelfleet_test_<random>``, yield its URL, drop it afterwards.

    Skips when PostgreSQL is unreachable, unless CI is set (then it is a failure).
    """
    if not pg_reachable():
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not reachable on 127.0.0.1:5432 (CI needs it)")
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    import psycopg

    name = f"pixelfleet_test_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://root@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                [name],
            )
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def chromium_path() -> str:
    """Debian's chromium, or a skip (a failure under CI)."""
    path = "/usr/bin/chromium"
    if not os.path.exists(path):
        if os.environ.get("CI"):
            pytest.fail("/usr/bin/chromium is missing (CI installs Debian's chromium)")
        pytest.skip("Debian's chromium is not installed at /usr/bin/chromium")
    return path
