"""A moto S3 server on 127.0.0.1 for tests and benchmarks, optionally with added latency.

The server runs in a child process so its request handling neither competes with the
code under test for the GIL nor sees pytest's warning filters. It binds port 0 (the
kernel picks a free port, so there is no race between choosing a port and using it),
reports its endpoint on stdout, and exits when its stdin closes: if the parent dies,
the server goes with it.

With ``delay_s > 0`` every request waits that long before moto handles it, on its own
thread, so concurrent requests overlap the way they would over a real network with
that much latency.

Run directly to get a server for manual experiments::

    python tests/s3_server.py --delay 0.02
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

HOST = "127.0.0.1"
_START_TIMEOUT_S = 60.0


class DelayMiddleware:
    """WSGI middleware that sleeps ``delay_s`` before handing each request to ``app``."""

    def __init__(self, app: Callable[..., Iterable[bytes]], delay_s: float):
        self.app = app
        self.delay_s = delay_s

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        time.sleep(self.delay_s)
        return self.app(environ, start_response)


def serve(delay_s: float = 0.0, port: int = 0) -> None:
    """Run a moto server in this process until stdin closes; print its endpoint first."""
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    app: Any = DomainDispatcherApplication(create_backend_app)
    if delay_s > 0:
        app = DelayMiddleware(app, delay_s)
    server = make_server(HOST, port, app, threaded=True, request_handler=MotoRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"http://{HOST}:{server.server_port}", flush=True)
    # Block until the parent closes our stdin (on purpose or by dying).
    sys.stdin.buffer.read()
    server.shutdown()


def start_s3_server(delay_s: float = 0.0) -> tuple[str, Callable[[], None]]:
    """Start a moto S3 server in a child process; return ``(endpoint, stop)``.

    ``stop()`` shuts the server down and waits for the process; calling it twice is fine.
    """
    env = dict(os.environ)
    # The server's own Python must not turn moto's deprecation warnings into errors.
    env.pop("PYTHONWARNINGS", None)
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop() or on failure
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--delay", str(delay_s)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
        env=env,
    )
    assert proc.stdout is not None and proc.stdin is not None
    stdout = proc.stdout
    line: list[bytes] = []
    reader = threading.Thread(target=lambda: line.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(_START_TIMEOUT_S)
    endpoint = line[0].decode().strip() if line else ""
    if not endpoint.startswith("http://"):
        proc.kill()
        proc.wait()
        log.seek(0)
        tail = log.read().decode(errors="replace").strip().splitlines()[-5:]
        log.close()
        raise RuntimeError(
            f"moto server did not start within {_START_TIMEOUT_S:.0f}s "
            f"(exit code {proc.returncode}): {' / '.join(tail) or 'no output'}"
        )

    def stop() -> None:
        if proc.poll() is None:
            try:
                proc.stdin.close()  # type: ignore[union-attr]
                proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()
        stdout.close()
        log.close()

    return endpoint, stop


@dataclass
class S3Env:
    """A bucket on a test S3 server and a boto3 client for it."""

    endpoint: str
    bucket: str
    client: Any

    @property
    def url(self) -> str:
        """The bucket's ``s3://`` URL."""
        return f"s3://{self.bucket}"


def s3_client(endpoint: str) -> Any:
    """A boto3 S3 client for the test server, with the test credentials."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


def new_bucket(endpoint: str, prefix: str = "test") -> S3Env:
    """Create a bucket with a unique name on the test server."""
    client = s3_client(endpoint)
    bucket = f"{prefix}-{uuid.uuid4().hex[:16]}"
    client.create_bucket(Bucket=bucket)
    return S3Env(endpoint=endpoint, bucket=bucket, client=client)


def main() -> None:
    """Command line: ``python tests/s3_server.py [--delay SECONDS] [--port N]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--delay", type=float, default=0.0, help="seconds added per request")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free)")
    args = parser.parse_args()
    if not 0 <= args.delay <= 10:
        parser.error(f"--delay {args.delay} is out of range; use 0 to 10 seconds")
    serve(args.delay, args.port)


if __name__ == "__main__":
    main()
