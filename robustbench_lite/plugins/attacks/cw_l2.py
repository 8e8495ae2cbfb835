"""C&W l2, the Carlini & Wagner (2017) minimum-norm attack, evaluated at a budget."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from robustbench_lite.attack_utils import finite, margin_loss
from robustbench_lite.hookspecs import hookimpl
from robustbench_lite.interfaces import Attack
from robustbench_lite.options import MAX_STEPS, Option

from ._common import TARGET_OPTION, Goal, fit_to_budget, torchattacks_reference

# Carlini's own code shrinks the box by this factor before arctanh, so that pixels at exactly 0
# or 1 map to finite w (torchattacks maps them to +-inf, where their gradient is zero forever).
# Such w start deep in tanh's flat tail (|w| ~ 7.3): Adam moves w by about lr per step, so with a
# budget of 100 steps it takes a rate near 0.1 for those pixels (most of MNIST) to move at all.
TANH_BOX_SHRINK = 1 - 1e-6


class CarliniWagnerL2(Attack):
    """Adam on w, with x' = (tanh(w) + 1) / 2 in [0, 1], minimising ||x' - x||^2 + c * f(x').

    f(x') = max(Z_y - max_{i != y} Z_i, -kappa) on the logits Z (targeted: max_{i != t} Z_i - Z_t).
    Each sample keeps the smallest adversarial example met along the way (no binary search over
    c, as in torchattacks). The minimum-norm result is fitted to the budget as foolbox evaluates
    such attacks: projected onto the l2 eps-ball and kept where still adversarial, else x is
    returned, so the output is x or an adversarial example within eps.

    A sample stops once it has an adversarial example within eps (``early_abort``): at this budget
    its result can no longer change, since every later example kept would be smaller still. On a
    deterministic model the others go on exactly as they would have (Adam is per coordinate, so no
    sample's steps depend on the rest of the batch); a randomized one (noise drawn per batch) sees
    other draws once the batch shrinks, so there the two settings are two runs of a random attack. Unlike torchattacks, no batch-wide stop when the loss stalls: that would
    make a sample's result depend on its batch. ``early_abort=false`` runs every sample to the end,
    for the smallest examples rather than the verdict at eps.
    """

    name = "cw-l2"
    family = "minimum-norm"
    norm = "l2"
    description = "Carlini & Wagner l2: minimum-norm attack by Adam in tanh space, fitted to the eps budget (2017)"
    options = (
        Option("c", float, 1.0, "weight of the misclassification term against the squared l2 norm", minimum=0.0),
        Option("kappa", float, 0.0, "confidence margin: logit gap beyond which f stops rewarding", minimum=0.0),
        Option("steps", int, 100, "Adam iterations", minimum=1, maximum=MAX_STEPS),
        Option("lr", float, 0.1, "Adam learning rate in tanh space (Carlini: 0.01 over 10,000 steps)", minimum=0.0),
        Option("early_abort", bool, True,
               "stop a sample once it has an adversarial example within eps (its result at this budget is settled)"),
        TARGET_OPTION,
    )

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
        goal = Goal.of(y, self.target)
        w = torch.atanh((2 * x - 1) * TANH_BOX_SHRINK).detach().requires_grad_(True)
        optimizer = torch.optim.Adam([w], lr=self.lr)
        best = x.clone()
        best_squared_norm = torch.full((len(x),), torch.inf, dtype=x.dtype, device=x.device)
        active = torch.arange(len(x), device=x.device)  # the samples still searched
        for _ in range(self.steps):
            x_adv = (torch.tanh(w[active]) + 1) / 2
            squared_norm = (x_adv - x[active]).flatten(1).pow(2).sum(dim=1)
            logits = model(x_adv)
            followed = Goal(goal.labels[active], goal.targeted)
            cost = squared_norm.sum() + self.c * self._margin(logits, followed).sum()
            # autograd.grad, not backward(): a model being trained must not collect parameter gradients.
            w.grad = finite(torch.autograd.grad(cost, w)[0])
            optimizer.step()  # stopped samples have zero gradient; where their w drifts no longer matters
            with torch.no_grad():
                improved = followed.reached(logits) & (squared_norm < best_squared_norm[active])
                best[active[improved]] = x_adv[improved]
                best_squared_norm[active[improved]] = squared_norm[improved]
                if self.early_abort:
                    active = active[best_squared_norm[active] > eps**2]
                    if len(active) == 0:
                        break
        return fit_to_budget(model, x, best, goal, eps)

    def reference(self, model: nn.Module, eps: float, num_classes: int) -> Any | None:
        return torchattacks_reference(self, lambda ta: ta.CW(model, c=self.c, kappa=self.kappa, steps=self.steps, lr=self.lr))


    def _margin(self, logits: torch.Tensor, goal: Goal) -> torch.Tensor:
        """C&W's f: the followed label's logit lead over the best other logit (signed by goal), floored at -kappa."""
        return torch.clamp(-goal.direction * margin_loss(logits, goal.labels), min=-self.kappa)


@hookimpl
def register_attacks(register):
    register(CarliniWagnerL2)
