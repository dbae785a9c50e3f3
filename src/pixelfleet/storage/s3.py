"""Storage in an S3 bucket or any S3-compatible service (``s3://bucket/prefix``), over obstore.

Everything that shapes a request comes from :class:`~pixelfleet.settings.S3Settings`:
obstore would otherwise fill gaps from ``AWS_*`` environment variables itself, and
``settings.py`` is the one place pixelfleet reads the environment. So every option
that changes where a request goes or how it is signed is passed explicitly, and
credentials come through a provider that returns the settings' keys (which also keeps
obstore from looking for credentials anywhere else).

A write is one ``PUT``, which S3 applies atomically; only ``write_file`` of a file
over 64 MB uses a multipart upload (also atomic: the object appears on completion).
Metadata travels as ``x-amz-meta-*`` headers: names come back lower-case and values
must be printable ASCII. The ``content-type`` entry is sent as the object's
``Content-Type`` instead, and :meth:`S3Storage.head` reports the object's content type
under that name.

Listing is the exception to "over obstore": obstore refuses a whole listing page when
one key is not a path it accepts (``a/../b``, ``a//b``, ``./x``, control
characters), and reports a folder marker ``dir/`` as an object ``dir``. A source
bucket is not ours to tidy, so :meth:`S3Storage.scan` sends its own signed
``ListObjectsV2`` requests and yields every key as it is: an unsafe key then fails its
own task (every other method refuses it with
:class:`~pixelfleet.errors.UnsafeKeyError`) instead of the whole run.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import random
import time
import types
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pixelfleet import __version__
from pixelfleet.errors import ConfigError, MissingExtraError, ObjectNotFoundError, StorageError
from pixelfleet.models import Entry
from pixelfleet.settings import S3Settings, Settings
from pixelfleet.storage.base import Storage, check_key

if TYPE_CHECKING:
    from obstore.store import ClientConfig, RetryConfig, S3Config, S3Credential, S3Store

_INSTALL = "pip install 'pixelfleet[s3]'"

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

# A handful of retries with exponential backoff covers throttling (503 SlowDown) and
# dropped connections without hiding an outage for minutes: the runner retries the
# task after that.
_RETRY: RetryConfig = {
    "max_retries": 4,
    "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=5)},
    "retry_timeout": timedelta(seconds=60),
}
_CLIENT: ClientConfig = {
    "connect_timeout": timedelta(seconds=10),
    # Bounds a whole request, body included: generous enough for a large source object.
    "timeout": timedelta(seconds=300),
    "user_agent": f"pixelfleet/{__version__}",
}


# Files up to this size are uploaded in one PUT; bigger ones in parts of _PART_BYTES.
_SINGLE_PUT_BYTES = 64 * 1024**2
_PART_BYTES = 16 * 1024**2


def _obstore() -> types.ModuleType:
    try:
        import obstore
    except ImportError as exc:
        raise MissingExtraError(f"s3:// storage needs obstore: {_INSTALL}") from exc
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
        s3 = settings.s3
        self._provider: _StaticCredentials | _SdkCredentials | None = None
        if not s3.skip_signature:
            if s3.access_key_id and s3.secret_access_key:
                self._provider = _StaticCredentials(
                    s3.access_key_id, s3.secret_access_key, s3.session_token
                )
            elif settings.s3_sdk_credentials:
                self._provider = _SdkCredentials(url)
            else:
                raise ConfigError(
                    f"no credentials for {self.url}: set AWS_ACCESS_KEY_ID and "
                    "AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary keys), "
                    "or PIXELFLEET_S3_ANONYMOUS=1 for a public bucket"
                )
        region = s3.region or "us-east-1"
        # AWS's regional endpoint is spelled out so that no AWS_ENDPOINT in the
        # environment can redirect requests.
        endpoint = (s3.endpoint or f"https://s3.{region}.amazonaws.com").rstrip("/")
        if endpoint.lower().startswith("http://") and not s3.allow_http:
            raise ConfigError(
                f"S3 endpoint {endpoint!r} is plain HTTP; set PIXELFLEET_S3_ALLOW_HTTP=1 "
                "to allow it, or use https://"
            )
        self._store = self._make_store(s3, region, endpoint)
        self._lister = BucketLister(
            url,
            endpoint=endpoint,
            bucket=self.bucket,
            region=region,
            credentials=None if self._provider is None else self._provider.keys,
            requester_pays=s3.requester_pays,
        )

    def _make_store(self, s3: S3Settings, region: str, endpoint: str) -> S3Store:
        from obstore.store import S3Store

        config: S3Config = {
            "region": region,
            "endpoint": endpoint,
            # Path-style requests: what S3-compatible services (MinIO, Ceph, moto...)
            # expect, and what AWS still serves for every bucket name.
            "virtual_hosted_style_request": False,
            "skip_signature": s3.skip_signature,
            "request_payer": s3.requester_pays,
            "s3_express": False,
        }
        provider = self._provider
        try:
            return S3Store(
                self.bucket,
                prefix=self.prefix or None,
                config=config,
                client_options={**_CLIENT, "allow_http": s3.allow_http},
                retry_config=_RETRY,
                credential_provider=provider,
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

    def scan(self, prefix: str = "") -> Iterator[Entry]:
        base = f"{self.prefix}/" if self.prefix else ""
        for key, size, etag, mtime in self._lister.list(base + prefix):
            if key.endswith("/"):
                continue  # a folder marker (the S3 console makes them), not an object
            yield Entry(key[len(base) :], size, etag, mtime)

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

    def delete(self, key: str) -> None:
        check_key(key)
        try:
            self._obs.delete(self._store, key)
        except self._failures() as exc:
            if self._is_missing(exc):
                return
            raise self._failure("delete", key, exc) from exc


class _StaticCredentials:
    """Credentials from settings; obstore asks once and keeps them (they never expire)."""

    def __init__(self, access_key_id: str, secret_access_key: str, token: str | None):
        self._credential: S3Credential = {
            "access_key_id": access_key_id,
            "secret_access_key": secret_access_key,
            "token": token,
            "expires_at": None,
        }

    def __call__(self) -> S3Credential:
        return self._credential

    def keys(self) -> tuple[str, str, str | None]:
        """Access key, secret key and session token, for the lister's signatures."""
        c = self._credential
        return c["access_key_id"], c["secret_access_key"], c["token"]

    def __repr__(self) -> str:
        return "_StaticCredentials(***)"


class _SdkCredentials:
    """Credentials from the AWS SDK's default chain, for machines with roles, not keys.

    Used when the settings carry no keys: EC2 instance roles, ECS and AWS Batch task
    roles, web identity (EKS), SSO and shared-config profiles all work as they do for the
    AWS CLI. Temporary credentials are refreshed by botocore; obstore is told to ask again
    every few minutes.
    """

    _REASK = timedelta(minutes=5)

    def __init__(self, url: str):
        try:
            import botocore.session
        except ModuleNotFoundError:
            raise MissingExtraError(
                f"no AWS keys are set for {url}, and finding a role needs botocore: {_INSTALL}"
            ) from None
        self._source = botocore.session.get_session().get_credentials()
        if self._source is None:
            raise ConfigError(
                f"no credentials for {url}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                "configure an AWS profile or role, or set PIXELFLEET_S3_ANONYMOUS=1 for a "
                "public bucket"
            )

    def keys(self) -> tuple[str, str, str | None]:
        """Current access key, secret key and session token (refreshed when they expire)."""
        frozen = self._source.get_frozen_credentials()
        return frozen.access_key, frozen.secret_key, frozen.token

    def __call__(self) -> S3Credential:
        access_key, secret_key, token = self.keys()
        return {
            "access_key_id": access_key,
            "secret_access_key": secret_key,
            "token": token,
            "expires_at": datetime.now(UTC) + self._REASK,
        }

    def __repr__(self) -> str:
        return "_SdkCredentials(***)"


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


# -- listing --------------------------------------------------------------------------------

_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_LIST_ATTEMPTS = 5
_LIST_TIMEOUT_S = 60.0


class BucketLister:
    """Lists a bucket with signed ``ListObjectsV2`` requests, keeping every key as S3 has it.

    Keys are asked for URL-encoded (``encoding-type=url``), so even keys with characters
    XML cannot carry come back intact. Requests go straight to the endpoint (no proxy
    from the environment) and are retried a few times on throttling, server errors
    and dropped connections.
    """

    def __init__(
        self,
        url: str,
        *,
        endpoint: str,
        bucket: str,
        region: str,
        credentials: Callable[[], tuple[str, str, str | None]] | None,
        requester_pays: bool = False,
    ):
        self.url = url
        self.endpoint = endpoint.rstrip("/")
        self.bucket = bucket
        self.region = region
        self.credentials = credentials
        self.requester_pays = requester_pays
        #: Keys per response; S3 never sends more than 1000.
        self.page_size = 1000
        # No proxy from the environment, and no redirects: a redirect would carry the
        # session token to whatever host it names.
        self._opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), _RefuseRedirects()
        )

    def list(self, prefix: str) -> Iterator[tuple[str, int, str, float]]:
        """Yield ``(key, size, etag, mtime)`` for every key starting with ``prefix``, in order."""
        token: str | None = None
        while True:
            query = {
                "list-type": "2",
                "encoding-type": "url",
                "prefix": prefix,
                "max-keys": str(self.page_size),
            }
            if token:
                query["continuation-token"] = token
            root = ET.fromstring(self._get(query, prefix))
            for item in root.iterfind("{*}Contents"):
                key = urllib.parse.unquote_plus(item.findtext("{*}Key") or "")
                modified = item.findtext("{*}LastModified") or ""
                yield (
                    key,
                    int(item.findtext("{*}Size") or 0),
                    (item.findtext("{*}ETag") or "").strip('"'),
                    datetime.fromisoformat(modified).timestamp() if modified else 0.0,
                )
            token = root.findtext("{*}NextContinuationToken")
            if (root.findtext("{*}IsTruncated") or "").lower() != "true" or not token:
                return

    def request(self, query: dict[str, str], now: datetime | None = None) -> urllib.request.Request:
        """The signed GET request for the bucket with ``query`` (AWS Signature Version 4)."""
        parsed = urllib.parse.urlsplit(self.endpoint)
        path = f"{parsed.path.rstrip('/')}/{self.bucket}"
        canonical_query = "&".join(f"{_quote(k)}={_quote(v)}" for k, v in sorted(query.items()))
        headers = {"host": parsed.netloc, "x-amz-content-sha256": _EMPTY_SHA256}
        if self.requester_pays:
            headers["x-amz-request-payer"] = "requester"
        if self.credentials is not None:
            access_key, secret_key, token = self.credentials()
            now = now or datetime.now(UTC)
            stamp = now.strftime("%Y%m%dT%H%M%SZ")
            headers["x-amz-date"] = stamp
            if token:
                headers["x-amz-security-token"] = token
            names = sorted(headers)
            signed = ";".join(names)
            canonical = "\n".join(
                [
                    "GET",
                    _quote(path, safe="/"),
                    canonical_query,
                    "".join(f"{n}:{headers[n].strip()}\n" for n in names),
                    signed,
                    _EMPTY_SHA256,
                ]
            )
            scope = f"{stamp[:8]}/{self.region}/s3/aws4_request"
            to_sign = "\n".join(
                [
                    "AWS4-HMAC-SHA256",
                    stamp,
                    scope,
                    hashlib.sha256(canonical.encode()).hexdigest(),
                ]
            )
            key = f"AWS4{secret_key}".encode()
            for part in (stamp[:8], self.region, "s3", "aws4_request"):
                key = hmac.new(key, part.encode(), hashlib.sha256).digest()
            signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
            headers["authorization"] = (
                f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
                f"SignedHeaders={signed}, Signature={signature}"
            )
        headers["user-agent"] = f"pixelfleet/{__version__}"
        target = f"{parsed.scheme}://{parsed.netloc}{_quote(path, safe='/')}?{canonical_query}"
        return urllib.request.Request(target, headers=headers, method="GET")

    def _get(self, query: dict[str, str], prefix: str) -> bytes:
        what = f"cannot list {self.url} (prefix {prefix!r})"
        for attempt in range(_LIST_ATTEMPTS):
            last = attempt == _LIST_ATTEMPTS - 1
            try:
                with self._opener.open(self.request(query), timeout=_LIST_TIMEOUT_S) as response:
                    return bytes(response.read())
            except urllib.error.HTTPError as exc:
                body = exc.read().decode(errors="replace")
                code = _error_code(body)
                if exc.code == 404 and code in ("NoSuchBucket", ""):
                    raise ObjectNotFoundError(
                        f"bucket {self.bucket!r} does not exist; check the url {self.url!r}"
                    ) from None
                if (exc.code >= 500 or exc.code == 429) and not last:
                    _backoff(attempt)
                    continue
                hint = ""
                if exc.code in (301, 400, 403):
                    hint = (
                        " (check the credentials, the region (PIXELFLEET_S3_REGION), and "
                        "PIXELFLEET_S3_REQUESTER_PAYS for requester-pays buckets)"
                    )
                raise StorageError(f"{what}: HTTP {exc.code} {code}{hint}") from None
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                if not last:
                    _backoff(attempt)
                    continue
                reason = getattr(exc, "reason", exc)
                raise StorageError(f"{what}: {reason}") from exc
        raise AssertionError("unreachable")  # the last attempt returns or raises


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 3xx response is then raised as an HTTPError


def _quote(text: str, safe: str = "") -> str:
    """URI-encode the way SigV4 wants it: everything but ``A-Z a-z 0-9 - _ . ~``."""
    return urllib.parse.quote(text, safe=safe + "-_.~")


def _error_code(body: str) -> str:
    try:
        return ET.fromstring(body).findtext("Code") or ""
    except ET.ParseError:
        return ""


def _backoff(attempt: int) -> None:
    time.sleep(min(5.0, 0.1 * 2**attempt) * random.uniform(0.5, 1.0))
