"""PGD, projected gradient descent in l-inf with random start and restarts (Madry et al., 2018)."""

from __future__ import annotations

import torch
from torch import nn

from robustbench_lite.attack_utils import loss_gradient, project_linf
from robustbench_lite.hookspecs import hookimpl
from robustbench_lite.interfaces import Attack
from robustbench_lite.options import Option


class PGD(Attack):
    """Iterated signed-gradient steps, each projected back onto the eps-ball and [0, 1].

    Untargeted steps ascend the loss of the true label; with ``target`` set, steps descend the
    loss of the target class. Across restarts each sample keeps its most successful example:
    one that reaches the attack's goal if any restart found one, else the one with the best loss.
    """

    name = "pgd"
    description = "Projected gradient descent, l-inf, with random start and restarts (Madry et al. 2018)"
    options = (
        Option("steps", int, 10, "number of gradient steps", minimum=1),
        Option(
            "rel_step_size", float, None,
            "step size as a fraction of eps (default 2.5/steps, Madry's rule)", minimum=0.0,
        ),
        Option("random_start", bool, True, "start from a uniform random point of the eps-ball"),
        Option("restarts", int, 1, "independent runs; each sample keeps its best", minimum=1),
        Option("target", int, None, "class index to push every input towards (targeted mode)", minimum=0),
    )

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
        targeted = self.target is not None
        goal = torch.full_like(y, self.target) if targeted else y
        if self.restarts == 1:  # nothing to choose between: skip the extra forward pass
            return self._run(model, x, goal, eps, targeted)
        best = x.clone()
        best_score = torch.full((len(x),), -torch.inf, device=x.device)
        best_reached = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        for _ in range(self.restarts):
            x_adv = self._run(model, x, goal, eps, targeted)
            with torch.no_grad():
                logits = model(x_adv)
                loss = nn.functional.cross_entropy(logits, goal, reduction="none")
                score = -loss if targeted else loss
                predicted = logits.argmax(dim=1)
                reached = predicted == goal if targeted else predicted != y
            better = (reached & ~best_reached) | ((reached == best_reached) & (score > best_score))
            best[better] = x_adv[better]
            best_score = torch.where(better, score, best_score)
            best_reached |= reached
        return best

    def _run(self, model: nn.Module, x: torch.Tensor, goal: torch.Tensor, eps: float, targeted: bool) -> torch.Tensor:
        step = eps * (self.rel_step_size if self.rel_step_size is not None else 2.5 / self.steps)
        direction = -1.0 if targeted else 1.0  # targeted: descend the target's loss
        x_adv = x.clone()
        if self.random_start:
            x_adv = project_linf(x + torch.empty_like(x).uniform_(-eps, eps), x, eps)
        for _ in range(self.steps):
            gradient, _ = loss_gradient(model, x_adv, goal)
            x_adv = project_linf(x_adv + direction * step * gradient.sign(), x, eps)
        return x_adv.detach()


@hookimpl
def register_attacks(register):
    register(PGD)
