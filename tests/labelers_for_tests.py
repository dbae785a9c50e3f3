"""Labellers for tests, named by reference (``labelers_for_tests:SlowLabeler``) so that
spawned worker processes load them without registration.

- :class:`SlowLabeler` sleeps in each call and appends ``pid start end`` (monotonic
  clock, shared by every process on the machine) to ``options.log``.
- :class:`ThrottlingLabeler` refuses its first ``options.refusals`` calls with
  :class:`ThrottledError` (counted in a file, across processes), then labels.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Sequence
from typing import Any

from pixelfleet.errors import InputError, ThrottledError
from pixelfleet.labelers import Label, Labeler, LabelerConfig


class SlowConfig(LabelerConfig):
    log: str
    seconds: float = 0.1
    version: str = "1"


class SlowLabeler(Labeler):
    """Sleeps ``seconds`` per call and logs when each call ran, in which process."""

    name = "test-slow"
    version = "1"
    Config = SlowConfig

    @classmethod
    def version_for(cls, config: LabelerConfig) -> str:
        assert isinstance(config, SlowConfig)
        return config.version

    def label(self, batch: Sequence[Any]) -> list[list[Label]]:
        assert isinstance(self.config, SlowConfig)
        start = time.monotonic()
        time.sleep(self.config.seconds)
        end = time.monotonic()
        with open(self.config.log, "a") as f:
            f.write(f"{os.getpid()} {start:.6f} {end:.6f} {len(batch)}\n")
        for image in batch:
            if "bad" in image.key:
                raise InputError(f"{image.key}: refused by the test labeller")
        return [[Label("slow", 50.0), Label("sleepy", 10.0)] for _ in batch]


class ThrottlingConfig(LabelerConfig):
    counter: str
    refusals: int = 2


class ThrottlingLabeler(Labeler):
    """Throttled for the first ``refusals`` calls (across processes), then fine."""

    name = "test-throttling"
    version = "1"
    Config = ThrottlingConfig

    def label(self, batch: Sequence[Any]) -> list[list[Label]]:
        assert isinstance(self.config, ThrottlingConfig)
        with open(self.config.counter, "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.seek(0)
            calls = len(f.read())
            f.write("x")
        if calls < self.config.refusals:
            raise ThrottledError("slow down")
        return [[Label("finally", 90.0)] for _ in batch]
