"""Listing an S3 bucket with hand-signed ``ListObjectsV2`` requests, every key as S3 has it.

obstore refuses a whole listing page when one key is not a path it accepts
(``a/../b``, ``a//b``, ``./x``, control characters), and reports a folder marker
``dir/`` as an object ``dir``. A source bucket is not ours to tidy, so
:meth:`S3Storage.scan <pixelfleet.storage.s3.S3Storage.scan>` lists through
:class:`BucketLister` instead, which signs its own requests (AWS Signature Version 4)
and yields every key unchanged: an unsafe key then fails its own task (every other
storage method refuses it with :class:`~pixelfleet.errors.UnsafeKeyError`) instead of
the whole run.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import random
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from pixelfleet import __version__
from pixelfleet.errors import ObjectNotFoundError, StorageError

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
        timeout: float = _LIST_TIMEOUT_S,
    ):
        self.url = url
        self.endpoint = endpoint.rstrip("/")
        self.bucket = bucket
        self.region = region
        self.credentials = credentials
        self.requester_pays = requester_pays
        #: Seconds a page may take, its retries included (``PIXELFLEET_S3_TIMEOUT``).
        self.timeout = timeout
        #: Keys per response; S3 never sends more than 1000.
        self.page_size = 1000
        # No proxy from the environment, and no redirects: a redirect would carry the
        # session token to whatever host it names.
        self._opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), _RefuseRedirects()
        )

    def list(self, prefix: str, start_after: str = "") -> Iterator[tuple[str, int, str, float]]:
        """Yield ``(key, size, etag, mtime)`` for every key starting with ``prefix``, in order
        (only the keys after ``start_after``, when given)."""
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
            elif start_after:
                query["start-after"] = start_after
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
        deadline = time.monotonic() + self.timeout
        for attempt in range(_LIST_ATTEMPTS):
            left = deadline - time.monotonic()
            # The last try is the one that would end past the deadline.
            last = attempt == _LIST_ATTEMPTS - 1 or left < 1.0
            try:
                with self._opener.open(self.request(query), timeout=max(0.5, left)) as response:
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
                if isinstance(reason, TimeoutError) or "timed out" in str(reason):
                    reason = f"no answer within {self.timeout:g} s (PIXELFLEET_S3_TIMEOUT)"
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
