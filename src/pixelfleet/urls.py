"""URLs that name backends: the scheme of a storage URL and the file of a ``sqlite:///`` URL.

Every backend (storage, ledger, catalog) and command reads URLs through these, so one
spelling is accepted everywhere and errors say the same thing.
"""

from __future__ import annotations

import os
import re

from pixelfleet.errors import ConfigError

# Schemes of object stores (ours and others'): only these are taken as mistyped, so a local
# folder whose name merely holds a colon ("shots:2024") is still a folder.
_SCHEMES = "s3|gs|gcs|file|memory|https?|az|abfs|sqlite|postgresql"
# "s3:/bucket", "s3:bucket", "file:/data": the colon followed by fewer than two slashes.
_SHORT_SLASHES = re.compile(rf"^({_SCHEMES}):/?(?!/)(.*)$", re.IGNORECASE | re.DOTALL)
# "s3//bucket": two slashes but no colon.
_NO_COLON = re.compile(rf"^({_SCHEMES})//(.*)$", re.IGNORECASE | re.DOTALL)


def scheme_of(url: str, default: str = "") -> str:
    """The scheme before ``://``, lower-cased (``"S3://b/k"`` -> ``"s3"``), or ``default``
    for a URL without one (a plain path)."""
    scheme, sep, _ = url.partition("://")
    return scheme.lower() if sep else default


def check_storage_url(url: str, what: str = "url") -> str:
    """``url`` as it is, unless it looks like a storage URL with a mistyped scheme
    (``s3:/bucket``, ``s3:bucket``, ``s3//bucket``): then a :class:`ConfigError` that shows
    the fix (``s3://bucket``), instead of the URL being taken as a local folder of that
    odd name. ``what`` names the URL's use in the message."""
    if "://" in url:
        return url
    match = _SHORT_SLASHES.match(url) or _NO_COLON.match(url)
    if match is None:
        return url
    scheme, rest = match.group(1).lower(), match.group(2).lstrip("/")
    fixed = f"{scheme}:///{rest}" if scheme == "file" else f"{scheme}://{rest}"
    raise ConfigError(
        f"{what} {url!r}: the scheme looks mistyped (a URL needs '{scheme}://'); "
        f"did you mean {fixed!r}?"
    )


def sqlite_path(url: str, what: str = "ledger") -> str:
    """The file a ``sqlite:///`` URL names (``:memory:`` kept as is); ``what`` names the
    URL's use in the error message."""
    if not url.startswith("sqlite:///"):
        raise ConfigError(
            f"{what} URL {url!r} is not a SQLite URL; use sqlite:///relative/path.db "
            "or sqlite:////absolute/path.db"
        )
    path = url[len("sqlite:///") :]
    if not path:
        raise ConfigError(f"{what} URL {url!r} names no file; e.g. sqlite:///pixelfleet.db")
    return path


def resolve_sqlite_url(url: str, base: str) -> str:
    """A ``sqlite:///`` URL whose relative file is taken as relative to the folder ``base``
    (not the current one); absolute files, ``:memory:`` and other URLs as they are."""
    rel = url.removeprefix("sqlite:///")
    if url.startswith("sqlite:///") and rel != ":memory:" and not rel.startswith("/"):
        return "sqlite:///" + os.path.normpath(os.path.join(base, rel))
    return url
