"""Per-sample evaluation of one model: clean predictions and one attack at one eps.

Following AutoAttack's protocol a point counts as robust only if it is classified correctly
both clean and attacked, so only the clean-correct points are attacked. Every adversarial
batch is checked against the attack's eps-ball and [0, 1] before it is scored.

Plugins never get a tensor the core relies on: attacks and preprocessing receive copies, every
adversarial batch is checked against the core's own copy of the clean inputs
(:func:`guarded_perturb`), and :func:`model_unchanged` fails and undoes any change a plugin
makes to the model's parameters, buffers, hooks or modes.

An inference-time defense is evaluated as ``nn.Sequential(Preprocess(defense, gradient), model)``,
where ``gradient`` chooses what attacks see when they differentiate through the preprocessing.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from .attack_utils import check_bounds, in_mode_of, sample_streams
from .errors import RblError
from .interfaces import Attack, AttackWarning, Defense

# What attacks see when they differentiate through a defense's preprocessing.
GRADIENTS = ("exact", "zero", "identity")


class _Substituted(torch.autograd.Function):
    """The real preprocessing forward; a substitute backward: zero (naive) or identity (BPDA)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, transform: Callable[[torch.Tensor], torch.Tensor], identity: bool) -> torch.Tensor:
        ctx.identity = identity
        return transform(x.clone())  # a copy: a preprocessing that edits in place must not reach the caller's tensor

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
            return self.defense.preprocess(x.clone())  # differentiable, and an in-place edit stays in the copy
        return _Substituted.apply(x, self.defense.preprocess, self.gradient == "identity")

    def extra_repr(self) -> str:
        return f"{self.defense.label}, gradient={self.gradient}"


def defended(model: nn.Module, defense: Defense, gradient: str = "exact") -> nn.Module:
    """``model`` behind ``defense``'s preprocessing (``model`` itself when the defense has none)."""
    if not defense.preprocesses:
        return model
    return in_mode_of(nn.Sequential(Preprocess(defense, gradient), model), model)


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
    honest for attacks that shrink their batch to the samples still searched. Forward passes that
    record a graph for an input gradient are also counted apart (``graph_forward_images``): they
    cost more than plain ones, and a Jacobian's backward passes share one of them; so are those in
    train mode that record the parameters' graph for a weight update (``training_forward_images``).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        in_mode_of(self, model)
        self.reset()

    def reset(self) -> None:
        self.forward_images = self.graph_forward_images = self.training_forward_images = self.backward_images = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.forward_images += len(x)
        if torch.is_grad_enabled() and x.requires_grad:  # only then can a gradient come back through here
            self.graph_forward_images += len(x)
            x = _CountBackward.apply(x, self)
        elif torch.is_grad_enabled() and self.training:
            self.training_forward_images += len(x)
        return self.model(x)


class NonFiniteOutputError(RblError):
    """The model produced NaN or infinite logits; such a cell is failed, never scored."""


class ModelChangedError(RblError):
    """A plugin changed the model it was given (weights, buffers, hooks or train/eval mode): the cell is
    failed, never scored or stored, and the model is restored for the cells after it."""


class _ModelSnapshot:
    """A private copy of everything about a model that a plugin could change and the core relies on:
    each module's children, parameters, buffers and hooks (by identity), its mode, the ``requires_grad``
    flags and the values of every tensor."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.modules = list(model.modules())
        self.structure = [_structure(module) for module in self.modules]
        self.modes = [module.training for module in self.modules]
        self.requires_grad = [parameter.requires_grad for parameter in model.parameters()]
        self.state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}

    def changes(self) -> list[str]:
        """What differs from the snapshot, as short descriptions (empty when nothing does)."""
        current = self.model.state_dict()
        changed = [name for name, saved in self.state.items() if name not in current or not _same(current[name], saved)]
        if [id(m) for m in self.model.modules()] != [id(m) for m in self.modules] or [
                _identities(_structure(module)) for module in self.modules] != [_identities(s) for s in self.structure]:
            changed.append("its modules, parameters, buffers or hooks")
        if [module.training for module in self.modules] != self.modes:
            changed.append("train/eval mode")
        if [parameter.requires_grad for parameter in self.model.parameters()] != self.requires_grad:
            changed.append("requires_grad flags")
        return changed

    def restore(self) -> None:
        """Undo every change: first what the modules hold, then their modes, flags and values."""
        for module, (children, parameters, buffers, hooks) in zip(self.modules, self.structure):
            for attribute, saved in (("_modules", children), ("_parameters", parameters), ("_buffers", buffers),
                                     *zip(_HOOK_DICTS, hooks)):
                registered = getattr(module, attribute)
                registered.clear()
                registered.update(saved)
        for module, training in zip(self.modules, self.modes):
            module.training = training
        for parameter, flag in zip(self.model.parameters(), self.requires_grad):
            parameter.requires_grad_(flag)
        with torch.no_grad():
            for name, tensor in self.model.state_dict(keep_vars=True).items():
                tensor.copy_(self.state[name])


_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def _structure(module: nn.Module) -> tuple[dict[str, Any], ...]:
    """What ``module`` holds, as shallow copies of its registries (the objects themselves, not copies of them)."""
    return (dict(module._modules), dict(module._parameters), dict(module._buffers),
            tuple(dict(getattr(module, attribute, {})) for attribute in _HOOK_DICTS))


def _identities(structure: tuple[Any, ...]) -> list[Any]:
    """``structure`` by object identity: a tensor's ``==`` compares values, not which tensor it is."""
    *registries, hooks = structure
    return [{key: id(value) for key, value in registry.items()} for registry in (*registries, *hooks)]


def _same(current: torch.Tensor, saved: torch.Tensor) -> bool:
    """Equal shape, dtype and values; NaN equals NaN (an uninitialised buffer is not a change)."""
    if current.shape != saved.shape or current.dtype != saved.dtype:
        return False
    if torch.equal(current, saved):
        return True
    return current.is_floating_point() and torch.allclose(current, saved, rtol=0, atol=0, equal_nan=True)


@contextlib.contextmanager
def model_unchanged(model: nn.Module, what: str = "the evaluation") -> Iterator[None]:
    """Run the block, then raise :class:`ModelChangedError` if it changed ``model``; restore it either way.

    A plugin that edits the model (zeroing weights breaks every point) would otherwise corrupt its own
    cell and every later one of the row, and those would be stored and reused.
    """
    snapshot = _ModelSnapshot(model)
    try:
        yield
    except BaseException:
        if snapshot.changes():
            snapshot.restore()
        raise
    changed = snapshot.changes()
    if changed:
        snapshot.restore()
        shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
        raise ModelChangedError(f"{what} changed the model ({shown}); the model was restored and the cell failed")


@contextlib.contextmanager
def attack_warnings() -> Iterator[dict[str, int]]:
    """Collect every :class:`AttackWarning` raised in the block: message -> points concerned, summed.

    Every one is collected, repeats included (the filter for the category is "always" inside the
    block), and none is shown: they belong to the cell. Warnings of other categories go on to
    ``warnings.showwarning`` as they would have.
    """
    collected: dict[str, int] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("always", AttackWarning)
        show = warnings.showwarning

        def record(message: Warning | str, category: type[Warning], *rest: Any, **keywords: Any) -> None:
            if not isinstance(message, AttackWarning):
                show(message, category, *rest, **keywords)
                return
            collected[message.message] = collected.get(message.message, 0) + (message.points or 0)

        warnings.showwarning = record  # restored by catch_warnings on the way out
        yield collected


def guarded_perturb(model: nn.Module, attack: Attack, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """``attack.perturb`` on copies of ``x`` and ``y``, its result checked against the eps-ball around the
    untouched ``x`` and [0, 1]: an attack that edits its input in place cannot hide its perturbation."""
    x_adv = attack.perturb(model, x.clone(), y.clone(), eps)
    check_bounds(x_adv, x, eps, attack.norm)
    return x_adv


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
    # Copies: a model that edits its input in place must not reach the caller's tensor.
    return torch.cat([_logits(model, x[start : start + batch_size].clone()).argmax(dim=1)
                      for start in range(0, len(x), batch_size)])


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
                x_adv = guarded_perturb(model, attack, x_batch, y_batch, eps)
        except torch.OutOfMemoryError:
            if len(index) == 1:
                raise
            batch_size = len(index) // 2
            if x.is_cuda:
                torch.cuda.empty_cache()  # give the failed batch's memory back before the retry
            warnings.warn(f"{attack.label}: out of memory on a batch of {len(index)}; "
                          f"retrying in batches of {batch_size}", stacklevel=2)
            continue
        with torch.no_grad():
            predictions[index] = _logits(model, x_adv).argmax(dim=1)
        advance(len(index))
        start += len(index)
    return predictions
