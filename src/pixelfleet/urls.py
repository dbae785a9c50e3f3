"""URLs that name backends: the scheme of a storage URL and the file of a ``sqlite:///`` URL.

Every backend (storage, ledger, catalog) and command reads URLs through these, so one
spelling is accepted everywhere and errors say the same thing.
"""

from __future__ import annotations

from pixelfleet.errors import ConfigError


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
