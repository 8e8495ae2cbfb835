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
def predict(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Predicted labels for ``x``."""
    if not len(x):
        return torch.zeros(0, dtype=torch.long, device=x.device)
    return torch.cat([_logits(model, x[start : start + batch_size]).argmax(dim=1) for start in range(0, len(x), batch_size)])


def adversarial_predictions(
    model: nn.Module,
    attack: Attack,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    clean_predictions: torch.Tensor,
    batch_size: int,
    advance: Callable[[int], None] = lambda samples: None,
) -> torch.Tensor:
    """Predicted labels after ``attack`` at ``eps``; misclassified points keep their clean prediction."""
    predictions = clean_predictions.clone()
    candidates = (clean_predictions == y).nonzero().flatten()
    for start in range(0, len(candidates), batch_size):
        index = candidates[start : start + batch_size]
        x_batch, y_batch = x[index], y[index]
        x_adv = attack.perturb(model, x_batch, y_batch, eps)
        check_bounds(x_adv, x_batch, eps, attack.norm)
        with torch.no_grad():
            predictions[index] = _logits(model, x_adv).argmax(dim=1)
        advance(len(index))
    return predictions
