"""APGD-DLR and targeted APGD (APGD-T): auto-PGD on the difference of logits ratio (Croce & Hein, 2020).

Cross-entropy can be made flat by rescaling the logits (a defense that multiplies them by 1000
saturates the softmax and starves CE attacks of gradient). The DLR loss is a ratio of logit
differences: it does not change when the logits are shifted or scaled by a positive factor.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from robustbench_lite.errors import UsageError
from robustbench_lite.hookspecs import Register, hookimpl

from ._apgd import APGD

# Keeps the ratio finite when the logits it divides by are all equal.
DENOMINATOR_FLOOR = 1e-12


def _descending(logits: torch.Tensor, needed: int, loss: str) -> torch.Tensor:
    if logits.shape[1] < needed:
        raise UsageError(f"the {loss} loss needs at least {needed} classes; this model has {logits.shape[1]}")
    return logits.sort(dim=1, descending=True).values


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per sample -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3), z_pi1 >= z_pi2 >= ... the sorted logits.

    Positive exactly when the sample is misclassified.
    """
    ranked = _descending(logits, 3, "DLR")
    true = logits.gather(1, y[:, None]).squeeze(1)
    best_other = logits.scatter(1, y[:, None], -torch.inf).amax(dim=1)
    return -(true - best_other) / (ranked[:, 0] - ranked[:, 2] + DENOMINATOR_FLOOR)


def targeted_dlr_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per sample -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2), the loss of targeted APGD."""
    ranked = _descending(logits, 4, "targeted DLR")
    true = logits.gather(1, y[:, None]).squeeze(1)
    wanted = logits.gather(1, target[:, None]).squeeze(1)
    return -(true - wanted) / (ranked[:, 0] - (ranked[:, 2] + ranked[:, 3]) / 2 + DENOMINATOR_FLOOR)


class APGDDLR(APGD):
    """APGD ascending the DLR loss; targeted (``target`` or ``target_rank``), the targeted DLR loss (APGD-T)."""

    name = "apgd-dlr"
    family = "iterative"
    description = (
        "APGD with the scale-invariant DLR loss, l-inf; targeted DLR with target or target_rank set, i.e. APGD-T "
        "(Croce & Hein 2020)"
    )

    def objective(self, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        return dlr_loss(logits, y) if target is None else targeted_dlr_loss(logits, y, target)

    def reference(self, model: nn.Module, eps: float, num_classes: int) -> Any | None:
        return self.torchattacks_apgd(model, eps, "dlr")


@hookimpl
def register_attacks(register: Register) -> None:
    register(APGDDLR)
