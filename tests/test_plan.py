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


# -- partition "auto" -------------------------------------------------------------------------


def small_entries(n: int, size: int = 10_000, prefix: str = "p") -> list[Entry]:
    return [Entry(f"{prefix}/{i:06d}.png", size, f"e{i}") for i in range(n)]


def test_auto_is_the_default_and_a_bare_name_is_a_partition() -> None:
    from pixelfleet.pipeline import pipeline_from_dict

    def partition(value: object) -> Partition:
        source: dict[str, object] = {"url": "/tmp/x"}
        if value is not None:
            source["partition"] = value
        data = {"source": source, "output": {"url": "/tmp/y"}, "steps": [{"op": "thumbnail"}]}
        return pipeline_from_dict(data).source.partition

    assert partition(None).by == "auto"
    assert partition("object") == Partition(by="object")
    assert partition("auto") == Partition(by="auto")
    assert partition({"by": "auto", "size": 10}).size == 10
    with pytest.raises(ConfigError, match="'auto', 'object'"):
        partition("per-photo")


def test_auto_batches_small_objects_and_leaves_large_ones_alone() -> None:
    small = small_entries(1000)
    big = [Entry("p/big.tif", 50 * 1024 * 1024, "b")]
    tasks = list(plan(small[:500] + big + small[500:], Partition(by="auto"), "s"))
    sizes = [len(t.entries) for t in tasks]
    assert sum(sizes) == 1001
    assert all(n <= 100 for n in sizes)
    assert 1000 / 60 < len(tasks) - 1 < 1000 / 25  # a few dozen objects per task on average
    (alone,) = [t for t in tasks if t.entries == tuple(big)]
    # A large object is the very task "object" would make of it.
    assert alone.id == next(iter(plan(big, Partition(by="object"), "s"))).id
    assert [e for t in tasks for e in t.entries if e not in big] == small  # order kept


def test_auto_caps_a_batch_by_count_and_by_bytes() -> None:
    sizes = [len(t.entries) for t in plan(small_entries(2000), Partition(by="auto", size=8), "s")]
    assert max(sizes) <= 8
    heavy = small_entries(300, size=900 * 1024)  # the 37th of 900 KB reaches 32 MB
    sizes = [len(t.entries) for t in plan(heavy, Partition(by="auto"), "s")]
    assert max(sizes) == 37


def test_auto_tasks_are_stable_and_one_change_redoes_one_task() -> None:
    entries = small_entries(3000)
    first = [t.id for t in plan(entries, Partition(by="auto"), "s")]
    assert first == [t.id for t in plan(list(entries), Partition(by="auto"), "s")]
    # A changed object changes its own task only.
    changed = list(entries)
    changed[1234] = Entry(entries[1234].key, 1, "new")
    second = [t.id for t in plan(changed, Partition(by="auto"), "s")]
    assert len(set(second) - set(first)) == 1
    # An object added (or removed) changes the task it falls in, not every task after it.
    added = sorted([*entries, Entry("p/001234x.png", 10, "x")], key=lambda e: e.key)
    third = [t.id for t in plan(added, Partition(by="auto"), "s")]
    assert 1 <= len(set(third) - set(first)) <= 2
    removed = entries[:1500] + entries[1501:]
    fourth = [t.id for t in plan(removed, Partition(by="auto"), "s")]
    assert 1 <= len(set(fourth) - set(first)) <= 2


def test_task_ids_are_what_they_always_were() -> None:
    """The id of a task is ``stable_hash({"g", "e", "s"}, 24)``: planning writes that JSON
    out itself, and must keep giving every task the id earlier runs recorded."""
    from pixelfleet.models import stable_hash
    from pixelfleet.plan import make_task

    odd = [Entry('a/"quoted"\\back.tif', 1, "é\u2603"), Entry("b/\U0001f600.png", 2, "\udcff")]
    for group, entries in [("al/2013", ENTRIES[:2]), ("x+1", odd), ("", ENTRIES[4:])]:
        expected = stable_hash(
            {"g": group, "e": [[e.key, e.etag] for e in entries], "s": "hash"}, 24
        )
        assert make_task(group, entries, "hash").id == expected


def test_one_task_per_object_has_the_ids_make_task_gives() -> None:
    from pixelfleet.plan import make_task

    odd = [*ENTRIES, Entry('q/"x"\\y\u2603.tif', 1, "\udcff")]
    tasks = list(plan(odd, Partition(by="object"), "h"))
    assert tasks == [make_task(e.key, [e], "h") for e in odd]
