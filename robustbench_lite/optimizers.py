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

# Ranges any training could mean: beyond them (lr 1e308, momentum 1) training diverges or never
# forgets, which would surface as NaN losses long after the start.
_LR = "learning rate, in [1e-10, 10]"
_LR_RANGE = {"minimum": 1e-10, "maximum": 10.0}
_DECAY_RANGE = {"minimum": 0.0, "maximum": 1.0}
OPTIMIZERS: dict[str, tuple[type[torch.optim.Optimizer], tuple[Option, ...]]] = {
    "sgd": (torch.optim.SGD, (
        Option("lr", float, 0.01, _LR, **_LR_RANGE),
        Option("momentum", float, 0.9, "momentum factor, in [0, 0.999]", minimum=0.0, maximum=0.999),
        Option("weight_decay", float, 0.0, "L2 penalty, in [0, 1]", **_DECAY_RANGE),
        Option("nesterov", bool, False, "Nesterov momentum"),
    )),
    "adam": (torch.optim.Adam, (
        Option("lr", float, 1e-3, _LR, **_LR_RANGE),
        Option("weight_decay", float, 0.0, "L2 penalty, in [0, 1]", **_DECAY_RANGE),
    )),
    "adamw": (torch.optim.AdamW, (
        Option("lr", float, 1e-3, _LR, **_LR_RANGE),
        Option("weight_decay", float, 0.01, "decoupled weight decay, in [0, 1]", **_DECAY_RANGE),
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


def describe_optimizer(optimizer: torch.optim.Optimizer) -> str:
    """An optimizer as a spec, e.g. ``sgd[lr=0.01,momentum=0.9,weight_decay=0.0]``: what a model's own
    optimizer was, for the settings a leaderboard shows."""
    group = optimizer.param_groups[0] if optimizer.param_groups else {}
    shown = [f"{key}={format_value(group[key])}" for key in ("lr", "momentum", "betas", "weight_decay", "nesterov")
             if key in group and not isinstance(group[key], torch.Tensor)]
    return f"{type(optimizer).__name__.lower()}[{','.join(shown)}]"


def build_optimizer(spec: str, parameters: Iterable[Any]) -> torch.optim.Optimizer:
    """The optimizer a spec (as :func:`canonical_optimizer` checks it) describes, over ``parameters``."""
    parsed = PluginSpec.parse(spec)
    cls, declared = OPTIMIZERS[parsed.name]
    return cls(parameters, **resolve_options(declared, parsed.options, f"optimizer {parsed.name!r}"))
