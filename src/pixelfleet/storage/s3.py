"""Storage in an S3 bucket or any S3-compatible service (``s3://bucket/prefix``), over obstore.

Every option that changes where a request goes or how it is signed comes from
:mod:`pixelfleet.storage.s3credentials`, never from obstore's own reading of ``AWS_*``
variables.

A write is one ``PUT``, which S3 applies atomically; only ``write_file`` of a file
over 64 MB uses a multipart upload (also atomic: the object appears on completion).
Metadata travels as ``x-amz-meta-*`` headers: names come back lower-case and values
must be printable ASCII. The ``content-type`` entry is sent as the object's
``Content-Type`` instead, and :meth:`S3Storage.head` reports the object's content type
under that name.

Listing is the exception to "over obstore": :meth:`S3Storage.scan` goes through
:class:`~pixelfleet.storage.s3listing.BucketLister`, so that a bucket with keys obstore
refuses still lists (see :mod:`pixelfleet.storage.s3listing`).
"""

from __future__ import annotations

import time
import types
from collections.abc import Iterable, Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from typing_extensions import override

from pixelfleet import __version__
from pixelfleet.errors import ConfigError, MissingExtraError, ObjectNotFoundError, StorageError
from pixelfleet.models import Entry
from pixelfleet.settings import S3Settings, Settings
from pixelfleet.storage.base import Storage, check_key
from pixelfleet.storage.s3credentials import INSTALL, S3Access, resolve_access
from pixelfleet.storage.s3listing import BucketLister

if TYPE_CHECKING:
    from obstore.store import ClientConfig, RetryConfig, S3Config, S3Store

# Object attributes obstore maps to HTTP headers rather than x-amz-meta-*. Metadata
# reported by head() leaves them out, except the content type.
_STANDARD = {
    "content-disposition",
    "content-encoding",
    "content-language",
    "content-type",
    "cache-control",
    "storage-class",
}

# Retries with exponential backoff (obstore adds jitter) cover throttling (503 SlowDown),
# dropped connections and short outages; a longer outage fails the call, and the runner
# then pauses dispatch until storage answers (runner.StorageBreaker) instead of
# burning the tasks' attempts.
_MAX_RETRIES = 6


def _retry(s3: S3Settings) -> RetryConfig:
    return {
        "max_retries": _MAX_RETRIES,
        "backoff": {
            "init_backoff": timedelta(milliseconds=100),
            "max_backoff": timedelta(seconds=8),
            "base": 2.0,
        },
        "retry_timeout": timedelta(seconds=max(60.0, 2 * s3.timeout)),
    }


def _client(s3: S3Settings) -> ClientConfig:
    return {
        "connect_timeout": timedelta(seconds=min(10.0, s3.timeout)),
        # Time without a byte of the answer (PIXELFLEET_S3_TIMEOUT): an endpoint that
        # accepts connections and never answers fails each try after this long.
        "read_timeout": timedelta(seconds=s3.timeout),
        # Bounds a whole request, body included: generous enough for a large source object.
        "timeout": timedelta(seconds=max(300.0, s3.timeout)),
        "user_agent": f"pixelfleet/{__version__}",
    }


# Files up to this size are uploaded in one PUT; bigger ones in parts of _PART_BYTES.
_SINGLE_PUT_BYTES = 64 * 1024**2
_PART_BYTES = 16 * 1024**2


def _obstore() -> types.ModuleType:
    try:
        import obstore
    except ImportError as exc:
        raise MissingExtraError(f"s3:// storage needs obstore: {INSTALL}") from exc
    return obstore


def parse_s3_url(url: str) -> tuple[str, str]:
    """Split ``s3://bucket/some/prefix`` into ``("bucket", "some/prefix")``."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() != "s3":
        raise ConfigError(f"{url!r} is not an S3 URL; use s3://bucket or s3://bucket/prefix")
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise ConfigError(f"S3 URL {url!r} names no bucket; use s3://bucket or s3://bucket/prefix")
    prefix = prefix.strip("/")
    if prefix:
        check_key(prefix)
    return bucket, prefix


class S3Storage(Storage):
    """Objects in an S3 bucket below an optional prefix."""

    def __init__(self, url: str, settings: Settings):
        self.url = url
        self.bucket, self.prefix = parse_s3_url(url)
        self._obs = _obstore()
        access = resolve_access(url, settings)
        self._store = self._make_store(settings.s3, access)
        keys = None if access.credentials is None else access.credentials.keys
        self._lister = BucketLister(
            url,
            endpoint=access.endpoint,
            bucket=self.bucket,
            region=access.region,
            credentials=keys,
            requester_pays=settings.s3.requester_pays,
            timeout=settings.s3.timeout,
        )

    def _make_store(self, s3: S3Settings, access: S3Access) -> S3Store:
        from obstore.store import S3Store

        config: S3Config = {
            "region": access.region,
            "endpoint": access.endpoint,
            # Path-style requests: what S3-compatible services (MinIO, Ceph, moto...)
            # expect, and what AWS still serves for every bucket name.
            "virtual_hosted_style_request": False,
            "skip_signature": s3.skip_signature,
            "request_payer": s3.requester_pays,
            "s3_express": False,
        }
        try:
            return S3Store(
                self.bucket,
                prefix=self.prefix or None,
                config=config,
                client_options={**_client(s3), "allow_http": s3.allow_http},
                retry_config=_retry(s3),
                credential_provider=access.credentials,
            )
        except (self._obs.exceptions.BaseError, ValueError) as exc:
            raise ConfigError(f"cannot set up S3 access for {self.url}: {exc}") from exc

    # -- errors --------------------------------------------------------------------

    def _is_missing(self, exc: BaseException) -> bool:
        return isinstance(exc, FileNotFoundError | self._obs.exceptions.NotFoundError)

    def _failure(self, action: str, key: str, exc: BaseException) -> StorageError:
        where = self.describe(key) if key else self.url
        detail = str(exc).split("\n", 1)[0]
        errors = self._obs.exceptions
        if isinstance(exc, errors.PermissionDeniedError | errors.UnauthenticatedError):
            detail += (
                " (check the credentials, the region, and PIXELFLEET_S3_REQUESTER_PAYS "
                "for requester-pays buckets)"
            )
        return StorageError(f"cannot {action} {where}: {detail}")

    def _failures(self) -> tuple[type[BaseException], ...]:
        return (self._obs.exceptions.BaseError, OSError)

    # -- Storage -------------------------------------------------------------------

    @override
    def scan(self, prefix: str = "") -> Iterator[Entry]:
        base = f"{self.prefix}/" if self.prefix else ""
        for key, size, etag, mtime in self._lister.list(base + prefix):
            if key.endswith("/"):
                continue  # a folder marker (the S3 console makes them), not an object
            yield Entry(key[len(base) :], size, etag, mtime)

    @override
    def head(self, key: str) -> Entry | None:
        check_key(key)
        try:
            # A GET with head=True is one HEAD request that, unlike obstore.head,
            # also returns the object's attributes (its metadata).
            result = self._obs.get(self._store, key, options={"head": True})
        except self._failures() as exc:
            if self._is_missing(exc):
                return None
            raise self._failure("read the metadata of", key, exc) from exc
        metadata = {}
        for name, value in result.attributes.items():
            lower = name.lower()
            if lower not in _STANDARD or lower == "content-type":
                metadata[lower] = value
        return _entry(key, result.meta, metadata)

    #: A folder holding at least this many of the keys :meth:`existing` is asked about
    #: is listed (one request where HEADs would take two); a listing stops after
    #: ``_LIST_PAGES`` pages.
    _LIST_FROM = 2
    _LIST_PAGES = 2
    #: Set once a listing was refused: :meth:`existing` then asks key by key.
    _list_refused = False

    @override
    def existing(self, keys: Iterable[str]) -> dict[str, Entry]:
        """One ``LIST`` per folder that holds several of ``keys`` (from just before the
        first of them, stopping past the last), then a ``HEAD`` only for each key found,
        for its metadata, which a listing does not carry. So a task's outputs that do not
        exist yet (a first run) cost a request per folder, not one per key.

        Folders with fewer than ``_LIST_FROM`` of the keys, keys a listing did not
        reach within ``_LIST_PAGES`` pages (other objects between them), and every
        key once a listing was refused (no ``s3:ListBucket`` on the output) are asked
        about one ``HEAD`` at a time, as :meth:`Storage.existing` does.
        """
        wanted = [check_key(key) for key in dict.fromkeys(keys)]
        folders: dict[str, list[str]] = {}
        for key in wanted:
            folders.setdefault(key.rpartition("/")[0], []).append(key)
        present: set[str] = set()
        for folder, group in folders.items():
            if len(group) >= self._LIST_FROM and not self._list_refused:
                present.update(self._listed(folder, group))
            else:
                present.update(group)
        found = {}
        for key in wanted:
            if key in present:
                entry = self.head(key)
                if entry is not None:
                    found[key] = entry
        return found

    def _listed(self, folder: str, group: list[str]) -> set[str]:
        """Those of ``group`` (keys of one ``folder``) that may exist: the keys a bounded
        listing found, and every key past where it stopped."""
        base = f"{self.prefix}/" if self.prefix else ""
        wanted = set(group)
        last = max(group)
        seen: set[str] = set()
        reached = ""
        budget = self._LIST_PAGES * self._lister.page_size
        # Start-after is exclusive: the first key less its last character sorts before
        # it (and lets through at most a few keys that were not asked about).
        start = base + min(group)[:-1]
        prefix = base + (f"{folder}/" if folder else "")
        try:
            for count, (full, _size, _etag, _mtime) in enumerate(self._lister.list(prefix, start)):
                key = full[len(base) :]
                if key > last:
                    return seen
                if count >= budget:  # many other objects between them: HEAD the rest
                    return seen | {k for k in group if k > reached}
                reached = key
                if key in wanted:
                    seen.add(key)
        except (StorageError, ObjectNotFoundError):
            # Allowed to read objects but not to list them: HEAD from now on.
            self._list_refused = True
            return wanted
        return seen

    @override
    def read(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        check_key(key)
        start = start or 0
        if end is not None and end <= start:
            # S3 has no empty range; still tell a missing object apart.
            if self.head(key) is None:
                raise ObjectNotFoundError(f"object {key!r} not found in {self.url}")
            return b""
        try:
            if end is not None:
                data = self._obs.get_range(self._store, key, start=start, end=end)
            elif start:
                data = self._obs.get(self._store, key, options={"range": {"offset": start}}).bytes()
            else:
                data = self._obs.get(self._store, key).bytes()
        except self._failures() as exc:
            if self._is_missing(exc):
                raise ObjectNotFoundError(f"object {key!r} not found in {self.url}") from None
            if "Range Not Satisfiable" in str(exc):
                # A range that starts past the end: empty, like reading past a file's end.
                return b""
            raise self._failure("read", key, exc) from exc
        return bytes(data)

    @override
    def write(self, key: str, data: bytes, metadata: dict[str, str] | None = None) -> Entry:
        check_key(key)
        attributes = _attributes(key, metadata or {})
        try:
            result = self._obs.put(
                self._store, key, bytes(data), attributes=attributes, use_multipart=False
            )
        except self._failures() as exc:
            raise self._failure("write", key, exc) from exc
        etag = (result.get("e_tag") or "").strip('"')
        stored = {name.lower(): value for name, value in (metadata or {}).items()}
        # The PUT response has no Last-Modified; asking would cost a request.
        return Entry(key, len(data), etag, time.time(), stored)

    def write_file(
        self, key: str, path: str, metadata: dict[str, str] | None = None, consume: bool = False
    ) -> Entry:
        """Upload a local file: one ``PUT`` up to 64 MB, else a multipart upload.

        Both are atomic on S3: a multipart object appears only when the upload
        completes, and an abandoned upload leaves no object behind.
        """
        import os

        size = os.path.getsize(path)
        if size <= _SINGLE_PUT_BYTES:
            return super().write_file(key, path, metadata)
        check_key(key)
        attributes = _attributes(key, metadata or {})
        try:
            with open(path, "rb") as f:
                result = self._obs.put(
                    self._store,
                    key,
                    f,
                    attributes=attributes,
                    use_multipart=True,
                    chunk_size=_PART_BYTES,
                    max_concurrency=4,
                )
        except self._failures() as exc:
            raise self._failure("write", key, exc) from exc
        etag = (result.get("e_tag") or "").strip('"')
        stored = {name.lower(): value for name, value in (metadata or {}).items()}
        return Entry(key, size, etag, time.time(), stored)

    @override
    def delete(self, key: str) -> None:
        check_key(key)
        try:
            self._obs.delete(self._store, key)
        except self._failures() as exc:
            if self._is_missing(exc):
                return
            raise self._failure("delete", key, exc) from exc


def _entry(key: str, meta: Any, metadata: dict[str, str] | None = None) -> Entry:
    etag = (meta.get("e_tag") or "").strip('"')
    return Entry(key, int(meta["size"]), etag, meta["last_modified"].timestamp(), metadata or {})


def _attributes(key: str, metadata: dict[str, str]) -> dict[str, str]:
    """Turn string metadata into obstore attributes, refusing what HTTP headers cannot carry."""
    attributes = {}
    for name, value in metadata.items():
        lower = name.lower()
        if not name or not all(c.isascii() and (c.isalnum() or c in "-_.") for c in name):
            raise ConfigError(
                f"metadata name {name!r} for {key!r} is not allowed on S3; "
                "use ASCII letters, digits, '-', '_' and '.'"
            )
        if not all(" " <= c <= "~" for c in value):
            raise ConfigError(
                f"metadata {name!r}={value!r} for {key!r} is not printable ASCII; "
                "percent-encode it (urllib.parse.quote) before writing"
            )
        if lower == "content-type":
            attributes["Content-Type"] = value
        elif lower in _STANDARD:
            raise ConfigError(
                f"metadata name {name!r} for {key!r} is a reserved S3 header; choose another name"
            )
        else:
            attributes[lower] = value
    return attributes
