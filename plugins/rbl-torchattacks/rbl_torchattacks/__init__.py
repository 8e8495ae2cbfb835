"""rbl-torchattacks: torchattacks' attacks as robustbench_lite attacks named ``ta-<name>``.

    rbl run --attacks 'fgsm,ta-pgd,ta-square[n_queries=1000]'

The adapters are generated from the table in :mod:`rbl_torchattacks.adapters`.
"""

from __future__ import annotations

from robustbench_lite import hookimpl
from robustbench_lite.hookspecs import Register

from .adapters import ADAPTATIONS, ADAPTERS, SKIPPED, Adaptation, TorchattacksAttack

RBL_PLUGIN_API = 1

__all__ = ["ADAPTATIONS", "ADAPTERS", "SKIPPED", "Adaptation", "TorchattacksAttack"]


@hookimpl
def register_attacks(register: Register) -> None:
    for attack in ADAPTERS:
        register(attack)
