"""Where S3 requests go and how they are signed, from :class:`~pixelfleet.settings.S3Settings`.

obstore would otherwise fill gaps from ``AWS_*`` environment variables itself, and
``settings.py`` is the one place pixelfleet reads the environment. So the region and
the endpoint are always spelled out, and credentials come through a provider that
returns the settings' keys (which also keeps obstore from looking for credentials
anywhere else), or, when the settings carry none, the AWS SDK's default chain
(instance and task roles, profiles, SSO).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from pixelfleet.errors import ConfigError, MissingExtraError
from pixelfleet.settings import Settings

if TYPE_CHECKING:
    from obstore.store import S3Credential

#: What to install for ``s3://`` storage.
INSTALL = "pip install 'pixelfleet[s3]'"


@dataclass(frozen=True)
class S3Access:
    """Where requests for one bucket go and how they are signed."""

    region: str
    #: The service's base URL, without a trailing slash.
    endpoint: str
    #: ``None`` for unsigned requests (a public bucket).
    credentials: StaticCredentials | SdkCredentials | None


def resolve_access(url: str, settings: Settings) -> S3Access:
    """The region, endpoint and credentials for the bucket ``url`` names.

    Raises :class:`~pixelfleet.errors.ConfigError` when no credentials are found and
    anonymous access is not asked for, or when the endpoint is plain HTTP without
    ``PIXELFLEET_S3_ALLOW_HTTP``.
    """
    s3 = settings.s3
    credentials: StaticCredentials | SdkCredentials | None = None
    if not s3.skip_signature:
        if s3.access_key_id and s3.secret_access_key:
            credentials = StaticCredentials(
                s3.access_key_id, s3.secret_access_key, s3.session_token
            )
        elif settings.s3_sdk_credentials:
            credentials = SdkCredentials(url)
        else:
            raise ConfigError(
                f"no credentials for {url}: set AWS_ACCESS_KEY_ID and "
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
    return S3Access(region, endpoint, credentials)


class StaticCredentials:
    """Credentials from settings; obstore asks once and keeps them (they never expire)."""

    def __init__(self, access_key_id: str, secret_access_key: str, token: str | None):
        self._credential: S3Credential = {
            "access_key_id": access_key_id,
            "secret_access_key": secret_access_key,
            "token": token,
            "expires_at": None,
        }

    def __call__(self) -> S3Credential:
        """The keys, as obstore's credential provider asks for them."""
        return self._credential

    def keys(self) -> tuple[str, str, str | None]:
        """Access key, secret key and session token, for the lister's signatures."""
        c = self._credential
        return c["access_key_id"], c["secret_access_key"], c["token"]

    def __repr__(self) -> str:
        return "StaticCredentials(***)"


class SdkCredentials:
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
                f"no AWS keys are set for {url}, and finding a role needs botocore: {INSTALL}"
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
        """The current keys, as obstore's credential provider asks for them."""
        access_key, secret_key, token = self.keys()
        return {
            "access_key_id": access_key,
            "secret_access_key": secret_key,
            "token": token,
            "expires_at": datetime.now(UTC) + self._REASK,
        }

    def __repr__(self) -> str:
        return "SdkCredentials(***)"
