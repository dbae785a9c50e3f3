"""The memory cap: what one worker process may hold while it decodes images.

Two layers keep a worker under ``Settings.memory_cap`` (``PIXELFLEET_MEMORY_CAP``,
default 1 GiB), whatever its inputs:

- **A budget of decoded bytes**, checked before anything is decoded. Each read says
  what it must hold at once (for a raster: its largest block, all bands when they are
  pixel-interleaved, twice over since GDAL keeps the interleaved block and each band's
  copy, plus the swath buffers; for a photo: width x height x bands x sample size) and
  takes that much from one process-wide :class:`DecodeBudget`. A read larger than the
  whole budget fails its own object with :class:`~pixelfleet.errors.ImageTooLargeError`
  naming the size, the cap and the setting; a read that fits waits while other threads
  of the same worker hold the rest. The budget is the cap less what the process needs
  besides (:data:`PROCESS_ALLOWANCE` and GDAL's block cache).
- **A hard limit as backstop** (:func:`limit_process_memory`): ``RLIMIT_DATA``, which
  counts the heap and private writable mappings. An allocation past it fails (GDAL
  reports "out of memory", numpy raises ``MemoryError``) and fails the object being
  read, never the process. ``RLIMIT_AS`` is not used: it counts address space GDAL,
  glibc's per-thread arenas and thread stacks reserve without touching, so a worker
  would fail far below its real use.

The hard limit is set only in processes that exist to run tasks, each marked by
:func:`guard_this_process`: the local executor's worker processes, each worker of a
Dask cluster (a worker plugin, removed with :func:`release_this_process` when the
executor closes) and ``pixelfleet worker`` (a fleet's or AWS Batch's). It is set at the
process's first decode, from the settings the task runs under (so ``[run] memory_cap``
holds), and set again when a later task runs under another cap (a Dask cluster serves
one run after another). The limit is the cap, but never less than what the process
already holds plus :data:`MIN_BUDGET`: a cap set below a worker's own size would fail
the worker's own allocations, not just the decode. At the default cap the floor does not
come into play: measured as ``VmData`` (what the limit counts), a Dask worker holds
102 MiB idle and 141-205 MiB after thumbnails with 4-16 threads, a local worker
144-164 MiB with 2-4 threads.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from pixelfleet.errors import ImageTooLargeError, MemoryCapError
from pixelfleet.humanize import human_bytes
from pixelfleet.settings import Settings

if TYPE_CHECKING:
    from PIL import Image

#: What a worker holds besides decoded images: the interpreter, numpy, GDAL and the
#: other libraries, and the encoded thumbnail (a worker with GDAL loaded measured
#: 120-190 MB resident).
PROCESS_ALLOWANCE = 256 * 1024**2
#: The budget is never smaller than this, however low the cap is set.
MIN_BUDGET = 64 * 1024**2
#: The setting named in error messages.
SETTING = "PIXELFLEET_MEMORY_CAP (or [run] memory_cap)"


def budget_bytes(settings: Settings) -> int:
    """Decoded bytes one worker process may hold at once under ``settings``."""
    cache = settings.gdal_cache_mb * 1024**2
    return max(MIN_BUDGET, settings.memory_cap - PROCESS_ALLOWANCE - cache)


class DecodeBudget:
    """A process-wide count of decoded bytes held by reads in progress.

    :meth:`hold` takes bytes for the length of a ``with`` block; a request larger than
    the whole budget is refused at once, one that fits waits for other holders.
    """

    def __init__(self, total: int):
        self.total = total
        self.held = 0
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def hold(self, nbytes: int, label: str, what: str, settings: Settings) -> Iterator[None]:
        """Hold ``nbytes`` while the block runs; ``what`` says in words what they are."""
        if nbytes > self.total:
            raise ImageTooLargeError(over_budget_message(label, nbytes, what, settings))
        with self._cond:
            while self.held + nbytes > self.total:
                self._cond.wait()
            self.held += nbytes
        try:
            yield
        finally:
            with self._cond:
                self.held -= nbytes
                self._cond.notify_all()


_budgets: dict[int, DecodeBudget] = {}
_budgets_lock = threading.Lock()


def decode_budget(settings: Settings) -> DecodeBudget:
    """The budget shared by every read of this process under ``settings``' cap (in a
    worker process, the first under a cap sets the hard limit)."""
    if _guard.holders and _guard.cap != settings.memory_cap:
        with _budgets_lock:
            if _guard.cap != settings.memory_cap:
                limit_process_memory(settings)
    total = budget_bytes(settings)
    with _budgets_lock:
        budget = _budgets.get(total)
        if budget is None:
            budget = _budgets[total] = DecodeBudget(total)
        return budget


def hold_decoded(
    nbytes: int, label: str, what: str, settings: Settings
) -> contextlib.AbstractContextManager[None]:
    """Hold ``nbytes`` of this process's decode budget (see :class:`DecodeBudget`)."""
    return decode_budget(settings).hold(nbytes, label, what, settings)


def over_budget_message(label: str, nbytes: int, what: str, settings: Settings) -> str:
    """The one-line refusal of a read that needs more memory than the cap allows."""
    return (
        f"{label}: decoding it needs {human_bytes(nbytes)} at once ({what}), over the "
        f"{human_bytes(budget_bytes(settings))} a worker may decode under its memory cap of "
        f"{human_bytes(settings.memory_cap)}; if the image is genuine, re-tile it "
        f"(gdal_translate -co TILED=YES) or add overviews (gdaladdo), or raise {SETTING}"
    )


def out_of_memory(label: str, settings: Settings, detail: str) -> MemoryCapError:
    """The error for a read stopped by the process's hard memory limit."""
    cap = _guard.limit or settings.memory_cap
    return MemoryCapError(
        f"{label}: ran out of memory while decoding ({detail}) under the worker's memory "
        f"cap of {human_bytes(cap)}; raise {SETTING} to accept it"
    )


class _Guard:
    holders = 0  # who made this process a dedicated worker (see guard_this_process)
    cap: int | None = None  # the memory cap the hard limit was last set for
    limit: int | None = None  # the RLIMIT_DATA set (None: none)
    previous: int | None = None  # the soft limit this process had before the first


_guard = _Guard()


def guard_this_process() -> None:
    """Mark this process as a dedicated worker: its first decode sets its hard memory
    limit (:func:`limit_process_memory`) from the settings it runs under.

    Executors call it in the processes that run their tasks, never in the process of a
    runner or a server, whose other work the limit would fail.
    """
    with _budgets_lock:
        _guard.holders += 1


def release_this_process() -> None:
    """Undo one :func:`guard_this_process`; once none is left, give the process back the
    soft limit it had before (a Dask worker outlives the run that guarded it)."""
    with _budgets_lock:
        _guard.holders = max(0, _guard.holders - 1)
        if _guard.holders or _guard.previous is None:
            return
        import resource

        _soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
        resource.setrlimit(resource.RLIMIT_DATA, (_guard.previous, hard))
        _guard.cap = _guard.limit = _guard.previous = None


def hard_limit(cap: int) -> int:
    """The ``RLIMIT_DATA`` for a memory cap: the cap, but at least this process's data
    now plus :data:`MIN_BUDGET`, so the process's own allocations never fail."""
    return max(cap, data_bytes() + MIN_BUDGET)


def data_bytes() -> int:
    """This process's data, as ``RLIMIT_DATA`` counts it (``VmData``; 0 when unknown)."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmData:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def limit_process_memory(settings: Settings) -> int | None:
    """Set this process's ``RLIMIT_DATA`` for the memory cap (:func:`hard_limit`);
    returns the limit set.

    Only for worker processes: an allocation past the limit fails with an error instead
    of growing the process. None where the platform has no such limit (not Linux), or
    when the hard limit already set is lower.
    """
    _guard.cap = settings.memory_cap
    if not sys.platform.startswith("linux"):
        return None
    import resource

    limit = hard_limit(settings.memory_cap)
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY and hard < limit:
        return None
    if _guard.previous is None:
        _guard.previous = soft
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    _guard.limit = limit
    return limit


#: Bytes per pixel of each Pillow mode; a photo is held decoded, then converted and resized.
_MODE_BYTES = {"1": 1, "L": 1, "P": 1, "LA": 2, "PA": 2, "La": 2, "RGB": 3, "YCbCr": 3}


def check_photo_memory(label: str, image: Image.Image, settings: Settings) -> None:
    """Refuse a photo whose decoded pixels (width x height x bands x sample size, twice:
    decoded and converted) are over the worker's decode budget; call after ``draft``."""
    decode_budget(settings)  # sets the process's hard limit in a worker
    width, height = image.size
    per_pixel = _MODE_BYTES.get(image.mode, 4 if len(image.mode) <= 4 else 8)
    if image.mode.startswith(("I;16", "BGR;16")):
        per_pixel = 2
    nbytes = 2 * width * height * per_pixel
    if nbytes > budget_bytes(settings):
        what = f"{width}x{height} pixels in mode {image.mode}, decoded and converted"
        raise ImageTooLargeError(over_budget_message(label, nbytes, what, settings))
