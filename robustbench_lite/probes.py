"""Probes of a model that tell whether its robustness numbers can mean anything (see :mod:`robustbench_lite.sanity`).

A degenerate model scores well for the wrong reason: a constant classifier is never "broken" by an
attack, a model whose outputs are probabilities or whose input gradient is zero starves gradient
attacks, and a model that runs an optimisation (gradient calls) inside its forward pass is a
dynamic defense that fixed attacks evaluate poorly (seen as layers running with gradients enabled
inside a forward pass made under ``no_grad``). After the checks of AutoAttack (Croce & Hein
2020), measured on the first :data:`PROBE_POINTS` test points; the results go into the run's
metadata, where the sanity checks read them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

PROBE_POINTS = 64
PROBABILITY_TOLERANCE = 1e-4  # how far outputs may stray from [0, 1] and a row sum of 1 and still read as probabilities


def class_shares(clean: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    """The class predicted most often on the clean inputs and its share, and the largest share of one label."""
    predicted = torch.bincount(clean.cpu())
    labels = torch.bincount(y.cpu())
    top = int(predicted.argmax())
    return {
        "most_predicted_class": top,
        "most_predicted_share": round(float(predicted[top]) / len(clean), 4),
        "label_share_of_that_class": round(float(labels[top]) / len(y), 4) if top < len(labels) else 0.0,
        "majority_label_share": round(float(labels.max()) / len(y), 4),
    }


def model_probe(model: nn.Module, x: torch.Tensor, y: torch.Tensor, gradient: str) -> dict[str, Any]:
    """Probability-like outputs, points with a zero input gradient, and layers run with gradients enabled
    inside a forward pass made without them.

    ``gradient`` is what the row's attacks see through a preprocessing; where it is ``"zero"`` (the
    naive evaluation of a non-differentiable one) zero gradients are by design and not probed.
    """
    x, y = x[:PROBE_POINTS].clone(), y[:PROBE_POINTS]
    with torch.no_grad(), _gradient_calls(model) as calls:
        outputs = model(x)
    probe: dict[str, Any] = {
        "n": len(x),
        "probability_outputs": _probability_like(outputs),
        "grad_enabled_calls_in_forward": calls[0],
    }
    if gradient != "zero":
        probe["zero_gradient_points"] = _zero_gradient_points(model, x, y)
    return probe


def _probability_like(outputs: torch.Tensor) -> bool:
    inside = bool(outputs.min() >= -PROBABILITY_TOLERANCE) and bool(outputs.max() <= 1 + PROBABILITY_TOLERANCE)
    return inside and bool(((outputs.sum(dim=1) - 1).abs() <= PROBABILITY_TOLERANCE).all())


def _zero_gradient_points(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    x = x.clone().requires_grad_(True)
    with torch.enable_grad():
        loss = nn.functional.cross_entropy(model(x), y, reduction="sum")
        if not loss.requires_grad:  # no path from the input to the loss at all
            return len(x)
        (gradient,) = torch.autograd.grad(loss, x, allow_unused=True)
    if gradient is None:
        return len(x)
    return int((gradient.flatten(1).abs().sum(dim=1) == 0).sum())


@contextmanager
def _gradient_calls(model: nn.Module) -> Iterator[list[int]]:
    """Count the submodule calls of ``model`` made with gradients enabled inside a block run under ``no_grad``.

    A forward pass that turns gradients back on inside itself is optimising something (a purifier, a
    test-time attack): module hooks see it, without tracing every Python call.
    """
    calls = [0]

    def count(module: nn.Module, inputs: Any) -> None:
        calls[0] += torch.is_grad_enabled()

    handles = [module.register_forward_pre_hook(count) for module in model.modules()]
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()
