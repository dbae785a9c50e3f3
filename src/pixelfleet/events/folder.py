"""``FolderQueue``: the changes to a local folder, as bucket events (``file://`` sources).

A thread watches the folder with ``watchfiles`` (inotify on Linux, FSEvents on macOS,
polling elsewhere) and turns each change into a message of one
:class:`~pixelfleet.events.BucketEvent`: a file added or modified is ``created``, a
file deleted is ``deleted``; a folder moved in yields an event per file in it. Keys are
relative to the folder, with ``/`` between parts; a counter of this process is the
``sequencer``, so events of one key keep the order they were seen in.

What it cannot do: changes made while nothing watches, and folders moved out (one
event for the folder, none for its files), are left to ``pixelfleet reconcile``. A
message not acknowledged is not handed out again: the folder itself is the record,
and reconcile finds what a stopped watcher missed. pixelfleet's own temporary files
(written beside an output, then renamed) are ignored, so an output folder inside
the source folder adds no events of its own making but its finished files.
"""

from __future__ import annotations

import itertools
import os
import queue as queue_module
import threading
import time
from pathlib import Path
from typing import Any

from typing_extensions import override

from pixelfleet.errors import ConfigError, MissingExtraError
from pixelfleet.events.base import BucketEvent, EventQueue, Message
from pixelfleet.storage.local import _TMP_MARK, path_from_url

_INSTALL = "pip install 'pixelfleet[events]'"
#: Changes arriving within this many milliseconds of each other come as one batch.
_DEBOUNCE_MS = 150
#: How often the watching thread looks at its stop flag (milliseconds).
_TICK_MS = 200
#: Seconds to wait for the operating system's watch to be in place.
_START_TIMEOUT = 10.0


class FolderQueue(EventQueue):
    """Changes to the files under ``root`` as they happen."""

    name = "folder"
    visibility = None

    def __init__(self, root: str, *, force_polling: bool | None = None):
        try:
            import watchfiles
        except ModuleNotFoundError as exc:
            raise MissingExtraError(f"watching a folder needs watchfiles: {_INSTALL}") from exc
        self.root = path_from_url(root)
        if not os.path.isdir(self.root):
            raise ConfigError(
                f"cannot watch {root!r}: {self.root} is not a folder; point the pipeline's"
                " source.url at an existing folder"
            )
        self._watchfiles = watchfiles
        self._force_polling = force_polling
        self._events: queue_module.Queue[Message] = queue_module.Queue()
        self._sequence = itertools.count(1)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        #: Messages rejected, with their reasons (there is no dead-letter queue here).
        self.dead: list[tuple[Message, str]] = []
        self._thread = threading.Thread(
            target=self._watch, name="pixelfleet-folder-watch", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT) and self._error is None:
            self.close()
            raise ConfigError(f"could not start watching {self.root} within {_START_TIMEOUT} s")
        if self._error is not None:
            raise ConfigError(f"cannot watch {self.root}: {self._error}") from self._error

    def _watch(self) -> None:
        watchfiles = self._watchfiles
        try:
            for changes in watchfiles.watch(
                self.root,
                watch_filter=_Filter(),
                debounce=_DEBOUNCE_MS,
                step=50,
                rust_timeout=_TICK_MS,
                yield_on_timeout=True,
                stop_event=self._stop,
                force_polling=self._force_polling,
                raise_interrupt=False,
            ):
                # The first (empty) batch comes after a tick: the watch is in place.
                self._ready.set()
                for change, path in sorted(changes, key=lambda c: c[1]):
                    self._change(change, path)
        except BaseException as exc:  # noqa: BLE001 - reported by receive()
            self._error = exc
        finally:
            self._ready.set()

    def _change(self, change: Any, path: str) -> None:
        deleted = change == self._watchfiles.Change.deleted
        if not deleted and os.path.isdir(path):
            if change == self._watchfiles.Change.added:  # a folder moved in: its files
                for file in sorted(Path(path).rglob("*")):
                    if file.is_file() and _TMP_MARK not in file.name:
                        self._put("created", str(file))
            return
        self._put("deleted" if deleted else "created", path)

    def _put(self, action: str, path: str) -> None:
        key = os.path.relpath(path, self.root).replace(os.sep, "/")
        if key.startswith("../"):
            return
        size, etag = 0, ""
        if action == "created":
            try:
                st = os.stat(path)
            except OSError:
                return  # gone again already: its deletion follows
            size, etag = st.st_size, f"{st.st_mtime_ns:x}-{st.st_size:x}"
        number = next(self._sequence)
        event = BucketEvent(
            action="created" if action == "created" else "deleted",
            bucket="",
            key=key,
            etag=etag,
            size=size,
            sequencer=f"{number:016x}",
            time=time.time(),
            origin="folder",
        )
        self._events.put(Message(id=f"f{number}", events=[event]))

    @override
    def receive(self, most: int, wait: float) -> list[Message]:
        if self._error is not None:
            raise ConfigError(f"watching {self.root} failed: {self._error}") from self._error
        out: list[Message] = []
        try:
            out.append(self._events.get(timeout=max(0.0, wait)))
        except queue_module.Empty:
            return out
        while len(out) < most:
            try:
                out.append(self._events.get_nowait())
            except queue_module.Empty:
                break
        return out

    @override
    def ack(self, message: Message) -> None:
        """Nothing to do: the folder is the record."""

    @override
    def reject(self, message: Message, reason: str) -> None:
        """Keep ``message`` and ``reason`` in :attr:`dead` (the ledger's event log has it too)."""
        self.dead.append((message, reason))

    @override
    def close(self) -> None:
        """Stop watching (within a fifth of a second)."""
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(5)

    @override
    def describe(self) -> str:
        return f"folder {self.root}"


class _Filter:
    """watchfiles' default filter (editor swap files, ``.git``...) and pixelfleet's own
    temporary files."""

    def __init__(self) -> None:
        from watchfiles import DefaultFilter

        self._default = DefaultFilter()

    def __call__(self, change: Any, path: str) -> bool:
        return _TMP_MARK not in os.path.basename(path) and bool(self._default(change, path))
