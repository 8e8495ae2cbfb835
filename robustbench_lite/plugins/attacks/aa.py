"""An AutoAttack-style ensemble (Croce & Hein, 2020): diverse attacks, per-sample worst case."""

from __future__ import annotations

import torch
from torch import nn

from robustbench_lite.attack_utils import subset_streams
from robustbench_lite.hookspecs import Register, hookimpl
from robustbench_lite.interfaces import Attack
from robustbench_lite.options import MAX_QUERIES, MAX_STEPS, Option
from robustbench_lite.registry import default_registry

from ._common import EOT_OPTION

# Targeted DLR divides by z_pi1 - (z_pi3 + z_pi4) / 2: APGD-T needs four classes.
APGD_T_MIN_CLASSES = 4


class AutoAttack(Attack):
    """APGD-CE, then APGD-T on the k likeliest wrong classes, then PGD on the C&W margin (``cw-linf``),
    then Square (``version=standard``).

    Each member attacks only the inputs that every earlier member left correctly classified,
    and each input keeps the first misclassified example found for it (else the clean input):
    the per-sample worst case over the members, at the price of the strongest one alone on
    the hard inputs. ``version=fast`` leaves Square out. Where AutoAttack runs FAB-T, this runs
    ``cw-linf``, a C&W loss (FAB-T is not implemented here; in AutoAttack's own evaluations it rarely
    fools an input the other three left robust). APGD-T targets, for each
    input, the k highest-scoring wrong classes on its clean input (and is skipped for models
    with fewer than four classes). Members are looked up in the registry like any plugin.
    """

    name = "aa"
    family = "iterative"
    description = (
        "AutoAttack-style ensemble: APGD-CE, APGD-T (top-k targets), C&W-inf, Square; per-sample worst case"
    )
    options = (
        Option("version", str, "standard", "standard: APGD-CE, APGD-T, C&W-inf, Square; fast: without Square",
               choices=("standard", "fast")),
        Option("top_k", int, 3, "APGD-T runs once per each input's k highest-scoring wrong classes", minimum=1),
        Option("steps", int, 100, "iterations of every APGD and C&W-inf run", minimum=1, maximum=MAX_STEPS),
        Option("queries", int, 1000, "Square's forward passes per input", minimum=2, maximum=MAX_QUERIES),
        EOT_OPTION,
    )

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
        registry = default_registry()
        x_adv = x.clone()
        with torch.no_grad():
            clean_logits = model(x)
        robust = clean_logits.argmax(dim=1) == y

        def attack_robust(attack: Attack) -> None:
            """Run ``attack`` on the inputs still robust; keep what it misclassifies."""
            index = robust.nonzero().squeeze(1)
            if len(index) == 0:
                return
            with subset_streams(index):
                candidates = attack.perturb(model, x[index], y[index], eps)
            with torch.no_grad():
                fooled = model(candidates).argmax(dim=1) != y[index]
            x_adv[index[fooled]] = candidates[fooled]
            robust[index[fooled]] = False

        attack_robust(registry.create("attacks", "apgd-ce", steps=self.steps, eot=self.eot))
        classes = clean_logits.shape[1]
        if classes >= APGD_T_MIN_CLASSES:
            for rank in range(1, min(self.top_k, classes - 1) + 1):
                attack_robust(registry.create("attacks", "apgd-dlr", steps=self.steps, eot=self.eot, target_rank=rank))
        # In place of AutoAttack's FAB-T: a third white-box loss, the C&W margin, for diversity.
        attack_robust(registry.create("attacks", "cw-linf", steps=self.steps, eot=self.eot))
        if self.version == "standard":
            attack_robust(registry.create("attacks", "square", queries=self.queries))
        return x_adv


@hookimpl
def register_attacks(register: Register) -> None:
    register(AutoAttack)
