"""The code every executor runs for a task, wherever it runs.

``execute(context, task)`` takes and returns JSON text. The context (the pipeline)
is parsed once per process and cached, with its storages and ops, so thousands of
small tasks do not pay for it again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import socket
import sys
import threading
import time
import types
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pixelfleet import jsontext
from pixelfleet.errors import PERMANENT_ERRORS, PixelfleetError
from pixelfleet.models import Entry, EntryResult, OutputRecord, Task, TaskResult, one_line
from pixelfleet.ops import Op, OpContext
from pixelfleet.ops.base import Mode, group_entry
from pixelfleet.settings import get_settings
from pixelfleet.storage import Storage, open_storage

if TYPE_CHECKING:  # items (and Pillow, pystac) are imported only by pipelines with a catalog
    from pixelfleet.catalog.facts import SourceFacts
    from pixelfleet.catalog.items import ItemSettings


@dataclass
class _Prepared:
    ops: list[Op]
    ctx: OpContext
    #: Set when the pipeline has a [catalog]: each entry's STAC item is built too.
    items: ItemSettings | None = None


_cache: dict[str, _Prepared] = {}
_lock = threading.Lock()
_gdal_ready = False


def configure_gdal() -> None:
    """Set the GDAL options every worker needs, once per process.

    - never list a source's folder or look for sidecar files (each costs a request);
    - never follow URLs or read files an input points at (VRT and friends are refused
      anyway: only the drivers a step needs are allowed);
    - cap the block cache, so a file without overviews cannot fill memory.

    rasterio is not imported for this (with boto3 and click, it is a third of a second
    of every worker's start): what needs it (the options every read also sets, and the
    warning filter) is done when something imports rasterio, so a worker whose steps
    never open a raster never loads it.
    """
    global _gdal_ready
    if _gdal_ready:
        return
    settings = get_settings()
    defaults = {
        "GDAL_CACHEMAX": str(settings.gdal_cache_mb),
        "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".none",
        "GDAL_HTTP_MAX_RETRY": "0",
        "GTIFF_REPORT_COMPD_CS": "NO",
        "CPL_LOG_ERRORS": "OFF",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
    if "rasterio" in sys.modules:
        _configure_rasterio()
        _set_gdal_options()
    else:
        sys.meta_path.insert(0, _AfterImport("rasterio", _configure_rasterio))
    _gdal_ready = True


def _configure_rasterio() -> None:
    # Thumbnails need no georeferencing; photos-as-TIFF and bare scans are fine without it.
    from rasterio.errors import NotGeoreferencedWarning

    warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)
    # rasterio may be being imported by pixelfleet.imagery.rasters, which holds the
    # options: they are read before the next task (this one's reads set them anyway).
    _pending.append(_set_gdal_options)


def _set_gdal_options() -> None:
    from pixelfleet.imagery.rasters import GDAL_OPTIONS

    for key, value in GDAL_OPTIONS.items():  # the options every read sets, process-wide too
        os.environ.setdefault(key, value)


class _AfterImport(importlib.abc.MetaPathFinder):
    """Calls ``then()`` right after the module ``name`` is first imported, once.

    It finds nothing itself: it lets the other finders find the module, and hands
    back their spec with a loader of the same class that calls ``then`` once the
    module has run.
    """

    def __init__(self, name: str, then: Callable[[], None]):
        self.name = name
        self.then = then

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        """The module's own spec, its loader made to call ``then`` (for ``name`` only)."""
        if fullname != self.name:
            return None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        loader = None if spec is None else spec.loader
        if spec is None or not isinstance(loader, importlib.machinery.SourceFileLoader):
            _pending.append(self.then)  # loaded some other way: before the next task
            return spec
        then = self.then

        class _Loader(type(loader)):  # type: ignore[misc]
            def exec_module(self, module: types.ModuleType) -> None:
                super().exec_module(module)
                then()

        spec.loader = _Loader(loader.name, loader.path)
        return spec


#: Configuration left for the start of the next task.
_pending: list[Callable[[], None]] = []


def prepare(context: str) -> _Prepared:
    """Parse a pipeline context once per process and keep it."""
    prepared = _cache.get(context)
    if prepared is not None:
        return prepared
    with _lock:
        prepared = _cache.get(context)
        if prepared is None:
            from pixelfleet.pipeline import pipeline_from_dict

            configure_gdal()
            pipeline = pipeline_from_dict(json.loads(context), where="pipeline")
            settings = pipeline.run.worker_settings(get_settings())
            ctx = OpContext(
                source=open_storage(pipeline.source.url, settings),
                output=open_storage(pipeline.output.url, settings),
                settings=settings,
                scene_pattern=pipeline.source.partition.pattern,
            )
            items = None
            if pipeline.catalog is not None:
                from pixelfleet.catalog.items import ItemSettings

                items = ItemSettings(
                    collection=pipeline.catalog.collection,
                    pipeline_hash=pipeline.settings_hash,
                    public_url=pipeline.output.public_url,
                )
            prepared = _Prepared(ops=pipeline.make_ops(), ctx=ctx, items=items)
            _cache[context] = prepared
    return prepared


class TaskOutputs:
    """What is stored under a task's output keys, asked of the output storage once for
    all of them (:meth:`Storage.existing <pixelfleet.storage.base.Storage.existing>`:
    on S3, one listing per folder rather than a ``HEAD`` per key).

    A key written during the task since (two objects may share an output key) and a
    key not asked about are asked again with :meth:`Storage.head`.
    """

    def __init__(self, storage: Storage, keys: Sequence[str]):
        self._storage = storage
        self._found: dict[str, Entry] = {}
        self._known: set[str] = set()
        if keys:
            try:
                self._found = storage.existing(keys)
                self._known = set(keys)
            except Exception:  # noqa: BLE001 - each object then asks, and fails, on its own
                pass

    def head(self, key: str) -> Entry | None:
        """The stored entry of ``key`` (with its metadata), or None."""
        if key in self._known:
            return self._found.get(key)
        return self._storage.head(key)

    def written(self, keys: Sequence[str]) -> None:
        """Forget what was known of ``keys``: they were just written."""
        self._known.difference_update(keys)


def task_outputs(prepared: _Prepared, entries: Sequence[Entry]) -> TaskOutputs:
    """A :class:`TaskOutputs` over the output keys of every entry-scope op on ``entries``
    (an entry whose keys cannot be made is left to fail on its own)."""
    keys: list[str] = []
    for op in prepared.ops:
        if op.scope == "task":
            continue
        for entry in entries:
            try:
                keys.extend(op.output_keys(entry))
            except Exception:  # noqa: BLE001,S112 - process_entry reports it for this entry
                continue
    return TaskOutputs(prepared.ctx.output, keys)


def process_entry(
    prepared: _Prepared,
    entry: Entry,
    mode: Mode = "render",
    outputs_of_task: TaskOutputs | None = None,
) -> EntryResult:
    """Run every op on one entry; an exception fails this entry only.

    With a catalog, the entry's STAC item is built from the source and the outputs.
    In ``"index"`` mode (``pixelfleet index``; see :data:`~pixelfleet.ops.base.Mode`)
    no op runs: the source is checked first, as rendering checks it (same limits, same
    messages, nothing decoded), then the outputs that are current are described in the
    item and the others left out. ``outputs_of_task`` holds what the task's output keys
    were found to be (:func:`task_outputs`); without it each key is asked about.
    """
    started = time.perf_counter()
    outputs: list[OutputRecord] = []
    properties: dict[str, Any] = {}
    item = None
    state = "skipped"
    ctx = prepared.ctx
    stored = outputs_of_task or TaskOutputs(ctx.output, ())
    try:
        facts = _checked_facts(prepared, [entry], mode)
        for op in prepared.ops:
            if op.scope == "task":
                continue  # run once per task by process_group
            keys = op.output_keys(entry)
            existing = [stored.head(k) for k in keys]
            current = [o for o in existing if o is not None and op.is_current(o, entry)]
            if mode == "render" and (not keys or len(current) < len(keys)):
                mine = op.run(ctx, entry)
                stored.written([o.key for o in mine])
                state = "done"
            else:
                mine = [op.current_record(o) for o in current]
            outputs.extend(mine)
            if prepared.items is not None:
                properties.update(op.item_properties(ctx, entry, mine))
        if prepared.items is not None:
            from pixelfleet.catalog.items import build_item

            item = build_item(
                ctx.source,
                ctx.output,
                entry,
                outputs,
                properties,
                prepared.items,
                ctx.settings,
                facts[0] if facts else None,
            )
    except Exception as exc:  # noqa: BLE001 - a bad input fails its own entry, never the run
        # Listed (e.g. by an S3 Inventory report) but deleted since: not a failure.
        gone = source_gone(prepared, entry)
        return failed_result(entry.key, entry.etag, exc, outputs, started, gone)
    return EntryResult(
        key=entry.key,
        etag=entry.etag,
        state=state,  # type: ignore[arg-type]
        outputs=outputs,
        seconds=time.perf_counter() - started,
        properties=merge_properties(outputs),
        item=item,
    )


def _checked_facts(prepared: _Prepared, entries: Sequence[Entry], mode: Mode) -> list[SourceFacts]:
    """In ``"index"`` mode with a catalog, each source's facts, read with the checks
    rendering makes (an object ``run`` refuses raises the same ``InputError``).

    In ``"render"`` mode the ops check what they read, and the item reads the facts
    itself once they succeeded; without a catalog, index mode reads no source at all.
    """
    if mode != "index" or prepared.items is None:
        return []
    from pixelfleet.catalog.facts import read_facts

    ctx = prepared.ctx
    return [read_facts(ctx.source, e, ctx.settings, check=True) for e in entries]


def failed_result(
    key: str,
    etag: str,
    exc: Exception,
    outputs: list[OutputRecord],
    started: float,
    gone: bool = False,
) -> EntryResult:
    """The result of an object (or scene) whose processing raised ``exc``.

    Whether retrying can help is decided here, by the error's class tree
    (:data:`~pixelfleet.errors.PERMANENT_ERRORS`), so an op's own subclass of
    ``InputError`` is permanent too.
    """
    return EntryResult(
        key=key,
        etag=etag,
        state="skipped-missing" if gone else "failed",
        outputs=outputs,
        error_type=type(exc).__name__,
        error=one_line(str(exc)) or type(exc).__name__,
        seconds=time.perf_counter() - started,
        permanent=not gone and isinstance(exc, PERMANENT_ERRORS),
    )


def source_gone(prepared: _Prepared, entry: Entry) -> bool:
    """Tell whether a source object that failed to process no longer exists."""
    try:
        return prepared.ctx.source.head(entry.key) is None
    except Exception:  # noqa: BLE001 - cannot tell: it stays a failure
        return False


def merge_properties(outputs: list[OutputRecord]) -> dict[str, Any]:
    """The catalog properties of every output of an entry; lists under one name are joined."""
    merged: dict[str, Any] = {}
    for out in outputs:
        for name, value in out.properties.items():
            if isinstance(value, list) and isinstance(merged.get(name), list):
                merged[name] = merged[name] + value
            else:
                merged[name] = value
    return merged


def process_group(prepared: _Prepared, task: Task, mode: Mode = "render") -> EntryResult | None:
    """Run the task-scope ops once on all of a task's entries (a scene's band files).

    The result is reported under the task's group (the scene) with the combined
    etag of :func:`~pixelfleet.ops.base.group_entry`; the same rules hold as for one
    object: outputs that are all current are skipped, an exception fails this scene
    only, and in ``"index"`` mode nothing is rendered (every band file is checked and
    the current outputs described). Returns None when the pipeline has no task-scope op.
    """
    group_ops = [op for op in prepared.ops if op.scope == "task"]
    if not group_ops:
        return None
    started = time.perf_counter()
    label = task.group or (task.entries[0].key if task.entries else task.id)
    combined = group_entry(label, task.entries)
    outputs: list[OutputRecord] = []
    state = "skipped"
    ctx = prepared.ctx
    try:
        facts = _checked_facts(prepared, task.entries, mode)
        for op in group_ops:
            keys = op.output_keys_group(label, task.entries)
            if not keys:
                continue  # the step does not apply to this scene
            existing = [ctx.output.head(k) for k in keys]
            current = [o for o in existing if o is not None and op.is_current(o, combined)]
            if mode == "render" and len(current) < len(keys):
                outputs.extend(op.run_group(ctx, label, task.entries))
                state = "done"
            else:
                outputs.extend(op.current_record(o) for o in current)
        item = None
        if prepared.items is not None and task.entries:
            from pixelfleet.catalog.items import build_scene_item

            item = build_scene_item(
                ctx.source,
                ctx.output,
                label,
                task.entries,
                outputs,
                prepared.items,
                ctx.settings,
                facts[0] if facts else None,
            )
    except Exception as exc:  # noqa: BLE001 - a bad scene fails its own task, never the run
        return failed_result(label, combined.etag, exc, outputs, started)
    return EntryResult(
        key=label,
        etag=combined.etag,
        state=state,  # type: ignore[arg-type]
        outputs=outputs,
        seconds=time.perf_counter() - started,
        item=item,
    )


def worker_name() -> str:
    """``host:pid`` of this process, recorded with each result."""
    return f"{socket.gethostname()}:{os.getpid()}"


def run_task(context: str, task: Task, mode: Mode = "render") -> TaskResult:
    """Run a task in this process and return its result.

    The task is permanent (not worth another attempt) when it failed and every
    failure in it is (:func:`failed_result`).
    """
    started = time.perf_counter()
    while _pending:  # what rasterio's arrival left to do (see configure_gdal)
        try:
            todo = _pending.pop()
        except IndexError:  # another thread took it
            break
        todo()
    try:
        prepared = prepare(context)
    except PixelfleetError as exc:
        return TaskResult.crashed(task.id, exc, worker_name())
    results = []
    if any(op.scope == "entry" for op in prepared.ops):
        if mode == "render":
            for op in prepared.ops:
                op.start_task(prepared.ctx, task.entries)
        stored = task_outputs(prepared, task.entries)
        results = [process_entry(prepared, entry, mode, stored) for entry in task.entries]
    scene = process_group(prepared, task, mode)
    if scene is not None:
        results.append(scene)
    failures = [r for r in results if r.state == "failed"]
    return TaskResult(
        task_id=task.id,
        state="failed" if failures else "done",
        entries=results,
        seconds=time.perf_counter() - started,
        worker=worker_name(),
        permanent=bool(failures) and all(r.permanent for r in failures),
    )


def execute(context: str, task_json: str) -> str:
    """The worker entry point every executor calls: JSON text in, JSON text out."""
    data = json.loads(task_json)
    task = Task.from_dict(data)
    mode: Mode = "index" if data.get("mode") == "index" else "render"
    try:
        result = run_task(context, task, mode)
    except Exception as exc:  # noqa: BLE001 - report, never kill the worker
        result = TaskResult.crashed(task.id, exc, worker_name())
    return result_json(result)


def result_json(result: TaskResult) -> str:
    """``json.dumps(result.to_dict())``, without the deep copy ``dataclasses.asdict``
    makes of every field (which cost more than a small photo's thumbnail): by orjson,
    which writes dataclasses itself (a task of 44 small photos' results in 11 us instead
    of 190), else by ``json`` with :func:`_fields_of` (:mod:`pixelfleet.jsontext`)."""
    return jsontext.dumps(result, default=_fields_of)


_FIELDS: dict[type, tuple[str, ...]] = {}


def _fields_of(obj: Any) -> dict[str, Any]:
    """A dataclass instance as the dict of its fields (``json.dumps``' ``default``)."""
    cls = type(obj)
    names = _FIELDS.get(cls)
    if names is None:
        if not dataclasses.is_dataclass(obj):
            raise TypeError(f"{cls.__name__} is not JSON serializable")
        names = _FIELDS[cls] = tuple(f.name for f in dataclasses.fields(obj))
    return {name: getattr(obj, name) for name in names}
