"""Planning: grouping entries into tasks with ids that are stable across runs.

A task id hashes the task's group, its entries' keys and etags, and the pipeline's
settings hash. The same objects with the same settings always give the same id, so
a rerun can skip tasks the ledger already holds as done; a changed object (new
etag) or changed settings give a new id, and that task is done again.

``auto`` (the default partition) batches small objects so that a task is worth what
it costs to plan, send, record and skip: objects under :data:`AUTO_SMALL_BYTES` go
into batches of at most ``partition.size`` objects (and :data:`AUTO_BATCH_BYTES`),
any larger object is a task of its own. Where a batch ends is decided by its last
key alone (a hash of the key, one key in ``size / 2`` on average), not by counting
from the start of the listing: an object added to or removed from a bucket changes
the batch it falls in, not every batch after it, so a rerun after one upload redoes
one task, not all of them.

An entry the source marks as never to be read (``Entry.skip``: a symbolic link in a
local folder) joins no group: it becomes a task of its own, which the runner records
as skipped with the reason, never running it (:func:`skip_reason`).
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii

from pixelfleet.errors import ConfigError
from pixelfleet.models import Entry, Task, stable_hash
from pixelfleet.pipeline import Partition
from pixelfleet.sources.scenes import ScenePattern

#: ``auto``: objects smaller than this are batched; larger ones get a task each.
AUTO_SMALL_BYTES = 1024 * 1024
#: ``auto``: a batch also ends once its objects add up to this many bytes.
AUTO_BATCH_BYTES = 32 * 1024 * 1024

#: A string as JSON text, exactly as ``json.dumps`` (ASCII-only) writes it.
_quote = encode_basestring_ascii


@dataclass
class PlanStats:
    """What planning left out: objects no scene pattern matched."""

    unmatched: int = 0


def group_of(key: str, partition: Partition) -> str:
    """The group a key belongs to under a prefix partition: its first ``depth`` folders."""
    folders = key.split("/")[:-1]
    return "/".join(folders[: partition.depth])


def make_task(group: str, entries: list[Entry], settings_hash: str) -> Task:
    """Build a task with its stable id: ``stable_hash({"g": group, "e": [[key, etag],
    ...], "s": settings_hash}, 24)``, its JSON written out directly (the very text
    ``stable_hash`` hashes, so the same ids as ever, for a third of the time; a rerun
    of a million tasks plans a million of them)."""
    pairs = ",".join([f"[{_quote(e.key)},{_quote(e.etag)}]" for e in entries])
    blob = f'{{"e":[{pairs}],"g":{_quote(group)},"s":{_quote(settings_hash)}}}'
    ident = hashlib.sha256(blob.encode()).hexdigest()[:24]
    return Task(id=ident, group=group, entries=tuple(entries))


def skip_reason(task: Task) -> str | None:
    """Why a task must not run (its one entry is marked ``Entry.skip``), else None."""
    entries = task.entries
    return entries[0].skip if len(entries) == 1 else None


def plan(
    entries: Iterable[Entry],
    partition: Partition,
    settings_hash: str,
    stats: PlanStats | None = None,
) -> Iterator[Task]:
    """Group entries into tasks (:func:`group_entries`); an entry marked ``skip`` is a task of its
    own (the one ``by = "object"`` would make), handed out before the next group."""
    if partition.by == "object":  # every entry is a task of its own already
        yield from plan_objects(entries, settings_hash)
        return
    aside: list[Task] = []

    def readable() -> Iterator[Entry]:
        for entry in entries:
            if entry.skip is None:
                yield entry
            else:
                aside.append(make_task(entry.key, [entry], settings_hash))

    for task in group_entries(readable(), partition, settings_hash, stats):
        if aside:
            yield from aside
            aside.clear()
        yield task
    yield from aside


def group_entries(
    entries: Iterable[Entry],
    partition: Partition,
    settings_hash: str,
    stats: PlanStats | None = None,
) -> Iterator[Task]:
    """Group entries (in key order, as storages list them) into tasks, lazily.

    - ``auto``: small objects in batches of up to ``size``, large ones alone
      (:func:`plan_auto`);
    - ``object``: one task per object;
    - ``prefix``: one task per key prefix of ``depth`` folders (NAIP: state/year);
    - ``count``: one task per ``size`` consecutive objects;
    - ``scene``: one task per scene, its band files found by ``pattern`` (objects
      that match no pattern are left out and counted in ``stats``).
    """
    if partition.by == "scene":
        yield from plan_scenes(entries, partition, settings_hash, stats)
        return
    if partition.by == "auto":
        yield from plan_auto(entries, partition.size, settings_hash)
        return
    if partition.by == "object":
        yield from plan_objects(entries, settings_hash)
        return
    batch: list[Entry] = []
    current: str | None = None
    for entry in entries:
        if partition.by == "prefix":
            group = group_of(entry.key, partition)
            if batch and group != current:
                yield make_task(current or "", batch, settings_hash)
                batch = []
            current = group
            batch.append(entry)
        elif partition.by == "count":
            batch.append(entry)
            if len(batch) >= partition.size:
                yield make_task(f"{batch[0].key}+{len(batch) - 1}", batch, settings_hash)
                batch = []
        else:  # pragma: no cover - the pipeline model only allows the three above
            raise ConfigError(f"unknown partition {partition.by!r}")
    if batch:
        if partition.by == "prefix":
            yield make_task(current or "", batch, settings_hash)
        else:
            yield make_task(f"{batch[0].key}+{len(batch) - 1}", batch, settings_hash)


def plan_objects(entries: Iterable[Entry], settings_hash: str) -> Iterator[Task]:
    """One task per object: :func:`make_task` ``(entry.key, [entry])``, in one loop (a
    rerun of a million objects plans a million tasks)."""
    tail = f',"s":{_quote(settings_hash)}}}'
    sha256 = hashlib.sha256
    for entry in entries:
        key = _quote(entry.key)
        blob = f'{{"e":[[{key},{_quote(entry.etag)}]],"g":{key}{tail}'
        yield Task(id=sha256(blob.encode()).hexdigest()[:24], group=entry.key, entries=(entry,))


def plan_auto(entries: Iterable[Entry], most: int, settings_hash: str) -> Iterator[Task]:
    """Small objects in batches of up to ``most``, each larger object in a task of its own.

    A batch ends after a key whose CRC-32 is a multiple of ``most // 2`` (so batches
    average a little under half of ``most``, and where one ends depends on that key
    only), or when it holds ``most`` objects or :data:`AUTO_BATCH_BYTES`. A batch of
    one object is the task ``by = "object"`` would make (same group, same id); a
    bigger one is named like a count partition's, ``first-key+N``.
    """
    spacing = max(1, most // 2)
    batch: list[Entry] = []
    total = 0
    for entry in entries:
        if entry.size >= AUTO_SMALL_BYTES:
            yield make_task(entry.key, [entry], settings_hash)
            continue
        batch.append(entry)
        total += entry.size
        if (
            len(batch) >= most
            or total >= AUTO_BATCH_BYTES
            or zlib.crc32(entry.key.encode("utf-8", "surrogatepass")) % spacing == 0
        ):
            yield batch_task(batch, settings_hash)
            batch, total = [], 0
    if batch:
        yield batch_task(batch, settings_hash)


def batch_task(batch: list[Entry], settings_hash: str) -> Task:
    """A task of several small objects (a batch of ``auto``, or events waiting together):
    one object's is the task ``by = "object"`` would make, more are named ``first+N``."""
    if len(batch) == 1:
        return make_task(batch[0].key, batch, settings_hash)
    return make_task(f"{batch[0].key}+{len(batch) - 1}", batch, settings_hash)


def plan_scenes(
    entries: Iterable[Entry],
    partition: Partition,
    settings_hash: str,
    stats: PlanStats | None = None,
) -> Iterator[Task]:
    """One task per scene, in scene order within each folder.

    Keys sharing a folder prefix come together in key order, so a folder's scenes are
    complete, and are handed out, as soon as a key outside that folder arrives: only
    one folder's band files are held at a time.
    """
    pattern = ScenePattern(partition.pattern or [])
    open_groups: dict[str, tuple[str, list[Entry]]] = {}  # group -> (folder, entries)

    def finished(key: str) -> Iterator[Task]:
        done = [
            g for g, (folder, _) in open_groups.items() if folder and not key.startswith(folder)
        ]
        for group in sorted(done):
            yield make_task(group, open_groups.pop(group)[1], settings_hash)

    for entry in entries:
        match = pattern.match(entry.key)
        if match is None:
            if stats is not None:
                stats.unmatched += 1
            continue
        yield from finished(entry.key)
        folder = entry.key.rsplit("/", 1)[0] + "/" if "/" in entry.key else ""
        open_groups.setdefault(match.group, (folder, []))[1].append(entry)
    for group in sorted(open_groups):
        yield make_task(group, open_groups[group][1], settings_hash)


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``i/N`` (0 <= i < N) as given to ``--shard``."""
    try:
        index_text, count_text = text.split("/")
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise ConfigError(f"--shard {text!r} must look like i/N, e.g. 0/4") from None
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"--shard {text!r}: need 0 <= i < N, e.g. 0/4 ... 3/4")
    return index, count


def in_shard(task: Task, index: int, count: int) -> bool:
    """Tell whether a task belongs to shard ``index`` of ``count`` (by its group's hash)."""
    return int(stable_hash(task.group, 8), 16) % count == index
