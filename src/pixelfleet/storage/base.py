"""The ``Storage`` interface: a flat namespace of immutable-once-written objects.

A storage is rooted at a URL (``file:///data/out``, ``s3://bucket/prefix``,
``memory://name``); every key is relative to that root and uses ``/``. Writes are
atomic: a reader sees the old object or the whole new one, never a part.
"""

from __future__ import annotations

import functools
import io
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from typing_extensions import override

from pixelfleet import metrics
from pixelfleet.errors import ObjectNotFoundError, UnsafeKeyError
from pixelfleet.models import Entry

_DRIVE = re.compile(r"^[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: A byte that is not UTF-8 (0x80-0xff), escaped the way a local listing escapes file names.
_UNDECODABLE = re.compile(r"\\x[89a-f][0-9a-f]")


#: Keys found safe lately: a worker checks each key a few times (its output keys, then
#: the storage's own check on every head, read and write).
_SAFE: set[str] = set()
_SAFE_KEPT = 65536


def check_key(key: str) -> str:
    """Return ``key`` if it is a safe relative object key, else raise :class:`UnsafeKeyError`.

    Refused: empty keys, absolute keys, backslashes, ``.``/``..`` or empty segments,
    drive letters and control characters. These are the keys that could make a write
    land outside a storage's root.
    """
    if isinstance(key, str) and key in _SAFE:
        return key
    _check(key)
    if len(_SAFE) >= _SAFE_KEPT:
        _SAFE.clear()
    _SAFE.add(key)
    return key


def _check(key: str) -> None:
    if not key or not isinstance(key, str):
        raise UnsafeKeyError(f"object key {key!r} is empty; keys are relative paths like 'a/b.tif'")
    if key.startswith("/") or _DRIVE.match(key):
        raise UnsafeKeyError(f"object key {key!r} is absolute; keys must be relative to the root")
    if "\\" in key:
        if _UNDECODABLE.search(key):  # as a local listing escapes a name (storage/local.py)
            raise UnsafeKeyError(
                f"file name '{key}' is not valid UTF-8 (its undecodable bytes are shown as "
                "\\xNN); rename the file to a UTF-8 name (e.g. convmv -f latin1 -t utf-8) "
                "and run again"
            )
        raise UnsafeKeyError(f"object key {key!r} contains a backslash; use '/' between parts")
    if _CONTROL.search(key):
        raise UnsafeKeyError(f"object key {key!r} contains a control character")
    # Every part between slashes, the first and last included, is neither empty nor . or ..
    wrapped = f"/{key}/"
    if "//" in wrapped or "/./" in wrapped or "/../" in wrapped:
        raise UnsafeKeyError(
            f"object key {key!r} has an empty, '.' or '..' part; it could escape the output root"
        )


def join_key(prefix: str, key: str) -> str:
    """Join a storage prefix and a checked key with one ``/``."""
    check_key(key)
    prefix = prefix.strip("/")
    return f"{prefix}/{key}" if prefix else key


class Storage(ABC):
    """Read, list and atomically write objects under one root URL.

    Implementations provide :meth:`scan`, :meth:`head`, :meth:`read` and :meth:`write`;
    everything else is built on those.
    """

    #: The URL this storage was opened with.
    url: str = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _count_calls(cls)

    @abstractmethod
    def scan(self, prefix: str = "") -> Iterator[Entry]:
        """Yield every object whose key starts with ``prefix``, in key order."""

    @abstractmethod
    def head(self, key: str) -> Entry | None:
        """Return the object's entry (with its metadata), or None if it does not exist."""

    @abstractmethod
    def read(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        """Return the bytes ``[start, end)`` of an object (all of it by default).

        Raises :class:`~pixelfleet.errors.ObjectNotFoundError` if it does not exist.
        """

    @abstractmethod
    def write(self, key: str, data: bytes, metadata: dict[str, str] | None = None) -> Entry:
        """Store ``data`` under ``key`` atomically, with string ``metadata``; return its entry."""

    def write_file(
        self, key: str, path: str, metadata: dict[str, str] | None = None, consume: bool = False
    ) -> Entry:
        """Store the local file ``path`` under ``key`` atomically, like :meth:`write`.

        For outputs too big to hold in memory (a scene composite): storages override
        it to stream the file. This default reads the file whole. With ``consume``, the
        caller gives the file up: a storage may move it into place instead of copying.
        """
        with open(path, "rb") as f:
            return self.write(key, f.read(), metadata)

    def delete(self, key: str) -> None:
        """Remove an object; removing a missing object is not an error."""
        raise NotImplementedError(f"{type(self).__name__} cannot delete objects")

    def remove_partial(self, keys: Iterable[str]) -> int:
        """Remove what killed writers of ``keys`` may have left; returns how many were removed.

        Only storages whose writes go through visible temporary objects need this.
        """
        return 0

    def local_path(self, key: str) -> str | None:
        """A filesystem path GDAL can open directly, or None for remote storage."""
        return None

    def exists(self, key: str) -> bool:
        """Tell whether an object exists."""
        return self.head(key) is not None

    def existing(self, keys: Iterable[str]) -> dict[str, Entry]:
        """The entries (with their metadata, as :meth:`head` gives them) of those of
        ``keys`` that exist; missing keys are left out.

        What a worker asks about all the outputs of a task at once before deciding what
        to render. This default makes one :meth:`head` per key; storages where one
        request can answer for many keys override it (S3 lists a folder once, and only
        asks for the metadata of what it found). Raises what :meth:`head` raises.
        """
        found = {}
        for key in keys:
            entry = self.head(key)
            if entry is not None:
                found[key] = entry
        return found

    def open(self, key: str, size: int | None = None, block_size: int = 256 * 1024) -> RangeFile:
        """Open an object as a read-only, seekable file that fetches byte ranges on demand."""
        if size is None:
            entry = self.head(key)
            if entry is None:
                from pixelfleet.errors import ObjectNotFoundError

                raise ObjectNotFoundError(f"object {key!r} not found in {self.url}")
            size = entry.size
        return RangeFile(self, key, size, block_size)

    def describe(self, key: str) -> str:
        """The object's full URL, for messages."""
        return f"{self.url.rstrip('/')}/{key}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


#: The methods whose calls are storage requests (``pixelfleet_storage_requests_total``).
_COUNTED = ("head", "read", "write", "write_file", "delete")
#: Errors that are answers (no such object, a key refused before any request), not
#: failed requests.
_ANSWERED = (ObjectNotFoundError, UnsafeKeyError)
_SCHEMES: dict[str, str] = {}


def _scheme(url: str) -> str:
    scheme = _SCHEMES.get(url)
    if scheme is None:
        head, sep, _ = url.partition("://")
        scheme = _SCHEMES[url] = head.lower() if sep else "file"
    return scheme


class _Calls(threading.local):
    #: A counted storage call is running on this thread: calls it makes (an override
    #: calling ``super()``, a wrapper calling the storage it wraps) are not counted again.
    inside: bool = False


_calls = _Calls()


def _count_calls(cls: type[Storage]) -> None:
    """Make a storage class count its requests (:func:`pixelfleet.metrics.storage_call`):
    every ``scan``, ``head``, ``read``, ``write``, ``write_file`` and ``delete`` it
    defines is wrapped; only the outermost of nested calls on a thread counts."""
    for name in (*_COUNTED, "scan"):
        method = cls.__dict__.get(name)
        if method is None or getattr(method, "_counted", False):
            continue
        wrapped = _counting_scan(method) if name == "scan" else _counting(method, name)
        setattr(wrapped, "_counted", True)  # noqa: B010 - a mark on a function
        setattr(cls, name, wrapped)


def _counting(method: Callable[..., Any], operation: str) -> Callable[..., Any]:
    count, schemes = metrics.storage_call, _SCHEMES

    @functools.wraps(method)
    def call(self: Storage, *args: Any, **kwargs: Any) -> Any:
        calls = _calls
        if calls.inside:
            return method(self, *args, **kwargs)
        calls.inside = True
        try:
            out = method(self, *args, **kwargs)
        except _ANSWERED:
            count(_scheme(self.url), operation)
            raise
        except Exception:
            count(_scheme(self.url), operation, True)
            raise
        finally:
            calls.inside = False
        count(schemes.get(self.url) or _scheme(self.url), operation)
        return out

    return call


def _counting_scan(method: Callable[..., Iterator[Entry]]) -> Callable[..., Iterator[Entry]]:
    count = metrics.storage_call

    @functools.wraps(method)
    def scan(self: Storage, *args: Any, **kwargs: Any) -> Iterator[Entry]:
        calls = _calls
        if calls.inside:
            yield from method(self, *args, **kwargs)
            return
        entries = method(self, *args, **kwargs)
        failed = False
        try:
            while True:
                # Inside only while the listing itself runs: the caller's calls between
                # two entries count.
                calls.inside = True
                try:
                    entry = next(entries)
                except StopIteration:
                    return
                except _ANSWERED:
                    raise
                except Exception:
                    failed = True
                    raise
                finally:
                    calls.inside = False
                yield entry
        finally:
            count(_scheme(self.url), "scan", failed)

    return scan


class SeekableReader(io.RawIOBase):
    """A read-only binary file of known size: subclasses implement ``read`` from ``_pos``.

    Seeking only moves the position; reads never go past ``_size``.
    """

    _pos: int = 0
    _size: int = 0

    @override
    def readable(self) -> bool:
        return True

    @override
    def seekable(self) -> bool:
        return True

    @override
    def tell(self) -> int:
        return self._pos

    @override
    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._size + offset
        else:
            raise ValueError(f"invalid whence {whence}; use 0, 1 or 2")
        self._pos = max(0, pos)
        return self._pos

    @override
    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class RangeFile(SeekableReader):
    """A read-only file over an object that reads aligned blocks and keeps a few of them.

    GDAL reads TIFF headers in many small pieces; fetching whole blocks turns those
    into a handful of range requests.
    """

    def __init__(self, storage: Storage, key: str, size: int, block_size: int = 256 * 1024):
        super().__init__()
        self._storage = storage
        self.name = key
        self._size = size
        self._block = block_size
        self._pos = 0
        self._cache: dict[int, bytes] = {}
        self._order: list[int] = []
        self._keep = 8

    def _fetch(self, first: int, last: int) -> None:
        """Make sure blocks ``first..last`` are cached, fetching each missing run in one request.

        On a remote store every request costs a round trip, so a read that straddles a
        block boundary must not cost two.
        """
        index = first
        while index <= last:
            if index in self._cache:
                index += 1
                continue
            run_end = index
            while run_end + 1 <= last and run_end + 1 not in self._cache:
                run_end += 1
            start = index * self._block
            end = min((run_end + 1) * self._block, self._size)
            data = self._storage.read(self.name, start, end)
            for i in range(index, run_end + 1):
                offset = (i - index) * self._block
                self._remember(i, data[offset : offset + self._block])
            index = run_end + 1

    def _remember(self, index: int, data: bytes) -> None:
        self._cache[index] = data
        self._order.append(index)
        if len(self._order) > self._keep:
            self._cache.pop(self._order.pop(0), None)

    @override
    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self._size - self._pos
        end = min(self._pos + size, self._size)
        if end <= self._pos:
            return b""
        # Big reads (image tiles) go straight to storage in one request.
        if end - self._pos > 2 * self._block:
            data = self._storage.read(self.name, self._pos, end)
        else:
            self._fetch(self._pos // self._block, (end - 1) // self._block)
            parts = []
            pos = self._pos
            while pos < end:
                index, offset = divmod(pos, self._block)
                block = self._cache.get(index)
                if block is None:  # pushed out of a cache smaller than this read
                    self._fetch(index, index)
                    block = self._cache[index]
                chunk = block[offset : offset + (end - pos)]
                if not chunk:
                    break
                parts.append(chunk)
                pos += len(chunk)
            data = b"".join(parts)
        self._pos += len(data)
        return data
