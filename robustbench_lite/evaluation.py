"""Per-sample evaluation of one model: clean predictions and one attack at one eps.

Following AutoAttack's protocol a point counts as robust only if it is classified correctly
both clean and attacked, so only the clean-correct points are attacked. Every adversarial
batch is checked against the attack's eps-ball and [0, 1] before it is scored.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .attack_utils import check_bounds
from .errors import RblError
from .interfaces import Attack


class NonFiniteOutputError(RblError):
    """The model produced NaN or infinite logits; such a cell is failed, never scored."""


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    logits = model(x)
    if not torch.isfinite(logits).all():
        raise NonFiniteOutputError("the model produced NaN or infinite logits")
    return logits


@torch.no_grad()
def correct_predictions(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Boolean mask of the samples the model classifies correctly."""
    return torch.cat(
        [
            _logits(model, x[start : start + batch_size]).argmax(dim=1) == y[start : start + batch_size]
            for start in range(0, len(x), batch_size)
        ]
    ) if len(x) else torch.zeros(0, dtype=torch.bool, device=x.device)


def robust_predictions(
    model: nn.Module,
    attack: Attack,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    clean_correct: torch.Tensor,
    batch_size: int,
    advance: Callable[[int], None] = lambda samples: None,
) -> torch.Tensor:
    """Boolean mask of the samples still classified correctly after ``attack`` at ``eps``."""
    robust = clean_correct.clone()
    candidates = clean_correct.nonzero().flatten()
    for start in range(0, len(candidates), batch_size):
        index = candidates[start : start + batch_size]
        x_batch, y_batch = x[index], y[index]
        x_adv = attack.perturb(model, x_batch, y_batch, eps)
        check_bounds(x_adv, x_batch, eps, attack.norm)
        with torch.no_grad():
            robust[index] = _logits(model, x_adv).argmax(dim=1) == y_batch
        advance(len(index))
    return robust
