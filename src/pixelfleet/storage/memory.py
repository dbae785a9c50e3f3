"""In-memory storage: the reference implementation of ``Storage`` and a test tool.

``memory://name/prefix`` storages with the same name share objects within one
process, so a pipeline run inline can read what a test wrote.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from typing_extensions import override

from pixelfleet.errors import ObjectNotFoundError
from pixelfleet.models import Entry
from pixelfleet.storage.base import Storage, check_key, join_key


@dataclass
class _Object:
    data: bytes
    etag: str
    mtime: float
    metadata: dict[str, str]


_BUCKETS: dict[str, dict[str, _Object]] = {}
_LOCK = threading.Lock()


class MemoryStorage(Storage):
    """Objects held in a dict of this process."""

    def __init__(self, url: str):
        self.url = url
        rest = url.split("://", 1)[1] if "://" in url else url
        name, _, prefix = rest.partition("/")
        self._name = name or "default"
        self._prefix = prefix.strip("/")
        with _LOCK:
            self._objects = _BUCKETS.setdefault(self._name, {})

    def _full(self, key: str) -> str:
        return join_key(self._prefix, key)

    def _rel(self, full: str) -> str:
        return full[len(self._prefix) + 1 :] if self._prefix else full

    @override
    def scan(self, prefix: str = "") -> Iterator[Entry]:
        base = f"{self._prefix}/" if self._prefix else ""
        with _LOCK:
            items = sorted((k, o) for k, o in self._objects.items() if k.startswith(base))
        for full, obj in items:
            key = self._rel(full)
            if key.startswith(prefix):
                yield Entry(key, len(obj.data), obj.etag, obj.mtime)

    @override
    def head(self, key: str) -> Entry | None:
        with _LOCK:
            obj = self._objects.get(self._full(key))
        if obj is None:
            return None
        return Entry(key, len(obj.data), obj.etag, obj.mtime, dict(obj.metadata))

    @override
    def existing(self, keys: Iterable[str]) -> dict[str, Entry]:
        wanted = [(key, self._full(key)) for key in keys]
        with _LOCK:
            objects = [(key, self._objects.get(full)) for key, full in wanted]
        return {
            key: Entry(key, len(obj.data), obj.etag, obj.mtime, dict(obj.metadata))
            for key, obj in objects
            if obj is not None
        }

    @override
    def read(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        with _LOCK:
            obj = self._objects.get(self._full(key))
        if obj is None:
            raise ObjectNotFoundError(f"object {key!r} not found in {self.url}")
        return obj.data[start:end]

    @override
    def write(self, key: str, data: bytes, metadata: dict[str, str] | None = None) -> Entry:
        check_key(key)
        obj = _Object(bytes(data), hashlib.md5(data).hexdigest(), time.time(), dict(metadata or {}))
        with _LOCK:
            self._objects[self._full(key)] = obj
        return Entry(key, len(obj.data), obj.etag, obj.mtime, dict(obj.metadata))

    @override
    def delete(self, key: str) -> None:
        with _LOCK:
            self._objects.pop(self._full(key), None)

    @staticmethod
    def clear(name: str | None = None) -> None:
        """Forget every object of one named memory storage, or of all of them."""
        with _LOCK:
            if name is None:
                _BUCKETS.clear()
            else:
                _BUCKETS.pop(name, None)
