"""The imagenet labeller on real photos (needs the [ml] extra, which `make test` installs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pixelfleet.labelers.base import ImageRef
from pixelfleet.settings import get_settings
from pixelfleet.storage import open_storage

pytest.importorskip("torch")

from pixelfleet.labelers import imagenet  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "data"
CAT_CLASSES = {"tabby cat", "tiger cat", "Persian cat", "Siamese cat", "Egyptian Mau"}
CUP_CLASSES = {"espresso", "tea cup", "coffee mug", "cup"}


def labels_of(*names: str, batch: bool = True) -> list[list[imagenet.Label]]:
    storage = open_storage(str(DATA))
    labeler = imagenet.ImagenetLabeler(imagenet.ImagenetConfig(top_k=5))
    prepared = []
    for name in names:
        entry = storage.head(name)
        assert entry is not None
        prepared.append(labeler.prepare(ImageRef(storage, entry, get_settings())))
    if batch:
        return labeler.label(prepared)
    return [labeler.label([p])[0] for p in prepared]


def test_cat_and_coffee_photos() -> None:
    cat, coffee = labels_of("chelsea.png", "coffee.png")
    assert cat[0].name in CAT_CLASSES and "cat" in cat[0].parents
    assert coffee[0].name in CUP_CLASSES and coffee[0].confidence > 50
    for labels in (cat, coffee):
        assert len(labels) == 5
        confidences = [lab.confidence for lab in labels]
        assert confidences == sorted(confidences, reverse=True) and 0 < sum(confidences) <= 100.01


def test_batched_equals_one_by_one_and_model_loads_once() -> None:
    together = labels_of("chelsea.png", "coffee.png", "flower.jpg")
    model = imagenet.model()
    alone = labels_of("chelsea.png", "coffee.png", "flower.jpg", batch=False)
    assert imagenet.model() is model
    for a, b in zip(together, alone, strict=True):
        assert [x.name for x in a] == [x.name for x in b]
        assert np.allclose([x.confidence for x in a], [x.confidence for x in b], atol=1e-3)


def test_preprocess_shape_and_scale() -> None:
    from PIL import Image

    array = imagenet.preprocess(Image.new("RGB", (451, 300), (255, 0, 127)))
    assert array.shape == (3, 224, 224) and array.dtype == np.float32
    assert np.allclose(array[:, 0, 0], [(255 - 127) / 128, -127 / 128, 0.0])


def test_classes_file() -> None:
    classes = imagenet.load_classes()
    assert classes[281].name == "tabby cat" and "cat" in classes[281].parents
    assert classes[967].name == "espresso" and "coffee" in classes[967].parents
    assert len({c.name for c in classes}) == 1000


def test_rasters_are_labelled_too() -> None:
    (labels,) = labels_of("naip_m_3607824_se_17_1_20160620_sub.tif")
    assert len(labels) == 5


def test_bad_image_fails_alone(tmp_path: Path) -> None:
    (tmp_path / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    storage = open_storage(str(tmp_path))
    entry = storage.head("x.png")
    assert entry is not None
    labeler = imagenet.ImagenetLabeler(imagenet.ImagenetConfig())
    from pixelfleet.errors import InputError

    with pytest.raises(InputError):
        labeler.prepare(ImageRef(storage, entry, get_settings()))
