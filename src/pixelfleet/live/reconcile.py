"""Reconcile: the bucket against the catalog, for what events missed.

Events can be missed: a watcher that was down longer than the queue keeps messages,
a notification configuration that was off, a message lost. :func:`compare` lists the
bucket (or reads its S3 Inventory report, when the pipeline names one) through the
pipeline's include/exclude globs, reads the catalog's items of the pipeline's
collection, and finds

- **new** objects (no item),
- **changed** objects (the item records another etag), and
- **deleted** objects (an item whose object is gone).

:meth:`ReconcileReport.events` turns the three into bucket events, which the watcher
handles as it handles a queue's (``pixelfleet reconcile`` runs one until they are
done; ``pixelfleet watch --reconcile-every 6h`` injects them into a running one). A
scene is compared as a whole: its item's etag combines its band files'.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pixelfleet.catalog import Catalog
from pixelfleet.catalog.query import parse_query
from pixelfleet.errors import ConfigError
from pixelfleet.events import BucketEvent
from pixelfleet.models import Entry
from pixelfleet.ops.base import group_entry, scene_id
from pixelfleet.pipeline import Pipeline
from pixelfleet.settings import get_settings
from pixelfleet.sources.scenes import ScenePattern

#: Examples kept of each kind, for ``--dry-run``.
_EXAMPLES = 5


@dataclass
class ReconcileReport:
    """What differs between the bucket and the catalog, as unit names (keys or scenes)
    with the keys whose events bring them back in line."""

    new: list[tuple[str, list[str]]] = field(default_factory=list)
    changed: list[tuple[str, list[str]]] = field(default_factory=list)
    deleted: list[tuple[str, list[str]]] = field(default_factory=list)
    objects: int = 0
    items: int = 0

    def line(self) -> str:
        """``1,204 objects, 1,190 items: 20 new, 3 changed, 6 deleted``."""
        return (
            f"{self.objects:,} objects, {self.items:,} items: {len(self.new):,} new, "
            f"{len(self.changed):,} changed, {len(self.deleted):,} deleted"
        )

    def examples(self) -> dict[str, list[str]]:
        """A few unit names of each kind."""
        return {
            "new": [name for name, _ in self.new[:_EXAMPLES]],
            "changed": [name for name, _ in self.changed[:_EXAMPLES]],
            "deleted": [name for name, _ in self.deleted[:_EXAMPLES]],
        }

    def events(self, bucket: str, prefix: str = "") -> list[BucketEvent]:
        """Bucket events that make a watcher bring every difference in line."""
        out: list[BucketEvent] = []
        for kind, units in (("created", self.new + self.changed), ("deleted", self.deleted)):
            for _, keys in units:
                for key in keys:
                    out.append(
                        BucketEvent(kind, bucket, prefix + key, origin="reconcile")  # type: ignore[arg-type]
                    )
        return out

    @property
    def in_line(self) -> bool:
        """Nothing differs."""
        return not (self.new or self.changed or self.deleted)


def catalog_url_of(pipeline: Pipeline) -> str:
    """The catalog reconcile compares with: the pipeline's ``[catalog]`` (its url, else
    the settings' catalog); a pipeline without one is refused, saying what to add."""
    if pipeline.catalog is None:
        raise ConfigError(
            "reconcile compares the bucket with the catalog, and this pipeline has no "
            "[catalog] section; add one (url and collection)"
        )
    return pipeline.catalog.url or get_settings().catalog_url


def compare(pipeline: Pipeline, catalog: Catalog | None) -> ReconcileReport:
    """List the bucket (the pipeline's own source) and the catalog; tell what differs."""
    catalog_url_of(pipeline)
    if catalog is None or pipeline.catalog is None:
        raise ConfigError("reconcile needs the pipeline's catalog open; none was given")
    report = ReconcileReport()
    units = dict(_units(pipeline, report))
    seen: set[str] = set()
    for item in _items(catalog, pipeline.catalog.collection):
        report.items += 1
        props = item.get("properties") or {}
        ident = str(item.get("id"))
        seen.add(ident)
        unit = units.get(ident)
        if unit is None:
            bands = props.get("pixelfleet:bands")
            keys = (
                [str(k) for k in bands]
                if isinstance(bands, list) and bands
                else [str(props.get("pixelfleet:key") or ident)]
            )
            report.deleted.append((ident, keys))
        elif str(props.get("pixelfleet:etag", "")) != unit[0]:
            report.changed.append((ident, unit[1]))
    for ident, (_, keys) in units.items():
        if ident not in seen:
            report.new.append((ident, keys))
    return report


def _units(
    pipeline: Pipeline, report: ReconcileReport
) -> Iterator[tuple[str, tuple[str, list[str]]]]:
    """Item id -> (etag the item should record, keys) for everything in the bucket."""
    partition = pipeline.source.partition
    entries = pipeline.make_source().entries()
    if partition.by != "scene":
        for entry in entries:
            report.objects += 1
            yield entry.key, (entry.etag, [entry.key])
        return
    pattern = ScenePattern(partition.pattern or [])
    scenes: dict[str, list[Entry]] = {}
    for entry in entries:
        report.objects += 1
        match = pattern.match(entry.key)
        if match is not None:
            scenes.setdefault(match.group, []).append(entry)
    for group, members in scenes.items():
        yield (
            scene_id(group, members),
            (group_entry(group, members).etag, [e.key for e in members]),
        )


def _items(catalog: Catalog, collection: str) -> Iterator[dict[str, Any]]:
    token: str | None = None
    while True:
        page = catalog.search(
            parse_query(collections=[collection], limit=1000, sortby="+id", token=token)
        )
        yield from page.items
        token = page.next_token
        if not token:
            return
