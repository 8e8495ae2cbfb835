"""C&W-l-inf: PGD on Carlini & Wagner's (2017) margin loss instead of the cross-entropy.

The margin max_{i != y} z_i - z_y works on the logits directly, so it keeps its gradient where a
saturated softmax flattens the cross-entropy; evaluations of TRADES and MART report it as "CW-inf",
and it stands in for FAB-T / C&W in the ``aa`` ensemble.
"""

from __future__ import annotations

from torch import nn

from robustbench_lite.attack_utils import margin_loss
from robustbench_lite.hookspecs import Register, hookimpl

from .pgd import PGD


class CarliniWagnerLinf(PGD):
    """``pgd`` (random start, signed steps, projection onto the eps-ball and [0, 1], restarts) on C&W's margin.

    Untargeted it raises the best wrong logit over the true one; targeted it descends the margin
    of the target, i.e. raises the target's logit over every other.
    """

    name = "cw-linf"
    description = "PGD on the C&W margin loss (CW-inf), l-inf, with random start and restarts (Carlini & Wagner 2017)"
    objective = staticmethod(margin_loss)

    def reference(self, model: nn.Module, eps: float, num_classes: int) -> None:
        return None  # torchattacks has no PGD on the C&W margin; pgd's counterpart would be another attack


@hookimpl
def register_attacks(register: Register) -> None:
    register(CarliniWagnerLinf)
