"""FAB, the fast adaptive boundary attack (Croce & Hein, 2020): minimum-norm, l-inf (``fab``) and l2 (``fab-l2``).

Each step linearises the classifier at the iterate, takes the linearised decision boundary of the
rival class (the nearest one, or the target), and projects onto it both the iterate and the clean
input, within the [0, 1] box. The next iterate mixes the two projections, biased towards the one
from the clean input so that the search stays near it; it overshoots the boundary a little. Once
an iterate is adversarial it is recorded if it is the smallest so far, then pulled back towards
the clean input, so the search goes on along the boundary towards smaller perturbations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from robustbench_lite.attack_utils import (
    finite,
    logits_and_input_jacobian,
    normal_like,
    perturbation_norm,
    per_sample,
    subset_streams,
    uniform_like,
)
from robustbench_lite.hookspecs import Register, hookimpl
from robustbench_lite.interfaces import Attack
from robustbench_lite.options import MAX_RESTARTS, MAX_STEPS, Option

from ._common import (
    TARGET_OPTION, TARGET_RANK_OPTION, TARGET_RANKS_OPTION, Goal, TargetCopies, check_targeting, fit_to_budget,
    per_input_targets, siblings_of, torchattacks_reference,
)

# Keeps a distance to a boundary finite where the logit gap has no gradient.
NORMAL_FLOOR = 1e-12
# The projections' lengths are floored so that the mixing weight stays defined at the boundary itself.
LENGTH_FLOOR = 1e-8
# Restarts begin at this fraction of eps from the clean input, in a random direction.
RESTART_RADIUS = 0.5


def project_onto_hyperplane(points: torch.Tensor, normal: torch.Tensor, offset: torch.Tensor, norm: str) -> torch.Tensor:
    """Per row, the smallest step ``d`` (in ``norm``) with <normal, points + d> = offset and points + d in [0, 1].

    ``points`` and ``normal`` are (N, D), ``offset`` is (N,). Where the box cannot reach the
    hyperplane, the step that gets closest to it (every useful coordinate at its bound).

    Along the direction that approaches the hyperplane each coordinate i moves by
    min(tau * m_i, room_i): m_i = 1 in l-inf, |normal_i| in l2, room_i its distance to the box's face.
    The progress made is increasing and piecewise linear in tau, with a kink where a coordinate
    saturates; sorting the kinks finds the exact tau in one pass.
    """
    needed = offset - (normal * points).sum(dim=1)
    sign = torch.where(needed < 0, -1.0, 1.0).to(points.dtype)
    direction = normal * sign[:, None]
    needed = needed.abs()
    weight = direction.abs()
    room = torch.where(direction > 0, 1 - points, points).clamp_min(0.0)
    moves = weight > 0
    if norm == "linf":
        rate, kink = weight, torch.where(moves, room, torch.inf)
    elif norm == "l2":
        rate, kink = weight**2, torch.where(moves, room / weight.where(moves, 1.0), torch.inf)
    else:
        raise ValueError(f"unknown norm {norm!r}; valid: linf, l2")
    order = kink.argsort(dim=1)
    kinks = kink.gather(1, order)
    full_progress = (weight * room).gather(1, order)
    saturated = full_progress.cumsum(dim=1) - full_progress  # progress of the coordinates saturated before each kink
    rate_left = rate.gather(1, order).flip(1).cumsum(dim=1).flip(1)  # d(progress)/d(tau) before each kink
    at_kink = torch.where(torch.isfinite(kinks), saturated + kinks * rate_left, saturated)
    reachable = at_kink >= needed[:, None]
    first = reachable.to(torch.uint8).argmax(dim=1, keepdim=True)
    tau = (needed - saturated.gather(1, first).squeeze(1)) / rate_left.gather(1, first).squeeze(1).clamp_min(
        torch.finfo(points.dtype).tiny)
    tau = torch.where(reachable.any(dim=1), tau.clamp_min(0.0), torch.inf)[:, None]
    length = tau if norm == "linf" else tau * weight
    magnitude = torch.where(moves, torch.minimum(length.where(moves, 0.0), room), 0.0)
    return magnitude * direction.sign()


@dataclass
class FABResult:
    """Per sample: the smallest adversarial example found (the clean input where none) and its norm (inf)."""

    x_adv: torch.Tensor
    distance: torch.Tensor


class FAB(Attack):
    """FAB in l-inf: minimum-norm search along the linearised decision boundaries.

    Untargeted, each step heads for the boundary of the class nearest under the linearisation (one
    backward pass per class); targeted (``target``, or ``target_rank`` = k for each input's k-th
    likeliest wrong class on the clean input, as AutoAttack's FAB-T), for that class's boundary
    only (one backward pass); against each of the k likeliest at once (``target_ranks`` = k: k copies
    per input in one batch, all stopping once one is fooled within eps; the smallest example found
    is kept). Any misclassification counts as success, as in AutoAttack.
    The first run starts at the clean input; restarts start at a random point at half eps from it
    and search only the inputs not yet fooled within eps. Evaluated at a budget, a sample stops
    once fooled within eps, and an example found beyond eps is kept only if its projection onto
    the ball is still adversarial (the rule of every minimum-norm attack here).
    """

    name = "fab"
    family = "minimum-norm"
    description = "FAB l-inf: minimum-norm steps onto linearised decision boundaries, untargeted or targeted (2020)"
    options = (
        Option("steps", int, 100, "iterations per run", minimum=1, maximum=MAX_STEPS),
        Option("restarts", int, 1, "runs (the first from the clean input, then from random starts)", minimum=1,
               maximum=MAX_RESTARTS),
        Option("alpha_max", float, 0.1, "largest weight of the projection from the clean input", minimum=0.0,
               maximum=1.0),
        Option("eta", float, 1.05, "overshoot past the linearised boundary", minimum=1.0),
        Option("beta", float, 0.9, "after a success, the iterate goes back to this fraction of its perturbation",
               minimum=0.0, maximum=1.0),
        TARGET_OPTION,
        TARGET_RANK_OPTION,
        TARGET_RANKS_OPTION,
    )

    def unsupported(self, input_shape: tuple[int, ...], num_classes: int) -> str | None:
        for option in ("target_rank", "target_ranks"):
            rank = getattr(self, option)
            if rank is not None and rank >= num_classes:
                return f"{self.label}: {option} {rank} needs more than {num_classes} classes"
        return None

    def reference(self, model: nn.Module, eps: float, num_classes: int) -> Any | None:
        return torchattacks_reference(self, lambda ta: ta.FAB(
            model, norm={"linf": "Linf", "l2": "L2"}[self.norm], eps=eps, steps=self.steps, n_restarts=1,
            alpha_max=self.alpha_max, eta=self.eta, beta=self.beta, n_classes=num_classes, seed=0))

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
        if eps == 0:  # the ball is the input itself: nothing to search
            return x.clone()
        check_targeting(self)
        if self.target_ranks is None:
            found = self.search(model, x, y, stop_within=eps, restart_radius=eps)
        else:
            copies = TargetCopies.of(model, x, y, self.target_ranks)
            with subset_streams(copies.rows):
                run = self.search(model, x[copies.rows], y[copies.rows], eps, eps, copies.targets, copies.rows)
            nearest = copies.per_input(run.distance).argmin(dim=0)
            found = FABResult(copies.pick(run.x_adv, nearest), copies.pick(run.distance, nearest))
        return fit_to_budget(model, x, found.x_adv, Goal.of(y, None), eps, self.norm)

    def search(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, stop_within: float | None, restart_radius: float,
        target: torch.Tensor | None = None, groups: torch.Tensor | None = None,
    ) -> FABResult:
        """Minimum-norm adversarial examples; a sample stops once fooled within ``stop_within`` (None: never).
        ``target``: per-sample targets (default: from the options); ``groups``: rows that share a goal,
        all stopping once one is fooled within ``stop_within`` (see :class:`TargetCopies`)."""
        if target is None:
            target = per_input_targets(model, x, y, self.target, self.target_rank, self.name)
        result = FABResult(x.clone(), torch.full((len(x),), torch.inf, device=x.device, dtype=x.dtype))
        for restart in range(self.restarts):
            searched = torch.ones_like(y, dtype=torch.bool) if stop_within is None else \
                ~siblings_of(groups, result.distance <= stop_within)
            pending = searched.nonzero().squeeze(1)
            if len(pending) == 0:
                break
            with subset_streams(pending):
                start = x[pending] if restart == 0 else self._random_start(x[pending], restart_radius)
                run = self._run(model, x[pending], start, y[pending], None if target is None else target[pending],
                                stop_within, None if groups is None else groups[pending])
            better = run.distance < result.distance[pending]
            result.x_adv[pending[better]] = run.x_adv[better]
            result.distance[pending[better]] = run.distance[better]
        return result

    def _random_start(self, x: torch.Tensor, radius: float) -> torch.Tensor:
        """A random point at ``RESTART_RADIUS * radius`` from x (in this attack's norm), clipped to [0, 1]."""
        noise = 2 * uniform_like(x) - 1 if self.norm == "linf" else normal_like(x)
        length = perturbation_norm(noise, self.norm).clamp_min(torch.finfo(x.dtype).tiny)
        return torch.clamp(x + RESTART_RADIUS * radius * noise / per_sample(length, x), 0.0, 1.0)

    def _run(
        self, model: nn.Module, x: torch.Tensor, start: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
        stop_within: float | None, groups: torch.Tensor | None = None,
    ) -> FABResult:
        """One run from ``start``. The linearisation at each new iterate also says whether it is
        adversarial, so a step costs one forward and one backward pass (per rival class, untargeted)."""
        result = FABResult(x.clone(), torch.full((len(x),), torch.inf, device=x.device, dtype=x.dtype))
        current = start.clone()
        active = torch.arange(len(x), device=x.device)
        gap, normal, _ = self._boundary(model, current, y, target)
        for _ in range(self.steps):
            if len(active) == 0:
                break
            moved = self._step(x[active], current[active], gap, normal)
            gap, normal, predicted = self._boundary(model, moved, y[active], _rows(target, active))
            fooled = predicted != y[active]
            distance = perturbation_norm(moved - x[active], self.norm)
            smaller = fooled & (distance < result.distance[active])
            result.x_adv[active[smaller]] = moved[smaller]
            result.distance[active[smaller]] = distance[smaller]
            current[active] = moved
            if stop_within is not None:
                going_on = ~siblings_of(groups, result.distance <= stop_within)[active]
                active, gap, normal, fooled = active[going_on], gap[going_on], normal[going_on], fooled[going_on]
            # Back towards the clean input from each success, to look for a closer crossing.
            back = fooled.nonzero().squeeze(1)
            if len(back):
                rows = active[back]
                current[rows] = x[rows] + self.beta * (current[rows] - x[rows])
                gap[back], normal[back], _ = self._boundary(model, current[rows], y[rows], _rows(target, rows))
        return result

    def _step(self, x: torch.Tensor, current: torch.Tensor, gap: torch.Tensor, normal: torch.Tensor) -> torch.Tensor:
        """The next iterate: a mix of the projections of ``current`` and of ``x`` onto the linearised boundary."""
        flat_current, flat_x = current.flatten(1), x.flatten(1)
        offset = (normal * flat_current).sum(dim=1) - gap  # the hyperplane {z : <normal, z> = offset}
        from_current = project_onto_hyperplane(flat_current, normal, offset, self.norm)
        from_clean = project_onto_hyperplane(flat_x, normal, offset, self.norm)
        length_current = perturbation_norm(from_current, self.norm).clamp_min(LENGTH_FLOOR)
        length_clean = perturbation_norm(from_clean, self.norm).clamp_min(LENGTH_FLOOR)
        alpha = (length_current / (length_current + length_clean)).clamp(0.0, self.alpha_max)[:, None]
        mixed = (1 - alpha) * (flat_current + self.eta * from_current) + alpha * (flat_x + self.eta * from_clean)
        return torch.clamp(mixed, 0.0, 1.0).view_as(x).detach()

    def _boundary(
        self, model: nn.Module, current: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per sample the logit gap z_rival - z_y at ``current`` (negative while correct), its gradient
        (flattened) and the predicted class there.

        The rival is the target, or the class whose linearised boundary is nearest in this attack's norm.
        """
        rows = torch.arange(len(y), device=y.device)
        if target is not None:
            x_var = current.detach().requires_grad_(True)
            logits = model(x_var)
            gap = logits[rows, target] - logits[rows, y]
            (gradient,) = torch.autograd.grad(gap.sum(), x_var)
            return gap.detach(), finite(gradient).flatten(1), logits.detach().argmax(dim=1)
        logits, jacobian = logits_and_input_jacobian(model, current)
        gaps = logits - logits[rows, y][:, None]
        normals = (jacobian - jacobian[rows, y][:, None]).flatten(2)
        dual = normals.abs().sum(dim=2) if self.norm == "linf" else normals.norm(dim=2)
        distance = gaps.abs() / (dual + NORMAL_FLOOR)
        distance[rows, y] = torch.inf  # the own class is no rival
        nearest = distance.argmin(dim=1)
        return gaps[rows, nearest], normals[rows, nearest], logits.argmax(dim=1)


def _rows(values: torch.Tensor | None, rows: torch.Tensor) -> torch.Tensor | None:
    return None if values is None else values[rows]


class FABL2(FAB):
    """FAB in l2: the same search with l2 projections and distances."""

    name = "fab-l2"
    norm = "l2"
    description = "FAB l2: minimum-norm steps onto linearised decision boundaries, untargeted or targeted (2020)"


@hookimpl
def register_attacks(register: Register) -> None:
    register(FAB)
    register(FABL2)
