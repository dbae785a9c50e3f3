"""Storage in a local folder (``file:///path`` or a plain path).

Writes go to a hidden temporary file in the destination folder and are renamed
into place, so readers never see half an object. Object metadata is kept in
extended attributes (``user.pixelfleet.*``) where the filesystem supports them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from urllib.parse import unquote, urlparse

from typing_extensions import override

from pixelfleet.errors import ObjectNotFoundError, StorageError, UnsafeKeyError
from pixelfleet.models import Entry
from pixelfleet.storage.base import Storage, check_key

_TMP_MARK = ".pixelfleet-tmp-"
_XATTR = "user.pixelfleet."


def path_from_url(url: str) -> str:
    """The folder a ``file://`` URL or plain path names, made absolute."""
    if url.startswith("file://"):
        parsed = urlparse(url)
        if parsed.netloc not in ("", "localhost"):
            raise StorageError(
                f"file URL {url!r} names host {parsed.netloc!r}; use file:///absolute/path"
            )
        path = unquote(parsed.path)
    else:
        path = url
    return os.path.abspath(os.path.expanduser(path))


def _etag(st: os.stat_result) -> str:
    return f"{st.st_mtime_ns:x}-{st.st_size:x}"


class LocalStorage(Storage):
    """Objects as files below a root folder."""

    def __init__(self, url: str):
        self.url = url
        self.root = path_from_url(url)
        self._real_root = os.path.realpath(self.root)

    def _path(self, key: str) -> str:
        check_key(key)
        path = os.path.join(self.root, *key.split("/"))
        # A symlinked folder inside the root must not lead outside it.
        real_parent = os.path.realpath(os.path.dirname(path))
        if real_parent != self._real_root and not real_parent.startswith(self._real_root + os.sep):
            raise UnsafeKeyError(
                f"object key {key!r} resolves outside {self.root} (through a symbolic link)"
            )
        return path

    @override
    def local_path(self, key: str) -> str | None:
        return self._path(key)

    @override
    def scan(self, prefix: str = "") -> Iterator[Entry]:
        if not os.path.isdir(self.root):
            raise ObjectNotFoundError(
                f"folder {self.root} does not exist; check the source url {self.url!r}"
            )
        yield from self._scan_dir(self.root, "", prefix)

    def _scan_dir(self, folder: str, rel: str, prefix: str) -> Iterator[Entry]:
        try:
            with os.scandir(folder) as it:
                # Key order: a folder "a" sorts as "a/", so "a.tif" comes before "a/x.tif".
                items = sorted(it, key=lambda d: d.name + "/" if d.is_dir() else d.name)
        except FileNotFoundError:
            return
        for item in items:
            if _TMP_MARK in item.name:
                continue
            key = f"{rel}{item.name}"
            if item.is_dir(follow_symlinks=False):
                sub = key + "/"
                if sub.startswith(prefix) or prefix.startswith(sub):
                    yield from self._scan_dir(item.path, sub, prefix)
            elif item.is_file(follow_symlinks=False) and key.startswith(prefix):
                st = item.stat(follow_symlinks=False)
                yield Entry(key, st.st_size, _etag(st), st.st_mtime)

    @override
    def head(self, key: str) -> Entry | None:
        path = self._path(key)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            return None
        if not os.path.isfile(path):
            return None
        return Entry(key, st.st_size, _etag(st), st.st_mtime, _read_xattrs(path))

    @override
    def read(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                if start:
                    f.seek(start)
                if end is None:
                    return f.read()
                return f.read(max(0, end - (start or 0)))
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFoundError(f"object {key!r} not found in {self.url}") from None

    @override
    def write(self, key: str, data: bytes, metadata: dict[str, str] | None = None) -> Entry:
        path = self._path(key)
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        with _staged(path, metadata) as (fd, _tmp), os.fdopen(fd, "wb") as f:
            f.write(data)
        st = os.stat(path)
        return Entry(key, st.st_size, _etag(st), st.st_mtime, dict(metadata or {}))

    def write_file(
        self, key: str, path: str, metadata: dict[str, str] | None = None, consume: bool = False
    ) -> Entry:
        """Put a local file in place through a hidden temp file: moved there when the
        caller gives it up (``consume``) and it is on the same filesystem, else copied."""
        dest = self._path(key)
        folder = os.path.dirname(dest)
        os.makedirs(folder, exist_ok=True)
        with _staged(dest, metadata) as (fd, tmp):
            moved = False
            if consume:
                try:
                    os.replace(path, tmp)
                    moved = True
                except OSError as exc:
                    if exc.errno != errno.EXDEV:
                        raise
            if moved:
                os.close(fd)
            else:
                with os.fdopen(fd, "wb") as out, open(path, "rb") as src:
                    shutil.copyfileobj(src, out, 4 * 1024 * 1024)
        st = os.stat(dest)
        return Entry(key, st.st_size, _etag(st), st.st_mtime, dict(metadata or {}))

    def delete(self, key: str) -> None:
        """Remove an object; a missing one, or a folder (not an object), is left alone."""
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            os.unlink(self._path(key))

    def remove_partial(self, keys: Iterable[str]) -> int:
        """Delete the hidden temp files that killed writers of these keys left behind."""
        by_folder: dict[str, set[str]] = {}
        for key in keys:
            path = self._path(key)
            by_folder.setdefault(os.path.dirname(path), set()).add(os.path.basename(path))
        removed = 0
        for folder, names in by_folder.items():
            marks = tuple("." + name + _TMP_MARK for name in names)
            with contextlib.suppress(OSError), os.scandir(folder) as it:
                for item in it:
                    if item.name.startswith(marks):
                        with contextlib.suppress(OSError):
                            os.unlink(item.path)
                            removed += 1
        return removed


@contextlib.contextmanager
def _staged(dest: str, metadata: dict[str, str] | None) -> Iterator[tuple[int, str]]:
    """A hidden temp file beside ``dest``, opened for the caller to fill; on success it
    gets the metadata and is renamed into place, on any failure it is removed."""
    fd, tmp = tempfile.mkstemp(
        prefix="." + os.path.basename(dest) + _TMP_MARK, dir=os.path.dirname(dest)
    )
    try:
        yield fd, tmp
        _write_xattrs(tmp, metadata or {})
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _write_xattrs(path: str, metadata: dict[str, str]) -> None:
    for name, value in metadata.items():
        try:
            os.setxattr(path, _XATTR + name, value.encode())
        except OSError as exc:
            if exc.errno in (errno.ENOTSUP, errno.EPERM, errno.EOPNOTSUPP):
                return  # filesystem without user xattrs: the ledger still tells what is current
            raise


def _read_xattrs(path: str) -> dict[str, str]:
    try:
        names = os.listxattr(path)
    except OSError:
        return {}
    out = {}
    for name in names:
        if name.startswith(_XATTR):
            with contextlib.suppress(OSError):
                out[name[len(_XATTR) :]] = os.getxattr(path, name).decode(errors="replace")
    return out
