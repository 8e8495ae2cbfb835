"""torchattacks' attacks as rbl attacks, generated from one table.

A row of ADAPTATIONS names a torchattacks class. Its rbl attack is ``ta-<lowercase class name>``
(``-l2`` appended for the L2 variant of a multi-norm attack) and its options are the keyword
parameters of the class's constructor with their defaults, read with inspect.signature, except
those the adapter sets itself (SET_BY_ADAPTER): the budget comes from ``perturb``'s eps, the
number of classes from the model, and progress printing is off. Attacks that support it get a
``target`` option (targeted mode through ``set_mode_targeted_by_function``).

Step sizes follow eps, as rbl's own attacks do: torchattacks' ``alpha`` is an absolute step tuned
for its default eps (2/255 at 8/255), so an adapter whose ``alpha`` is not set scales it with the
cell's eps (and with 10/steps for a per-step size); 2.5 * eps / steps for ``ta-pgd``, rbl's rule.
An explicit setting that cannot reach the edge of the ball warns.

Feature vectors (N, D) are given to torchattacks as (N, 1, 1, D) images, since many of its attacks
assume 4-D batches; inputs or class counts an attack cannot take are refused before any work
(``unsupported``). Minimum-norm attacks (CW, DeepFool) have no budget: the adapter enforces it by
returning x for every sample they moved farther than eps. Attacks of other threat models are left
out (SKIPPED).
"""

from __future__ import annotations

import functools
import inspect
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from robustbench_lite import Attack, AttackWarning, Option
from robustbench_lite.attack_utils import frozen, in_mode_of, perturbation_norm

# Constructor parameters the adapter sets rather than exposes; PIFGSM/PIFGSMPP call eps max_epsilon.
BUDGET_PARAMETERS = ("eps", "max_epsilon")
SET_BY_ADAPTER = frozenset({"model", "norm", "n_classes", "verbose", *BUDGET_PARAMETERS})
OPTION_TYPES = (bool, int, float, str)  # bool first: it is a subclass of int
STEP_PARAMETER = "alpha"  # an absolute step size in torchattacks; eps-relative here unless set
STEPS_PARAMETERS = ("steps", "nb_iter")  # the number of iterations, by the two names torchattacks uses
INPUT_LIMITS = {
    "images": "torchattacks' implementation resizes and pads its inputs (input diversity): images (C, H, W) only",
    "rgb": "torchattacks' implementation takes RGB images (3, H, W) only",
}


@dataclass(frozen=True)
class Adaptation:
    """How one torchattacks class becomes an rbl attack."""

    attack: str  # the torchattacks class name
    norm: str = "linf"  # the ball the attack stays in: "linf" or "l2"
    multi_norm: bool = False  # the class takes norm="Linf"/"L2"; the adapter passes the row's norm
    targeted: bool = False  # the class supports targeted mode
    minimum_norm: bool = False  # no budget parameter: the adapter enforces eps
    inputs: str = "any"  # what torchattacks' implementation takes: a key of INPUT_LIMITS, or "any"
    min_classes: int = 2  # the fewest classes its loss or its targets need (DLR-targeted: 4)
    weak_defaults: str = ""  # why torchattacks' defaults under-attack, where they do (shown in rbl list)
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
    Adaptation("DIFGSM", targeted=True, inputs="images"),
    Adaptation("TIFGSM", targeted=True, inputs="rgb"),
    Adaptation("Jitter", targeted=True),
    Adaptation("NIFGSM", targeted=True),
    Adaptation("SINIFGSM", targeted=True),
    Adaptation("VMIFGSM", targeted=True),
    Adaptation("VNIFGSM", targeted=True),
    Adaptation("PGDRS", targeted=True),
    Adaptation("SPSA", targeted=True, family="score-based",
               weak_defaults="under-powered at its defaults: one Adam step of lr 0.01; raise nb_iter and lr"),
    Adaptation("PIFGSM", inputs="rgb"),
    Adaptation("PIFGSMPP", targeted=True, inputs="rgb"),
    Adaptation("PGDL2", norm="l2", targeted=True),
    Adaptation("PGDRSL2", norm="l2", targeted=True),
    *(
        Adaptation(attack, norm=norm, multi_norm=True, targeted=targeted, family=family, min_classes=min_classes)
        for attack, targeted, family, min_classes in (
            ("APGD", False, "iterative", 2), ("APGDT", False, "iterative", 4), ("FAB", True, "minimum-norm", 2)
        )
        for norm in ("linf", "l2")
    ),
    # l-inf only: torchattacks' L2 Square (alone and inside AutoAttack) fails on images smaller than 5x5.
    Adaptation("Square", multi_norm=True, targeted=True, family="score-based"),
    # seed=None would seed from the clock; 0 keeps every cell reproducible, like the rest of rbl.
    Adaptation("AutoAttack", multi_norm=True, defaults=(("seed", 0),), min_classes=4),  # it runs APGD-T
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
        if name == STEP_PARAMETER:
            options.append(Option(name, float, None, f"step size; default: {step_rule(adaptation)}", minimum=0.0))
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


def _default(adaptation: Adaptation, name: str) -> Any:
    return constructor_parameters(adaptation)[name].default


def _steps_parameter(adaptation: Adaptation) -> str | None:
    return next((name for name in STEPS_PARAMETERS if name in constructor_parameters(adaptation)), None)


def step_rule(adaptation: Adaptation) -> str:
    """How the default step follows eps, in words (torchattacks' ratio at its own defaults)."""
    ratio = _default(adaptation, STEP_PARAMETER) / _default(adaptation, "eps")
    steps = _steps_parameter(adaptation)
    if steps is None:
        return f"{ratio:g} * eps (torchattacks' {_default(adaptation, STEP_PARAMETER):.4g} at eps {_default(adaptation, 'eps'):.4g})"
    return f"{ratio * _default(adaptation, steps):g} * eps / {steps} (torchattacks' ratio at its defaults)"


def eps_relative_step(adaptation: Adaptation, eps: float, steps: int | None) -> float:
    """torchattacks' default step, scaled from its default eps (and number of steps) to these."""
    step = _default(adaptation, STEP_PARAMETER) * eps / _default(adaptation, "eps")
    steps_parameter = _steps_parameter(adaptation)
    if steps_parameter is not None and steps:
        step *= _default(adaptation, steps_parameter) / steps
    return step


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


class _FeaturesAsImages(nn.Module):
    """A model of feature vectors (N, D) that takes them as (N, 1, 1, D) images, for torchattacks."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.flatten(1))


def within_budget(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """x_adv where its perturbation is at most eps in ``norm``, else x."""
    outside = perturbation_norm(x_adv - x, norm) > eps
    return torch.where(outside.view(-1, *([1] * (x.dim() - 1))), x, x_adv)


class TorchattacksAttack(Attack):
    """A torchattacks attack behind the rbl Attack contract; a new torchattacks instance per call."""

    adaptation: ClassVar[Adaptation]
    options = _IntrospectedOptions()

    def unsupported(self, input_shape: tuple[int, ...], num_classes: int) -> str | None:
        image = len(input_shape) == 3
        if (self.adaptation.inputs == "images" and not image) or (
            self.adaptation.inputs == "rgb" and not (image and input_shape[0] == 3)
        ):
            return INPUT_LIMITS[self.adaptation.inputs]
        if len(input_shape) not in (1, 3):
            return "torchattacks takes images (C, H, W) or, through this adapter, feature vectors (D,)"
        fewest = max(self.adaptation.min_classes, 3 if self.settings.get("loss") == "dlr" else 2)
        if num_classes < fewest:
            return f"its loss needs at least {fewest} classes (the DLR loss ranks the top logits)"
        return None

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
        if eps == 0:  # the ball is {x}; several torchattacks attacks would divide by eps
            return x.detach().clone()
        classes = _num_classes(model, x)
        reason = self.unsupported(tuple(x.shape[1:]), classes)
        if reason is not None:
            raise ValueError(f"{self.label} cannot attack inputs of shape {tuple(x.shape)}: {reason}")
        target = self.settings.get("target")
        if target is not None and target >= classes:
            raise ValueError(f"{self.label}: target class {target} does not exist; the model has {classes} classes")
        if x.dim() == 2:  # torchattacks assumes (N, C, H, W) batches
            images = in_mode_of(_FeaturesAsImages(model), model)
            return self._attack(images, x[:, None, None, :], y, eps, classes).flatten(1)
        return self._attack(model, x, y, eps, classes)

    def _attack(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, classes: int) -> torch.Tensor:
        """torchattacks' attack on checked image batches, within the budget."""
        with frozen(model):
            attack = torchattacks_class(self.adaptation)(model, **self._constructor_arguments(eps, classes))
            target = self.settings.get("target")
            if target is not None:
                attack.set_mode_targeted_by_function(lambda inputs, labels: torch.full_like(labels, target), quiet=True)
            x_adv = attack(x, y).detach()
        if self.adaptation.minimum_norm:
            x_adv = within_budget(x_adv, x, eps, self.norm)
        return x_adv

    def _constructor_arguments(self, eps: float, classes: int) -> dict[str, Any]:
        parameters = constructor_parameters(self.adaptation)
        arguments = {key: value for key, value in self.settings.items() if key != "target"}
        arguments.update({name: eps for name in BUDGET_PARAMETERS if name in parameters})
        if STEP_PARAMETER in parameters:
            arguments[STEP_PARAMETER] = self._step(eps)
        if self.adaptation.multi_norm:
            arguments["norm"] = {"linf": "Linf", "l2": "L2"}[self.norm]
        if "n_classes" in parameters:
            arguments["n_classes"] = classes
        if "verbose" in parameters:
            arguments["verbose"] = False
        return arguments

    def _step(self, eps: float) -> float:
        """The step size: eps-relative unless set; a set one too small to reach the ball's edge warns."""
        steps_parameter = _steps_parameter(self.adaptation)
        steps = self.settings.get(steps_parameter) if steps_parameter else None
        step = self.settings[STEP_PARAMETER]
        if step is None:
            return eps_relative_step(self.adaptation, eps, steps)
        reach = step * (steps or 1)  # the farthest the steps can move a point, in the attack's norm
        if reach < eps:
            warnings.warn(AttackWarning(
                f"{self.label}: {steps or 1} step(s) of {step:g} reach {reach:g}, short of eps {eps:g}: "
                "this attack cannot use its whole budget (leave alpha unset for an eps-relative step)"), stacklevel=2)
        return step


def adapter(adaptation: Adaptation) -> type[TorchattacksAttack]:
    """The rbl attack class for one row of the table."""
    notes = [f"{adaptation.norm} ball"]
    if adaptation.minimum_norm:
        notes.append("minimum-norm: samples it moves beyond eps are returned unperturbed")
    if adaptation.inputs != "any":
        notes.append({"images": "images only", "rgb": "RGB images only"}[adaptation.inputs])
    if adaptation.min_classes > 2:
        notes.append(f"{adaptation.min_classes}+ classes")
    if adaptation.weak_defaults:
        notes.append(adaptation.weak_defaults)
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
