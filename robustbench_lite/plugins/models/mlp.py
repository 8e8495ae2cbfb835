"""Model A of the reference benchmarks: a 3-hidden-layer ELU perceptron for feature vectors (two moons)."""

from __future__ import annotations

import torch
from torch import nn

from robustbench_lite.hookspecs import Register, hookimpl
from robustbench_lite.interfaces import ModelBuilder

from ._common import require_features

HIDDEN = 100


class TwoClassLogits(nn.Module):
    """Turns the single logit z of a binary classifier into the two-class logits [0, z].

    softmax([0, z]) = [1 - sigmoid(z), sigmoid(z)], so cross-entropy on these logits equals the
    binary cross-entropy of the 1-logit model, and the harness can treat it like any classifier.
    """

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(z), z], dim=1)


class MLP(ModelBuilder):
    name = "mlp"
    dataset = "moons"
    description = "Model A: Linear(100)-ELU x3 then one logit per class (1 logit for 2 classes); feature vectors only"

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        features = require_features(self.name, input_shape)
        binary = num_classes == 2
        layers: list[nn.Module] = [
            nn.Linear(features, HIDDEN), nn.ELU(),
            nn.Linear(HIDDEN, HIDDEN), nn.ELU(),
            nn.Linear(HIDDEN, HIDDEN), nn.ELU(),
            nn.Linear(HIDDEN, 1 if binary else num_classes),
        ]
        if binary:
            layers.append(TwoClassLogits())
        return nn.Sequential(*layers)


@hookimpl
def register_models(register: Register) -> None:
    register(MLP)
