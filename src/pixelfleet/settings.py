"""Process-wide settings. This module is the only reader of environment variables.

pixelfleet's own variables use the ``PIXELFLEET_`` prefix. S3 access also honours
the standard AWS variables (``AWS_ENDPOINT_URL``, ``AWS_REGION``...), so an
existing AWS setup works unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from pixelfleet.errors import ConfigError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"environment variable {name}={raw!r} is not a boolean; use 1/0, true/false")


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r} is not a whole number") from None
    if value < minimum:
        raise ConfigError(f"environment variable {name}={raw!r} must be at least {minimum}")
    return value


_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_bytes(text: str, name: str) -> int:
    """A byte count written as ``1073741824``, ``1024M``, ``1G`` or ``1.5GB`` (powers of 1024)."""
    raw = text.strip().lower().removesuffix("ib").removesuffix("b")
    unit = raw[-1:] if raw[-1:] in _UNITS else ""
    try:
        value = float(raw[: len(raw) - len(unit)]) * _UNITS[unit]
    except ValueError:
        raise ConfigError(
            f"{name}={text!r} is not a size; write bytes or a size like 512M or 2G"
        ) from None
    if value < 1:
        raise ConfigError(f"{name}={text!r} must be a positive size, like 512M or 2G")
    return int(value)


def _float(env: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r} is not a number") from None
    if not value >= minimum:
        raise ConfigError(f"environment variable {name}={raw!r} must be at least {minimum}")
    return value


@dataclass(frozen=True)
class S3Settings:
    """How to reach S3 or an S3-compatible service."""

    endpoint: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    requester_pays: bool = False
    allow_http: bool = False
    skip_signature: bool = False
    #: Seconds a request may wait for a connection or for the next bytes of an answer
    #: (``PIXELFLEET_S3_TIMEOUT``); an endpoint that accepts connections and never
    #: answers fails each try after this long.
    timeout: float = 30.0


@dataclass(frozen=True)
class Settings:
    """Settings that hold for a whole process; see ``docs/DESIGN.md`` for each variable."""

    ledger_url: str = "sqlite:///pixelfleet.db"
    s3: S3Settings = field(default_factory=S3Settings)
    max_image_pixels: int = 300_000_000
    max_object_bytes: int = 2 * 1024**3
    gdal_cache_mb: int = 64
    #: Bytes one worker process may use while decoding images (``PIXELFLEET_MEMORY_CAP``,
    #: e.g. ``2G``); see :mod:`pixelfleet.imagery.memory`.
    memory_cap: int = 1024**3
    debug: bool = False
    #: With no AWS keys set, look for credentials the way the AWS SDK does (roles,
    #: profiles, SSO). Off only where nothing may try the instance metadata service.
    s3_sdk_credentials: bool = True
    extra: Mapping[str, str] = field(default_factory=dict)
    #: Folder of the files that share labellers' rate limits between processes.
    limits_dir: str = field(default_factory=lambda: default_limits_dir())
    #: A PostgreSQL URL (a fleet's ledger) that shares labellers' rate limits between
    #: every process on every machine; set for a fleet's workers by their driver.
    limits_url: str | None = None
    #: Threads torch uses per worker process (the local executor runs a process per core).
    torch_threads: int = 1
    #: Region and endpoint of the AWS Rekognition API (the ``rekognition`` labeller).
    rekognition_region: str | None = None
    rekognition_endpoint: str | None = None
    #: Endpoint of the SQS API for ``watch --queue sqs://...`` (``PIXELFLEET_SQS_ENDPOINT``,
    #: ``AWS_ENDPOINT_URL_SQS`` or ``AWS_ENDPOINT_URL``); None: AWS's, from the region.
    sqs_endpoint: str | None = None
    #: The catalog ``search``/``serve``/``index`` use when nothing else names one.
    catalog_url: str = "sqlite:///pixelfleet.db"
    #: Bearer token that unlocks the server's write endpoints (None: writes refused).
    api_token: str | None = field(default=None, repr=False)
    #: Tile URL template (``https://.../{z}/{x}/{y}.png``) for the pages' map background;
    #: None draws only the vendored world outline, so the pages need no internet.
    basemap_url: str | None = None
    #: Pipeline overrides from the environment, as ``(variable, "field.path=value")``.
    pipeline_overrides: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read settings from ``environ`` (default: ``os.environ``)."""
        env = os.environ if environ is None else environ
        endpoint = (
            env.get("PIXELFLEET_S3_ENDPOINT")
            or env.get("AWS_ENDPOINT_URL_S3")
            or env.get("AWS_ENDPOINT_URL")
        )
        s3 = S3Settings(
            endpoint=endpoint or None,
            region=env.get("PIXELFLEET_S3_REGION")
            or env.get("AWS_REGION")
            or env.get("AWS_DEFAULT_REGION")
            or None,
            access_key_id=env.get("AWS_ACCESS_KEY_ID") or None,
            secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
            session_token=env.get("AWS_SESSION_TOKEN") or None,
            requester_pays=_flag(env, "PIXELFLEET_S3_REQUESTER_PAYS", False),
            allow_http=_flag(
                env, "PIXELFLEET_S3_ALLOW_HTTP", bool(endpoint and endpoint.startswith("http://"))
            ),
            skip_signature=_flag(env, "PIXELFLEET_S3_ANONYMOUS", False),
            timeout=_float(env, "PIXELFLEET_S3_TIMEOUT", 30.0, 1.0),
        )
        return cls(
            ledger_url=env.get("PIXELFLEET_LEDGER") or "sqlite:///pixelfleet.db",
            s3=s3,
            max_image_pixels=_int(env, "PIXELFLEET_MAX_IMAGE_PIXELS", 300_000_000, 1),
            max_object_bytes=_int(env, "PIXELFLEET_MAX_OBJECT_BYTES", 2 * 1024**3, 1),
            gdal_cache_mb=_int(env, "PIXELFLEET_GDAL_CACHE_MB", 64, 8),
            memory_cap=parse_bytes(
                env.get("PIXELFLEET_MEMORY_CAP") or "1G", "PIXELFLEET_MEMORY_CAP"
            ),
            debug=_flag(env, "PIXELFLEET_DEBUG", False),
            s3_sdk_credentials=_flag(env, "PIXELFLEET_S3_SDK_CREDENTIALS", True),
            extra={k: v for k, v in env.items() if k.startswith("PIXELFLEET_")},
            limits_dir=env.get("PIXELFLEET_LIMITS_DIR") or default_limits_dir(),
            limits_url=env.get("PIXELFLEET_LIMITS_URL") or None,
            torch_threads=_int(env, "PIXELFLEET_TORCH_THREADS", 1, 1),
            rekognition_region=env.get("PIXELFLEET_REKOGNITION_REGION")
            or env.get("AWS_REGION")
            or env.get("AWS_DEFAULT_REGION")
            or None,
            rekognition_endpoint=env.get("PIXELFLEET_REKOGNITION_ENDPOINT") or None,
            sqs_endpoint=env.get("PIXELFLEET_SQS_ENDPOINT")
            or env.get("AWS_ENDPOINT_URL_SQS")
            or env.get("AWS_ENDPOINT_URL")
            or None,
            catalog_url=env.get("PIXELFLEET_CATALOG") or "sqlite:///pixelfleet.db",
            api_token=env.get("PIXELFLEET_API_TOKEN") or None,
            basemap_url=env.get("PIXELFLEET_BASEMAP_URL") or None,
            pipeline_overrides=pipeline_overrides(env),
        )


def default_limits_dir() -> str:
    """``$TMPDIR/pixelfleet-limits-<uid>``: one per user, shared by every run on the machine."""
    import tempfile

    uid = os.getuid() if hasattr(os, "getuid") else 0
    return os.path.join(tempfile.gettempdir(), f"pixelfleet-limits-{uid}")


def pipeline_overrides(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """Pipeline field overrides from the environment, like ``--set``, in the order applied.

    - ``PIXELFLEET_SET="steps.0.recipe=swir2-nir-green;source.url=s3://b/x"``: one or
      more ``field.path=value`` items separated by ``;`` or new lines;
    - ``PIXELFLEET_SET_STEPS__0__RECIPE=swir2-nir-green``: one field per variable, the
      path after the prefix with ``__`` between parts (lower-cased).

    ``PIXELFLEET_SET`` comes first, then the single-field variables by name; the
    command line's ``--set`` is applied after all of them.
    """
    out: list[tuple[str, str]] = []
    combined = env.get("PIXELFLEET_SET", "")
    for item in combined.replace("\n", ";").split(";"):
        if item.strip():
            out.append(("PIXELFLEET_SET", item.strip()))
    for name in sorted(env):
        if name.startswith("PIXELFLEET_SET_"):
            path = name.removeprefix("PIXELFLEET_SET_")
            if not path or any(not part for part in path.split("__")):
                raise ConfigError(
                    f"environment variable {name} names no field; use PIXELFLEET_SET_ then the "
                    "field path with __ between parts, e.g. PIXELFLEET_SET_STEPS__0__RECIPE"
                )
            dotted = ".".join(part.lower() for part in path.split("__"))
            out.append((name, f"{dotted}={env[name]}"))
    return tuple(out)


_current: Settings | None = None


def get_settings() -> Settings:
    """Return the settings of this process, read from the environment on first use."""
    global _current
    if _current is None:
        _current = Settings.from_env()
    return _current
