"""APGD, auto-PGD (Croce & Hein, 2020): l-inf PGD without a step size to tune.

The machinery shared by ``apgd-ce`` and ``apgd-dlr``, which differ only in the loss they ascend.
Against plain PGD, APGD adds momentum and adapts the step size per sample: it starts at 2 eps and
is halved at checkpoints where the loss stopped rising, the search then resuming from the best
point so far. Checkpoints come ever closer together: the search explores first, then refines.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

from robustbench_lite.attack_utils import loss_gradient, per_sample, project_linf, subset_streams, uniform_like
from robustbench_lite.interfaces import Attack
from robustbench_lite.options import MAX_RESTARTS, MAX_STEPS, Option

from ._common import (
    EOT_OPTION, TARGET_OPTION, TARGET_RANK_OPTION, TARGET_RANKS_OPTION, TargetCopies, check_targeting,
    per_input_targets, siblings_of, torchattacks_reference,
)

# Weight of the new projected step; the remaining 1 - MOMENTUM continues the previous move.
MOMENTUM = 0.75
INITIAL_STEP = 2.0  # times eps: large enough to cross the ball in one step


def checkpoints(steps: int) -> list[int]:
    """The iterations after which APGD may halve a sample's step size, in increasing order.

    Fractions of the budget p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06),
    checkpoint w_j = ceil(p_j * steps), the paper's schedule (w_0 = 0 is the start, not a checkpoint).
    """
    fractions = [0.0, 0.22]
    while fractions[-1] <= 1.0:
        fractions.append(fractions[-1] + max(fractions[-1] - fractions[-2] - 0.03, 0.06))
    # The tolerance keeps float error (0.22 * 100 = 22.000000000000004) from pushing ceil up by one.
    return sorted({math.ceil(p * steps - 1e-9) for p in fractions[1:] if p <= 1.0} - {0})


@dataclass
class APGDResult:
    """Per sample: the example returned, whether it reaches the goal, and the loss at the start and at best."""

    x_adv: torch.Tensor
    success: torch.Tensor
    start_loss: torch.Tensor
    best_loss: torch.Tensor


@dataclass
class _Search:
    """The per-sample state of the samples still searched; ``index`` locates them in the batch."""

    index: torch.Tensor
    group: torch.Tensor | None  # rows of one group share a goal: once one reaches it, all stop
    x: torch.Tensor
    y: torch.Tensor
    target: torch.Tensor | None
    current: torch.Tensor
    previous: torch.Tensor
    gradient: torch.Tensor
    loss: torch.Tensor
    step: torch.Tensor
    best_x: torch.Tensor
    best_gradient: torch.Tensor
    best_loss: torch.Tensor
    increases: torch.Tensor  # steps that raised the loss since the last checkpoint
    best_loss_at_checkpoint: torch.Tensor
    halved_at_checkpoint: torch.Tensor

    def keep(self, mask: torch.Tensor) -> _Search:
        return _Search(**{
            field.name: None if getattr(self, field.name) is None else getattr(self, field.name)[mask]
            for field in fields(self)
        })


class APGD(Attack):
    """APGD in l-inf; subclasses give the per-sample loss to ascend (``objective``).

    Each sample stops as soon as an iterate reaches the goal (misclassified, or classified as its
    target), and keeps that iterate; a sample that never does keeps its highest-loss iterate.
    Restarts search again, from new random starts, only the samples not yet successful.
    Targeted mode: one class for all inputs (``target``), or per input its k-th highest-scoring
    wrong class on the clean input (``target_rank`` = k), as AutoAttack's APGD-T does; against each
    of the k likeliest at once (``target_ranks`` = k), in one batch of k copies per input that all
    stop once one of them succeeds: AutoAttack's APGD-T without a Python loop over the targets.
    """

    options = (
        Option("steps", int, 100, "iterations per restart", minimum=1, maximum=MAX_STEPS),
        Option("restarts", int, 1, "runs from new random starts for the samples not yet successful", minimum=1,
               maximum=MAX_RESTARTS),
        Option(
            "rho", float, 0.75,
            "halve the step at a checkpoint when fewer than this fraction of the steps since the last one "
            "raised the loss", minimum=0.0, maximum=1.0,
        ),
        EOT_OPTION,
        TARGET_OPTION,
        TARGET_RANK_OPTION,
        TARGET_RANKS_OPTION,
    )

    def torchattacks_apgd(self, model: nn.Module, eps: float, loss: str) -> Any | None:
        """torchattacks' APGD on ``loss`` (its name there) with this attack's settings, for :meth:`reference`."""
        return torchattacks_reference(self, lambda ta: ta.APGD(
            model, norm="Linf", eps=eps, steps=self.steps, loss=loss, rho=self.rho, seed=0))

    def unsupported(self, input_shape: tuple[int, ...], num_classes: int) -> str | None:
        if self.target_ranks is not None and self.target_ranks >= num_classes:
            return f"{self.label}: target_ranks {self.target_ranks} needs more than {num_classes} classes"
        return None

    @abc.abstractmethod
    def objective(self, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """The per-sample loss APGD ascends, given the true labels and the targets (None: untargeted)."""

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
        check_targeting(self)
        if self.target_ranks is None:
            return self.search(model, x, y, eps).x_adv
        copies = TargetCopies.of(model, x, y, self.target_ranks)
        with subset_streams(copies.rows):
            found = self.search(model, x[copies.rows], y[copies.rows], eps, copies.targets, groups=copies.rows)
        first_success = copies.per_input(found.success).to(torch.int8).argmax(dim=0)  # rank 1 where none
        return copies.pick(found.x_adv, first_success)

    def search(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, target: torch.Tensor | None = None,
        groups: torch.Tensor | None = None,
    ) -> APGDResult:
        """Run APGD with its restarts and report per sample how it went. ``target``: per-sample targets
        (default: from the options); ``groups``: rows that share a goal (see :class:`TargetCopies`)."""
        if target is None:
            target = per_input_targets(model, x, y, self.target, self.target_rank, self.name)
        result = self._run(model, x, y, target, eps, groups)
        for _ in range(self.restarts - 1):
            pending = (~siblings_of(groups, result.success)).nonzero().squeeze(1)
            if len(pending) == 0:
                break
            with subset_streams(pending):
                rerun = self._run(model, x[pending], y[pending], None if target is None else target[pending], eps,
                                  None if groups is None else groups[pending])
            better = rerun.success | (rerun.best_loss > result.best_loss[pending])
            chosen = pending[better]
            result.x_adv[chosen] = rerun.x_adv[better]
            result.success[chosen] = rerun.success[better]
            result.best_loss[chosen] = rerun.best_loss[better]
        return result

    def _evaluate(
        self, model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Gradient and value of the objective at ``x_adv``, and whether the goal is reached there.

        The objective also keeps the logits it sees, which saves a forward pass per step; with
        EOT the goal is judged on the logits averaged over the samples.
        """
        seen: list[torch.Tensor] = []

        def objective(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            seen.append(logits.detach())
            return self.objective(logits, labels, target)

        gradient, loss = loss_gradient(model, x_adv, y, objective, samples=self.eot)
        predicted = torch.stack(seen).mean(dim=0).argmax(dim=1)
        reached = predicted != y if target is None else predicted == target
        return gradient, loss, reached

    def _run(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, eps: float,
        groups: torch.Tensor | None,
    ) -> APGDResult:
        # Random start on the ball's surface: uniform noise scaled so that its largest coordinate is eps.
        noise = 2 * uniform_like(x) - 1
        largest = noise.flatten(1).abs().amax(dim=1).clamp_min(1e-12)
        start = project_linf(x + eps * noise / per_sample(largest, x), x, eps)
        gradient, loss, reached = self._evaluate(model, start, y, target)
        result = APGDResult(x_adv=start.clone(), success=reached.clone(), start_loss=loss.clone(), best_loss=loss.clone())
        search = _Search(
            index=torch.arange(len(x), device=x.device), group=groups, x=x, y=y, target=target, current=start, previous=start,
            gradient=gradient, loss=loss, step=torch.full_like(loss, INITIAL_STEP * eps),
            best_x=start, best_gradient=gradient, best_loss=loss, increases=torch.zeros_like(loss),
            best_loss_at_checkpoint=loss, halved_at_checkpoint=torch.zeros_like(reached),
        ).keep(~siblings_of(groups, reached))
        halving_points, last_checkpoint = set(checkpoints(self.steps)), 0
        for iteration in range(1, self.steps + 1):
            if len(search.index) == 0:
                break
            self._step(search, eps, first=iteration == 1)
            gradient, loss, reached = self._evaluate(model, search.current, search.y, search.target)
            search.increases = search.increases + (loss > search.loss)
            search.loss, search.gradient = loss, gradient
            improved = loss > search.best_loss
            search.best_x = torch.where(per_sample(improved, x), search.current, search.best_x)
            search.best_gradient = torch.where(per_sample(improved, x), gradient, search.best_gradient)
            search.best_loss = torch.where(improved, loss, search.best_loss)
            result.best_loss[search.index] = search.best_loss
            if reached.any():
                done = search.index[reached]
                result.x_adv[done] = search.current[reached]
                result.success[done] = True
                finished = siblings_of(search.group, reached)
                result.x_adv[search.index[finished & ~reached]] = search.best_x[finished & ~reached]
                search = search.keep(~finished)
            if iteration in halving_points:
                self._checkpoint(search, period=iteration - last_checkpoint, x=x)
                last_checkpoint = iteration
        result.x_adv[search.index] = search.best_x
        result.x_adv = result.x_adv.detach()
        return result

    @staticmethod
    def _step(search: _Search, eps: float, first: bool) -> None:
        """One projected signed-gradient step, blended with the previous move (none for the first)."""
        current, step = search.current, per_sample(search.step, search.current)
        proposal = project_linf(current + step * search.gradient.sign(), search.x, eps)
        if not first:
            blended = current + MOMENTUM * (proposal - current) + (1 - MOMENTUM) * (current - search.previous)
            proposal = project_linf(blended, search.x, eps)
        search.previous, search.current = current, proposal.detach()

    def _checkpoint(self, search: _Search, period: int, x: torch.Tensor) -> None:
        """Halve the step of the samples whose search stalled, and restart them from their best point.

        Stalled: the loss rose in fewer than rho * period of the steps since the last checkpoint,
        or the step was not halved at the last checkpoint and the best loss has not improved since.
        """
        oscillating = search.increases < self.rho * period
        stuck = ~search.halved_at_checkpoint & (search.best_loss <= search.best_loss_at_checkpoint)
        halve = oscillating | stuck
        restart = per_sample(halve, x)
        search.step = torch.where(halve, search.step / 2, search.step)
        search.current = torch.where(restart, search.best_x, search.current)
        search.previous = torch.where(restart, search.best_x, search.previous)  # no momentum out of a restart
        search.gradient = torch.where(restart, search.best_gradient, search.gradient)
        search.loss = torch.where(halve, search.best_loss, search.loss)
        search.increases = torch.zeros_like(search.increases)
        search.best_loss_at_checkpoint = search.best_loss
        search.halved_at_checkpoint = halve
