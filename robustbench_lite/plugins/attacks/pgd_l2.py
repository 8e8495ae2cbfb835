"""PGD in l2: normalised-gradient steps projected onto the l2 ball (Madry et al., 2018)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from robustbench_lite.attack_utils import loss_gradient, normal_like, normalize_l2, per_sample, project_l2, uniform_like
from robustbench_lite.hookspecs import hookimpl
from robustbench_lite.interfaces import Attack
from robustbench_lite.options import MAX_RESTARTS, MAX_STEPS, Option

from ._common import EOT_OPTION, REL_STEP_SIZE_OPTION, TARGET_OPTION, Goal, best_of_restarts, step_size, torchattacks_reference


class PGDL2(Attack):
    """x_{t+1} = Proj_l2(x_t + step * grad / ||grad||_2): steepest ascent in l2, projected onto the ball and [0, 1].

    The random start is torchattacks' (a Gaussian direction scaled to a radius drawn uniformly
    in [0, eps]), drawn in the same order so that a seeded run starts where torchattacks.PGDL2
    does. Targeted mode and restarts work as in ``pgd``.
    """

    name = "pgd-l2"
    family = "iterative"
    norm = "l2"
    description = "Projected gradient descent, l2, with random start and restarts (Madry et al. 2018)"
    options = (
        Option("steps", int, 10, "number of gradient steps", minimum=1, maximum=MAX_STEPS),
        REL_STEP_SIZE_OPTION,
        Option("random_start", bool, True, "start from a random point of the l2 eps-ball"),
        Option("restarts", int, 1, "independent runs; each sample keeps its best", minimum=1, maximum=MAX_RESTARTS),
        TARGET_OPTION,
        EOT_OPTION,
    )

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
        goal = Goal.of(y, self.target)
        return best_of_restarts(model, x, goal, self.restarts, lambda: self._run(model, x, goal, eps))

    def _run(self, model: nn.Module, x: torch.Tensor, goal: Goal, eps: float) -> torch.Tensor:
        x_adv = random_l2_start(x, eps) if self.random_start else x.clone()
        step = step_size(self, eps)
        for _ in range(self.steps):
            gradient, _ = loss_gradient(model, x_adv, goal.labels, samples=self.eot)
            x_adv = project_l2(x_adv + goal.direction * step * normalize_l2(gradient), x, eps)
        return x_adv.detach()


def random_l2_start(x: torch.Tensor, eps: float) -> torch.Tensor:
    """x plus a random perturbation of l2 norm at most eps, clipped to [0, 1]."""
    direction = normalize_l2(normal_like(x))
    radius = uniform_like(x.new_empty(len(x))) * eps
    return torch.clamp(x + direction * per_sample(radius, x), 0.0, 1.0)

    def reference(self, model: nn.Module, eps: float, num_classes: int) -> Any | None:
        return torchattacks_reference(self, lambda ta: ta.PGDL2(
            model, eps=eps, alpha=step_size(self, eps), steps=self.steps, random_start=self.random_start))


@hookimpl
def register_attacks(register):
    register(PGDL2)
