"""Labellers, looked up by the name in a ``labels`` step's ``labeler = ...``.

Built in: ``imagenet`` (a local EfficientNet-Lite0 classifier, ``[ml]`` extra),
``spectral`` (land cover from band indices), ``rekognition`` (AWS DetectLabels,
``[aws]`` extra) and ``static`` (labels from the pipeline). Third-party labellers
plug in through the ``pixelfleet.labelers`` entry-point group or by reference
(``labeler = "package.module:Class"``).
"""

from __future__ import annotations

from pixelfleet.labelers.base import Box, ImageRef, Label, Labeler, LabelerConfig
from pixelfleet.registry import Registry

__all__ = ["Box", "ImageRef", "Label", "Labeler", "LabelerConfig", "labelers"]

labelers = Registry(
    "labeler",
    "pixelfleet.labelers",
    {
        "imagenet": "pixelfleet.labelers.imagenet:ImagenetLabeler",
        "spectral": "pixelfleet.labelers.spectral:SpectralLabeler",
        "rekognition": "pixelfleet.labelers.rekognition:RekognitionLabeler",
        "static": "pixelfleet.labelers.base:StaticLabeler",
    },
    extras={"imagenet": "ml", "rekognition": "aws"},
)
