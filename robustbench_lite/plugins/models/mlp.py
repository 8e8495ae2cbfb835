"""Model A of the reference benchmarks: a 3-hidden-layer ELU perceptron for feature vectors (two moons)."""

from __future__ import annotations

from torch import nn

from robustbench_lite.hookspecs import Register, hookimpl
from robustbench_lite.interfaces import ModelBuilder
from robustbench_lite.outputs import Logits

from ._common import require_features

HIDDEN = 100


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
        if binary:  # [0, z]: cross-entropy on it is the binary cross-entropy of the one logit z
            layers.append(Logits("single-logit"))
        return nn.Sequential(*layers)


@hookimpl
def register_models(register: Register) -> None:
    register(MLP)
