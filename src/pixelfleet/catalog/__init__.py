"""Catalogs chosen by URL: ``sqlite:///path.db`` (embedded default), ``postgresql://...``
(pgstac) and ``memory://`` (the reference, for tests)."""

from __future__ import annotations

from pixelfleet.catalog.base import Catalog, SearchPage, check_collection_id, new_collection
from pixelfleet.catalog.query import SearchQuery, parse_query
from pixelfleet.errors import ConfigError
from pixelfleet.registry import Registry
from pixelfleet.urls import scheme_of

__all__ = [
    "Catalog",
    "SearchPage",
    "SearchQuery",
    "catalogs",
    "check_catalog_url",
    "check_collection_id",
    "new_collection",
    "open_catalog",
    "parse_query",
]

catalogs = Registry(
    "catalog URL scheme",
    "pixelfleet.catalogs",
    {
        "sqlite": "pixelfleet.catalog.sqlite:SqliteCatalog",
        "postgresql": "pixelfleet.catalog.pgstac:PgstacCatalog",
        "postgres": "pixelfleet.catalog.pgstac:PgstacCatalog",
        "memory": "pixelfleet.catalog.memory:MemoryCatalog",
    },
    extras={"postgresql": "pgstac", "postgres": "pgstac"},
)


def check_catalog_url(url: str) -> str:
    """Return ``url`` if its scheme names a catalog, else raise :class:`ConfigError`."""
    if scheme_of(url) not in catalogs.names():
        raise ConfigError(
            f"catalog url {url!r} has no known scheme; use sqlite:///path.db,"
            " postgresql://user@host/db (pgstac) or memory://"
        )
    return url


def open_catalog(url: str) -> Catalog:
    """Open the catalog a URL names."""
    check_catalog_url(url)
    catalog: Catalog = catalogs.get(scheme_of(url))(url)
    return catalog
