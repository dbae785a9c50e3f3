"""Telling a failed read from a corrupt file when GDAL fails.

GDAL reads a remote object through an opener (:func:`pixelfleet.imagery.reading.raster_opener`),
which keeps the storage errors and short reads it met, by the path GDAL was given;
:func:`unreadable_raster` looks them up before it calls a file corrupt.
"""

from __future__ import annotations

import weakref

from pixelfleet.errors import CorruptInputError
from pixelfleet.models import one_line

__all__ = ["read_failure", "unreadable_raster"]


def unreadable_raster(label: str, path: str, exc: Exception) -> Exception:
    """The error for a GeoTIFF GDAL fails to open or read, worded the same wherever it
    is read; ``path`` (what GDAL was given) is left out of GDAL's message.

    GDAL cannot tell a failed read from bad bytes: a dropped connection or a short
    body under its header read makes it say "not recognized as being in a supported
    file format". So the file is called corrupt only when every read served to GDAL
    under ``path`` returned all the bytes asked for; otherwise the storage failure is
    returned (a :class:`~pixelfleet.errors.StorageError`, retried). Out-of-memory
    errors become :class:`~pixelfleet.errors.MemoryCapError`.
    """
    from rasterio._err import CPLE_BaseError  # GDAL errors; rasterio only exports them here

    failed = read_failure(path)
    if failed is not None:
        return failed
    # "Read failed. See previous exception" carries GDAL's own message as its cause.
    cause = exc.__cause__ if isinstance(exc.__cause__, CPLE_BaseError) else exc
    detail = one_line(str(cause).replace(path, "").strip(": ")) or type(exc).__name__
    lowered = detail.lower()
    if (
        type(cause).__name__ == "CPLE_OutOfMemoryError"
        or "cannot allocate" in lowered
        or "out of memory" in lowered
    ):
        from pixelfleet.imagery.memory import out_of_memory
        from pixelfleet.settings import get_settings

        return out_of_memory(label, get_settings(), detail)
    return CorruptInputError(
        f"{label}: cannot be read as a GeoTIFF ({detail}); it is truncated or corrupt: "
        "re-create or re-upload it"
    )


class _Failures(list[Exception]):
    """Errors met while serving one opener's file to GDAL (a list that can be weakly held)."""


#: The read failures of every live opener, by the path it serves: looked up when GDAL
#: fails, so a failed read is never taken for a corrupt file. Entries go with their opener.
_FAILURES: weakref.WeakValueDictionary[str, _Failures] = weakref.WeakValueDictionary()


def read_failure(path: str) -> Exception | None:
    """The first storage error met while serving ``path`` to GDAL, or None."""
    failures = _FAILURES.get(path)
    return failures[0] if failures else None
