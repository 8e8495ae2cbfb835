"""Adversarial training on a weighted mix of clean inputs and several attacks' examples.

Goodfellow et al.'s (2015) mixed loss alpha * L(x) + (1 - alpha) * L(x_fgsm), generalised to any
attacks p_1..p_k chosen on the command line: alpha_0 * L(x) + sum_i alpha_i * L(p_i(x)).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robustbench_lite.attack_utils import craft
from robustbench_lite.errors import UsageError
from robustbench_lite.hookspecs import hookimpl
from robustbench_lite.interfaces import Attack, Defense
from robustbench_lite.options import Option, format_value, split_outside_brackets
from robustbench_lite.registry import default_registry

from ._common import TRAIN_EPS_OPTION, OwnTrainingEps

# Commas already separate a spec's options (at-mix[attacks=...,weights=...]), so list items use '+'.
SEPARATOR = "+"


def split_items(text: str) -> list[str]:
    """Split on the '+' outside brackets, so that an item may be an attack spec such as ``pgd[steps=3]``."""
    return [item.strip() for item in split_outside_brackets(text, SEPARATOR)]


class MixedAdversarialTraining(OwnTrainingEps, Defense):
    """alpha_0 * CE(f(x), y) + sum_i alpha_i * CE(f(p_i(x)), y) for the attacks p_1..p_k in ``attacks``.

    ``weights`` holds alpha_0 (the clean loss) then one weight per attack; by default 1/(k+1) each.
    Weights are used as given, not normalised: each must be >= 0 and not all 0. With weights that
    sum to 1 the loss is a convex combination, e.g. ``at-mix[attacks=fgsm,weights=0.3+0.7]`` is
    ``at-fgsm[alpha=0.3]``. Each attack runs at the run's training eps in its own norm. Every
    example is crafted (in eval mode, by ``craft``) against the same weights before the training
    forward passes; an attack with weight 0 is neither run nor forwarded, nor is x with alpha_0 = 0.
    """

    name = "at-mix"
    description = (
        "Adversarial training on a mix a0*L(x) + sum_i ai*L(attack_i(x)) over several attacks "
        "(generalised Goodfellow loss)"
    )
    options = (
        Option("attacks", str, "fgsm+pgd", "attack specs to train on, '+'-separated, e.g. fgsm+pgd[steps=3]"),
        Option(
            "weights", str, None,
            "'+'-separated weights >= 0, the clean loss's first then one per attack, used as given "
            "(default 1/(k+1) each)",
        ),
        TRAIN_EPS_OPTION,
    )

    def __init__(self, **options: Any) -> None:
        # From Python, lists are welcome too: attacks=["fgsm", "pgd"], weights=[0.2, 0.4, 0.4].
        for key in ("attacks", "weights"):
            if isinstance(options.get(key), (list, tuple)):
                options[key] = SEPARATOR.join(
                    format_value(float(value)) if isinstance(value, (int, float)) and not isinstance(value, bool)
                    else str(value) for value in options[key]
                )
        super().__init__(**options)
        self._attacks = self._parse_attacks(self.attacks)
        self._weights = self._parse_weights(self.weights, self._attacks)

    @property
    def mixture(self) -> list[tuple[str, float]]:
        """The loss terms as (what, weight): ``("clean", alpha_0)`` then each attack's label and weight."""
        return list(zip(["clean"] + [attack.label for attack in self._attacks], self._weights))

    def _error(self, message: str) -> UsageError:
        return UsageError(f"defense {self.name!r}: {message}")

    def _parse_attacks(self, text: str) -> list[Attack]:
        attacks = []
        for item in split_items(text):
            if not item:
                raise self._error(f"empty attack name in attacks={text!r}; separate attack specs with '{SEPARATOR}'")
            try:
                attacks.append(default_registry().create("attacks", item))
            except UsageError as error:
                raise self._error(str(error)) from None
        return attacks

    def _parse_weights(self, text: str | None, attacks: Sequence[Attack]) -> tuple[float, ...]:
        count = len(attacks) + 1
        if text is None:
            return (1.0 / count,) * count
        items = split_items(text)
        if len(items) != count:
            names = ", ".join(attack.label for attack in attacks)
            raise self._error(
                f"weights needs {count} '{SEPARATOR}'-separated entries (the clean loss's, then one per attack: "
                f"{names}), got {len(items)} in weights={text!r}"
            )
        weights = []
        for item in items:
            try:
                value = float(item)
            except ValueError:
                raise self._error(f"weight {item!r} in weights={text!r} is not a number") from None
            if not math.isfinite(value) or value < 0:
                raise self._error(f"weights must be finite and >= 0, got {item!r} in weights={text!r}")
            weights.append(value)
        if sum(weights) <= 0:
            raise self._error(f"weights must not all be 0 (weights={text!r}): there would be nothing to train on")
        return tuple(weights)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
        clean_weight, *attack_weights = self._weights
        adversarial = [
            (weight, craft(attack, model, x, y, eps))
            for attack, weight in zip(self._attacks, attack_weights)
            if weight > 0
        ]
        inputs = ([(clean_weight, x)] if clean_weight > 0 else []) + adversarial
        terms = [weight * F.cross_entropy(model(batch), y) for weight, batch in inputs]
        total = terms[0]
        for term in terms[1:]:
            total = total + term
        return total


@hookimpl
def register_defenses(register):
    register(MixedAdversarialTraining)
