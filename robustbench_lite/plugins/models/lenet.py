"""The naive CIFAR-10 classifier ("LeNet") of the reference benchmarks: 62,006 parameters at 3x32x32."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from robustbench_lite.hookspecs import Register, hookimpl
from robustbench_lite.interfaces import ModelBuilder

from ._common import require_image


class LeNet(ModelBuilder):
    name = "lenet"
    dataset = "cifar10"
    description = "Naive LeNet-style classifier: Conv6-pool-Conv16-pool-120-84, log-softmax out; 32x32 images"

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        channels, _, _ = require_image(self.name, input_shape, exact_size=32)
        return nn.Sequential(
            nn.Conv2d(channels, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120), nn.ReLU(),
            nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, num_classes),
            # Log-probabilities are logits shifted per sample: cross-entropy on them equals the NLL
            # loss the reference trains with, so the harness's cross-entropy needs no special case.
            nn.LogSoftmax(dim=1),
        )

    def optimizer(self, parameters: Any) -> torch.optim.Optimizer:
        # The reference setting for this network.
        return torch.optim.SGD(parameters, lr=0.001, momentum=0.9)


@hookimpl
def register_models(register: Register) -> None:
    register(LeNet)
