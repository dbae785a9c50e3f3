"""Storage in a local folder (``file:///path`` or a plain path).

Writes go to a file without a name in the destination folder (``O_TMPFILE``), which
gets its name (``linkat``) once whole, so readers never see half an object and a killed
writer leaves nothing; an object that exists is replaced by linking a hidden temporary
name and renaming it into place. Where the filesystem has no such files, writes go to a
hidden temporary file renamed into place. The file gets the mode any other tool would
give it (``0666`` less the umask). Object metadata is kept where the
filesystem supports extended attributes, as one JSON object in ``user.pixelfleet``
(set on the open temp file, so a write costs one attribute, not one per field).
Files written before that kept one attribute per field (``user.pixelfleet.<name>``);
they are still read, so outputs made by older versions stay current.

A write costs what a plain write costs: the file is created straight away (its folder
is made only when that fails), a temp name comes from a per-process token and a counter
rather than fresh random bytes, its size and etag come from
``fstat`` of the open file, and the check that a key's folder does not lead out of
the root through a symbolic link (a ``realpath``) is made once per folder, then
confirmed with one ``stat`` per key (:meth:`LocalStorage._check_folder`).

A folder is not the bucket's to tidy, so :meth:`LocalStorage.scan` lists what it
cannot serve as well, under keys that are plain text, and every other method refuses
them with :class:`~pixelfleet.errors.UnsafeKeyError`: none vanishes unreported or
stops the run.

- A file name that is not valid UTF-8 is listed with its undecodable bytes escaped
  (``bad\\xff.png``); the backslash makes :func:`~pixelfleet.storage.base.check_key`
  refuse it, with a message that says to rename the file: its task fails.
- A symbolic link is listed as itself and never followed, wherever it points (a
  link could lead out of the bucket); so is any other file that is not a regular
  file (a FIFO would block a reader forever). Such an entry carries the reason in
  :attr:`~pixelfleet.models.Entry.skip`, and a run records it as skipped, unread.
- A folder that cannot be listed (its path longer than the system allows, no
  permission) is listed as one entry, its key ending in ``/``, skipped the same way.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import secrets
import shutil
import stat
import threading
from collections.abc import Iterable, Iterator
from urllib.parse import unquote, urlparse

from typing_extensions import override

from pixelfleet.errors import ObjectNotFoundError, StorageError, UnsafeKeyError
from pixelfleet.models import Entry
from pixelfleet.storage.base import Storage, check_key

_TMP_MARK = ".pixelfleet-tmp-"
#: The extended attribute holding an object's metadata, as one JSON object.
XATTR = "user.pixelfleet"
#: The older form, still read: one attribute per metadata field, ``user.pixelfleet.<name>``.
_XATTR_FIELD = "user.pixelfleet."
#: Folders remembered as inside the root, at most (the memory is cleared when full).
_FOLDERS_KEPT = 4096
_NO_XATTRS = (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM)
_CREATE = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
_CREATE |= getattr(os, "O_CLOEXEC", 0)
#: Metadata as the attribute holds it (one encoder, made once: ``json.dumps`` with
#: options would build one per call).
_metadata_json = json.JSONEncoder(separators=(",", ":"), sort_keys=True).encode


def _new_token() -> None:
    """A fresh per-process prefix for temp file names (also in a forked child)."""
    global _token, _serial
    _token = secrets.token_hex(4)
    _serial = itertools.count()


_token = ""
_serial = itertools.count()
_new_token()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_token)
    os.register_at_fork(after_in_child=lambda: _forget_process_fds())


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
    if name.isascii():
        return name
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "backslashreplace")
    return name


def skip_reason(path: str, mode: int) -> str | None:
    """Why a listed file must never be read (a symbolic link: ``path``'s target is named;
    a FIFO, socket or device), or None for a regular file or a folder."""
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    if stat.S_ISLNK(mode):
        try:
            target = key_part(os.readlink(path))
        except OSError:
            target = "?"
        return (
            f"symbolic link to {target} (not followed: it could point outside the bucket;"
            " put the file itself there to process it)"
        )
    return f"{_kind(mode)}, not a regular file (never read)"


def _listed(folder: str, rel: str) -> list[tuple[str, os.DirEntry[str]]]:
    """A folder's items as ``(key, item)`` in key order (a folder ``a`` sorts as ``a/``,
    so ``a.tif`` comes before ``a/x.tif``), without our temp files."""
    with os.scandir(folder) as it:
        return sorted(
            (
                (rel + key_part(d.name) + ("/" if d.is_dir(follow_symlinks=False) else ""), d)
                for d in it
                if _TMP_MARK not in d.name
            ),
            key=lambda pair: pair[0],
        )


def _unlisted(exc: OSError, what: str = "folder") -> str:
    """Why a folder (or a file) found in a listing cannot be listed (or read)."""
    why = exc.strerror or type(exc).__name__
    if exc.errno == errno.ENAMETOOLONG:
        why += ": its path is longer than this system allows; move it higher up"
    if what == "folder":
        return f"folder that cannot be listed ({why}); nothing in it is read"
    return f"file that cannot be read ({why})"


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
        self._real_prefix = self._real_root.rstrip(os.sep) + os.sep
        self._prefix = self.root.rstrip(os.sep) + os.sep
        #: Folders found inside the root, and the (device, inode) their path led to.
        self._folders: dict[str, tuple[int, int]] = {}

    def _path(self, key: str, write: bool = False) -> str:
        """The file path of ``key``, once it is known not to lead out of the root."""
        path, folder = self._locate(key)
        self._check_folder(folder, key, write)
        return path

    def _locate(self, key: str) -> tuple[str, str]:
        """The file path of a checked ``key`` and its folder, not yet checked for links."""
        check_key(key)
        if os.sep == "/":  # a checked key is already a relative path here
            path = self._prefix + key
            return path, path[: path.rfind("/")] or "/"
        path = os.path.join(self.root, *key.split("/"))
        return path, os.path.dirname(path)

    def _check_folder(self, folder: str, key: str, write: bool) -> None:
        """Refuse a key whose folder resolves, through a symbolic link, outside the root.

        The ``realpath`` (an ``lstat`` per part of the path) is made once per folder: a
        folder found inside is remembered with the device and inode its path leads to,
        and later keys in it cost one ``stat`` that must still lead there. A folder
        swapped for a link since is checked again (and refused if the link leads out).
        A folder that does not exist, even through links, holds nothing to read; before
        a write (which makes it) its path resolves as far as it does.
        """
        try:
            st = os.stat(folder)
        except OSError:
            st = None
            if not write:
                return
        ident = None if st is None else (st.st_dev, st.st_ino)
        if ident is not None and self._folders.get(folder) == ident:
            return
        real = os.path.realpath(folder)
        if real != self._real_root and not real.startswith(self._real_prefix):
            self._folders.pop(folder, None)
            raise UnsafeKeyError(
                f"object key {key!r} resolves outside {self.root} (through a symbolic link)"
            )
        if ident is not None:
            if len(self._folders) >= _FOLDERS_KEPT:
                self._folders.clear()
            self._folders[folder] = ident

    def _object_path(self, key: str) -> tuple[str, os.stat_result | None]:
        """The path of an object to read, and its ``lstat`` (None when nothing is there).

        Raises :class:`UnsafeKeyError` for a symbolic link (never followed, wherever it
        points) and for anything else that is not a regular file or a folder.
        """
        return self._inspect(key, self._path(key))

    def _inspect(self, key: str, path: str) -> tuple[str, os.stat_result | None]:
        """:meth:`_object_path` once ``path``'s folder is checked."""
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
        """Objects in key order, depth first; symbolic links and other non-files are
        listed as themselves (never followed), with the reason they are not to be read
        in ``Entry.skip`` (:meth:`head` and :meth:`read` refuse them too). So is a folder
        that cannot be listed (its path too long for the system, no permission), under
        its key with a trailing ``/``.

        The folders being listed are kept on a stack, not in recursive calls: a bucket
        may nest folders thousands deep.
        """
        if not os.path.isdir(self.root):
            raise ObjectNotFoundError(
                f"folder {self.root} does not exist; check the source url {self.url!r}"
            )
        try:
            stack = [iter(_listed(self.root, ""))]
        except (FileNotFoundError, NotADirectoryError):
            return  # removed since
        while stack:
            for key, item in stack[-1]:
                if key.endswith("/"):
                    if not (key.startswith(prefix) or prefix.startswith(key)):
                        continue
                    try:
                        inside = _listed(item.path, key)
                    except (FileNotFoundError, NotADirectoryError):
                        continue  # removed since its folder was read
                    except OSError as exc:
                        if key.startswith(prefix):
                            yield Entry(key, 0, "unlisted", 0.0, skip=_unlisted(exc))
                        continue
                    stack.append(iter(inside))
                    break  # list it now: key order is depth first
                if not key.startswith(prefix):
                    continue
                try:
                    st = item.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # deleted since the folder was read
                except OSError as exc:
                    yield Entry(key, 0, "unread", 0.0, skip=_unlisted(exc, "file"))
                    continue
                if stat.S_ISREG(st.st_mode):
                    yield Entry(key, st.st_size, _etag(st), st.st_mtime)
                else:
                    reason = skip_reason(item.path, st.st_mode)
                    yield Entry(key, st.st_size, _etag(st), st.st_mtime, skip=reason)
            else:
                stack.pop()

    @override
    def head(self, key: str) -> Entry | None:
        path, st = self._object_path(key)
        if st is None or stat.S_ISDIR(st.st_mode):
            return None
        return Entry(key, st.st_size, _etag(st), st.st_mtime, read_metadata(path))

    @override
    def existing(self, keys: Iterable[str]) -> dict[str, Entry]:
        """:meth:`head` of each key, with each folder checked once for the whole call
        (one ``lstat`` per key, where every :meth:`head` also confirms its folder)."""
        found = {}
        checked: set[str] = set()
        for key in keys:
            path, folder = self._locate(key)
            if folder not in checked:
                self._check_folder(folder, key, False)
                checked.add(folder)
            path, st = self._inspect(key, path)
            if st is not None and not stat.S_ISDIR(st.st_mode):
                found[key] = Entry(key, st.st_size, _etag(st), st.st_mtime, read_metadata(path))
        return found

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
        path = self._path(key, write=True)
        if ANONYMOUS_WRITES:
            fd = _create_anonymous(path)
            if fd is not None:
                entry = self._write_anonymous(key, path, fd, data, metadata)
                if entry is not None:
                    return entry
        fd, tmp = _create_temp(path)
        try:
            try:
                written = os.write(fd, data)
                if written < len(data):  # a short write: large data, or a signal
                    view = memoryview(data)[written:]
                    while view:
                        view = view[os.write(fd, view) :]
                if metadata:
                    write_metadata(fd, metadata)
                # Neither the attribute nor the rename changes the mtime: this is the etag.
                st = os.fstat(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return Entry(key, st.st_size, _etag(st), st.st_mtime, dict(metadata or {}))

    def _write_anonymous(
        self, key: str, path: str, fd: int, data: bytes, metadata: dict[str, str] | None
    ) -> Entry | None:
        """:meth:`write` through a file without a name (:func:`_create_anonymous`), given
        the name ``path`` once whole: a killed writer leaves nothing behind. Returns None
        when this system cannot name such a file (no usable ``/proc``): write otherwise."""
        try:
            _write_all(fd, data)
            if metadata:
                write_metadata(fd, metadata)
            st = os.fstat(fd)  # neither the link nor a rename changes the mtime: the etag
            if not _publish(fd, path):
                return None
        finally:
            os.close(fd)
        return Entry(key, st.st_size, _etag(st), st.st_mtime, dict(metadata or {}))

    def write_file(
        self, key: str, path: str, metadata: dict[str, str] | None = None, consume: bool = False
    ) -> Entry:
        """Put a local file in place through a hidden temp file: moved there when the
        caller gives it up (``consume``) and it is on the same filesystem, else copied."""
        dest = self._path(key, write=True)
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


def _create_temp(dest: str) -> tuple[int, str]:
    """Create a hidden temp file beside ``dest`` (making its folder if need be); returns
    its descriptor and path.

    The file is created with mode ``0666`` and the kernel takes the umask off (or the
    folder's default ACL applies), as for a file any other tool writes: thumbnails
    under umask 022 are ``0644``, readable by a web server running as another user.
    (``tempfile.mkstemp`` would make every output ``0600``.) ``O_EXCL`` makes the name
    ours alone; ``O_NOFOLLOW`` refuses a link planted under it.
    """
    folder, base = os.path.split(dest)
    made = False
    while True:
        tmp = os.path.join(folder, f".{base}{_TMP_MARK}{_token}{next(_serial):x}")
        try:
            return os.open(tmp, _CREATE, 0o666), tmp
        except FileExistsError:  # pragma: no cover - another process with our token
            _new_token()
        except FileNotFoundError:
            if made:
                raise
            os.makedirs(folder, exist_ok=True)
            made = True


#: Writes go through a file without a name (``O_TMPFILE``) where the system has them;
#: set to False to always write through a hidden named temp file and a rename.
ANONYMOUS_WRITES = hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd")
_ANONYMOUS = os.O_RDWR | getattr(os, "O_TMPFILE", 0) | getattr(os, "O_CLOEXEC", 0)
#: What ``open`` says when a filesystem (or kernel) has no ``O_TMPFILE``.
_NO_ANONYMOUS = (errno.EOPNOTSUPP, errno.ENOTSUP, errno.EISDIR, errno.EINVAL)
_fd_folder: int | None = None
_fd_folder_lock = threading.Lock()


def _create_anonymous(dest: str) -> int | None:
    """Open a file without a name in ``dest``'s folder (making the folder if need be), or
    return None when the filesystem cannot (then writes use :func:`_create_temp`).

    Why: creating a file allocates its inode while holding the folder's lock, and on a
    busy ext4 disk that takes a while; processes writing into one folder then spin on
    the lock (measured: 40% of the CPU of two writers). An anonymous file is allocated
    without the folder's lock, and naming it (a link) holds the lock only briefly, once,
    where a named temp file holds it twice (create, rename). Mode ``0666`` less the
    umask, as any other tool's files.
    """
    global ANONYMOUS_WRITES
    folder = os.path.dirname(dest)
    made = False
    while True:
        try:
            return os.open(folder, _ANONYMOUS, 0o666)
        except FileNotFoundError:
            if made:
                raise
            os.makedirs(folder, exist_ok=True)
            made = True
        except OSError as exc:
            if exc.errno not in _NO_ANONYMOUS:
                raise
            ANONYMOUS_WRITES = False
            return None


def _publish(fd: int, dest: str) -> bool:
    """Give the anonymous file ``fd`` the name ``dest``: a link where nothing is there,
    else a link to a hidden temp name renamed over what is (both atomic). Returns False,
    and turns anonymous writes off, when the system refuses to link it."""
    global ANONYMOUS_WRITES
    try:
        os.link(str(fd), dest, src_dir_fd=_process_fds(), follow_symlinks=True)
        return True
    except FileExistsError:
        pass
    except OSError as exc:
        # No /proc, or one that cannot serve linkat (some sandboxes): not the folder's
        # fault, as a missing folder or a full disk would be.
        if exc.errno in (errno.ENOENT, errno.EXDEV, errno.EPERM, errno.EACCES) and (
            os.path.isdir(os.path.dirname(dest))
        ):
            ANONYMOUS_WRITES = False
            return False
        raise
    folder, base = os.path.split(dest)
    while True:
        tmp = os.path.join(folder, f".{base}{_TMP_MARK}{_token}{next(_serial):x}")
        try:
            os.link(str(fd), tmp, src_dir_fd=_process_fds(), follow_symlinks=True)
            break
        except FileExistsError:  # pragma: no cover - another process with our token
            _new_token()
    try:
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return True


def _process_fds() -> int:
    """A descriptor of this process's ``/proc/self/fd`` folder (``linkat`` names an
    anonymous file through it), opened once per process."""
    global _fd_folder
    if _fd_folder is None:
        with _fd_folder_lock:
            if _fd_folder is None:
                flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
                _fd_folder = os.open("/proc/self/fd", flags)
    return _fd_folder


def _forget_process_fds() -> None:
    """In a forked child: the parent's ``/proc/<pid>/fd`` is not the child's."""
    global _fd_folder
    if _fd_folder is not None:
        with contextlib.suppress(OSError):
            os.close(_fd_folder)
        _fd_folder = None


def _write_all(fd: int, data: bytes) -> None:
    """``os.write`` until all of ``data`` is written (a short write: large data, a signal)."""
    written = os.write(fd, data)
    if written < len(data):
        view = memoryview(data)[written:]
        while view:
            view = view[os.write(fd, view) :]


@contextlib.contextmanager
def _staged(dest: str, metadata: dict[str, str] | None) -> Iterator[tuple[int, str]]:
    """A hidden temp file beside ``dest`` (:func:`_create_temp`), opened for the caller to
    fill or replace; on success it gets the metadata and is renamed into place, on any
    failure it is removed."""
    fd, tmp = _create_temp(dest)
    try:
        yield fd, tmp
        if metadata:
            write_metadata(tmp, metadata)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_metadata(target: int | str, metadata: dict[str, str]) -> None:
    """Store string metadata on a file (an open descriptor or a path) as one JSON
    extended attribute; a filesystem without user attributes stores nothing (the
    ledger still tells what is done)."""
    value = _metadata_json(metadata).encode()
    try:
        os.setxattr(target, XATTR, value)
    except OSError as exc:
        if exc.errno not in _NO_XATTRS:
            raise


def read_metadata(path: str) -> dict[str, str]:
    """A file's metadata: the JSON attribute, else the older one-attribute-per-field form,
    else nothing. Links are not followed."""
    try:
        raw = os.getxattr(path, XATTR, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in _NO_XATTRS:
            return {}
        return _read_field_xattrs(path)  # ENODATA: not written by this version
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(name): str(value) for name, value in data.items()}


def _read_field_xattrs(path: str) -> dict[str, str]:
    """Metadata in the older form: ``user.pixelfleet.<name>`` = value, one per field."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    out = {}
    for name in names:
        if name.startswith(_XATTR_FIELD):
            with contextlib.suppress(OSError):
                value = os.getxattr(path, name, follow_symlinks=False)
                out[name[len(_XATTR_FIELD) :]] = value.decode(errors="replace")
    return out
