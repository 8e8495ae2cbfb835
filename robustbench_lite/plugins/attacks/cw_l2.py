"""C&W l2, the Carlini & Wagner (2017) minimum-norm attack, evaluated at a budget."""

from __future__ import annotations

import torch
from torch import nn

from robustbench_lite.attack_utils import finite, margin_loss
from robustbench_lite.hookspecs import hookimpl
from robustbench_lite.interfaces import Attack
from robustbench_lite.options import MAX_STEPS, Option

from ._common import TARGET_OPTION, Goal, fit_to_budget

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
    returned, so the output is x or an adversarial example within eps. Unlike torchattacks, no
    batch-wide early stop: a sample's result never depends on the rest of its batch.
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
        TARGET_OPTION,
    )

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
        goal = Goal.of(y, self.target)
        w = torch.atanh((2 * x - 1) * TANH_BOX_SHRINK).detach().requires_grad_(True)
        optimizer = torch.optim.Adam([w], lr=self.lr)
        best = x.clone()
        best_squared_norm = torch.full((len(x),), torch.inf, dtype=x.dtype, device=x.device)
        for _ in range(self.steps):
            x_adv = (torch.tanh(w) + 1) / 2
            squared_norm = (x_adv - x).flatten(1).pow(2).sum(dim=1)
            logits = model(x_adv)
            cost = squared_norm.sum() + self.c * self._margin(logits, goal).sum()
            # autograd.grad, not backward(): a model being trained must not collect parameter gradients.
            w.grad = finite(torch.autograd.grad(cost, w)[0])
            optimizer.step()
            with torch.no_grad():
                improved = goal.reached(logits) & (squared_norm < best_squared_norm)
                best[improved] = x_adv[improved]
                best_squared_norm = torch.where(improved, squared_norm, best_squared_norm)
        return fit_to_budget(model, x, best, goal, eps)

    def _margin(self, logits: torch.Tensor, goal: Goal) -> torch.Tensor:
        """C&W's f: the followed label's logit lead over the best other logit (signed by goal), floored at -kappa."""
        return torch.clamp(-goal.direction * margin_loss(logits, goal.labels), min=-self.kappa)


@hookimpl
def register_attacks(register):
    register(CarliniWagnerL2)
