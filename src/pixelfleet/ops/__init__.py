"""Pipeline steps, looked up by the name in a pipeline's ``[[steps]] op = ...``."""

from __future__ import annotations

from pixelfleet.ops.base import Op, OpConfig, OpContext, render_key
from pixelfleet.registry import Registry

__all__ = ["Op", "OpConfig", "OpContext", "ops", "render_key"]

ops = Registry(
    "op",
    "pixelfleet.ops",
    {
        "thumbnail": "pixelfleet.ops.thumbnail:ThumbnailOp",
        "labels": "pixelfleet.ops.labels:LabelsOp",
        "composite": "pixelfleet.ops.composite:CompositeOp",
        "blocks": "pixelfleet.ops.blocks:BlocksOp",
    },
    extras={},
)
