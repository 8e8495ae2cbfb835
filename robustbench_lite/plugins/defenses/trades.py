"""TRADES (Zhang et al., 2019, "Theoretically Principled Trade-off between Robustness and Accuracy").

The clean cross-entropy plus beta times the KL divergence between the model's predictions on a
clean input and on a nearby input chosen to maximise that divergence. The l-inf recipe of the
authors' reference code (``trades_loss`` in github.com/yaodongyu/TRADES, trades.py), with two
choices of ours: the step size defaults to Madry's rule 2.5 * eps / steps (eps / 4 for the
default 10 steps; the reference's CIFAR-10 setting is 0.007 for eps = 0.031, about eps / 4.4),
and the clean logits are computed once per batch where the reference runs f(x) twice (the same
values for a model without randomness).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robustbench_lite.attack_utils import loss_gradient, project_linf
from robustbench_lite.hookspecs import hookimpl
from robustbench_lite.interfaces import Defense
from robustbench_lite.options import MAX_STEPS, Option

from ._common import TRAIN_EPS_OPTION, OwnTrainingEps

START_NOISE = 0.001  # standard deviation of the Gaussian start around x, as in the reference code
DEFAULT_TRAVEL = 2.5  # default step = DEFAULT_TRAVEL * eps / steps (Madry's rule, as at-pgd)


def kl_to(logits: torch.Tensor, target_probabilities: torch.Tensor) -> torch.Tensor:
    """Per-sample KL(target || softmax(logits)), the divergence the inner maximisation ascends."""
    return F.kl_div(F.log_softmax(logits, dim=1), target_probabilities, reduction="none").sum(dim=1)


class TRADES(OwnTrainingEps, Defense):
    """CE(f(x), y) + beta * KL(softmax f(x) || softmax f(x_adv)), the KL averaged over the batch ("batchmean").

    x_adv maximises the KL term: from x + 0.001 * N(0, I) (not projected, as in the reference),
    ``steps`` signed-gradient steps of size rel_step_size * eps (default 2.5 * eps / steps), each
    projected onto the l-inf eps-ball around x and [0, 1]. It is crafted in eval mode against the
    (fixed) clean prediction, and only input gradients are taken, so crafting leaves no gradient on
    the parameters. In the returned loss gradients flow through both f(x) and f(x_adv), as in the
    reference. beta = 0 is standard training and skips the inner maximisation.
    """

    name = "trades"
    description = "TRADES: CE(f(x), y) + beta * KL(f(x) || f(x_adv)), x_adv maximising the KL (Zhang et al. 2019)"
    options = (
        Option("beta", float, 6.0, "weight of the KL (robustness) term; 0 is standard training", minimum=0.0),
        Option("steps", int, 10, "signed-gradient steps of the inner maximisation", minimum=1, maximum=MAX_STEPS),
        Option(
            "rel_step_size", float, None, "step as a fraction of eps (default 2.5/steps: eps/4 for 10 steps)",
            minimum=0.0,
        ),
        TRAIN_EPS_OPTION,
    )

    def step_size(self, eps: float) -> float:
        return eps * (self.rel_step_size if self.rel_step_size is not None else DEFAULT_TRAVEL / self.steps)

    def adversarial(self, model: nn.Module, x: torch.Tensor, eps: float) -> torch.Tensor:
        """The inner maximisation: x_adv in the eps-ball and [0, 1] maximising KL(f(x) || f(x_adv)).

        Runs in eval mode (batch-norm statistics untouched) and restores the model's mode.
        """
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                clean = F.softmax(model(x), dim=1)
            step = self.step_size(eps)
            x_adv = x.detach() + START_NOISE * torch.randn_like(x)
            for _ in range(self.steps):
                gradient, _ = loss_gradient(model, x_adv, clean, kl_to)
                x_adv = project_linf(x_adv + step * gradient.sign(), x, eps)
            return x_adv.detach()
        finally:
            model.train(was_training)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
        if self.beta == 0:  # the KL term would be weighted by zero: skip its search and forward pass
            return F.cross_entropy(model(x), y)
        x_adv = self.adversarial(model, x, eps)
        logits = model(x)
        robust = F.kl_div(F.log_softmax(model(x_adv), dim=1), F.softmax(logits, dim=1), reduction="batchmean")
        return F.cross_entropy(logits, y) + self.beta * robust


@hookimpl
def register_defenses(register):
    register(TRADES)
