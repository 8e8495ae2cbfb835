"""Pieces shared by the built-in gradient attacks: their options, the goal they pursue (untargeted
or targeted), step sizes, signed-gradient iterations, restarts, and the budget rule of
minimum-norm attacks."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from robustbench_lite.attack_utils import LossFunction, cross_entropy, loss_gradient, per_sample, project_l2, project_linf
from robustbench_lite.errors import UsageError
from robustbench_lite.interfaces import Attack, AttackWarning
from robustbench_lite.options import MAX_EOT, Option

# Declared once so that every attack spells, bounds and documents them the same way.
TARGET_OPTION = Option("target", int, None, "class index to push every input towards (targeted mode)", minimum=0)
EOT_OPTION = Option(
    "eot", int, 1, "gradient samples averaged per step (expectation over transformation, for random models)",
    minimum=1, maximum=MAX_EOT,
)
TARGET_RANK_OPTION = Option(
    "target_rank", int, None,
    "targeted mode: push each input towards its k-th highest-scoring wrong class (1 = the likeliest)", minimum=1,
)
TARGET_RANKS_OPTION = Option(
    "target_ranks", int, None,
    "targeted mode against each of the k highest-scoring wrong classes at once (one batch, as AutoAttack's "
    "APGD-T/FAB-T with k targets): a point is broken if any target is reached", minimum=1,
)
REL_STEP_SIZE_OPTION = Option(
    "rel_step_size", float, None, "step size as a fraction of eps (default 2.5/steps, Madry's rule)", minimum=0.0,
)

# Madry's rule: the iterates may travel 2.5 eps in all, enough to reach the ball's surface from
# any start and still move along it.
DEFAULT_TRAVEL = 2.5


@dataclass(frozen=True)
class Goal:
    """What an attack pursues for every sample: leave the true class, or reach the target class.

    ``labels`` are the labels whose loss the attack follows: the true labels, or the target for
    every sample. ``direction`` is +1 to ascend that loss (untargeted), -1 to descend it (targeted).
    """

    labels: torch.Tensor
    targeted: bool

    @classmethod
    def of(cls, y: torch.Tensor, target: int | None) -> Goal:
        if target is None:
            return cls(y, targeted=False)
        return cls(torch.full_like(y, target), targeted=True)

    @property
    def direction(self) -> float:
        return -1.0 if self.targeted else 1.0

    def reached(self, logits: torch.Tensor) -> torch.Tensor:
        """Per sample: is the prediction the target (targeted), or anything but the true label?"""
        predicted = logits.argmax(dim=1)
        return predicted == self.labels if self.targeted else predicted != self.labels

    def score(self, logits: torch.Tensor) -> torch.Tensor:
        """Per-sample progress towards the goal, higher is better: the followed loss, signed by ``direction``."""
        return self.direction * cross_entropy(logits, self.labels)


def per_input_targets(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: int | None, target_rank: int | None, attack: str
) -> torch.Tensor | None:
    """Per input the class a targeted attack heads for (None: untargeted): ``target`` for every input,
    or each input's ``target_rank``-th highest-scoring wrong class on its clean input, as AutoAttack's
    APGD-T and FAB-T choose theirs."""
    if target is not None and target_rank is not None:
        raise UsageError(f"{attack}: set target or target_rank, not both")
    if target is not None:
        return torch.full_like(y, target)
    if target_rank is None:
        return None
    return likeliest_wrong_classes(model, x, y, target_rank, f"{attack}: target_rank")[:, -1]


def likeliest_wrong_classes(model: nn.Module, x: torch.Tensor, y: torch.Tensor, count: int, what: str) -> torch.Tensor:
    """Per input its ``count`` highest-scoring wrong classes on the clean input, likeliest first
    (shape N x count); a model with too few classes is refused, naming ``what`` asked for them."""
    with torch.no_grad():
        logits = model(x)
    if count >= logits.shape[1]:
        raise UsageError(f"{what} {count} needs more than {logits.shape[1]} classes")
    # Wrong classes from the highest-scoring down: the true class is ranked last.
    return logits.scatter(1, y[:, None], -torch.inf).argsort(dim=1, descending=True)[:, :count]


def check_targeting(attack: Attack) -> None:
    """Refuse more than one of the targeting options ``target``, ``target_rank``, ``target_ranks``."""
    chosen = [name for name in ("target", "target_rank", "target_ranks") if getattr(attack, name, None) is not None]
    if len(chosen) > 1:
        raise UsageError(f"{attack.name}: set one of {', '.join(chosen)}, not several")


@dataclass(frozen=True)
class TargetCopies:
    """One copy of each input per target, rank-major: copy ``j * n + i`` is input i heading for its
    (j+1)-th likeliest wrong class. ``rows`` maps copies to inputs; copies of one input share its
    random stream, so every target starts from the same random point, where targets attacked one
    after the other (``target_rank``, and the original AutoAttack, which seeds once before its loop
    over targets) draw a new start for each: two random starts of the same search, each checked
    against the original (tests/test_autoattack_reference.py). Copies of one input form a group:
    once one copy reaches its goal the input is broken, so its siblings can stop."""

    rows: torch.Tensor
    targets: torch.Tensor
    ranks: int

    @classmethod
    def of(cls, model: nn.Module, x: torch.Tensor, y: torch.Tensor, ranks: int) -> TargetCopies:
        ranked = likeliest_wrong_classes(model, x, y, ranks, "target_ranks")
        rows = torch.arange(len(x), device=x.device).repeat(ranks)
        return cls(rows, ranked.t().reshape(-1), ranks)

    def per_input(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` of the copies, shaped (ranks, inputs, ...)."""
        return values.view(self.ranks, -1, *values.shape[1:])

    def pick(self, values: torch.Tensor, rank_per_input: torch.Tensor) -> torch.Tensor:
        """Per input, the value of its copy at rank index ``rank_per_input``."""
        per_input = self.per_input(values)
        return per_input[rank_per_input, torch.arange(per_input.shape[1], device=values.device)]


def siblings_of(groups: torch.Tensor | None, done: torch.Tensor) -> torch.Tensor:
    """The rows whose group (``groups``; None: each row its own) has a row ``done`` (a mask over the same rows)."""
    return done if groups is None else torch.isin(groups, groups[done])


# Settings torchattacks' counterparts do not have, at the value that means "off": an attack with
# another value has no counterpart rather than a wrong one.
NOT_IN_TORCHATTACKS = {"target": None, "target_rank": None, "target_ranks": None, "eot": 1, "restarts": 1}


def torchattacks_reference(attack: Attack, build: Callable[[Any], Any]) -> Any | None:
    """``build(torchattacks)``, the counterpart of ``attack`` (:meth:`Attack.reference`), or None where
    torchattacks is not installed or lacks one of the attack's settings."""
    if any(attack.settings.get(name, off) != off for name, off in NOT_IN_TORCHATTACKS.items()):
        return None
    try:
        import torchattacks  # here: a test dependency, and it imports scipy, which costs seconds
    except ImportError:
        return None
    return build(torchattacks)


def step_size(attack: Attack, eps: float) -> float:
    """The absolute step size of ``attack`` (with options ``rel_step_size`` and ``steps``):
    ``rel_step_size`` times eps, or by default DEFAULT_TRAVEL * eps / steps.

    A set step whose steps together cannot travel eps warns (an :class:`AttackWarning`, which flags
    the row): such an attack never reaches the edge of the ball, so it under-reports its strength.
    """
    rel_step_size, steps = attack.rel_step_size, attack.steps
    if rel_step_size is None:
        return eps * DEFAULT_TRAVEL / steps
    if rel_step_size * steps < 1:
        warnings.warn(AttackWarning(
            f"{attack.label}: {steps} step(s) of {rel_step_size:g} eps travel {rel_step_size * steps:g} eps at most, "
            "short of the ball's edge: this attack cannot use its whole budget (leave rel_step_size unset for "
            f"Madry's rule, {DEFAULT_TRAVEL:g}/steps)"), stacklevel=3)
    return eps * rel_step_size


def signed_gradient_steps(
    model: nn.Module,
    x: torch.Tensor,
    x_start: torch.Tensor,
    goal: Goal,
    eps: float,
    step: float,
    steps: int,
    samples: int,
    loss: LossFunction = cross_entropy,
) -> torch.Tensor:
    """``steps`` l-inf steepest steps of size ``step`` from ``x_start`` towards ``goal`` on ``loss``, each
    projected back onto the eps-ball around ``x`` and [0, 1]: the iteration of BIM and PGD."""
    x_adv = x_start
    for _ in range(steps):
        gradient, _ = loss_gradient(model, x_adv, goal.labels, loss, samples=samples)
        x_adv = project_linf(x_adv + goal.direction * step * gradient.sign(), x, eps)
    return x_adv.detach()


def best_of_restarts(
    model: nn.Module, x: torch.Tensor, goal: Goal, restarts: int, run: Callable[[], torch.Tensor]
) -> torch.Tensor:
    """Call ``run`` ``restarts`` times; each sample keeps its most successful example.

    That is one that reaches the goal if any run found one, else the one with the best score.
    """
    if restarts == 1:  # nothing to choose between: skip the extra forward pass
        return run()
    best = x.clone()
    best_score = torch.full((len(x),), -torch.inf, device=x.device)
    best_reached = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for _ in range(restarts):
        x_adv = run()
        with torch.no_grad():
            logits = model(x_adv)
            score = goal.score(logits)
            reached = goal.reached(logits)
        better = (reached & ~best_reached) | ((reached == best_reached) & (score > best_score))
        best[better] = x_adv[better]
        best_score = torch.where(better, score, best_score)
        best_reached |= reached
    return best


def fit_to_budget(
    model: nn.Module, x: torch.Tensor, x_found: torch.Tensor, goal: Goal, eps: float, norm: str = "l2"
) -> torch.Tensor:
    """The budget rule of minimum-norm attacks (C&W, DeepFool, FAB) evaluated at a budget eps.

    As foolbox evaluates its minimisation attacks at a budget (``clip_perturbation``, then the
    criterion on the clipped input): each example found is projected onto the eps-ball of ``norm``
    and kept where the projection still reaches the goal; elsewhere the clean ``x`` is returned. An
    example found within eps is its own projection, so every in-budget success is kept.
    """
    x_projected = project_l2(x_found, x, eps) if norm == "l2" else project_linf(x_found, x, eps)
    with torch.no_grad():
        reached = goal.reached(model(x_projected))
    return torch.where(per_sample(reached, x), x_projected, x).detach()
