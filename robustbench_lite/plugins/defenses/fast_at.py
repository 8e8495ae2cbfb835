"""Fast adversarial training, FGSM with a random start (Wong, Rice & Kolter, 2020, "Fast is better than free").

Only the loss of the recipe: the paper's cyclic learning rate, mixed precision and early stopping
belong to the training loop, which here is the harness's (the model's own optimizer).
"""

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


class FastAdversarialTraining(OwnTrainingEps, Defense):
    """CE(f(x + delta), y), delta one FGSM step from a uniform random start:

    delta_0 ~ U(-eps, eps), delta = P(delta_0 + alpha * sign(grad_delta CE(f(x + delta_0), y))), with
    alpha = rel_step_size * eps and P the projection onto the eps-ball and x + delta in [0, 1]
    (delta_0 too is clipped to the box first, as in the paper's code). That is exactly one step of
    PGD with random start, so the registry's ``pgd[steps=1]`` crafts it. Unlike the paper's code,
    which crafts in train mode, crafting runs in eval mode like every defense here (``craft``).
    """

    name = "fast-at"
    description = "Fast AT: one FGSM step of 1.25 eps from a uniform random start (Wong, Rice & Kolter 2020)"
    options = (
        Option("rel_step_size", float, 1.25, "FGSM step alpha as a fraction of eps (the paper: 1.25)", minimum=0.0),
        TRAIN_EPS_OPTION,
    )

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self._fgsm_rs = default_registry().create(
            "attacks", "pgd", steps=1, rel_step_size=self.rel_step_size, random_start=True
        )

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
        return F.cross_entropy(model(craft(self._fgsm_rs, model, x, y, eps)), y)


@hookimpl
def register_defenses(register):
    register(FastAdversarialTraining)
