"""Log lines for people (``--log-format human``, the default) or for log shippers
(``--log-format json``: one JSON object per line).

pixelfleet logs through the standard :mod:`logging` module under the ``pixelfleet``
logger; nothing is printed until the command line configures it
(:func:`configure_logging`). The runner logs one record per task attempt
(``pixelfleet.runner``: ``task done`` at INFO, ``task retried``/``task failed`` at
WARNING) with these fields, which a JSON line carries as keys:

``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``, and where known
``run_id``, ``task_id``, ``key`` (the object, or the task's group when it holds several),
``attempt``, ``error_type``, ``seconds``, ``objects``; ``exception`` holds a traceback.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, Literal

__all__ = ["FORMATS", "HumanFormatter", "JsonFormatter", "configure_logging", "reset_logging"]

LogFormat = Literal["human", "json"]
FORMATS = ("human", "json")
#: Context fields, in the order a human line shows them.
FIELDS = ("run_id", "task_id", "key", "attempt", "error_type", "seconds", "objects")
#: What every LogRecord has: anything else on a record came from ``extra=``.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and v is not None}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in values are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON object."""
        seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        out: dict[str, Any] = {
            "time": f"{seconds}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update(_extras(record))
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class HumanFormatter(logging.Formatter):
    """``2026-01-02 10:15:00 WARNING task failed: ... [run=... task=... key=...]``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line, its context fields in brackets."""
        line = super().format(record)
        extras = _extras(record)
        context = " ".join(f"{k}={extras[k]!r}" for k in FIELDS if k in extras)
        return f"{line} [{context}]" if context else line


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record comes (a test runner swaps it)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


_HANDLER: logging.Handler | None = None


def configure_logging(log_format: LogFormat | None, level: str | None = None) -> None:
    """Send pixelfleet's log records to stderr in ``log_format``, at ``level`` and above.

    ``json`` defaults to INFO (one line per task attempt); ``human`` to no logging at all
    unless a level is given (the command's own output says what happened). The handler
    goes on the root logger, so other libraries' warnings come out the same way.
    Calling it again replaces the handler it installed.
    """
    global _HANDLER
    reset_logging()
    log_format = log_format or "human"
    if level is None and log_format == "human":
        return
    formatter: logging.Formatter = JsonFormatter() if log_format == "json" else HumanFormatter()
    handler = _StderrHandler()
    handler.setFormatter(formatter)
    logging.getLogger().addHandler(handler)
    _HANDLER = handler
    logging.getLogger("pixelfleet").setLevel((level or "info").upper())


def reset_logging() -> None:
    """Undo :func:`configure_logging`."""
    global _HANDLER
    if _HANDLER is not None:
        logging.getLogger().removeHandler(_HANDLER)
        _HANDLER = None
    logging.getLogger("pixelfleet").setLevel(logging.NOTSET)
