"""JSON text, by orjson where it is installed (the catalog's and the server's dependency:
several times faster than the ``json`` module), by ``json`` otherwise and for what orjson
refuses. One place for the choice, which task results, stored items and search pages
all make.
"""

from __future__ import annotations

import json
import types
from collections.abc import Callable
from typing import Any

_orjson: types.ModuleType | None
try:
    import orjson as _orjson
except ModuleNotFoundError:  # pragma: no cover - depends on the extras installed
    _orjson = None


def dumps(obj: Any, default: Callable[[Any], Any] | None = None) -> str:
    """Compact JSON text of ``obj``. orjson writes dataclasses as their fields and NaN as
    ``null``; what it refuses (text with a lone surrogate, a key that is not text, an
    integer over 64 bits) is written by ``json``, which calls ``default`` for what it
    cannot write itself (a dataclass, say)."""
    if _orjson is not None:
        try:
            text: str = _orjson.dumps(obj).decode()
            return text
        except TypeError:
            pass
    return json.dumps(obj, default=default, separators=(",", ":"))


def loads(text: str | bytes) -> Any:
    """The value of JSON text; what orjson refuses (``NaN``, a lone surrogate) is read by
    ``json``. orjson reads an integer over 64 bits as a float (``json`` as an int)."""
    if _orjson is not None:
        try:
            return _orjson.loads(text)
        except ValueError:
            pass
    return json.loads(text)
