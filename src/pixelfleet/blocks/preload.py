"""What the ``local`` executor's fork server imports once, before it forks workers.

Worker processes are forked from a server process started once per driver process
(``multiprocessing``'s ``forkserver``): the server imports numpy, rasterio and the strip
code here, once, and every worker (in this run and in later runs of the same driver)
starts with them already loaded, in milliseconds instead of the half second a spawned
interpreter spends importing them. rasterio imports boto3 (when installed) only to offer
AWS sessions, which pixelfleet never uses (it reads S3 through its own storage): it is
kept out while rasterio loads, then allowed again for user code.
"""

from __future__ import annotations

import sys

_blocked = "boto3" not in sys.modules
if _blocked:
    sys.modules["boto3"] = None  # type: ignore[assignment]
try:
    import pixelfleet.blocks.strips  # noqa: F401
finally:
    if _blocked and sys.modules.get("boto3") is None:
        del sys.modules["boto3"]
