"""HopSkipJump (Chen, Jordan & Wainwright, 2020), l-inf: a decision-based attack that sees only labels."""

from __future__ import annotations

import math

import torch
from torch import nn

from robustbench_lite.attack_utils import per_sample
from robustbench_lite.hookspecs import Register, hookimpl
from robustbench_lite.interfaces import Attack
from robustbench_lite.options import MAX_QUERIES, MAX_STEPS, Option

# The first gradient estimate probes at a tenth of the [0, 1] range, later ones closer to the boundary.
FIRST_PROBE_RADIUS = 0.1
# Inputs per forward pass when probing around the boundary (bounds memory, not the result).
PROBE_BATCH = 8192
# Halvings of the step before giving it up: by then it is far below float resolution.
MAX_STEP_HALVINGS = 30
# Binary searches on low-dimensional inputs still get this many rounds (d^-2 would be coarse there).
MIN_SEARCH_ROUNDS = 10


def linf_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).flatten(1).abs().amax(dim=1)


def clip_to_radius(clean: torch.Tensor, far: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """The l-inf projection of ``far`` onto the ball of per-sample ``radius`` around ``clean``."""
    radius = per_sample(radius, clean)
    return torch.clamp(far, clean - radius, clean + radius)


class HopSkipJump(Attack):
    """Walks along the decision boundary towards the clean input, using only predicted labels.

    From a misclassified uniform-noise image, each iteration: a binary search for the boundary
    between it and the clean input (over the l-inf radius), a Monte Carlo estimate of the
    boundary's normal from the labels of random probes around the boundary point, and a step
    along the sign of that estimate, halved until the step lands on a misclassified input.

    It minimises the perturbation instead of working within a budget, so at budget eps it
    returns the closest misclassified input it found where that lies within eps (searching a
    sample no further once it does) and the clean input everywhere else. Inputs already
    misclassified are returned as they are; so are those for which no misclassified noise
    image turned up.
    """

    name = "hsja"
    family = "decision-based"
    description = (
        "HopSkipJump, l-inf, decision-based: only predicted labels; minimum-norm, so at eps it returns the "
        "example found if within eps, else the input (Chen et al. 2020)"
    )
    options = (
        Option("iterations", int, 20, "boundary search / gradient estimate / step rounds", minimum=0,
               maximum=MAX_STEPS),
        Option("initial_evals", int, 100, "label queries of the first gradient estimate; then x sqrt(iteration)",
               minimum=1, maximum=MAX_QUERIES),
        Option("max_evals", int, 1000, "cap on the label queries of one gradient estimate", minimum=1,
               maximum=MAX_QUERIES),
        Option("init_trials", int, 100, "uniform-noise images tried per input to find a misclassified start", minimum=1,
               maximum=MAX_QUERIES),
    )

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
        x_adv = x.clone()
        pending = (~self._fooled(model, x, y)).nonzero().squeeze(1)
        starts, found = self._initial_adversarials(model, x[pending], y[pending])
        pending, starts = pending[found], starts[found]
        if len(pending) == 0:
            return x_adv
        clean, labels = x[pending], y[pending]
        dimension = clean[0].numel()
        theta = 1.0 / dimension**2  # the paper's boundary precision for l-inf (gamma = 1)
        search_rounds = max(math.ceil(math.log2(1 / theta)), MIN_SEARCH_ROUNDS)
        point, distance = self._boundary(model, clean, labels, starts, search_rounds)
        best, best_distance = point.clone(), distance.clone()
        for iteration in range(1, self.iterations + 1):
            active = (best_distance > eps).nonzero().squeeze(1)
            if len(active) == 0:
                break
            radius = (
                torch.full_like(distance[active], FIRST_PROBE_RADIUS)
                if iteration == 1
                else dimension * theta * distance[active]
            )
            evals = min(int(self.initial_evals * math.sqrt(iteration)), self.max_evals)
            direction = self._boundary_normal(model, point[active], labels[active], radius, evals).sign()
            step = distance[active] / math.sqrt(iteration)
            moved = self._geometric_step(model, point[active], labels[active], direction, step)
            point[active], distance[active] = self._boundary(model, clean[active], labels[active], moved, search_rounds)
            closer = distance < best_distance
            best[closer], best_distance[closer] = point[closer], distance[closer]
        within = best_distance <= eps
        x_adv[pending[within]] = best[within]
        return x_adv

    @staticmethod
    def _fooled(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The only thing this attack learns from the model: is the predicted label wrong?"""
        with torch.no_grad():
            return model(inputs).argmax(dim=1) != labels

    def _initial_adversarials(
        self, model: nn.Module, clean: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per input, a misclassified uniform-noise image if one of ``init_trials`` draws is one."""
        starts = clean.clone()
        found = torch.zeros(len(clean), dtype=torch.bool, device=clean.device)
        for _ in range(self.init_trials):
            missing = (~found).nonzero().squeeze(1)
            if len(missing) == 0:
                break
            noise = torch.rand_like(clean[missing])
            hit = self._fooled(model, noise, labels[missing])
            starts[missing[hit]] = noise[hit]
            found[missing[hit]] = True
        return starts, found

    def _boundary(
        self, model: nn.Module, clean: torch.Tensor, labels: torch.Tensor, adversarial: torch.Tensor, rounds: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Binary search over the l-inf radius for the boundary between ``clean`` and ``adversarial``.

        Returns the misclassified side of the final bracket and its distance to ``clean``.
        """
        high = linf_distance(adversarial, clean)
        low = torch.zeros_like(high)
        for _ in range(rounds):
            middle = (low + high) / 2
            fooled = self._fooled(model, clip_to_radius(clean, adversarial, middle), labels)
            high = torch.where(fooled, middle, high)
            low = torch.where(fooled, low, middle)
        point = clip_to_radius(clean, adversarial, high)
        return point, linf_distance(point, clean)

    def _boundary_normal(
        self, model: nn.Module, points: torch.Tensor, labels: torch.Tensor, radius: torch.Tensor, evals: int
    ) -> torch.Tensor:
        """Monte Carlo estimate of the direction in which the input becomes misclassified.

        The mean of random unit directions u_b weighted by f_b = +1 (probe misclassified) or -1,
        minus the baseline mean(f) to reduce variance: mean(f u) - mean(f) mean(u). When every
        probe agrees the baseline would cancel everything, and mean(f) mean(u) is used instead.
        """
        def per_probe(values: torch.Tensor) -> torch.Tensor:  # (count, n) -> broadcast over (count, n, ...)
            return values.view(*values.shape, *([1] * (points.dim() - 1)))

        radius = per_sample(radius, points)
        sum_fu, sum_u = torch.zeros_like(points), torch.zeros_like(points)
        sum_f = torch.zeros(len(points), dtype=points.dtype, device=points.device)
        per_pass = max(1, PROBE_BATCH // len(points))
        for first in range(0, evals, per_pass):
            count = min(per_pass, evals - first)
            directions = 2 * torch.rand(count, *points.shape, dtype=points.dtype, device=points.device) - 1
            directions = directions / per_probe(directions.flatten(2).norm(dim=2))
            probes = torch.clamp(points + radius * directions, 0.0, 1.0)
            directions = (probes - points) / radius  # the directions actually probed, after clipping
            outcome = self._fooled(model, probes.flatten(0, 1), labels.repeat(count)).view(count, -1)
            signs = outcome.to(points.dtype) * 2 - 1
            sum_fu += (per_probe(signs) * directions).sum(dim=0)
            sum_u += directions.sum(dim=0)
            sum_f += signs.sum(dim=0)
        mean_f = per_sample(sum_f / evals, points)
        mean_u = sum_u / evals
        unanimous = mean_f.abs() == 1
        return torch.where(unanimous, mean_f * mean_u, sum_fu / evals - mean_f * mean_u)

    def _geometric_step(
        self, model: nn.Module, points: torch.Tensor, labels: torch.Tensor, direction: torch.Tensor, step: torch.Tensor
    ) -> torch.Tensor:
        """``points + step * direction``, the step halved per sample until the result is misclassified.

        A sample whose step never lands stays where it is (the boundary point is misclassified).
        """
        moved, step = points.clone(), step.clone()
        pending = torch.arange(len(points), device=points.device)
        for _ in range(MAX_STEP_HALVINGS):
            trial = torch.clamp(points[pending] + per_sample(step[pending], points) * direction[pending], 0.0, 1.0)
            landed = self._fooled(model, trial, labels[pending])
            moved[pending[landed]] = trial[landed]
            pending = pending[~landed]
            if len(pending) == 0:
                break
            step[pending] /= 2
        return moved


@hookimpl
def register_attacks(register: Register) -> None:
    register(HopSkipJump)
