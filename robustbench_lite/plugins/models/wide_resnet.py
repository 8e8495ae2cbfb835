"""Model D of the reference benchmarks: pre-activation WideResNet (Zagoruyko & Komodakis, 2016)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from robustbench_lite.errors import UsageError
from robustbench_lite.hookspecs import Register, hookimpl
from robustbench_lite.interfaces import ModelBuilder
from robustbench_lite.options import Option

from ._common import cifar_sgd, require_image


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3 twice; the shortcut is identity, or a 1x1 conv of the activated input when shapes change."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.projection = None
        if stride != 1 or in_channels != out_channels:
            self.projection = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = torch.relu(self.bn1(x))
        out = self.conv2(torch.relu(self.bn2(self.conv1(activated))))
        # As in the original code, a projecting shortcut reads the pre-activated input.
        shortcut = x if self.projection is None else self.projection(activated)
        return out + shortcut


class WideResNet(nn.Module):
    """conv3x3(16), three groups of (depth - 4) / 6 blocks at widths 16k, 32k, 64k, then BN-ReLU-pool-linear."""

    def __init__(self, in_channels: int, num_classes: int, depth: int, widen_factor: int) -> None:
        super().__init__()
        blocks_per_group = (depth - 4) // 6
        widths = (16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.stem = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        groups: list[nn.Module] = []
        channels = 16
        for index, width in enumerate(widths):
            for block in range(blocks_per_group):
                stride = 2 if index > 0 and block == 0 else 1
                groups.append(PreActBlock(channels, width, stride))
                channels = width
        self.groups = nn.Sequential(*groups)
        self.head = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.head(self.groups(self.stem(x))))


class WRN(ModelBuilder):
    name = "wrn-28-10"
    dataset = "cifar10"
    description = "Model D: pre-activation WideResNet, depth 28 and widen factor 10 by default; images >= 8x8"
    options = (
        Option("depth", int, 28, "total depth; (depth - 4) must be a multiple of 6", minimum=10),
        Option("widen_factor", int, 10, "channel multiplier k of the 16/32/64-wide groups", minimum=1),
    )

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        # Checked here rather than at build time so a bad spec fails before any data is loaded.
        if (self.depth - 4) % 6:
            raise UsageError(
                f"option 'depth' of model {self.name!r} must satisfy (depth - 4) % 6 == 0 "
                f"(e.g. 10, 16, 22, 28, 34, 40), got {self.depth}"
            )

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        channels, _, _ = require_image(self.name, input_shape, min_size=8)
        return WideResNet(channels, num_classes, self.depth, self.widen_factor)

    def optimizer(self, parameters: Any) -> torch.optim.Optimizer:
        return cifar_sgd(parameters)


@hookimpl
def register_models(register: Register) -> None:
    register(WRN)
