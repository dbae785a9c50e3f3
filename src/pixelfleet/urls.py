"""URLs that name backends: the scheme of a storage URL and the file of a ``sqlite:///`` URL.

Every backend (storage, ledger, catalog) and command reads URLs through these, so one
spelling is accepted everywhere and errors say the same thing.
"""

from __future__ import annotations

import os

from pixelfleet.errors import ConfigError


def scheme_of(url: str, default: str = "") -> str:
    """The scheme before ``://``, lower-cased (``"S3://b/k"`` -> ``"s3"``), or ``default``
    for a URL without one (a plain path)."""
    scheme, sep, _ = url.partition("://")
    return scheme.lower() if sep else default


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
