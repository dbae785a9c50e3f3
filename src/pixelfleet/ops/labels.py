"""The ``labels`` step: what each image shows, from a labeller, as a JSON sidecar.

For ``x.jpg`` it writes ``x.labels.json`` (the ``key`` template) beside the thumbnail::

    {"source": {"key": "photos/x.jpg", "etag": "...", "size": 1234},
     "labeler": {"name": "imagenet", "version": "..."},
     "labels": [{"name": "tabby cat", "confidence": 71.3, "parents": ["cat", ...]}, ...]}

and reports the labels as the object's catalog properties (``pixelfleet:labels``).

- **Skip if labelled.** The step's settings hash (stored with the sidecar) includes
  the labeller's name and *version*, so an image whose sidecar was made from its
  current etag by the same labeller version is not sent again; a new version relabels.
- **Batches.** Within a task, images that need labels are labelled ``batch_size`` at a
  time (the labeller's default: 16 for ``imagenet``); use ``partition = { by =
  "count", size = 64 }`` so tasks hold several images.
- **Limits.** ``max_concurrency`` and ``max_calls_per_second`` hold for every worker
  process on the machine (or of the Dask cluster): see :mod:`pixelfleet.labelers.limits`.
  A throttled call pauses every caller and is tried again, up to ``retries`` times.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from typing import Any, Literal, cast

from pydantic import Field, model_validator

from pixelfleet.errors import InputError, ThrottledError, UnknownNameError
from pixelfleet.labelers import ImageRef, Label, Labeler, labelers
from pixelfleet.labelers.limits import Limiter, Limits, open_limiter
from pixelfleet.models import Entry, OutputRecord
from pixelfleet.ops.base import Op, OpConfig, OpContext, render_key

#: The catalog property that carries an object's labels.
LABELS_PROPERTY = "pixelfleet:labels"


class LabelsConfig(OpConfig):
    """Settings of the ``labels`` step.

    - ``labeler``: ``imagenet``, ``spectral``, ``rekognition``, ``static``, an entry-point
      name, or ``package.module:Class``.
    - ``options``: the labeller's own settings (see each labeller).
    - ``key``: output key template of the JSON sidecar.
    - ``max_labels``: keep at most this many labels per image, most confident first.
    - ``min_confidence``: drop labels below this confidence (0-100).
    - ``max_concurrency``, ``max_calls_per_second``: limits on calls to the labeller,
      shared by every worker process (none by default).
    - ``limit_group``: name under which limits are shared (default: the labeller's name),
      so that several steps or runs calling one API account share one cap.
    - ``batch_size``: images per call (default: the labeller's).
    - ``retries``: how often a throttled call is tried again before the object fails.
    - ``labeler_version``: filled in on load from the labeller; part of the settings hash.
    """

    op: Literal["labels"] = "labels"
    labeler: str = "imagenet"
    options: dict[str, Any] = {}
    key: str = "{stem}.labels.json"
    max_labels: int = Field(10, ge=1, le=1000)
    min_confidence: float = Field(0.0, ge=0, le=100)
    max_concurrency: int | None = Field(None, ge=1, le=100_000)
    max_calls_per_second: float | None = Field(None, gt=0, le=1_000_000)
    limit_group: str | None = None
    batch_size: int | None = Field(None, ge=1, le=4096)
    retries: int = Field(8, ge=0, le=100)
    labeler_version: str = ""

    @model_validator(mode="before")
    @classmethod
    def _resolve_labeler(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        name = data.get("labeler", "imagenet")
        if not isinstance(name, str):
            raise ValueError(f"labeler must be a name such as 'imagenet' (got {name!r})")
        try:
            labeler_cls = labelers.get(name)
        except UnknownNameError as exc:
            raise ValueError(str(exc)) from None
        labeler_cls.check_available()
        options = data.get("options") or {}
        if not isinstance(options, dict):
            raise ValueError(
                f"options must be a table of the labeller's settings (got {options!r})"
            )
        try:
            parsed = labeler_cls.Config.model_validate(options)
        except ValueError as exc:
            raise ValueError(f"options of labeler {name!r}: {_one_error(exc)}") from None
        data["options"] = parsed.model_dump(mode="json")
        data["labeler_version"] = labeler_cls.version_for(parsed)
        return data

    @model_validator(mode="after")
    def _check_key(self) -> LabelsConfig:
        render_key(self.key, "a/b.tif")  # a bad template fails on load, not per object
        return self


def _one_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    parts = []
    for err in errors():
        where = ".".join(str(p) for p in err["loc"]) or "(options)"
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown option {where!r}")
        else:
            parts.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


def labels_document(
    entry: Entry, labeler: str, version: str, labels: Sequence[Label]
) -> dict[str, Any]:
    """The JSON sidecar's content."""
    return {
        "source": {"key": entry.key, "etag": entry.etag, "size": entry.size},
        "labeler": {"name": labeler, "version": version},
        "labels": [label.to_dict() for label in labels],
    }


def read_labels(data: bytes) -> list[Label]:
    """The labels of a sidecar written by the ``labels`` step."""
    return [Label.from_dict(item) for item in json.loads(data)["labels"]]


class LabelsOp(Op):
    """Label each image with a labeller and write the labels as a JSON sidecar."""

    name = "labels"
    Config = LabelsConfig

    def __init__(self, config: OpConfig):
        super().__init__(config)
        options = self.options
        labeler_cls = labelers.get(options.labeler)
        self.labeler: Labeler = labeler_cls(labeler_cls.Config.model_validate(options.options))
        self.batch_size = options.batch_size or labeler_cls.batch_size
        self.limits = Limits(
            group=options.limit_group or options.labeler,
            max_concurrency=options.max_concurrency,
            max_calls_per_second=options.max_calls_per_second,
        )
        self._limiter: Limiter | None = None
        self._local = threading.local()

    @property
    def options(self) -> LabelsConfig:
        """The step's settings, typed."""
        return cast(LabelsConfig, self.config)

    @property
    def limiter(self) -> Limiter:
        """This process's limiter for the step's limits (opened on first use)."""
        if self._limiter is None:
            self._limiter = open_limiter(self.limits)
        return self._limiter

    def output_keys(self, entry: Entry) -> list[str]:
        """The sidecar key for ``entry``."""
        return [render_key(self.options.key, entry.key)]

    def start_task(self, ctx: OpContext, entries: Sequence[Entry]) -> None:
        """Remember the task's entries, so that :meth:`run` can label them in batches."""
        self._local.entries = list(entries)
        self._local.position = {(e.key, e.etag): i for i, e in enumerate(entries)}
        self._local.done = {}

    def run(self, ctx: OpContext, entry: Entry) -> list[OutputRecord]:
        """Label ``entry`` (with the next images of its task that need it, as one batch)
        and write its sidecar."""
        done: dict[tuple[str, str], Any] = getattr(self._local, "done", {})
        outcome = done.pop((entry.key, entry.etag), None)
        if outcome is None:
            batch = [entry, *self._lookahead(ctx, entry)]
            found = self.label_entries(ctx, batch)
            outcome = found.pop((entry.key, entry.etag))
            done.update(found)
            self._local.done = done
        if isinstance(outcome, BaseException):
            raise outcome
        labels = self.select(outcome)
        (key,) = self.output_keys(entry)
        doc = labels_document(entry, self.options.labeler, self.options.labeler_version, labels)
        data = json.dumps(doc, indent=1, ensure_ascii=False).encode()
        record = ctx.write(self, entry, key, data, "application/json")
        record.properties = {LABELS_PROPERTY: [label.to_dict() for label in labels]}
        return [record]

    def item_properties(
        self, ctx: OpContext, entry: Entry, outputs: Sequence[OutputRecord]
    ) -> dict[str, Any]:
        """The labels as the item's ``labels`` property (read back from the sidecar when it
        was already current), with the labeller that made them."""
        for out in outputs:
            labels = out.properties.get(LABELS_PROPERTY)
            if labels is None:
                labels = [label.to_dict() for label in read_labels(ctx.output.read(out.key))]
            return {
                "labels": labels,
                "pixelfleet:labeler": f"{self.labeler.name}/{self.labeler.version}",
            }
        return {}

    def select(self, labels: Sequence[Label]) -> list[Label]:
        """The labels to keep: confident enough, most confident first, at most ``max_labels``."""
        kept = [lab for lab in labels if lab.confidence >= self.options.min_confidence]
        kept.sort(key=lambda lab: -lab.confidence)
        return kept[: self.options.max_labels]

    def label_entries(
        self, ctx: OpContext, entries: Sequence[Entry]
    ) -> dict[tuple[str, str], list[Label] | BaseException]:
        """Label entries: each prepared alone, then labelled ``batch_size`` per call.

        Returns labels or the exception each entry failed with. A call that fails for
        bad input is split, so that the image at fault fails alone.
        """
        out: dict[tuple[str, str], list[Label] | BaseException] = {}
        ready: list[tuple[Entry, Any]] = []
        for entry in entries:
            try:
                ready.append(
                    (entry, self.labeler.prepare(ImageRef(ctx.source, entry, ctx.settings)))
                )
            except Exception as exc:  # noqa: BLE001 - this image fails alone
                out[(entry.key, entry.etag)] = exc
        for start in range(0, len(ready), self.batch_size):
            self._label_chunk(ready[start : start + self.batch_size], out)
        return out

    def _label_chunk(
        self,
        chunk: list[tuple[Entry, Any]],
        out: dict[tuple[str, str], list[Label] | BaseException],
    ) -> None:
        try:
            results = self.call([item for _, item in chunk])
        except InputError as exc:
            if len(chunk) == 1:
                out[(chunk[0][0].key, chunk[0][0].etag)] = exc
                return
            for one in chunk:
                self._label_chunk([one], out)
            return
        except Exception as exc:  # noqa: BLE001 - a failed call fails its images
            for entry, _ in chunk:
                out[(entry.key, entry.etag)] = exc
            return
        if len(results) != len(chunk):
            error = RuntimeError(
                f"labeler {self.options.labeler!r} returned {len(results)} results for "
                f"{len(chunk)} images"
            )
            for entry, _ in chunk:
                out[(entry.key, entry.etag)] = error
            return
        for (entry, _), labels in zip(chunk, results, strict=True):
            out[(entry.key, entry.etag)] = list(labels)

    def call(self, batch: Sequence[Any]) -> list[list[Label]]:
        """One labeller call within the limits; throttled calls wait and are tried again."""
        limiter = self.limiter
        for attempt in range(self.options.retries + 1):
            with limiter.call():
                try:
                    results = self.labeler.label(batch)
                except ThrottledError as exc:
                    if attempt >= self.options.retries:
                        raise ThrottledError(
                            f"{exc} (still throttled after {attempt + 1} attempts; lower "
                            "max_calls_per_second or max_concurrency)"
                        ) from exc
                    pause = limiter.throttled()
                else:
                    limiter.succeeded()
                    return results
            # Outside the slot: the pause is shared, the next acquire waits for it.
            time.sleep(min(pause, 0.01))
        raise AssertionError("unreachable")  # the last attempt returns or raises

    def _lookahead(self, ctx: OpContext, entry: Entry) -> list[Entry]:
        """The entries after ``entry`` in its task that need labels, to fill a batch."""
        entries: list[Entry] = getattr(self._local, "entries", [])
        position = getattr(self._local, "position", {}).get((entry.key, entry.etag))
        if self.batch_size <= 1 or position is None:
            return []
        found: list[Entry] = []
        for other in entries[position + 1 :]:
            if len(found) >= self.batch_size - 1:
                break
            try:
                keys = self.output_keys(other)
                if all(self.is_current(ctx.output.head(k), other) for k in keys):
                    continue
            except Exception:  # noqa: BLE001 - its own turn will report it
                continue
            found.append(other)
        return found
