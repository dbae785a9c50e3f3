"""Partitioning and stable task ids."""

from __future__ import annotations

import pytest

from pixelfleet.errors import ConfigError
from pixelfleet.models import Entry
from pixelfleet.pipeline import Partition
from pixelfleet.plan import in_shard, parse_shard, plan

ENTRIES = [
    Entry("al/2013/a.tif", 10, "e1"),
    Entry("al/2013/b.tif", 20, "e2"),
    Entry("al/2015/c.tif", 30, "e3"),
    Entry("ca/2014/d.tif", 40, "e4"),
    Entry("root.tif", 50, "e5"),
]


def test_one_task_per_object() -> None:
    tasks = list(plan(ENTRIES, Partition(by="object"), "s"))
    assert [len(t.entries) for t in tasks] == [1] * 5
    assert len({t.id for t in tasks}) == 5


def test_prefix_partition_groups_state_year() -> None:
    tasks = list(plan(ENTRIES, Partition(by="prefix", depth=2), "s"))
    assert [(t.group, len(t.entries)) for t in tasks] == [
        ("al/2013", 2),
        ("al/2015", 1),
        ("ca/2014", 1),
        ("", 1),
    ]
    assert tasks[0].size == 30


def test_count_partition() -> None:
    tasks = list(plan(ENTRIES, Partition(by="count", size=2), "s"))
    assert [len(t.entries) for t in tasks] == [2, 2, 1]


def test_ids_are_stable_and_change_with_etag_or_settings() -> None:
    first = [t.id for t in plan(ENTRIES, Partition(by="prefix"), "s")]
    assert first == [t.id for t in plan(ENTRIES, Partition(by="prefix"), "s")]
    changed = [*ENTRIES[:1], Entry("al/2013/b.tif", 20, "NEW"), *ENTRIES[2:]]
    second = [t.id for t in plan(changed, Partition(by="prefix"), "s")]
    assert second[0] != first[0] and second[1:] == first[1:]
    assert [t.id for t in plan(ENTRIES, Partition(by="prefix"), "other")] != first


def test_shards_cover_every_task_once() -> None:
    tasks = list(plan(ENTRIES, Partition(by="object"), "s"))
    seen = [t.id for i in range(3) for t in tasks if in_shard(t, i, 3)]
    assert sorted(seen) == sorted(t.id for t in tasks)


@pytest.mark.parametrize("bad", ["3/3", "x/2", "1", "-1/2", "0/0"])
def test_bad_shard(bad: str) -> None:
    with pytest.raises(ConfigError, match="--shard"):
        parse_shard(bad)
