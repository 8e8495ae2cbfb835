"""ResNet-18 (He et al., 2016) in its CIFAR form: 3x3 stride-1 stem, no max-pool; 11.17M parameters."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from robustbench_lite.hookspecs import Register, hookimpl
from robustbench_lite.interfaces import ModelBuilder

from ._common import cifar_sgd, require_image


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 conv-BN) shortcut, ReLU after the sum."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:  # shapes differ: project the input
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """Stem conv, four stages of BasicBlocks (the last three halve the resolution), global pool, linear."""

    def __init__(self, in_channels: int, num_classes: int, blocks: tuple[int, ...] = (2, 2, 2, 2)) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        stages: list[nn.Module] = []
        channels = 64
        for index, count in enumerate(blocks):
            width = 64 * 2**index
            for block in range(count):
                stride = 2 if index > 0 and block == 0 else 1
                stages.append(BasicBlock(channels, width, stride))
                channels = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.stages(self.stem(x))), 1))


class ResNet18(ModelBuilder):
    name = "resnet18"
    dataset = "cifar10"
    description = "ResNet-18, CIFAR variant (3x3 stem, no max-pool, BasicBlocks 2-2-2-2); images >= 8x8"

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        channels, _, _ = require_image(self.name, input_shape, min_size=8)
        return ResNet(channels, num_classes)

    def optimizer(self, parameters: Any) -> torch.optim.Optimizer:
        return cifar_sgd(parameters)


@hookimpl
def register_models(register: Register) -> None:
    register(ResNet18)
