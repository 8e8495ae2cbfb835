"""Madry et al.'s (2018) adversarial training: the saddle point min_theta E[max_delta L(x + delta, y)]."""

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


class PGDAdversarialTraining(OwnTrainingEps, Defense):
    """Trains only on PGD examples (random start) crafted against the current weights."""

    name = "at-pgd"
    description = "Adversarial training, Madry's min-max with a PGD inner maximisation"
    options = (
        Option("steps", int, 7, "PGD steps of the inner maximisation", minimum=1, maximum=MAX_STEPS),
        Option("rel_step_size", float, None, "PGD step as a fraction of eps (default 2.5/steps)", minimum=0.0),
        TRAIN_EPS_OPTION,
    )

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self._pgd = default_registry().create(
            "attacks", "pgd", steps=self.steps, rel_step_size=self.rel_step_size, random_start=True
        )

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
        return F.cross_entropy(model(craft(self._pgd, model, x, y, eps)), y)


@hookimpl
def register_defenses(register):
    register(PGDAdversarialTraining)
