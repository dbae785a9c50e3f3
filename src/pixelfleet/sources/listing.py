"""Which source objects a pipeline takes: listing a storage through include/exclude globs.

Glob rules (matched against the whole key): ``*`` and ``?`` stay within one folder,
``**`` spans folders (``**/*.tif`` also matches ``x.tif`` at the root), ``[abc]`` is
a character class. Matching ignores case unless ``ignore_case = false``, because
archives mix ``.tif`` and ``.TIF``.
"""

from __future__ import annotations

import mimetypes
import posixpath
import re
from collections.abc import Callable, Iterator, Sequence

from pixelfleet.errors import ConfigError
from pixelfleet.models import Entry
from pixelfleet.settings import Settings, get_settings
from pixelfleet.sources.base import Source
from pixelfleet.storage import open_storage
from pixelfleet.storage.base import Storage

_MAGIC = re.compile(r"[*?\[]")


def glob_to_regex(pattern: str) -> str:
    """Translate one glob into a regular expression matching whole keys."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            end = pattern.find("]", i + 2 if pattern.startswith("[!", i) else i + 1)
            if end == -1:
                raise ConfigError(f"glob {pattern!r} has an unclosed '['; close it or escape it")
            body = pattern[i + 1 : end]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append(f"[{body.replace(chr(92), chr(92) * 2)}]")
            i = end + 1
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


def compile_globs(patterns: Sequence[str], ignore_case: bool = True) -> Callable[[str], bool]:
    """A function telling whether a key matches any of ``patterns``."""
    if not patterns:
        return lambda key: False
    flags = re.IGNORECASE if ignore_case else 0
    regex = re.compile("|".join(f"(?:{glob_to_regex(p.lstrip('/'))})" for p in patterns), flags)
    return lambda key: regex.fullmatch(key) is not None


def literal_prefix(patterns: Sequence[str], ignore_case: bool = True) -> str:
    """The folder prefix every include pattern shares before its first wildcard.

    Listing only below it saves listing a whole bucket to find one state's files.
    """
    if not patterns:
        return ""
    prefixes = []
    for p in patterns:
        p = p.lstrip("/")
        m = _MAGIC.search(p)
        head = p if m is None else p[: m.start()]
        folder = head[: head.rfind("/") + 1]
        if ignore_case and folder.lower() != folder.upper():
            return ""  # a cased literal may match other spellings: list everything
        prefixes.append(folder)
    common = prefixes[0]
    for p in prefixes[1:]:
        while not p.startswith(common):
            common = common[: common.rstrip("/").rfind("/") + 1]
    return common


def select(
    storage: Storage,
    include: Sequence[str],
    exclude: Sequence[str] = (),
    ignore_case: bool = True,
) -> Iterator[Entry]:
    """Yield the storage's objects that match ``include`` and not ``exclude``, in key order.

    A folder that could not be listed (a key ending in ``/``, marked ``skip``) is
    yielded unless ``exclude`` matches it: what it holds might have matched.
    """
    wanted = compile_globs(include, ignore_case)
    unwanted = compile_globs(exclude, ignore_case)
    for entry in storage.scan(literal_prefix(include, ignore_case)):
        if (wanted(entry.key) or _unlisted_folder(entry)) and not unwanted(entry.key):
            yield entry


def _unlisted_folder(entry: Entry) -> bool:
    """A folder the storage could not list (its files might have been wanted)."""
    return entry.skip is not None and entry.key.endswith("/")


def with_extensions(entries: Iterator[Entry], content_types: Sequence[str]) -> Iterator[Entry]:
    """Only the entries whose extension is one of ``content_types``' (all when empty)."""
    if not content_types:
        return entries
    extensions = extensions_for(content_types)
    return (
        e
        for e in entries
        if posixpath.splitext(e.key)[1].lower() in extensions or _unlisted_folder(e)
    )


def extensions_for(content_types: Sequence[str]) -> set[str]:
    """File extensions of MIME types, e.g. ``image/jpeg`` -> ``.jpg .jpeg .jpe``."""
    out: set[str] = set()
    for ctype in content_types:
        found = mimetypes.guess_all_extensions(ctype.strip().lower(), strict=False)
        if not found:
            raise ConfigError(
                f"content type {ctype!r} has no known file extension; use one such as "
                "image/jpeg, image/png or image/tiff, or filter with include globs"
            )
        out.update(e.lower() for e in found)
    return out


class ListingSource(Source):
    """The objects of a storage URL that the globs and content types select, in key order.

    The listing streams (pages of keys as the storage returns them) and ends with the
    last object. What a storage lists but will not serve is passed on like any other
    entry, rather than stopping the run or vanishing unreported: a key such as
    ``a/../b`` on S3, or a file name that is not UTF-8 in a local folder, fails its own
    task with a reason that names it and says what to do; a symbolic link, a FIFO or a
    folder that cannot be listed comes marked ``Entry.skip``, and the run records it as
    skipped with that reason.
    """

    name = "listing"

    def __init__(
        self,
        url: str,
        include: Sequence[str] = ("**/*",),
        exclude: Sequence[str] = (),
        ignore_case: bool = True,
        content_types: Sequence[str] = (),
        settings: Settings | None = None,
    ):
        self.url = url
        self.include, self.exclude = list(include), list(exclude)
        self.ignore_case = ignore_case
        self.content_types = list(content_types)
        extensions_for(self.content_types)  # a bad content type fails here, not mid-run
        self._storage = open_storage(url, settings or get_settings())

    def entries(self) -> Iterator[Entry]:
        """The selected objects, as the storage lists them."""
        listed = select(self._storage, self.include, self.exclude, self.ignore_case)
        return with_extensions(listed, self.content_types)

    def describe(self) -> str:
        """``listing of URL``."""
        return f"listing of {self.url}"
