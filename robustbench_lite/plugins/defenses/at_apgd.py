"""Madry et al.'s (2018) adversarial training with APGD-CE (Croce & Hein, 2020) as the inner maximisation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robustbench_lite.attack_utils import craft
from robustbench_lite.hookspecs import hookimpl
from robustbench_lite.interfaces import Defense
from robustbench_lite.options import MAX_STEPS, Option
from robustbench_lite.registry import default_registry

from ._common import TRAIN_EPS_OPTION, OwnTrainingEps


class APGDAdversarialTraining(OwnTrainingEps, Defense):
    """CE(f(x_adv), y) only, x_adv from the registry's ``apgd-ce`` against the current weights.

    APGD needs no step size: it adapts one per sample. Like the attack it is, it stops each sample
    at the first iterate that is misclassified, so such samples train on a just-misclassified
    point rather than on the highest-loss one; the others train on their highest-loss iterate.
    """

    name = "at-apgd"
    description = "Adversarial training, Madry's min-max with an APGD-CE inner maximisation (no step size to tune)"
    options = (
        Option("steps", int, 10, "APGD-CE iterations of the inner maximisation", minimum=1, maximum=MAX_STEPS),
        TRAIN_EPS_OPTION,
    )

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self._apgd = default_registry().create("attacks", "apgd-ce", steps=self.steps)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
        return F.cross_entropy(model(craft(self._apgd, model, x, y, eps)), y)


@hookimpl
def register_defenses(register):
    register(APGDAdversarialTraining)
