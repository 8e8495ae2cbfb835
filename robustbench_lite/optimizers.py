"""Optimizers the command line can impose on every model's training (``--optimizer 'sgd[lr=0.01]'``).

Without one, each model trains with the optimizer its plugin chooses (:meth:`ModelBuilder.optimizer`).
A spec is written like a plugin spec, ``name[key=value,...]``, and validated the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from .errors import UsageError, unknown_choice
from .options import Option, PluginSpec, format_value, resolve_options

_LR = "learning rate"
OPTIMIZERS: dict[str, tuple[type[torch.optim.Optimizer], tuple[Option, ...]]] = {
    "sgd": (torch.optim.SGD, (
        Option("lr", float, 0.01, _LR, minimum=0.0),
        Option("momentum", float, 0.9, "momentum factor", minimum=0.0, maximum=1.0),
        Option("weight_decay", float, 0.0, "L2 penalty", minimum=0.0),
        Option("nesterov", bool, False, "Nesterov momentum"),
    )),
    "adam": (torch.optim.Adam, (
        Option("lr", float, 1e-3, _LR, minimum=0.0),
        Option("weight_decay", float, 0.0, "L2 penalty", minimum=0.0),
    )),
    "adamw": (torch.optim.AdamW, (
        Option("lr", float, 1e-3, _LR, minimum=0.0),
        Option("weight_decay", float, 0.01, "decoupled weight decay", minimum=0.0),
    )),
}


def canonical_optimizer(spec: str) -> str:
    """``spec`` validated and written with every setting, e.g. ``sgd[lr=0.1,momentum=0.9,...]``: the
    form that enters the weights cache key, so that equal settings written differently share weights."""
    parsed = PluginSpec.parse(spec)
    if parsed.name not in OPTIMIZERS:
        raise unknown_choice("optimizer", parsed.name, OPTIMIZERS)
    settings = resolve_options(OPTIMIZERS[parsed.name][1], parsed.options, f"optimizer {parsed.name!r}")
    if parsed.name == "sgd" and settings["nesterov"] and not settings["momentum"]:
        raise UsageError("optimizer 'sgd': nesterov=true needs momentum > 0")
    return f"{parsed.name}[{','.join(f'{key}={format_value(value)}' for key, value in settings.items())}]"


def build_optimizer(spec: str, parameters: Iterable[Any]) -> torch.optim.Optimizer:
    """The optimizer a spec (as :func:`canonical_optimizer` checks it) describes, over ``parameters``."""
    parsed = PluginSpec.parse(spec)
    cls, declared = OPTIMIZERS[parsed.name]
    return cls(parameters, **resolve_options(declared, parsed.options, f"optimizer {parsed.name!r}"))
