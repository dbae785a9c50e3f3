"""Object storage chosen by URL scheme: ``file://`` (or a plain path), ``memory://``, ``s3://``."""

from __future__ import annotations

from pixelfleet.registry import Registry
from pixelfleet.settings import Settings, get_settings
from pixelfleet.storage.base import Storage, check_key

__all__ = ["Storage", "check_key", "open_storage", "storages"]

storages = Registry(
    "storage scheme",
    "pixelfleet.storages",
    {
        "file": "pixelfleet.storage.local:LocalStorage",
        "memory": "pixelfleet.storage.memory:MemoryStorage",
        "s3": "pixelfleet.storage.s3:S3Storage",
    },
    extras={"s3": "s3"},
)


def scheme_of(url: str) -> str:
    """The URL's scheme, ``file`` for plain paths."""
    if "://" not in url:
        return "file"
    return url.split("://", 1)[0].lower()


def open_storage(url: str, settings: Settings | None = None) -> Storage:
    """Open the storage a URL names."""
    cls = storages.get(scheme_of(url))
    if scheme_of(url) == "s3":
        return cls(url, settings or get_settings())
    return cls(url)
