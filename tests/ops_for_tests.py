"""An op for executor tests: no images, and behaviour chosen by the source object's text.

Pipelines name it by reference, ``ops_for_tests:ProbeOp``, so spawned worker processes
(which see the test process's ``sys.path``) load it without any registration.

Source text: words obeyed in order, then the output is written; other words are ignored.

- ``SLEEP <seconds>``: sleep;
- ``STALL <seconds>``: sleep, but only the first time this key runs (``<key>.stalled``);
- ``STARTED``: leave the marker ``<key>.started`` in ``marks_dir``;
- ``AWAIT <key>``: wait (10 s at most) until another job has left its ``STARTED`` marker;
- ``KILL``: SIGKILL the worker process; with ``marks_dir`` set, only the first time
  this key runs (the marker ``<key>.killed`` remembers it).

So ``x`` is written at once, and ``SLEEP 0.5 KILL`` dies half a second in.

The output ``{stem}.out`` is JSON saying which process ran the entry and when, so
tests can check what ran beside what.
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

from pixelfleet.models import Entry, OutputRecord
from pixelfleet.ops import Op, OpConfig, OpContext, render_key

PROBE_OP = "ops_for_tests:ProbeOp"


class ProbeConfig(OpConfig):
    """Settings of :class:`ProbeOp`."""

    marks_dir: str | None = None
    #: When set, every output written appends ``<key> <pid>`` to ``<log_dir>/writes.log``.
    log_dir: str | None = None


class ProbeOp(Op):
    """Sleep, crash or do nothing, as the source object asks; record pid and times."""

    name = "test-probe"
    Config = ProbeConfig

    def output_keys(self, entry: Entry) -> list[str]:
        """One output per source object: ``{stem}.out``."""
        return [render_key("{stem}.out", entry.key)]

    def run(self, ctx: OpContext, entry: Entry) -> list[OutputRecord]:
        """Obey the words in the source object, then record what ran where and when."""
        started = time.time()
        words = ctx.source.read(entry.key).decode().split()
        for i, word in enumerate(words):
            if word == "SLEEP" or word == "STALL" and self._mark(entry.key, "stalled"):
                time.sleep(float(words[i + 1]))
            elif word == "STARTED":
                self._mark(entry.key, "started")
            elif word == "AWAIT":
                deadline = time.monotonic() + 10
                while not os.path.exists(self._marker(words[i + 1], "started")):
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{words[i + 1]} never started")
                    time.sleep(0.01)
            elif word == "KILL" and self._mark(entry.key, "killed"):
                os.kill(os.getpid(), signal.SIGKILL)
        record = {"pid": os.getpid(), "start": started, "end": time.time()}
        key = self.output_keys(entry)[0]
        written = ctx.write(self, entry, key, json.dumps(record).encode())
        log_dir = self.config.log_dir  # type: ignore[attr-defined]
        if log_dir:
            line = f"{key} {os.getpid()}\n".encode()
            fd = os.open(
                os.path.join(log_dir, "writes.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT
            )
            try:
                os.write(fd, line)  # one small O_APPEND write: lines never interleave
            finally:
                os.close(fd)
        return [written]

    def _marker(self, key: str, what: str) -> str:
        folder = self.config.marks_dir  # type: ignore[attr-defined]
        if folder is None:
            raise ValueError("this probe needs marks_dir in the step's settings")
        return os.path.join(folder, f"{key.replace('/', '__')}.{what}")

    def _mark(self, key: str, what: str) -> bool:
        """Leave a marker; True if it was not there yet (or there is nowhere to leave it)."""
        if self.config.marks_dir is None:  # type: ignore[attr-defined]
            return True
        try:
            os.close(os.open(self._marker(key, what), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return False
        return True


class LabelConfig(OpConfig):
    """Settings of :class:`LabelOp`."""

    key: str = "{stem}.labels.json"


class LabelOp(Op):
    """A stand-in for the labels step: writes labels as JSON and puts them in the item."""

    name = "test-labels"
    Config = LabelConfig
    runs = 0

    def output_keys(self, entry: Entry) -> list[str]:
        return [render_key(self.config.key, entry.key)]  # type: ignore[attr-defined]

    def run(self, ctx: OpContext, entry: Entry) -> list[OutputRecord]:
        type(self).runs += 1
        labels = [{"name": "glacier" if "rocket" in entry.key else "flower", "confidence": 90.0}]
        data = json.dumps(labels).encode()
        (key,) = self.output_keys(entry)
        return [
            ctx.write(self, entry, key, data, "application/json", roles=["metadata"],
                      title="Labels", asset="labels")
        ]  # fmt: skip

    def item_properties(self, ctx: OpContext, entry: Entry, outputs: Any) -> dict[str, Any]:
        """Read the labels back from the output, so current outputs give them too."""
        for record in outputs:
            return {"labels": json.loads(ctx.output.read(record.key))}
        return {}


# -- Errors a plug-in op raises (appended for the worker's retry tests) ----------------------
from pixelfleet.errors import InputError  # noqa: E402

FAILING_OP = "ops_for_tests:FailingOp"


class PluginInputError(InputError):
    """A plug-in op's own kind of bad input: permanent, as every ``InputError`` is."""


class FailingConfig(OpConfig):
    """Settings of :class:`FailingOp` (none)."""


class FailingOp(Op):
    """Fail as the source text says: ``plugin-input`` raises :class:`PluginInputError`,
    ``transient`` a plain ``OSError``; anything else writes ``{stem}.out``."""

    name = "test-failing"
    Config = FailingConfig
    runs: dict[str, int] = {}

    def output_keys(self, entry: Entry) -> list[str]:
        return [render_key("{stem}.out", entry.key)]

    def run(self, ctx: OpContext, entry: Entry) -> list[OutputRecord]:
        type(self).runs[entry.key] = type(self).runs.get(entry.key, 0) + 1
        text = ctx.source.read(entry.key).decode().strip()
        if text == "plugin-input":
            raise PluginInputError(f"{entry.key}: not the kind of input this step takes")
        if text == "transient":
            raise OSError(f"{entry.key}: connection reset (try again)")
        return [ctx.write(self, entry, self.output_keys(entry)[0], b"ok")]


# -- The reference op: the smallest complete step (appended for the Op contract) -------------
# (Imports here rather than at the top because this block was appended to a shared file.)
import hashlib  # noqa: E402
from typing import Literal  # noqa: E402

from pixelfleet.errors import UnsupportedFormatError  # noqa: E402

DIGEST_OP = "ops_for_tests:DigestOp"


class DigestConfig(OpConfig):
    """Settings of :class:`DigestOp`."""

    op: str = DIGEST_OP
    algorithm: Literal["sha256", "md5"] = "sha256"
    key: str = "{stem}.digest.json"


class DigestOp(Op):
    """One JSON output per source object holding the object's digest, which also becomes
    a property of the object's STAC item (read back from the output, so an output found
    current gives it too). An empty object is bad input."""

    name = "test-digest"
    Config = DigestConfig

    @property
    def options(self) -> DigestConfig:
        """The step's settings, typed."""
        assert isinstance(self.config, DigestConfig)
        return self.config

    def output_keys(self, entry: Entry) -> list[str]:
        """The one digest key for ``entry``."""
        return [render_key(self.options.key, entry.key)]

    def run(self, ctx: OpContext, entry: Entry) -> list[OutputRecord]:
        """Digest the object and write the result; an empty object raises an InputError."""
        data = ctx.source.read(entry.key)
        if not data:
            raise UnsupportedFormatError(f"{ctx.source.describe(entry.key)}: empty, no digest")
        digest = hashlib.new(self.options.algorithm, data).hexdigest()
        doc = json.dumps({"algorithm": self.options.algorithm, "digest": digest}).encode()
        (key,) = self.output_keys(entry)
        return [
            ctx.write(self, entry, key, doc, "application/json", roles=["metadata"],
                      title="Digest", asset="digest")
        ]  # fmt: skip

    def item_properties(self, ctx: OpContext, entry: Entry, outputs: Any) -> dict[str, Any]:
        """``test:<algorithm>``: the digest, read back from the output."""
        for record in outputs:
            doc = json.loads(ctx.output.read(record.key))
            return {f"test:{doc['algorithm']}": doc["digest"]}
        return {}
