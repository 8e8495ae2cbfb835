"""Model C of the reference benchmarks: VGG-19 with batch norm, in its common CIFAR-10 form."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from robustbench_lite.hookspecs import Register, hookimpl
from robustbench_lite.interfaces import ModelBuilder

from ._common import cifar_sgd, require_image

# Output channels of each 3x3 conv; "M" is a 2x2 max-pool. Five pools take 32x32 down to 1x1.
VGG19_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M",
)


class VGG19(ModelBuilder):
    name = "vgg19"
    dataset = "cifar10"
    description = "Model C: VGG-19 with batch norm, CIFAR-10 variant (one Linear(512) head); 32x32 images"

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        channels, _, _ = require_image(self.name, input_shape, exact_size=32)
        layers: list[nn.Module] = []
        for item in VGG19_CFG:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(channels, item, 3, padding=1), nn.BatchNorm2d(item), nn.ReLU()]
                channels = item
        return nn.Sequential(*layers, nn.Flatten(), nn.Linear(512, num_classes))

    def optimizer(self, parameters: Any) -> torch.optim.Optimizer:
        return cifar_sgd(parameters)


@hookimpl
def register_models(register: Register) -> None:
    register(VGG19)
