"""Object storage chosen by URL scheme: ``file://`` (or a plain path), ``memory://``, ``s3://``."""

from __future__ import annotations

from collections.abc import Callable

from pixelfleet.registry import Registry
from pixelfleet.settings import Settings, get_settings
from pixelfleet.storage.base import Storage, check_key
from pixelfleet.urls import check_storage_url, scheme_of

__all__ = ["Storage", "check_key", "open_storage", "scheme_of", "storages"]

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


def open_storage(url: str, settings: Settings | None = None) -> Storage:
    """Open the storage a URL names."""
    check_storage_url(url)
    scheme = scheme_of(url, "file")
    cls: Callable[..., Storage] = storages.get(scheme)
    if scheme == "s3":
        return cls(url, settings or get_settings())
    return cls(url)
