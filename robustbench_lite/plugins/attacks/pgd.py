"""PGD, projected gradient descent in l-inf with random start and restarts (Madry et al., 2018)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from robustbench_lite.attack_utils import cross_entropy, project_linf, uniform_like
from robustbench_lite.hookspecs import hookimpl
from robustbench_lite.interfaces import Attack
from robustbench_lite.options import MAX_RESTARTS, MAX_STEPS, Option

from ._common import (
    EOT_OPTION, REL_STEP_SIZE_OPTION, TARGET_OPTION, Goal, best_of_restarts, signed_gradient_steps, step_size,
    torchattacks_reference,
)


class PGD(Attack):
    """Iterated signed-gradient steps, each projected back onto the eps-ball and [0, 1].

    Untargeted steps ascend the loss of the true label; with ``target`` set, steps descend the
    loss of the target class. Across restarts each sample keeps its most successful example:
    one that reaches the attack's goal if any restart found one, else the one with the best loss.
    """

    name = "pgd"
    family = "iterative"
    description = "Projected gradient descent, l-inf, with random start and restarts (Madry et al. 2018)"
    options = (
        Option("steps", int, 10, "number of gradient steps", minimum=1, maximum=MAX_STEPS),
        REL_STEP_SIZE_OPTION,
        Option("random_start", bool, True, "start from a uniform random point of the eps-ball"),
        Option("restarts", int, 1, "independent runs; each sample keeps its best", minimum=1, maximum=MAX_RESTARTS),
        TARGET_OPTION,
        EOT_OPTION,
    )

    # The per-sample loss the steps ascend (untargeted) or descend for the target; subclasses swap it.
    objective = staticmethod(cross_entropy)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
        goal = Goal.of(y, self.target)
        return best_of_restarts(model, x, goal, self.restarts, lambda: self._run(model, x, goal, eps))

    def reference(self, model: nn.Module, eps: float, num_classes: int) -> Any | None:
        return torchattacks_reference(self, lambda ta: ta.PGD(
            model, eps=eps, alpha=step_size(self, eps), steps=self.steps, random_start=self.random_start))


    def _run(self, model: nn.Module, x: torch.Tensor, goal: Goal, eps: float) -> torch.Tensor:
        x_start = x.clone()
        if self.random_start:
            x_start = project_linf(x + uniform_like(x, -eps, eps), x, eps)
        step = step_size(self, eps)
        return signed_gradient_steps(model, x, x_start, goal, eps, step, self.steps, self.eot, loss=self.objective)


@hookimpl
def register_attacks(register):
    register(PGD)
