"""Storage in a local folder (``file:///path`` or a plain path).

Writes go to a hidden temporary file in the destination folder and are renamed
into place, so readers never see half an object; the file gets the mode any other
tool would give it (``0666`` less the umask). Object metadata is kept in extended
attributes (``user.pixelfleet.*``) where the filesystem supports them.

A folder is not the bucket's to tidy, so :meth:`LocalStorage.scan` lists what it
cannot serve as well, under keys that are plain text, and every other method refuses
them with :class:`~pixelfleet.errors.UnsafeKeyError`: each then fails its own task with
a reason instead of vanishing or stopping the run.

- A file name that is not valid UTF-8 is listed with its undecodable bytes escaped
  (``bad\\xff.png``); the backslash makes :func:`~pixelfleet.storage.base.check_key`
  refuse it, with a message that says to rename the file.
- A symbolic link is listed as itself and never followed, wherever it points (a
  link could lead out of the bucket); so is any other file that is not a regular
  file (a FIFO would block a reader forever).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
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


def key_part(name: str) -> str:
    """A file name as the filesystem gave it, as text a key can hold.

    Python hands out a name that is not valid UTF-8 with its undecodable bytes as lone
    surrogates, which no JSON encoder, database or terminal accepts; they become
    ``\\xNN`` here (``b"bad\\xff.png"`` -> ``bad\\xff.png``), a key ``check_key``
    refuses with a message saying to rename the file.
    """
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "backslashreplace")
    return name


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


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

    def _object_path(self, key: str) -> tuple[str, os.stat_result | None]:
        """The path of an object to read, and its ``lstat`` (None when nothing is there).

        Raises :class:`UnsafeKeyError` for a symbolic link (never followed, wherever it
        points) and for anything else that is not a regular file or a folder.
        """
        path = self._path(key)
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return path, None
        if stat.S_ISLNK(st.st_mode):
            try:
                target = key_part(os.readlink(path))
            except OSError:
                target = "?"
            raise UnsafeKeyError(
                f"{self.describe(key)} is a symbolic link (to {target}), which pixelfleet never "
                "follows in a local folder (a link can lead out of it): replace the link with "
                "the file itself, or leave it out of the source with an exclude glob"
            )
        if not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode):
            raise UnsafeKeyError(
                f"{self.describe(key)} is {_kind(st.st_mode)}, not a file pixelfleet can read: "
                "leave it out of the source with an exclude glob"
            )
        return path, st

    @override
    def local_path(self, key: str) -> str | None:
        return self._object_path(key)[0]

    @override
    def scan(self, prefix: str = "") -> Iterator[Entry]:
        if not os.path.isdir(self.root):
            raise ObjectNotFoundError(
                f"folder {self.root} does not exist; check the source url {self.url!r}"
            )
        yield from self._scan_dir(self.root, "", prefix)

    def _scan_dir(self, folder: str, rel: str, prefix: str) -> Iterator[Entry]:
        """Objects below ``folder`` in key order; symbolic links and other non-files are
        listed as themselves (never followed), for :meth:`head` and :meth:`read` to
        refuse with a reason."""
        try:
            with os.scandir(folder) as it:
                # Key order: a folder "a" sorts as "a/", so "a.tif" comes before "a/x.tif".
                items = sorted(
                    (
                        (key_part(d.name) + ("/" if d.is_dir(follow_symlinks=False) else ""), d)
                        for d in it
                        if _TMP_MARK not in d.name
                    ),
                    key=lambda pair: pair[0],
                )
        except (FileNotFoundError, NotADirectoryError):
            return
        for name, item in items:
            key = f"{rel}{name}"
            if name.endswith("/"):
                if key.startswith(prefix) or prefix.startswith(key):
                    yield from self._scan_dir(item.path, key, prefix)
            elif key.startswith(prefix):
                try:
                    st = item.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # deleted since the folder was read
                yield Entry(key, st.st_size, _etag(st), st.st_mtime)

    @override
    def head(self, key: str) -> Entry | None:
        path, st = self._object_path(key)
        if st is None or stat.S_ISDIR(st.st_mode):
            return None
        return Entry(key, st.st_size, _etag(st), st.st_mtime, _read_xattrs(path))

    @override
    def read(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        path, _st = self._object_path(key)
        try:
            # O_NOFOLLOW: a link put there since the check above is refused all the same.
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFoundError(f"object {key!r} not found in {self.url}") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafeKeyError(
                    f"{self.describe(key)} became a symbolic link while being read; "
                    "links are never followed"
                ) from None
            raise
        try:
            with open(fd, "rb") as f:
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
                # The moved file keeps its own mode (often 0600, from a temp folder):
                # give it the one the staged file got from the umask.
                mode = stat.S_IMODE(os.fstat(fd).st_mode)
                try:
                    os.replace(path, tmp)
                    moved = True
                except OSError as exc:
                    if exc.errno != errno.EXDEV:
                        raise
            if moved:
                os.close(fd)
                os.chmod(tmp, mode)
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
    gets the metadata and is renamed into place, on any failure it is removed.

    The file is created with mode ``0666`` and the kernel takes the umask off (or the
    folder's default ACL applies), as for a file any other tool writes: thumbnails
    under umask 022 are ``0644``, readable by a web server running as another user.
    (``tempfile.mkstemp`` would make every output ``0600``.)
    """
    folder, base = os.path.split(dest)
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    flags |= getattr(os, "O_CLOEXEC", 0)
    while True:
        tmp = os.path.join(folder, f".{base}{_TMP_MARK}{secrets.token_hex(6)}")
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:  # pragma: no cover - 48 random bits
            continue
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
