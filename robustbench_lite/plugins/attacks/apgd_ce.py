"""APGD-CE: auto-PGD on the cross-entropy loss (Croce & Hein, 2020), the first attack of AutoAttack."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from robustbench_lite.attack_utils import cross_entropy
from robustbench_lite.hookspecs import Register, hookimpl

from ._apgd import APGD


class APGDCE(APGD):
    """APGD ascending the cross-entropy of the true label, or descending that of the target."""

    name = "apgd-ce"
    family = "iterative"
    description = (
        "APGD with cross-entropy loss, l-inf: momentum and step-size halving at checkpoints, "
        "no step size to tune (Croce & Hein 2020)"
    )

    def objective(self, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        return cross_entropy(logits, y) if target is None else -cross_entropy(logits, target)

    def reference(self, model: nn.Module, eps: float, num_classes: int) -> Any | None:
        return self.torchattacks_apgd(model, eps, "ce")


@hookimpl
def register_attacks(register: Register) -> None:
    register(APGDCE)
