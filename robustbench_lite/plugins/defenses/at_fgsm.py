"""Adversarial training with Goodfellow et al.'s (2015) mixed clean/FGSM loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robustbench_lite.attack_utils import craft
from robustbench_lite.hookspecs import hookimpl
from robustbench_lite.interfaces import Defense
from robustbench_lite.options import Option
from robustbench_lite.registry import default_registry

from ._common import TRAIN_EPS_OPTION, OwnTrainingEps


class FGSMAdversarialTraining(OwnTrainingEps, Defense):
    """alpha * L(x, y) + (1 - alpha) * L(x + eps * sign(grad_x L), y); alpha = 0 trains on FGSM inputs only."""

    name = "at-fgsm"
    description = "Adversarial training, Goodfellow's mixed loss a*L(x) + (1-a)*L(x_fgsm)"
    options = (Option("alpha", float, 0.5, "weight of the clean loss", minimum=0.0, maximum=1.0), TRAIN_EPS_OPTION)

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self._fgsm = default_registry().create("attacks", "fgsm")

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
        x_adv = craft(self._fgsm, model, x, y, eps)
        adversarial = F.cross_entropy(model(x_adv), y)
        if self.alpha == 0:  # skip the clean forward pass it would weight by zero
            return adversarial
        return self.alpha * F.cross_entropy(model(x), y) + (1 - self.alpha) * adversarial


@hookimpl
def register_defenses(register):
    register(FGSMAdversarialTraining)
