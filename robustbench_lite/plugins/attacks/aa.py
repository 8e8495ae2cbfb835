"""AutoAttack (Croce & Hein, 2020): a fixed ensemble of diverse attacks, per-sample worst case.

``version`` picks the ensemble, as the original package defines its versions:

* ``standard`` (the default, what RobustBench ranks by): APGD-CE (100 steps, no restarts), APGD-T
  (targeted DLR on each input's 9 likeliest wrong classes), FAB-T (the same 9 targets), Square
  (5,000 queries);
* ``plus``: APGD-CE and APGD-DLR with 5 restarts, FAB with 5 restarts, Square, then APGD-T and FAB-T;
* ``rand``, for randomized defenses: APGD-CE and APGD-DLR averaging 20 gradient samples per step (EOT);
* ``fast``: this project's cheaper ensemble, not AutoAttack: APGD-CE, APGD-T on 3 targets, PGD on the
  C&W margin (``cw-linf``) in place of FAB-T, Square with 1,000 queries.

The version is always part of the label (``aa[version=standard]``), so no result reads as
AutoAttack's without saying which one ran.
"""

from __future__ import annotations

import torch
from torch import nn

from robustbench_lite.attack_utils import subset_streams
from robustbench_lite.hookspecs import Register, hookimpl
from robustbench_lite.interfaces import Attack
from robustbench_lite.options import MAX_QUERIES, MAX_STEPS, Option
from robustbench_lite.registry import default_registry

from ._common import EOT_OPTION

# Targeted DLR divides by z_pi1 - (z_pi3 + z_pi4) / 2: APGD-T needs four classes, untargeted DLR three.
CLASSES_NEEDED = {"standard": 4, "plus": 4, "rand": 3, "fast": 4}
TARGETS = {"standard": 9, "plus": 9, "fast": 3}  # target classes of APGD-T and FAB-T, per version
QUERIES = {"standard": 5000, "plus": 5000, "fast": 1000}  # Square's budget, per version
PLUS_RESTARTS = 5
RAND_EOT = 20


class AutoAttack(Attack):
    """AutoAttack's ensemble of the chosen ``version``, each member run on the inputs still robust.

    Each member attacks only the inputs that every earlier member left correctly classified, and
    each input keeps the first misclassified example found for it (else the clean input): the
    per-sample worst case over the members, at the price of the strongest one alone on the hard
    inputs. Targeted members run once per target rank, on the inputs still robust, each input's
    k-th likeliest wrong class on its clean input (all of them where there are fewer). Members are
    looked up in the registry like any plugin.
    """

    name = "aa"
    family = "iterative"
    description = "AutoAttack: APGD-CE, APGD-T, FAB-T, Square (version=standard); plus, rand, or this project's fast"
    options = (
        Option("version", str, "standard",
               "standard, plus, rand: AutoAttack's versions; fast: APGD-CE, APGD-T (3 targets), C&W-inf, Square "
               "(1,000 queries), not AutoAttack", choices=("standard", "plus", "rand", "fast"), labelled=True),
        Option("targets", int, None, "target classes of APGD-T and FAB-T (default 9; 3 in fast)", minimum=1),
        Option("steps", int, 100, "iterations of every APGD, FAB and C&W-inf run", minimum=1, maximum=MAX_STEPS),
        Option("queries", int, None, "Square's forward passes per input (default 5,000; 1,000 in fast)", minimum=2,
               maximum=MAX_QUERIES),
        EOT_OPTION,
    )

    def unsupported(self, input_shape: tuple[int, ...], num_classes: int) -> str | None:
        needed = CLASSES_NEEDED[self.version]
        if num_classes < needed:
            member = "APGD-T's targeted DLR loss" if needed == 4 else "the DLR loss"
            return (f"{self.label} needs at least {needed} classes ({member}); this dataset has {num_classes}: "
                    "attack with apgd-ce, fab, square or pgd instead")
        return None

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
        x_adv = x.clone()
        with torch.no_grad():
            clean_logits = model(x)
        robust = clean_logits.argmax(dim=1) == y
        for member in self.members(clean_logits.shape[1]):
            index = robust.nonzero().squeeze(1)
            if len(index) == 0:
                break
            with subset_streams(index):
                candidates = member.perturb(model, x[index], y[index], eps)
            with torch.no_grad():
                fooled = model(candidates).argmax(dim=1) != y[index]
            x_adv[index[fooled]] = candidates[fooled]
            robust[index[fooled]] = False
        return x_adv

    def members(self, num_classes: int) -> list[Attack]:
        """The attacks this version runs, in order, for a model with ``num_classes`` classes."""
        registry = default_registry()

        def create(name: str, **options: object) -> Attack:
            return registry.create("attacks", name, **options)

        steps, eot = self.steps, self.eot
        if self.version == "rand":
            eot = max(eot, RAND_EOT)
            return [create("apgd-ce", steps=steps, eot=eot), create("apgd-dlr", steps=steps, eot=eot)]
        ranks = range(1, min(self.targets or TARGETS[self.version], num_classes - 1) + 1)
        apgd_t = [create("apgd-dlr", steps=steps, eot=eot, target_rank=rank) for rank in ranks]
        fab_t = [create("fab", steps=steps, target_rank=rank) for rank in ranks]
        queries = self.queries or QUERIES[self.version]
        if self.version == "fast":
            return [create("apgd-ce", steps=steps, eot=eot), *apgd_t, create("cw-linf", steps=steps, eot=eot),
                    create("square", queries=queries)]
        square = create("square", queries=queries, rescale=False)
        if self.version == "standard":
            return [create("apgd-ce", steps=steps, eot=eot), *apgd_t, *fab_t, square]
        return [create("apgd-ce", steps=steps, eot=eot, restarts=PLUS_RESTARTS),
                create("apgd-dlr", steps=steps, eot=eot, restarts=PLUS_RESTARTS),
                create("fab", steps=steps, restarts=PLUS_RESTARTS), square, *apgd_t, *fab_t]


@hookimpl
def register_attacks(register: Register) -> None:
    register(AutoAttack)
