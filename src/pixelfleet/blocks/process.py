"""The body of a ``local`` executor's worker process (kept light: see :func:`serve`)."""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Callable
from multiprocessing.connection import Connection

from pixelfleet.registry import load_reference

#: The function a worker process calls with a strip's JSON job (by reference).
STRIP_FUNCTION = "pixelfleet.blocks.strips:run_strip_json"


def serve(conn: Connection) -> None:
    """Compute the strips that arrive on ``conn`` until told to stop (``None``).

    The strip's code is imported here, not when the process starts: rasterio imports
    boto3 (when installed) only to offer AWS sessions, which pixelfleet never uses (it
    reads S3 through its own storage), and that import is a quarter of a worker's
    start-up. It is kept out while rasterio loads, then allowed again for user code.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    blocked = "boto3" not in sys.modules
    if blocked:
        sys.modules["boto3"] = None  # type: ignore[assignment]
    try:
        target: Callable[[str], str] = load_reference(STRIP_FUNCTION)
    finally:
        if blocked and sys.modules.get("boto3") is None:
            del sys.modules["boto3"]
    while True:
        try:
            payload = conn.recv()
        except (EOFError, OSError):
            return
        if payload is None:
            return
        try:
            text = target(payload)
        except Exception as exc:  # noqa: BLE001 - the target answers its own errors; last resort
            text = json.dumps({"error": {"type": type(exc).__name__, "message": str(exc)}})
        conn.send(text)
