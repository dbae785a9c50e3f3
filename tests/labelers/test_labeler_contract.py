"""The ``Labeler`` contract: what the ``labels`` step counts on from every labeller.

A new labeller joins by adding one line to ``LABELERS``: a function that gives the
labeller and sample images it labels. The ``rekognition`` labeller talks to moto's
Rekognition (in process); ``imagenet`` needs the ``[ml]`` extra.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from pixelfleet.errors import InputError
from pixelfleet.labelers import ImageRef, Label, Labeler, labelers
from pixelfleet.labelers.base import StaticConfig, StaticLabeler
from pixelfleet.labelers.spectral import SpectralConfig, SpectralLabeler
from pixelfleet.settings import get_settings
from pixelfleet.storage.memory import MemoryStorage

DATA = Path(__file__).resolve().parents[1] / "data"
NAIP = "naip_m_3607824_se_17_1_20160620_sub.tif"


@dataclass
class LabelerCase:
    """A labeller and sample images (files of tests/data) it gives labels to."""

    labeler: Labeler
    images: list[str]


def static_case(request: pytest.FixtureRequest) -> LabelerCase:
    config = StaticConfig(labels={"image": 100}, match={"**/*.png": {"png": 80}})
    return LabelerCase(StaticLabeler(config), ["flower.jpg", "chelsea.png"])


def spectral_case(request: pytest.FixtureRequest) -> LabelerCase:
    return LabelerCase(SpectralLabeler(SpectralConfig(sensor="naip")), [NAIP, NAIP])


def imagenet_case(request: pytest.FixtureRequest) -> LabelerCase:
    pytest.importorskip("torch")
    from pixelfleet.labelers.imagenet import ImagenetConfig, ImagenetLabeler

    return LabelerCase(ImagenetLabeler(ImagenetConfig(top_k=3)), ["chelsea.png", "flower.jpg"])


def rekognition_case(request: pytest.FixtureRequest) -> LabelerCase:
    pytest.importorskip("boto3")
    from moto import mock_aws

    import pixelfleet.settings as settings_mod
    from pixelfleet.labelers.rekognition import RekognitionConfig, RekognitionLabeler

    monkeypatch: pytest.MonkeyPatch = request.getfixturevalue("monkeypatch")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setattr(settings_mod, "_current", None)
    mock = mock_aws()
    mock.start()
    request.addfinalizer(mock.stop)
    labeler = RekognitionLabeler(RekognitionConfig(), get_settings())
    return LabelerCase(labeler, ["flower.jpg", "chelsea.png"])


LABELERS = [
    pytest.param(static_case, id="static"),
    pytest.param(spectral_case, id="spectral"),
    pytest.param(imagenet_case, id="imagenet"),
    pytest.param(rekognition_case, id="rekognition"),
]


@pytest.fixture(params=LABELERS)
def case(request: pytest.FixtureRequest) -> LabelerCase:
    make: Callable[[pytest.FixtureRequest], LabelerCase] = request.param
    return make(request)


@pytest.fixture
def refs() -> Iterator[Callable[[dict[str, bytes]], list[ImageRef]]]:
    """Put images (key -> bytes) in a fresh memory storage and return refs to them."""
    names: list[str] = []

    def make(files: dict[str, bytes]) -> list[ImageRef]:
        name = f"labeler-contract-{uuid.uuid4().hex}"
        names.append(name)
        storage = MemoryStorage(f"memory://{name}")
        out = []
        for key, data in files.items():
            storage.write(key, data)
            entry = storage.head(key)
            assert entry is not None
            out.append(ImageRef(storage, entry, get_settings()))
        return out

    yield make
    for name in names:
        MemoryStorage.clear(name)


def samples(case: LabelerCase, refs: Any) -> list[ImageRef]:
    """The case's images, each under its own key."""
    files = {f"in/{n}/{name}": (DATA / name).read_bytes() for n, name in enumerate(case.images)}
    made: list[ImageRef] = refs(files)
    return made


def check_label(label: Label) -> None:
    assert isinstance(label.name, str) and label.name.strip()
    assert math.isfinite(label.confidence) and 0 <= label.confidence <= 100, label
    for box in label.boxes:
        assert 0 <= box.left <= 1 and 0 <= box.top <= 1, box
        assert 0 <= box.width <= 1 and 0 <= box.height <= 1, box


# -- what a labeller declares ---------------------------------------------------------------


def test_the_labeler_is_found_by_its_name(case: LabelerCase) -> None:
    cls = type(case.labeler)
    assert labelers.get(cls.name) is cls
    assert isinstance(cls.version, str) and cls.version
    version = cls.version_for(case.labeler.config)
    assert isinstance(version, str) and version
    assert isinstance(cls.batch_size, int) and cls.batch_size >= 1
    assert cls.check_available() is None


def test_options_default_and_unknown_ones_are_refused(case: LabelerCase) -> None:
    config_cls = type(case.labeler).Config
    assert isinstance(case.labeler.config, config_cls)
    config_cls()  # a step may give no options at all
    with pytest.raises(ValidationError, match="sneaky"):
        config_cls.model_validate({"sneaky": 1})


# -- labelling ------------------------------------------------------------------------------


def test_one_list_of_labels_per_image_in_order(case: LabelerCase, refs: Any) -> None:
    labeler = case.labeler
    prepared = [labeler.prepare(ref) for ref in samples(case, refs)]
    together = labeler.label(prepared)
    assert isinstance(together, list) and len(together) == len(prepared)
    for labels in together:
        assert labels, "a sample image got no label"
        for label in labels:
            check_label(label)
    alone = [labeler.label([p])[0] for p in reversed(prepared)][::-1]
    for a, b in zip(together, alone, strict=True):
        assert [x.name for x in a] == [x.name for x in b]
        assert [x.confidence for x in a] == pytest.approx([x.confidence for x in b], abs=1e-3)


def test_an_empty_batch_has_no_labels(case: LabelerCase, request: pytest.FixtureRequest) -> None:
    assert case.labeler.label([]) == []


def test_labels_survive_json(case: LabelerCase, refs: Any) -> None:
    """The step stores labels as JSON sidecars and reads them back."""
    labeler = case.labeler
    (labels,) = labeler.label([labeler.prepare(samples(case, refs)[0])])
    for label in labels:
        data = json.loads(json.dumps(label.to_dict()))
        again = Label.from_dict(data)
        assert again.to_dict() == data
        assert (again.name, again.parents, again.aliases, len(again.boxes)) == (
            label.name,
            label.parents,
            label.aliases,
            len(label.boxes),
        )
        assert again.confidence == pytest.approx(label.confidence, abs=0.005)  # 2 decimals


@pytest.mark.parametrize(
    "data",
    [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, b"II*\x00" + b"\x00" * 60],
    ids=["empty", "text", "broken-png", "broken-tiff"],
)
def test_a_bad_image_is_an_input_error_of_its_own(
    case: LabelerCase, refs: Any, data: bytes
) -> None:
    """A bad image fails alone, with an ``InputError`` (permanent), in ``prepare`` or in
    ``label``; a labeller that reads no pixels may label it."""
    labeler = case.labeler
    (bad,) = refs({"in/bad.img": data})
    try:
        labels = labeler.label([labeler.prepare(bad)])
    except InputError:
        return
    assert len(labels) == 1
