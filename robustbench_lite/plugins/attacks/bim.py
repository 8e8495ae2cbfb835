"""BIM, the basic iterative method or I-FGSM (Kurakin, Goodfellow & Bengio, 2017)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from robustbench_lite.hookspecs import hookimpl
from robustbench_lite.interfaces import Attack
from robustbench_lite.options import MAX_STEPS, Option

from ._common import (
    EOT_OPTION, REL_STEP_SIZE_OPTION, TARGET_OPTION, Goal, signed_gradient_steps, step_size, torchattacks_reference,
)


class BIM(Attack):
    """FGSM iterated from the clean input: signed-gradient steps, each projected onto the eps-ball and [0, 1].

    It is PGD without the random start and restarts. Step size: the paper uses 1/255 per step for
    min(eps*255 + 4, 1.25*eps*255) steps; torchattacks defaults to alpha = 2/255 with 10 steps at
    eps = 8/255, i.e. alpha = eps/4, a total travel of 2.5 eps. The default here is that
    travel for any eps and number of steps (step = 2.5*eps/steps), the rule PGD uses too.
    """

    name = "bim"
    family = "iterative"
    description = "Basic iterative method (I-FGSM): FGSM steps from the clean input, projected (Kurakin et al. 2017)"
    options = (
        Option("steps", int, 10, "number of gradient steps", minimum=1, maximum=MAX_STEPS),
        REL_STEP_SIZE_OPTION,
        TARGET_OPTION,
        EOT_OPTION,
    )

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
        step = step_size(self, eps)
        return signed_gradient_steps(model, x, x.clone(), Goal.of(y, self.target), eps, step, self.steps, self.eot)

    def reference(self, model: nn.Module, eps: float, num_classes: int) -> Any | None:
        return torchattacks_reference(self, lambda ta: ta.BIM(model, eps=eps, alpha=step_size(self, eps), steps=self.steps))


@hookimpl
def register_attacks(register):
    register(BIM)
