"""FGSM, the fast gradient sign method (Goodfellow et al., 2015)."""

from __future__ import annotations

import torch
from torch import nn

from robustbench_lite.attack_utils import loss_gradient
from robustbench_lite.hookspecs import hookimpl
from robustbench_lite.interfaces import Attack


class FGSM(Attack):
    """x_adv = clip_[0,1](x + eps * sign(grad_x L(x, y))): one gradient, one step of size eps."""

    name = "fgsm"
    description = "Fast gradient sign method: one signed-gradient step of size eps (Goodfellow et al. 2015)"

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
        gradient, _ = loss_gradient(model, x, y)
        return torch.clamp(x + eps * gradient.sign(), 0.0, 1.0).detach()


@hookimpl
def register_attacks(register):
    register(FGSM)
