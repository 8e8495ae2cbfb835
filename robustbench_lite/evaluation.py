"""Per-sample evaluation of one model: clean predictions and one attack at one eps.

Following AutoAttack's protocol a point counts as robust only if it is classified correctly
both clean and attacked, so only the clean-correct points are attacked. Every adversarial
batch is checked against the attack's eps-ball and [0, 1] before it is scored.

An inference-time defense is evaluated as ``nn.Sequential(Preprocess(defense, gradient), model)``,
where ``gradient`` chooses what attacks see when they differentiate through the preprocessing.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .attack_utils import check_bounds, sample_streams
from .errors import RblError
from .interfaces import Attack, Defense

# What attacks see when they differentiate through a defense's preprocessing.
GRADIENTS = ("exact", "zero", "identity")


class _Substituted(torch.autograd.Function):
    """The real preprocessing forward; a substitute backward: zero (naive) or identity (BPDA)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, transform: Callable[[torch.Tensor], torch.Tensor], identity: bool) -> torch.Tensor:
        ctx.identity = identity
        out = transform(x)
        return out.clone() if out is x else out  # autograd.Function must not return an input as is

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return (grad if ctx.identity else torch.zeros_like(grad)), None, None


class Preprocess(nn.Module):
    """A defense's inference-time preprocessing as a module, with a chosen input gradient.

    ``gradient="exact"``: autograd through ``defense.preprocess`` (for differentiable ones);
    ``"zero"``: the gradient of a non-differentiable preprocessing as autograd gives it for
    rounding, zero: the naive evaluation, where gradient attacks are masked;
    ``"identity"``: BPDA (Athalye et al. 2018), the backward pass treats the preprocessing as
    the identity, which approximates it where it changes the input little.
    """

    def __init__(self, defense: Defense, gradient: str = "exact") -> None:
        super().__init__()
        if gradient not in GRADIENTS:
            raise ValueError(f"unknown gradient {gradient!r}; valid: {', '.join(GRADIENTS)}")
        self.defense, self.gradient = defense, gradient

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gradient == "exact":
            return self.defense.preprocess(x)
        return _Substituted.apply(x, self.defense.preprocess, self.gradient == "identity")

    def extra_repr(self) -> str:
        return f"{self.defense.label}, gradient={self.gradient}"


def defended(model: nn.Module, defense: Defense, gradient: str = "exact") -> nn.Module:
    """``model`` behind ``defense``'s preprocessing (``model`` itself when the defense has none)."""
    if not defense.preprocesses:
        return model
    return nn.Sequential(Preprocess(defense, gradient), model)


class _CountBackward(torch.autograd.Function):
    """Identity whose backward adds the batch's size to the counter: one backward pass through the model."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, counter: PassCounter) -> torch.Tensor:
        ctx.counter = counter
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, gradient: torch.Tensor) -> tuple[torch.Tensor, None]:
        ctx.counter.backward_images += len(gradient)
        return gradient, None


class PassCounter(nn.Module):
    """Wraps a model and counts the images that pass forward and backward through it.

    A backward pass is counted each time a gradient flows back to the model's input, however it
    is asked for (``autograd.grad``, ``backward()``, one per class for a Jacobian), so attacks and
    torchattacks are counted alike. Counting in images rather than calls is what makes the count
    honest for attacks that shrink their batch to the samples still searched.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.forward_images = 0
        self.backward_images = 0

    def reset(self) -> None:
        self.forward_images = self.backward_images = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.forward_images += len(x)
        if torch.is_grad_enabled() and x.requires_grad:  # only then can a gradient come back through here
            x = _CountBackward.apply(x, self)
        return self.model(x)


class NonFiniteOutputError(RblError):
    """The model produced NaN or infinite logits; such a cell is failed, never scored."""


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    logits = model(x)
    if not torch.isfinite(logits).all():
        raise NonFiniteOutputError("the model produced NaN or infinite logits")
    return logits


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Predicted labels for ``x``."""
    if not len(x):
        return torch.zeros(0, dtype=torch.long, device=x.device)
    return torch.cat([_logits(model, x[start : start + batch_size]).argmax(dim=1) for start in range(0, len(x), batch_size)])


def adversarial_predictions(
    model: nn.Module,
    attack: Attack,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    predictions: torch.Tensor,
    batch_size: int,
    advance: Callable[[int], None] = lambda samples: None,
    *,
    candidates: torch.Tensor | None = None,
    seed: int | None = None,
) -> torch.Tensor:
    """Predicted labels after ``attack`` at ``eps`` of the ``candidates`` (by default the points that
    ``predictions`` classifies correctly, so misclassified points are never attacked); every other
    point keeps its entry of ``predictions``.

    With ``seed`` each attacked batch runs inside :func:`~robustbench_lite.attack_utils.sample_streams`
    (a point's index in ``x`` is its stream), so a point's result does not depend on the rest of its
    batch. A batch that runs out of device memory is retried in halves (down to single points), with
    a warning, so that a batch size chosen for a smaller model or GPU does not fail the cell.
    """
    predictions = predictions.clone()
    mask = predictions == y if candidates is None else candidates
    indices = mask.nonzero().flatten()
    start = 0
    while start < len(indices):
        index = indices[start : start + batch_size]
        x_batch, y_batch = x[index], y[index]
        try:
            with sample_streams(seed, index) if seed is not None else contextlib.nullcontext():
                x_adv = attack.perturb(model, x_batch, y_batch, eps)
        except torch.OutOfMemoryError:
            if len(index) == 1:
                raise
            batch_size = len(index) // 2
            if x.is_cuda:
                torch.cuda.empty_cache()  # give the failed batch's memory back before the retry
            warnings.warn(f"{attack.label}: out of memory on a batch of {len(index)}; "
                          f"retrying in batches of {batch_size}", stacklevel=2)
            continue
        check_bounds(x_adv, x_batch, eps, attack.norm)
        with torch.no_grad():
            predictions[index] = _logits(model, x_adv).argmax(dim=1)
        advance(len(index))
        start += len(index)
    return predictions
