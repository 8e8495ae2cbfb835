"""torchattacks' attacks as rbl attacks, generated from one table.

A row of ADAPTATIONS names a torchattacks class. Its rbl attack is ``ta-<lowercase class name>``
(``-l2`` appended for the L2 variant of a multi-norm attack) and its options are the keyword
parameters of the class's constructor with their defaults, read with inspect.signature, except
those the adapter sets itself (SET_BY_ADAPTER): the budget comes from ``perturb``'s eps, the
number of classes from the model, and progress printing is off. Attacks that support it get a
``target`` option (targeted mode through ``set_mode_targeted_by_function``).

Minimum-norm attacks (CW, DeepFool) have no budget: the adapter enforces it by returning x for
every sample they moved farther than eps. Attacks of other threat models are left out (SKIPPED).
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from robustbench_lite import Attack, Option
from robustbench_lite.attack_utils import frozen, perturbation_norm

# Constructor parameters the adapter sets rather than exposes; PIFGSM/PIFGSMPP call eps max_epsilon.
BUDGET_PARAMETERS = ("eps", "max_epsilon")
SET_BY_ADAPTER = frozenset({"model", "norm", "n_classes", "verbose", *BUDGET_PARAMETERS})
OPTION_TYPES = (bool, int, float, str)  # bool first: it is a subclass of int


@dataclass(frozen=True)
class Adaptation:
    """How one torchattacks class becomes an rbl attack."""

    attack: str  # the torchattacks class name
    norm: str = "linf"  # the ball the attack stays in: "linf" or "l2"
    multi_norm: bool = False  # the class takes norm="Linf"/"L2"; the adapter passes the row's norm
    targeted: bool = False  # the class supports targeted mode
    minimum_norm: bool = False  # no budget parameter: the adapter enforces eps
    rgb_only: bool = False  # the class only works on 3-channel images
    family: str = "iterative"  # robustbench_lite.interfaces.ATTACK_FAMILIES, for the sanity checks
    defaults: tuple[tuple[str, Any], ...] = ()  # introspected defaults replaced (and so the option's type)

    @property
    def name(self) -> str:
        return f"ta-{self.attack.lower()}{'-l2' if self.multi_norm and self.norm == 'l2' else ''}"


ADAPTATIONS = (
    Adaptation("FGSM", targeted=True, family="single-step"),
    Adaptation("BIM", targeted=True),
    Adaptation("RFGSM", targeted=True, family="single-step"),
    Adaptation("PGD", targeted=True),
    Adaptation("EOTPGD", targeted=True),
    Adaptation("FFGSM", targeted=True, family="single-step"),
    Adaptation("TPGD"),
    Adaptation("MIFGSM", targeted=True),
    Adaptation("UPGD", targeted=True),
    Adaptation("DIFGSM", targeted=True),
    Adaptation("TIFGSM", targeted=True, rgb_only=True),
    Adaptation("Jitter", targeted=True),
    Adaptation("NIFGSM", targeted=True),
    Adaptation("SINIFGSM", targeted=True),
    Adaptation("VMIFGSM", targeted=True),
    Adaptation("VNIFGSM", targeted=True),
    Adaptation("PGDRS", targeted=True),
    Adaptation("SPSA", targeted=True, family="score-based"),
    Adaptation("PIFGSM", rgb_only=True),
    Adaptation("PIFGSMPP", targeted=True, rgb_only=True),
    Adaptation("PGDL2", norm="l2", targeted=True),
    Adaptation("PGDRSL2", norm="l2", targeted=True),
    *(
        Adaptation(attack, norm=norm, multi_norm=True, targeted=targeted, family=family)
        for attack, targeted, family in (
            ("APGD", False, "iterative"), ("APGDT", False, "iterative"), ("FAB", True, "minimum-norm")
        )
        for norm in ("linf", "l2")
    ),
    # l-inf only: torchattacks' L2 Square (alone and inside AutoAttack) fails on images smaller than 5x5.
    Adaptation("Square", multi_norm=True, targeted=True, family="score-based"),
    # seed=None would seed from the clock; 0 keeps every cell reproducible, like the rest of rbl.
    Adaptation("AutoAttack", multi_norm=True, defaults=(("seed", 0),)),
    # c and kappa are real numbers with integer defaults.
    Adaptation("CW", norm="l2", targeted=True, minimum_norm=True, defaults=(("c", 1.0), ("kappa", 0.0)), family="minimum-norm"),
    Adaptation("DeepFool", norm="l2", minimum_norm=True, family="minimum-norm"),
)

# torchattacks classes left out, and why.
SKIPPED = {
    "VANILA": "returns its input: not an attack",
    "GN": "Gaussian noise of a fixed std, not bounded by eps",
    "JSMA": "L0 threat model", "SparseFool": "L0 threat model", "OnePixel": "L0 threat model", "Pixle": "L0 threat model",
    "EADL1": "L1 threat model", "EADEN": "elastic-net (L1 + L2) threat model",
    "MultiAttack": "a wrapper of other torchattacks instances",
    "LGV": "a wrapper that trains surrogate models from a data loader",
}


def torchattacks_class(adaptation: Adaptation) -> type:
    import torchattacks  # here, not at the top: it imports scipy, which would cost every `rbl` start seconds

    return getattr(torchattacks, adaptation.attack)


@functools.cache
def constructor_parameters(adaptation: Adaptation) -> Mapping[str, inspect.Parameter]:
    return inspect.signature(torchattacks_class(adaptation)).parameters


def _parameter_help(cls: type, parameter: str) -> str:
    """The parameter's description in the class docstring ('alpha (float): step size. (Default: 2/255)')."""
    line = re.search(
        rf"^\s*{re.escape(parameter)}\s*\(\w+\)\s*:\s*(.*?)\s*(\(Default:.*)?$", cls.__doc__ or "", re.MULTILINE
    )
    return line.group(1) if line and line.group(1) else f"argument {parameter} of torchattacks.{cls.__name__}"


@functools.cache
def adapter_options(adaptation: Adaptation) -> tuple[Option, ...]:
    """The rbl options of an adapted attack: its constructor's keyword parameters, then ``target``."""
    cls = torchattacks_class(adaptation)
    replaced = dict(adaptation.defaults)
    options = []
    for name, parameter in constructor_parameters(adaptation).items():
        if name in SET_BY_ADAPTER:
            continue
        default = replaced.get(name, parameter.default)
        option_type = next((kind for kind in OPTION_TYPES if isinstance(default, kind)), None)
        if option_type is None:
            raise TypeError(f"{adaptation.name}: parameter {name}={default!r} is not a bool, int, float or str; "
                            "give it a default in its Adaptation")
        options.append(Option(name, option_type, default, _parameter_help(cls, name)))
    if adaptation.targeted:
        options.append(Option("target", int, None, "class index to push every input towards (targeted mode)", minimum=0))
    return tuple(options)


class _IntrospectedOptions:
    """The ``options`` of an adapter class, read from torchattacks the first time they are needed.

    Registration needs only names and descriptions, so `rbl` imports torchattacks only when a
    ta- attack is listed or used.
    """

    def __get__(self, instance: object, owner: type[TorchattacksAttack]) -> tuple[Option, ...]:
        return adapter_options(owner.adaptation)


def _num_classes(model: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad():
        return model(x[:1]).shape[1]


def within_budget(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """x_adv where its perturbation is at most eps in ``norm``, else x."""
    outside = perturbation_norm(x_adv - x, norm) > eps
    return torch.where(outside.view(-1, *([1] * (x.dim() - 1))), x, x_adv)


class TorchattacksAttack(Attack):
    """A torchattacks attack behind the rbl Attack contract; a new torchattacks instance per call."""

    adaptation: ClassVar[Adaptation]
    options = _IntrospectedOptions()

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
        if eps == 0:  # the ball is {x}; several torchattacks attacks would divide by eps
            return x.detach().clone()
        if self.adaptation.rgb_only and (x.dim() != 4 or x.shape[1] != 3):
            raise ValueError(f"{self.name} works on RGB images (N, 3, H, W) only; got inputs of shape {tuple(x.shape)}")
        with frozen(model):
            attack = torchattacks_class(self.adaptation)(model, **self._constructor_arguments(model, x, eps))
            target = self.settings.get("target")
            if target is not None:
                classes = _num_classes(model, x)
                if target >= classes:
                    raise ValueError(f"{self.label}: target class {target} does not exist; the model has {classes} classes")
                attack.set_mode_targeted_by_function(lambda inputs, labels: torch.full_like(labels, target), quiet=True)
            x_adv = attack(x, y).detach()
        if self.adaptation.minimum_norm:
            x_adv = within_budget(x_adv, x, eps, self.norm)
        return x_adv

    def _constructor_arguments(self, model: nn.Module, x: torch.Tensor, eps: float) -> dict[str, Any]:
        parameters = constructor_parameters(self.adaptation)
        arguments = {key: value for key, value in self.settings.items() if key != "target"}
        arguments.update({name: eps for name in BUDGET_PARAMETERS if name in parameters})
        if self.adaptation.multi_norm:
            arguments["norm"] = {"linf": "Linf", "l2": "L2"}[self.norm]
        if "n_classes" in parameters:
            arguments["n_classes"] = _num_classes(model, x)
        if "verbose" in parameters:
            arguments["verbose"] = False
        return arguments


def adapter(adaptation: Adaptation) -> type[TorchattacksAttack]:
    """The rbl attack class for one row of the table."""
    notes = [f"{adaptation.norm} ball"]
    if adaptation.minimum_norm:
        notes.append("minimum-norm: samples it moves beyond eps are returned unperturbed")
    if adaptation.rgb_only:
        notes.append("RGB images only")
    return type(
        "Ta" + re.sub(r"\W", "", adaptation.name.removeprefix("ta-").title()),
        (TorchattacksAttack,),
        {
            "name": adaptation.name,
            "description": f"torchattacks {adaptation.attack} ({'; '.join(notes)})",
            "norm": adaptation.norm,
            "family": adaptation.family,
            "adaptation": adaptation,
            "__module__": __name__,
        },
    )


ADAPTERS = tuple(adapter(adaptation) for adaptation in ADAPTATIONS)
