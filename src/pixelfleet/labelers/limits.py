"""Rate limits shared by every process that calls a labeller: ``max_concurrency`` calls at
once and ``max_calls_per_second``, plus a shared pause when the service throttles.

A :class:`Limiter` is acquired around each call. Three implementations:

- :class:`ThreadLimiter`: within one process (threads). The reference behaviour.
- :class:`FileLimiter`: every process on this machine. Concurrency slots are ``flock``
  locks on ``max_concurrency`` files (the kernel drops a dead process's lock, so a
  killed worker never leaks a slot); the call rate and the throttling pause live in a
  small JSON state file changed under another lock. Files sit in
  ``PIXELFLEET_LIMITS_DIR/<group>`` and are shared by every run on the machine that
  uses the same limit group (by default the labeller's name): two runs against the
  same API account share the cap too.
- :class:`DaskLimiter`: every worker of a Dask cluster, with a ``distributed.Semaphore``
  for concurrency and a ``distributed.Lock`` + ``Variable`` for the rate state.
- :class:`PostgresLimiter`: every process on every machine of a fleet, through the
  fleet's PostgreSQL ledger (``PIXELFLEET_LIMITS_URL``, which a fleet's workers get set to
  their ledger's URL): advisory locks for concurrency, a table for the rate state.

The call rate is enforced exactly, not on average: a call may start only when fewer
than ``N`` calls started in the last second (``N = floor(max_calls_per_second)``), so
no one-second window ever holds more than the limit. A rate below 1 means one call
every ``1 / rate`` seconds.

:func:`open_limiter` picks the implementation: PostgreSQL when ``PIXELFLEET_LIMITS_URL``
is set, else Dask inside a Dask worker, else files; the result is cached per process.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import json
import math
import os
import random
import re
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

from pixelfleet import metrics
from pixelfleet.errors import ConfigError
from pixelfleet.settings import Settings, get_settings

#: The longest shared pause after repeated throttling, in seconds.
MAX_PAUSE = 30.0
#: The first pause after a throttled call, doubled for each one after it.
FIRST_PAUSE = 0.5
#: Added to the rate window, so that a call's start as the service sees it (a little after
#: the limiter let it go) still keeps within the limit.
MARGIN = 0.01


@dataclass(frozen=True)
class Limits:
    """How a group of calls is limited; None means no limit."""

    group: str
    max_concurrency: int | None = None
    max_calls_per_second: float | None = None

    @property
    def window(self) -> tuple[int, float]:
        """``(calls, seconds)``: at most that many call starts in any window that long."""
        rate = self.max_calls_per_second
        if rate is None:
            return 0, 0.0
        if rate >= 1:
            return int(math.floor(rate)), 1.0 + MARGIN
        return 1, 1.0 / rate + MARGIN


def pause_for(failures: int) -> float:
    """The shared pause after ``failures`` throttled calls in a row (exponential, capped)."""
    return min(MAX_PAUSE, FIRST_PAUSE * 2.0 ** max(0, failures - 1))


class Limiter(ABC):
    """Admits calls within limits shared by everything using the same limiter."""

    def __init__(self, limits: Limits):
        self.limits = limits

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Count throttled calls (pixelfleet_labeller_throttles_total) in every limiter.
        method = cls.__dict__.get("throttled")
        if method is not None:

            @functools.wraps(method)
            def throttled(self: Limiter) -> float:
                metrics.labeller_throttle(self.limits.group)
                return cast(float, method(self))

            cls.throttled = throttled  # type: ignore[method-assign]

    @abstractmethod
    def acquire(self) -> Any:
        """Wait until a call may start; return a token for :meth:`release`."""

    @abstractmethod
    def release(self, token: Any) -> None:
        """The call that got ``token`` ended."""

    @abstractmethod
    def throttled(self) -> float:
        """The service throttled a call: pause every caller; return the pause in seconds."""

    def succeeded(self) -> None:  # noqa: B027 - limiters without a failure count ignore it
        """A call went through: the throttling pause goes back to its first length."""

    def close(self) -> None:  # noqa: B027 - most limiters hold nothing to release
        """Release connections (a process's cached limiters live as long as it does)."""

    @contextlib.contextmanager
    def call(self) -> Iterator[None]:
        """``with limiter.call(): ...`` around one call to the service."""
        token = self.acquire()
        metrics.labeller_call(self.limits.group)
        try:
            yield
        finally:
            self.release(token)


class ThreadLimiter(Limiter):
    """Limits shared by the threads of one process: the reference implementation."""

    def __init__(self, limits: Limits):
        super().__init__(limits)
        n = limits.max_concurrency
        self._slots = threading.BoundedSemaphore(n) if n else None
        self._lock = threading.Lock()
        self._starts: deque[float] = deque()
        self._pause_until = 0.0
        self._failures = 0

    def acquire(self) -> Any:
        """Take a slot, then wait for the rate and any throttling pause."""
        if self._slots is not None:
            self._slots.acquire()
        calls, seconds = self.limits.window
        while True:
            with self._lock:
                now = time.monotonic()
                wait = self._pause_until - now
                if calls:
                    while self._starts and self._starts[0] <= now - seconds:
                        self._starts.popleft()
                    if len(self._starts) >= calls:
                        wait = max(wait, self._starts[0] + seconds - now)
                if wait <= 0:
                    if calls:
                        self._starts.append(now)
                    return True
            time.sleep(wait)

    def release(self, token: Any) -> None:
        """Give the slot back."""
        if self._slots is not None:
            self._slots.release()

    def throttled(self) -> float:
        """Pause every thread, longer for each throttled call in a row."""
        with self._lock:
            self._failures += 1
            pause = pause_for(self._failures) * random.uniform(0.8, 1.0)
            self._pause_until = max(self._pause_until, time.monotonic() + pause)
        return pause

    def succeeded(self) -> None:
        """Reset the pause length."""
        with self._lock:
            self._failures = 0


class FileLimiter(Limiter):
    """Limits shared by every process on this machine, through files in ``folder``."""

    #: Seconds between two looks for a free slot (grows to ``_POLL_MAX``).
    _POLL_MIN = 0.002
    _POLL_MAX = 0.02

    def __init__(self, limits: Limits, folder: str):
        super().__init__(limits)
        self.folder = folder
        try:
            os.makedirs(folder, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the rate-limit folder {folder!r} ({exc}); "
                "set PIXELFLEET_LIMITS_DIR to a writable folder"
            ) from exc
        self._state_path = os.path.join(folder, "rate.json")
        self._state_lock = os.path.join(folder, "rate.lock")
        self._throttled_here = False

    def acquire(self) -> Any:
        """Take a slot file's lock, then wait for the rate and any throttling pause."""
        fd = self._take_slot() if self.limits.max_concurrency else None
        try:
            self._wait_turn()
        except BaseException:
            if fd is not None:
                os.close(fd)
            raise
        return fd

    def release(self, token: Any) -> None:
        """Unlock the slot (closing the file releases its lock)."""
        if token is not None:
            os.close(token)

    def throttled(self) -> float:
        """Pause every process, longer for each throttled call in a row."""
        self._throttled_here = True
        with self._locked_state() as state:
            state["failures"] = state.get("failures", 0) + 1
            pause = pause_for(state["failures"]) * random.uniform(0.8, 1.0)
            state["pause_until"] = max(state.get("pause_until", 0.0), time.monotonic() + pause)
        return pause

    def succeeded(self) -> None:
        """Reset the pause length (only touches the file after this process saw throttling)."""
        if not self._throttled_here:
            return
        self._throttled_here = False
        with self._locked_state() as state:
            state["failures"] = 0

    # -- internals ----------------------------------------------------------------------

    def _take_slot(self) -> int:
        n = self.limits.max_concurrency or 1
        poll = self._POLL_MIN
        while True:
            for i in random.sample(range(n), n):
                fd = os.open(os.path.join(self.folder, f"slot-{i}.lock"), os.O_RDWR | os.O_CREAT)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as exc:
                    os.close(fd)
                    if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        raise
                    continue
                return fd
            time.sleep(poll * random.uniform(0.5, 1.0))
            poll = min(self._POLL_MAX, poll * 2)

    def _wait_turn(self) -> None:
        calls, seconds = self.limits.window
        while True:
            with self._locked_state() as state:
                now = time.monotonic()
                starts = [t for t in state.get("starts", []) if now - seconds < t <= now + 1]
                pause_until = state.get("pause_until", 0.0)
                if pause_until > now + MAX_PAUSE * 2:
                    pause_until = 0.0  # left by a boot before this one (monotonic clock reset)
                wait = pause_until - now
                if calls and len(starts) >= calls:
                    wait = max(wait, min(starts) + seconds - now)
                if wait <= 0:
                    if calls:
                        starts.append(now)
                        state["starts"] = sorted(starts)[-calls:]
                    return
            time.sleep(min(wait, 1.0))

    @contextlib.contextmanager
    def _locked_state(self) -> Iterator[dict[str, Any]]:
        """The shared state, read and written back under an exclusive lock."""
        lock = os.open(self._state_lock, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                with open(self._state_path, encoding="utf-8") as f:
                    state = json.load(f)
                if not isinstance(state, dict):
                    state = {}
            except (FileNotFoundError, ValueError):
                state = {}
            before = dict(state)
            yield state
            if state != before:
                tmp = f"{self._state_path}.{os.getpid()}.{threading.get_ident()}"
                with open(tmp, "w", encoding="utf-8") as f:
                    json.dump(state, f)
                os.replace(tmp, self._state_path)
        finally:
            os.close(lock)


class DaskLimiter(Limiter):
    """Limits shared by every worker of a Dask cluster (wall-clock time across machines)."""

    def __init__(self, limits: Limits):
        super().__init__(limits)
        import distributed

        # distributed has no type hints: its coordination primitives are used untyped.
        cluster = cast(Any, distributed)
        name = f"pixelfleet-limit-{limits.group}"
        n = limits.max_concurrency
        self._semaphore: Any = cluster.Semaphore(max_leases=n, name=name) if n else None
        self._lock: Any = cluster.Lock(f"{name}-rate")
        self._state: Any = cluster.Variable(f"{name}-state")

    def acquire(self) -> Any:
        """Take a lease of the cluster-wide semaphore, then wait for the rate and pauses."""
        if self._semaphore is not None:
            self._semaphore.acquire()
        try:
            calls, seconds = self.limits.window
            while True:
                with self._locked_state() as state:
                    now = time.time()
                    starts = [t for t in state.get("starts", []) if t > now - seconds]
                    wait = state.get("pause_until", 0.0) - now
                    if calls and len(starts) >= calls:
                        wait = max(wait, min(starts) + seconds - now)
                    if wait <= 0:
                        if calls:
                            state["starts"] = sorted([*starts, now])[-calls:]
                        return True
                time.sleep(min(wait, 1.0))
        except BaseException:
            if self._semaphore is not None:
                self._semaphore.release()
            raise

    def release(self, token: Any) -> None:
        """Give the lease back."""
        if self._semaphore is not None:
            self._semaphore.release()

    def throttled(self) -> float:
        """Pause every worker of the cluster."""
        with self._locked_state() as state:
            state["failures"] = state.get("failures", 0) + 1
            pause = pause_for(state["failures"]) * random.uniform(0.8, 1.0)
            state["pause_until"] = max(state.get("pause_until", 0.0), time.time() + pause)
        return pause

    def succeeded(self) -> None:
        """Reset the pause length when it was raised."""
        with self._locked_state() as state:
            if state.get("failures"):
                state["failures"] = 0

    @contextlib.contextmanager
    def _locked_state(self) -> Iterator[dict[str, Any]]:
        with self._lock:
            try:
                state = json.loads(self._state.get(timeout=0.5))
            except Exception:  # noqa: BLE001 - not set yet (a timeout): start empty
                state = {}
            before = dict(state)
            yield state
            if state != before:
                self._state.set(json.dumps(state))


class PostgresLimiter(Limiter):
    """Limits shared by every process on every machine that reaches one PostgreSQL
    database (a fleet's ledger: ``PIXELFLEET_LIMITS_URL``), by the database's clock.

    - Concurrency: ``max_concurrency`` session-level advisory locks per group. A call
      holds one for its duration; a process that dies loses its session and with it its
      locks, so a killed worker never leaks a slot. Threads of one process share the
      session, so they also keep a set of the slots they hold.
    - Rate and throttling pauses: the rows of ``limit_starts`` and ``limit_state``,
      changed in short transactions under a transaction-level advisory lock.
    """

    _POLL_MIN = 0.005
    _POLL_MAX = 0.05

    def __init__(self, limits: Limits, url: str):
        super().__init__(limits)
        from pixelfleet.ledger.postgres import PostgresLedger

        self._db = PostgresLedger(url)  # the ledger's schema, migrations and reconnects
        self._group = _file_group(limits)
        self._held: set[int] = set()
        self._lock = threading.Lock()
        self._throttled_here = False

    def acquire(self) -> Any:
        """Take a free slot, then wait for the rate and any throttling pause."""
        slot = self._take_slot() if self.limits.max_concurrency else None
        try:
            self._wait_turn()
        except BaseException:
            if slot is not None:
                self.release(slot)
            raise
        return slot

    def release(self, token: Any) -> None:
        """Unlock the slot."""
        if token is None:
            return
        self._db.execute(
            lambda c: c.execute("SELECT pg_advisory_unlock(hashtext(%s), %s)", (self._group, token))
        )
        with self._lock:
            self._held.discard(token)

    def throttled(self) -> float:
        """Pause every caller of the group, on every machine."""
        self._throttled_here = True
        jitter = random.uniform(0.8, 1.0)

        def pause(conn: Any) -> float:
            with conn.transaction():
                conn.execute(
                    "INSERT INTO limit_state (grp) VALUES (%s) ON CONFLICT DO NOTHING",
                    (self._group,),
                )
                row = conn.execute(
                    "UPDATE limit_state SET failures = failures + 1 WHERE grp = %s"
                    " RETURNING failures",
                    (self._group,),
                ).fetchone()
                seconds = pause_for(int(row[0])) * jitter
                conn.execute(
                    "UPDATE limit_state SET pause_until = greatest(pause_until,"
                    " extract(epoch from clock_timestamp()) + %s) WHERE grp = %s",
                    (seconds, self._group),
                )
                return seconds

        return float(self._db.execute(pause))

    def succeeded(self) -> None:
        """Reset the pause length (only after this process saw throttling)."""
        if not self._throttled_here:
            return
        self._throttled_here = False
        self._db.execute(
            lambda c: c.execute(
                "UPDATE limit_state SET failures = 0 WHERE grp = %s", (self._group,)
            )
        )

    def close(self) -> None:
        """Close the connection (its session's slots go with it)."""
        self._db.close()

    def _take_slot(self) -> int:
        n = self.limits.max_concurrency or 1
        poll = self._POLL_MIN
        while True:
            for slot in random.sample(range(n), n):
                with self._lock:
                    if slot in self._held:
                        continue
                    self._held.add(slot)
                if self._db.execute(functools.partial(self._try_lock, slot)):
                    return slot
                with self._lock:
                    self._held.discard(slot)
            time.sleep(poll * random.uniform(0.5, 1.0))
            poll = min(self._POLL_MAX, poll * 2)

    def _try_lock(self, slot: int, conn: Any) -> bool:
        row = conn.execute(
            "SELECT pg_try_advisory_lock(hashtext(%s), %s)", (self._group, slot)
        ).fetchone()
        return bool(row[0])

    def _wait_turn(self) -> None:
        calls, seconds = self.limits.window

        def turn(conn: Any) -> float:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ("rate:" + self._group,))
                now = conn.execute("SELECT extract(epoch from clock_timestamp())").fetchone()[0]
                row = conn.execute(
                    "SELECT pause_until FROM limit_state WHERE grp = %s", (self._group,)
                ).fetchone()
                wait = (float(row[0]) - float(now)) if row else 0.0
                if calls:
                    conn.execute(
                        "DELETE FROM limit_starts WHERE grp = %s AND started <= %s",
                        (self._group, float(now) - seconds),
                    )
                    starts = conn.execute(
                        "SELECT count(*), min(started) FROM limit_starts WHERE grp = %s",
                        (self._group,),
                    ).fetchone()
                    if starts[0] >= calls:
                        wait = max(wait, float(starts[1]) + seconds - float(now))
                if wait <= 0 and calls:
                    conn.execute(
                        "INSERT INTO limit_starts (grp, started) VALUES (%s, %s)",
                        (self._group, float(now)),
                    )
                return wait

        while True:
            wait = float(self._db.execute(turn))
            if wait <= 0:
                return
            time.sleep(min(wait, 1.0))


_cache: dict[tuple[Limits, str], Limiter] = {}
_cache_lock = threading.Lock()


def in_dask_worker() -> bool:
    """Tell whether this code runs inside a Dask worker."""
    try:
        from distributed import get_worker
    except ImportError:
        return False
    try:
        get_worker()
    except ValueError:
        return False
    return True


def group_folder(settings: Settings, group: str) -> str:
    """The folder of a limit group's files (the name made safe for a file name)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", group)[:100] or "default"
    return os.path.join(settings.limits_dir, safe)


def open_limiter(limits: Limits, settings: Settings | None = None) -> Limiter:
    """The limiter for ``limits`` in this process: Dask-wide inside a Dask worker, else
    machine-wide through files; unlimited when no limit is set."""
    if limits.max_concurrency is None and limits.max_calls_per_second is None:
        # Still share throttling pauses within the process.
        kind = "threads"
    else:
        kind = "dask" if in_dask_worker() else "files"
    settings = settings or get_settings()
    if kind != "threads" and settings.limits_url:
        kind = "postgres"  # a fleet: every machine shares the limits through its database
    where = settings.limits_url if kind == "postgres" else settings.limits_dir
    cache_key = (limits, kind + (where or ""))
    with _cache_lock:
        limiter = _cache.get(cache_key)
        if limiter is None:
            if kind == "threads":
                limiter = ThreadLimiter(limits)
            elif kind == "dask":
                limiter = DaskLimiter(limits)
            elif kind == "postgres":
                limiter = PostgresLimiter(limits, str(settings.limits_url))
            else:
                limiter = FileLimiter(limits, group_folder(settings, _file_group(limits)))
            _cache[cache_key] = limiter
    return limiter


def _file_group(limits: Limits) -> str:
    """Different limits under one group name must not share slot files."""
    return f"{limits.group}-c{limits.max_concurrency or 0}-r{limits.max_calls_per_second or 0}"
