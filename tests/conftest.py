"""Shared fixtures: tiny rasters and photos built in memory, sample paths, clean settings."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
SHARED_SAMPLES = REPO.parent / "shared" / "samples"


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--screenshots DIR``: keep the browser tests' screenshots there (default: a temp dir)."""
    parser.addoption("--screenshots", default=None, help="folder for browser screenshots")


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every test gets its own ledger path and fresh settings."""
    import pixelfleet.settings as settings_mod

    for name in list(os.environ):
        if name.startswith("PIXELFLEET_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PIXELFLEET_LEDGER", f"sqlite:///{tmp_path / 'ledger.db'}")
    # The AWS SDK's credential chain must find nothing by itself and never ask the
    # instance metadata service (no network but loopback here).
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setattr(settings_mod, "_current", None)


# -- S3: a moto server on 127.0.0.1 ------------------------------------------------------
# (Imports here rather than at the top because this block was appended to a shared file.)
from collections.abc import Iterator  # noqa: E402

from s3_server import S3Env, new_bucket, start_s3_server  # noqa: E402


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """Endpoint URL of a moto S3 server on 127.0.0.1, shared by the whole session."""
    endpoint, stop = start_s3_server()
    try:
        yield endpoint
    finally:
        stop()


@pytest.fixture
def s3_env(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Env]:
    """Point pixelfleet's settings at the moto server, with test credentials and a fresh bucket.

    Yields an object with ``.endpoint``, ``.bucket``, ``.url`` (``s3://bucket``) and a
    boto3 ``.client``.
    """
    import pixelfleet.settings as settings_mod

    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PIXELFLEET_S3_ENDPOINT", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setattr(settings_mod, "_current", None)
    env = new_bucket(s3_server)
    try:
        yield env
    finally:
        env.client.close()


# -- Catalog: a throw-away PostgreSQL database (pgstac) for the session ----------------------
from catalog_helpers import pg_database  # noqa: E402


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """URL of a fresh PostgreSQL database for this test session (dropped afterwards)."""
    yield from pg_database()


@pytest.fixture
def pg_ledger_url(pg_url: str) -> str:
    """A PostgreSQL ledger URL of its own for one test (a fresh schema in the session's
    database), with a short reconnect budget so a broken test fails fast."""
    return f"{pg_url}?schema=t_{secrets.token_hex(6)}&retry=20"


# -- Dask: a real scheduler and workers on 127.0.0.1 ------------------------------------


@pytest.fixture(scope="module")
def dask_address() -> Iterator[str]:
    """A real scheduler and two worker processes on 127.0.0.1, shared by the module."""
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=2,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
    )
    try:
        yield cluster.scheduler_address.removeprefix("tcp://")
    finally:
        cluster.close()
