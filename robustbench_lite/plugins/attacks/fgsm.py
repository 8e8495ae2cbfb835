"""FGSM, the fast gradient sign method (Goodfellow et al., 2015)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from robustbench_lite.attack_utils import loss_gradient
from robustbench_lite.hookspecs import hookimpl
from robustbench_lite.interfaces import Attack

from ._common import EOT_OPTION, TARGET_OPTION, Goal, torchattacks_reference


class FGSM(Attack):
    """x_adv = clip_[0,1](x + eps * sign(grad_x L(x, y))): one gradient, one step of size eps.

    With ``target`` set the step descends the target's loss instead:
    x_adv = clip_[0,1](x - eps * sign(grad_x L(x, target))).
    """

    name = "fgsm"
    family = "single-step"
    description = "Fast gradient sign method: one signed-gradient step of size eps (Goodfellow et al. 2015)"
    options = (TARGET_OPTION, EOT_OPTION)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
        goal = Goal.of(y, self.target)
        gradient, _ = loss_gradient(model, x, goal.labels, samples=self.eot)
        return torch.clamp(x + goal.direction * eps * gradient.sign(), 0.0, 1.0).detach()

    def reference(self, model: nn.Module, eps: float, num_classes: int) -> Any | None:
        return torchattacks_reference(self, lambda ta: ta.FGSM(model, eps=eps))


@hookimpl
def register_attacks(register):
    register(FGSM)
