"""MI-FGSM, the momentum iterative fast gradient sign method (Dong et al., 2018)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from robustbench_lite.attack_utils import loss_gradient, per_sample, project_linf
from robustbench_lite.hookspecs import hookimpl
from robustbench_lite.interfaces import Attack
from robustbench_lite.options import MAX_STEPS, Option

from ._common import EOT_OPTION, REL_STEP_SIZE_OPTION, TARGET_OPTION, Goal, step_size, torchattacks_reference


class MIFGSM(Attack):
    """BIM whose steps follow the sign of an accumulated gradient, not of the current one.

    g_{t+1} = decay * g_t + grad / mean|grad| (per sample), x_{t+1} = Proj(x_t + step * sign(g_{t+1})).
    Normalising each gradient by its mean absolute value (the paper's l1 normalisation up to a
    constant, as torchattacks does) makes the history count by direction, not by magnitude; with
    ``decay`` = 0 the attack is BIM. Default step 2.5*eps/steps, torchattacks' default
    (alpha = 2/255, 10 steps at eps = 8/255); the paper uses eps/steps.
    """

    name = "mifgsm"
    family = "iterative"
    description = "Momentum iterative FGSM: signed steps along an accumulated normalised gradient (Dong et al. 2018)"
    options = (
        Option("steps", int, 10, "number of gradient steps", minimum=1, maximum=MAX_STEPS),
        REL_STEP_SIZE_OPTION,
        Option("decay", float, 1.0, "momentum decay factor mu (0 gives BIM)", minimum=0.0),
        TARGET_OPTION,
        EOT_OPTION,
    )

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
        goal = Goal.of(y, self.target)
        step = step_size(self, eps)
        x_adv = x.clone()
        momentum = torch.zeros_like(x)
        for _ in range(self.steps):
            gradient, _ = loss_gradient(model, x_adv, goal.labels, samples=self.eot)
            # The guard keeps an all-zero gradient at zero: torchattacks divides 0 by 0 there, and the
            # NaN momentum freezes that sample for good.
            scale = gradient.flatten(1).abs().mean(dim=1).clamp_min(torch.finfo(x.dtype).tiny)
            momentum = self.decay * momentum + gradient / per_sample(scale, x)
            x_adv = project_linf(x_adv + goal.direction * step * momentum.sign(), x, eps)
        return x_adv.detach()

    def reference(self, model: nn.Module, eps: float, num_classes: int) -> Any | None:
        return torchattacks_reference(self, lambda ta: ta.MIFGSM(
            model, eps=eps, alpha=step_size(self, eps), steps=self.steps, decay=self.decay))


@hookimpl
def register_attacks(register):
    register(MIFGSM)
