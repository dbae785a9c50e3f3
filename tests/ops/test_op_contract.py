"""The ``Op`` contract: what the worker counts on from every step.

Each case is an op, the same op with other settings, one task's source objects it
takes, and one task's objects it must refuse. A new op joins by adding one line to
``OPS``. The reference op is :class:`ops_for_tests.DigestOp`, the smallest complete step.
Ops are called as the worker calls them: per object (``scope = "entry"``) or once per
task (``scope = "task"``).
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from ops_for_tests import DIGEST_OP, DigestConfig, DigestOp
from pixelfleet.errors import PERMANENT_ERRORS, InputError
from pixelfleet.models import Entry, OutputRecord
from pixelfleet.ops import Op, OpContext, ops
from pixelfleet.ops.base import group_entry
from pixelfleet.ops.composite import CompositeConfig, CompositeOp
from pixelfleet.ops.labels import LabelsConfig, LabelsOp
from pixelfleet.ops.thumbnail import ThumbnailConfig, ThumbnailOp
from pixelfleet.settings import get_settings
from pixelfleet.storage import Storage, check_key
from pixelfleet.storage.memory import MemoryStorage

DATA = Path(__file__).resolve().parents[1] / "data"
NAIP = "naip_m_3607824_se_17_1_20160620_sub.tif"


@dataclass
class OpCase:
    """An op, the same op with other settings, and the tasks to give it."""

    op: Op
    variant: Op
    #: The name (or reference) a pipeline gives for the op.
    ref: str
    #: One task's source objects (key -> bytes) that the op makes outputs from.
    files: dict[str, bytes]
    #: One task's source objects the op must refuse with an ``InputError``.
    bad: dict[str, bytes]
    #: The task's group (a scene id, for task-scope ops).
    group: str = ""
    scene_pattern: str | None = None


def thumbnail_case() -> OpCase:
    return OpCase(
        ThumbnailOp(ThumbnailConfig(size=64)),
        ThumbnailOp(ThumbnailConfig(size=32)),
        "thumbnail",
        {"pics/flower.jpg": (DATA / "flower.jpg").read_bytes()},
        {"pics/bad.jpg": b"not an image at all"},
    )


def composite_case() -> OpCase:
    def make(**changes: Any) -> CompositeOp:
        fields = {"bands": [6, 5, 4], "image_size": 64, "histogram_key": "{scene}_hist.png"}
        return CompositeOp(CompositeConfig.model_validate({**fields, **changes}))

    bands = {f"scenes/sr_b{b}_20200829.tif": (DATA / f"sr_b{b}_20200829.tif") for b in (4, 5, 6)}
    files = {key: path.read_bytes() for key, path in bands.items()}
    return OpCase(
        make(),
        make(gamma=1.5),
        "composite",
        files,
        {**files, "scenes/sr_b5_20200829.tif": b"not a tiff"},
        group="scenes/20200829",
        scene_pattern="sr_b{band}_{scene}.tif",
    )


def labels_case() -> OpCase:
    def make(**changes: Any) -> LabelsOp:
        fields = {"op": "labels", "labeler": "spectral", "options": {"sensor": "naip"}}
        return LabelsOp(LabelsConfig.model_validate({**fields, **changes}))

    return OpCase(
        make(),
        make(min_confidence=20),
        "labels",
        {f"naip/{NAIP}": (DATA / NAIP).read_bytes()},
        {"naip/bad.tif": b"II*\x00 not really a tiff"},
    )


def reference_case() -> OpCase:
    return OpCase(
        DigestOp(DigestConfig()),
        DigestOp(DigestConfig(algorithm="md5")),
        DIGEST_OP,
        {"docs/a.txt": b"hello"},
        {"docs/empty.txt": b""},
    )


OPS = [
    pytest.param(thumbnail_case, id="thumbnail"),
    pytest.param(composite_case, id="composite"),
    pytest.param(labels_case, id="labels"),
    pytest.param(reference_case, id="reference"),
]


@pytest.fixture(params=OPS)
def case(request: pytest.FixtureRequest) -> OpCase:
    make: Callable[[], OpCase] = request.param
    return make()


@dataclass
class Task:
    """A task as the worker holds it: the context, the group and the entries."""

    ctx: OpContext
    group: str
    entries: list[Entry]

    @property
    def provenance(self) -> Entry:
        """The entry outputs are made from: the object, or the whole task for task-scope ops."""
        if len(self.entries) == 1 and not self.group:
            return self.entries[0]
        return group_entry(self.group, self.entries)


@pytest.fixture
def make_task(case: OpCase) -> Iterator[Callable[[dict[str, bytes]], Task]]:
    """Put source objects in a fresh memory storage and return them as a task."""
    names: list[str] = []

    def make(files: dict[str, bytes]) -> Task:
        name = f"op-contract-{uuid.uuid4().hex}"
        names.extend([name, name + "-out"])
        source, output = MemoryStorage(f"memory://{name}"), MemoryStorage(f"memory://{name}-out")
        entries = []
        for key, data in files.items():
            source.write(key, data)
            entry = source.head(key)
            assert entry is not None
            entries.append(dataclasses.replace(entry, metadata={}))
        ctx = OpContext(source, output, get_settings(), scene_pattern=case.scene_pattern)
        return Task(ctx, case.group, entries)

    yield make
    for name in names:
        MemoryStorage.clear(name)


def output_keys(op: Op, task: Task) -> list[str]:
    """The keys the op writes for a task, asked as the worker asks."""
    if op.scope == "task":
        return op.output_keys_group(task.group, task.entries)
    return [key for entry in task.entries for key in op.output_keys(entry)]


def run(op: Op, task: Task) -> list[OutputRecord]:
    """Run the op on a task as the worker does."""
    if op.scope == "task":
        return op.run_group(task.ctx, task.group, task.entries)
    op.start_task(task.ctx, task.entries)
    return [record for entry in task.entries for record in op.run(task.ctx, entry)]


def stored(storage: Storage) -> list[str]:
    return [e.key for e in storage.scan()]


def without_properties(records: list[OutputRecord]) -> list[OutputRecord]:
    return [dataclasses.replace(r, properties={}) for r in records]


# -- settings -------------------------------------------------------------------------------


def test_the_op_is_found_by_its_pipeline_name(case: OpCase) -> None:
    assert ops.get(case.ref) is type(case.op)
    assert case.op.name and case.op.scope in ("entry", "task")
    schema = type(case.op).describe()
    assert "op" in schema["properties"]


def test_unknown_settings_are_refused_and_settings_are_frozen(case: OpCase) -> None:
    config = case.op.config
    with pytest.raises(ValidationError, match="sneaky"):
        type(config).model_validate({**config.model_dump(), "sneaky": 1})
    with pytest.raises(ValidationError):
        config.op = "other"


def test_settings_survive_json_and_name_the_outputs(case: OpCase) -> None:
    """Workers get the settings as JSON: the same settings must hash the same there."""
    config = case.op.config
    again = type(config).model_validate(json.loads(json.dumps(config.model_dump(mode="json"))))
    assert again == config
    assert type(case.op)(again).settings_hash == case.op.settings_hash
    assert case.variant.settings_hash != case.op.settings_hash


# -- outputs --------------------------------------------------------------------------------


def test_output_keys_are_safe_and_stable(case: OpCase, make_task: Any) -> None:
    task = make_task(case.files)
    keys = output_keys(case.op, task)
    assert keys, "the op writes nothing for the input it takes"
    assert len(set(keys)) == len(keys)
    assert all(check_key(k) == k for k in keys)
    assert output_keys(case.op, task) == keys
    assert not set(keys) & set(case.files), "an output would replace its source"


def test_run_writes_exactly_its_output_keys(case: OpCase, make_task: Any) -> None:
    task = make_task(case.files)
    records = run(case.op, task)
    keys = output_keys(case.op, task)
    assert [r.key for r in records] == keys
    assert sorted(stored(task.ctx.output)) == sorted(keys)
    for record in records:
        head = task.ctx.output.head(record.key)
        assert head is not None
        assert (record.size, record.step) == (head.size, case.op.name)


def test_outputs_are_current_until_the_source_or_settings_change(
    case: OpCase, make_task: Any
) -> None:
    task = make_task(case.files)
    run(case.op, task)
    made_from = task.provenance
    changed = dataclasses.replace(made_from, etag=made_from.etag + "-changed")
    for key in output_keys(case.op, task):
        head = task.ctx.output.head(key)
        assert head is not None
        assert head.metadata["op"] == case.op.name
        assert case.op.is_current(head, made_from)
        assert not case.op.is_current(head, changed)
        assert not case.variant.is_current(head, made_from)
    assert not case.op.is_current(None, made_from)


def test_current_outputs_describe_themselves_as_written(case: OpCase, make_task: Any) -> None:
    """A rerun that finds the outputs current reports them as the run that made them did."""
    task = make_task(case.files)
    records = run(case.op, task)
    heads = [task.ctx.output.head(r.key) for r in records]
    found = [case.op.current_record(h) for h in heads if h is not None]
    assert found == without_properties(records)


def test_item_properties_come_from_the_outputs_alone(case: OpCase, make_task: Any) -> None:
    """``pixelfleet index`` asks a fresh op about current outputs, never running it and
    never letting it read the source: it must say what the run that made them said."""
    task = make_task(case.files)
    records = run(case.op, task)
    made_from = task.provenance
    said = case.op.item_properties(task.ctx, made_from, records)
    json.dumps(said)  # properties go into STAC items as JSON
    indexer = type(case.op)(case.op.config)
    blind = make_task({})  # a source with nothing in it
    ctx = dataclasses.replace(task.ctx, source=blind.ctx.source)
    heads = [task.ctx.output.head(r.key) for r in records]
    found = [indexer.current_record(h) for h in heads if h is not None]
    assert indexer.item_properties(ctx, made_from, found) == said


# -- bad input ------------------------------------------------------------------------------


def test_bad_input_is_a_permanent_input_error_naming_the_object(
    case: OpCase, make_task: Any
) -> None:
    task = make_task(case.bad)
    bad_keys = [k for k, data in case.bad.items() if case.files.get(k) != data]
    with pytest.raises(InputError) as info:
        run(case.op, task)
    assert isinstance(info.value, PERMANENT_ERRORS)
    assert any(key in str(info.value) for key in bad_keys), str(info.value)
    assert stored(task.ctx.output) == []
