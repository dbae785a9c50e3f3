"""Exceptions raised by pixelfleet.

Every error derives from :class:`PixelfleetError`. Errors caused by what a user
gave us also inherit the builtin a caller would naturally catch (``ValueError``,
``FileNotFoundError``, ``LookupError``), so code that does not know pixelfleet
still handles them sensibly.
"""

from __future__ import annotations


class PixelfleetError(Exception):
    """Root of every pixelfleet error."""


class ConfigError(PixelfleetError, ValueError):
    """A pipeline file, setting or command-line value is invalid."""


class UnknownNameError(PixelfleetError, LookupError):
    """A name (op, executor, storage scheme...) is not registered."""


class MissingExtraError(PixelfleetError, ImportError):
    """An optional dependency is not installed; the message says which extra to install."""


class StorageError(PixelfleetError, OSError):
    """Object storage failed in a way that may succeed on retry."""


class ObjectNotFoundError(PixelfleetError, FileNotFoundError):
    """An object that was listed or asked for does not exist."""


class UnsafeKeyError(PixelfleetError, ValueError):
    """An object key would read or write outside its storage prefix."""


class InputError(PixelfleetError, ValueError):
    """A source object cannot be processed (corrupt, unsupported, too large).

    Input errors are permanent: the task fails without further attempts.
    """


class UnsupportedFormatError(InputError):
    """The source object is not in a format the step accepts."""


class ImageTooLargeError(InputError):
    """The image's declared size is over the configured limit (decompression bomb guard)."""


class MemoryCapError(ImageTooLargeError):
    """Decoding the source object ran into the worker's memory cap (``memory_cap``)."""


class CorruptInputError(InputError):
    """The source object is truncated or corrupt: its bytes were read whole and are bad.

    A read that failed on the way (a dropped connection, a short body) is a
    :class:`StorageError` instead, and retried.
    """


class WorkerLostError(PixelfleetError, RuntimeError):
    """The process running a task died before it reported a result."""


class TaskTimeoutError(PixelfleetError, TimeoutError):
    """A task ran longer than the pipeline's ``run.timeout``."""


class LedgerError(PixelfleetError, LookupError):
    """A run or task asked for is not in the ledger."""


class LedgerUnavailableError(PixelfleetError, ConnectionError):
    """The ledger's database could not be reached, even after retrying with backoff."""


class ThrottledError(PixelfleetError, RuntimeError):
    """A labelling service refused a call because of its rate limits; it may succeed later."""


class InventoryError(PixelfleetError, ValueError):
    """An S3 Inventory report is malformed, incomplete or fails its checksum."""


class CatalogError(PixelfleetError, OSError):
    """The catalog's database failed or could not be reached."""


class BadQueryError(PixelfleetError, ValueError):
    """A search query is invalid (bad bbox, datetime, limit, filter...); the message says why."""


class ItemNotFoundError(PixelfleetError, LookupError):
    """A STAC item or collection asked for is not in the catalog."""


class AuthError(PixelfleetError, PermissionError):
    """A request that changes data came without the right API token."""


#: The errors retrying cannot help: bad input or bad configuration. A task failing with
#: one of these (or any subclass, such as a plug-in op's own ``InputError``) is not tried
#: again. The worker decides with ``isinstance`` where the exception is caught and
#: carries the answer in its result (``EntryResult.permanent``, ``TaskResult.permanent``).
PERMANENT_ERRORS: tuple[type[Exception], ...] = (
    InputError,
    UnsafeKeyError,
    ConfigError,
    UnknownNameError,
    MissingExtraError,
    ObjectNotFoundError,
)
