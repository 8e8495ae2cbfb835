"""DeepFool (Moosavi-Dezfooli, Fawzi & Frossard, 2016), l2, evaluated at a budget."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from robustbench_lite.attack_utils import logits_and_input_jacobian
from robustbench_lite.hookspecs import hookimpl
from robustbench_lite.interfaces import Attack
from robustbench_lite.options import MAX_STEPS, Option

from ._common import Goal, fit_to_budget, torchattacks_reference

# The authors' code adds this to every step's length so that it lands past the linearised boundary.
BOUNDARY_MARGIN = 1e-4


class DeepFool(Attack):
    """Linearise the classifier, step onto the nearest linearised decision boundary, repeat until fooled.

    As in the authors' code (and foolbox), the steps r_i add up to r and the iterate is
    clip_[0,1](x + (1 + overshoot) * r), the next step computed there. torchattacks builds each step
    on the clipped previous iterate instead, which stalls on pixels at 0 or 1 (most of MNIST).
    A sample stops as soon as it is misclassified. The minimum-norm result is fitted to the
    budget as for cw-l2 (projected onto the l2 eps-ball, kept where still adversarial, else x),
    which is how foolbox evaluates minimisation attacks at a budget.
    """

    name = "deepfool"
    family = "minimum-norm"
    norm = "l2"
    description = "DeepFool l2: steps to the nearest linearised decision boundary, fitted to the eps budget (2016)"
    options = (
        Option("steps", int, 50, "maximum number of linearisation steps", minimum=1, maximum=MAX_STEPS),
        Option("overshoot", float, 0.02, "relative overshoot past the boundary", minimum=0.0),
    )

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
        x_adv = x.clone()
        total_step = torch.zeros_like(x)
        active = torch.arange(len(x), device=x.device)
        for _ in range(self.steps):
            logits, jacobian = logits_and_input_jacobian(model, x_adv[active])
            still_correct = logits.argmax(dim=1) == y[active]
            active, logits, jacobian = active[still_correct], logits[still_correct], jacobian[still_correct]
            if len(active) == 0:
                break
            total_step[active] += nearest_boundary_step(logits, jacobian, y[active])
            x_adv[active] = torch.clamp(x[active] + (1 + self.overshoot) * total_step[active], 0.0, 1.0)
        return fit_to_budget(model, x, x_adv, Goal.of(y, None), eps)

    def reference(self, model: nn.Module, eps: float, num_classes: int) -> Any | None:
        return torchattacks_reference(self, lambda ta: ta.DeepFool(model, steps=self.steps, overshoot=self.overshoot))


def nearest_boundary_step(logits: torch.Tensor, jacobian: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The smallest l2 step onto the linearised boundary between class y and its nearest rival.

    For rival k the boundary is at distance |f_k - f_y| / ||grad f_k - grad f_y||, along that gradient gap.
    """
    rows = torch.arange(len(y), device=y.device)
    logit_gaps = logits - logits[rows, y][:, None]
    gradient_gaps = (jacobian - jacobian[rows, y][:, None]).flatten(2)
    gap_norms = gradient_gaps.norm(dim=2).clamp_min(torch.finfo(logits.dtype).tiny)
    distances = logit_gaps.abs() / gap_norms
    distances[rows, y] = torch.inf  # the own class is no rival
    nearest = distances.argmin(dim=1)
    direction = gradient_gaps[rows, nearest] / gap_norms[rows, nearest][:, None]
    step = (distances[rows, nearest] + BOUNDARY_MARGIN)[:, None] * direction
    return step.view(len(y), *jacobian.shape[2:])


@hookimpl
def register_attacks(register):
    register(DeepFool)
