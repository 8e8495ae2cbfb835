"""AutoAttack (Croce & Hein, 2020): a fixed ensemble of diverse attacks, per-sample worst case.

``version`` picks the ensemble, as the original package defines its versions:

* ``standard`` (the default, what RobustBench ranks by): APGD-CE (100 steps, no restarts), APGD-T
  (targeted DLR on each input's 9 likeliest wrong classes), FAB-T (the same 9 targets), Square
  (5,000 queries);
* ``plus``: APGD-CE and APGD-DLR with 5 restarts, FAB with 5 restarts, Square, then APGD-T and FAB-T;
* ``rand``, for randomized defenses: APGD-CE and APGD-DLR averaging 20 gradient samples per step (EOT);
* ``fast``: this project's cheaper ensemble, not AutoAttack: APGD-CE, APGD-T on 3 targets, PGD on the
  C&W margin (``cw-linf``) in place of FAB-T, Square with 1,000 queries.

On a GPU, APGD-T and FAB-T attack all their targets in one batch (``target_ranks``: one copy of
each input per target, a point's copies stopping together once one breaks it) where the original
loops over the targets in Python; on the CPU the loop measured faster, so it stays there
(``batch_targets`` overrides). Either way only the points earlier members left robust are attacked.
AutoAttack's masking check is kept: Square breaking points the white-box members left robust
raises an :class:`~robustbench_lite.interfaces.AttackWarning`, which flags the row.

The version is always part of the label (``aa[version=standard]``), so no result reads as
AutoAttack's without saying which one ran.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from robustbench_lite.attack_utils import subset_streams
from robustbench_lite.hookspecs import Register, hookimpl
from robustbench_lite.interfaces import BLACK_BOX_FAMILIES, WHITE_BOX_FAMILIES, Attack, AttackWarning
from robustbench_lite.options import MAX_QUERIES, MAX_STEPS, Option
from robustbench_lite.registry import default_registry

from ._common import EOT_OPTION, torchattacks_reference

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
    inputs. Targeted members head for each input's k likeliest wrong classes on its clean input
    (all of them where there are fewer), on the inputs still robust: one target after the other, or
    all in one batch (``batch_targets``, by default on a GPU only). Members are looked up in the
    registry like any plugin.
    """

    name = "aa"
    family = "iterative"
    description = "AutoAttack: APGD-CE, APGD-T, FAB-T, Square (version=standard); plus, rand, or this project's fast"
    options = (
        Option("version", str, "standard",
               "standard, plus, rand: AutoAttack's versions; fast: APGD-CE, APGD-T (3 targets), C&W-inf, Square "
               "(1,000 queries), not AutoAttack", choices=("standard", "plus", "rand", "fast"), labelled=True),
        Option("targets", int, None, "target classes of APGD-T and FAB-T (default 9; 3 in fast)", minimum=1),
        Option("batch_targets", bool, None,
               "APGD-T and FAB-T attack all targets in one batch instead of one after the other (default: on a GPU "
               "only; on the CPU the larger batch measured slower)"),
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
        white_box: list[str] = []  # the white-box members run so far, by name
        batched = self.batch_targets if self.batch_targets is not None else x.device.type == "cuda"
        for member in self.members(clean_logits.shape[1], batched):
            index = robust.nonzero().squeeze(1)
            if len(index) == 0:
                break
            with subset_streams(index):
                candidates = member.perturb(model, x[index], y[index], eps)
            with torch.no_grad():
                fooled = model(candidates).argmax(dim=1) != y[index]
            x_adv[index[fooled]] = candidates[fooled]
            robust[index[fooled]] = False
            if member.family in BLACK_BOX_FAMILIES and white_box and fooled.any():
                self._masking_warning(member, white_box, int(fooled.sum()))
            elif member.family in WHITE_BOX_FAMILIES and member.name not in white_box:
                white_box.append(member.name)
        return x_adv

    def reference(self, model: nn.Module, eps: float, num_classes: int) -> Any | None:
        """torchattacks' AutoAttack, at the original's standard settings only (it has no other version
        that runs the same members with the same budgets)."""
        if (self.version, self.steps, self.queries, self.targets) != ("standard", 100, None, None):
            return None
        return torchattacks_reference(self, lambda ta: ta.AutoAttack(
            model, norm="Linf", eps=eps, version="standard", n_classes=num_classes, seed=0))

    def _masking_warning(self, black_box: Attack, white_box: list[str], points: int) -> None:
        """AutoAttack's own check: a query-only attack finding what gradient attacks missed suggests masked gradients."""
        names = ", ".join(white_box[:-1]) + f" and {white_box[-1]}" if len(white_box) > 1 else white_box[0]
        warnings.warn(AttackWarning(
            f"{self.label}: {'Square' if black_box.name == 'square' else black_box.label} broke points that {names} "
            "left robust, a sign of gradient masking: the white-box attacks may be failing", points=points),
            stacklevel=2)

    def members(self, num_classes: int, batch_targets: bool = False) -> list[Attack]:
        """The attacks this version runs, in order, for a model with ``num_classes`` classes; the
        targeted ones once per target, or once for all targets (``batch_targets``)."""
        registry = default_registry()

        def create(name: str, **options: object) -> Attack:
            return registry.create("attacks", name, **options)

        steps, eot = self.steps, self.eot
        if self.version == "rand":
            eot = max(eot, RAND_EOT)
            return [create("apgd-ce", steps=steps, eot=eot), create("apgd-dlr", steps=steps, eot=eot)]
        ranks = min(self.targets or TARGETS[self.version], num_classes - 1)
        if batch_targets:  # k copies of each point in one batch: see TargetCopies
            apgd_t = [create("apgd-dlr", steps=steps, eot=eot, target_ranks=ranks)]
            fab_t = [create("fab", steps=steps, target_ranks=ranks)]
        else:
            apgd_t = [create("apgd-dlr", steps=steps, eot=eot, target_rank=rank) for rank in range(1, ranks + 1)]
            fab_t = [create("fab", steps=steps, target_rank=rank) for rank in range(1, ranks + 1)]
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
