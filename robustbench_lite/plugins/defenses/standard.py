"""Standard (undefended) training: minimise the clean cross-entropy."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robustbench_lite.hookspecs import hookimpl
from robustbench_lite.interfaces import Defense


class StandardTraining(Defense):
    name = "none"
    description = "Standard training on clean inputs: min E[L(x, y)]"

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
        return F.cross_entropy(model(x), y)


@hookimpl
def register_defenses(register):
    register(StandardTraining)
