"""Building blocks for attack plugins: input gradients, projections and the bounds check."""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from .interfaces import Attack

# Float arithmetic on x ± eps can overshoot the ball by an ulp; anything beyond this is a bug.
BOUNDS_TOLERANCE = 1e-6


class AttackBoundsError(RuntimeError):
    """An attack returned inputs outside its eps-ball or outside [0, 1]."""


class NonFiniteGradientError(RuntimeError):
    """The model's input gradient held NaN or inf: an attack following it would fail silently, and
    the point would be scored robust, so the cell fails instead."""


LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy, the default attack loss."""
    return F.cross_entropy(logits, y, reduction="none")


def margin_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per sample max_{i != label} z_i - z_label: positive exactly when ``label`` is not the prediction."""
    is_label = F.one_hot(labels, logits.shape[1]).bool()
    best_other = logits.masked_fill(is_label, -torch.inf).amax(dim=1)
    return best_other - logits.gather(1, labels[:, None]).squeeze(1)


def finite(gradient: torch.Tensor) -> torch.Tensor:
    """``gradient`` itself, after checking it holds no NaN or inf (else NonFiniteGradientError)."""
    if not torch.isfinite(gradient).all():
        raise NonFiniteGradientError("the model's input gradient contains NaN or infinite values")
    return gradient


def loss_gradient(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss: LossFunction = cross_entropy,
    samples: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient of the per-sample ``loss`` w.r.t. the input, and the per-sample losses.

    Summing (not averaging) the losses keeps each sample's gradient independent of batch size.
    Only the input needs a gradient, so parameter gradients are never accumulated. With
    ``samples`` > 1 both are averaged over that many forward/backward passes: expectation over
    transformation (EOT, Athalye et al. 2018), for models whose output is random.
    """
    gradient_sum = torch.zeros_like(x)
    loss_sum = torch.zeros(len(x), device=x.device, dtype=x.dtype)
    for _ in range(samples):
        x_var = x.detach().requires_grad_(True)
        losses = loss(model(x_var), y)
        (gradient,) = torch.autograd.grad(losses.sum(), x_var)
        gradient_sum += finite(gradient)
        loss_sum += losses.detach()
    if samples == 1:
        return gradient_sum, loss_sum
    return gradient_sum / samples, loss_sum / samples


class _SampleStreams:
    """Random streams of the points being attacked: point ``ids[i]`` of the evaluated set, draw ``k`` of
    the attack, always gives the same numbers, whichever other points share its batch."""

    def __init__(self, seed: int, ids: list[int]) -> None:
        self.seed, self.ids, self.draws = seed, ids, [0]  # the draw counter is shared with narrowed views

    def narrowed(self, rows: list[int]) -> _SampleStreams:
        view = _SampleStreams(self.seed, [self.ids[row] for row in rows])
        view.draws = self.draws
        return view

    def generators(self) -> list[torch.Generator]:
        draw = self.draws[0]
        self.draws[0] += 1
        generators = []
        for point in self.ids:
            seed = int.from_bytes(hashlib.sha256(f"{self.seed}/{point}/{draw}".encode()).digest()[:8], "little")
            generators.append(torch.Generator().manual_seed(seed))
        return generators


_STREAMS: contextvars.ContextVar[_SampleStreams | None] = contextvars.ContextVar("sample_streams", default=None)


@contextlib.contextmanager
def sample_streams(seed: int, ids: torch.Tensor | list[int]) -> Iterator[None]:
    """Inside the block, :func:`uniform_like` and :func:`normal_like` give each row of a batch the random
    numbers of the point it is (``ids``: its index in the evaluated set), not those of its position.

    The evaluation wraps every attacked batch in this, so an attack's result for a point does not
    depend on which other points were attacked with it: the matrix can skip points already broken
    at a smaller eps, or halve a batch that ran out of memory, without changing any number.
    """
    # One transfer for a tensor of indices (on a GPU, element-wise int() would sync once per point).
    points = ids.tolist() if isinstance(ids, torch.Tensor) else [int(i) for i in ids]
    token = _STREAMS.set(_SampleStreams(seed, points))
    try:
        yield
    finally:
        _STREAMS.reset(token)


@contextlib.contextmanager
def subset_streams(rows: torch.Tensor) -> Iterator[None]:
    """For an attack that goes on with a subset ``x[rows]`` of its batch: the streams of those rows."""
    streams = _STREAMS.get()
    if streams is None:
        yield
        return
    token = _STREAMS.set(streams.narrowed(rows.tolist()))
    try:
        yield
    finally:
        _STREAMS.reset(token)


def _per_point(like: torch.Tensor, fill: Callable[[torch.Tensor, torch.Generator], torch.Tensor]) -> torch.Tensor | None:
    streams = _STREAMS.get()
    if streams is None:
        return None
    if len(streams.ids) != len(like):
        raise ValueError(f"a batch of {len(like)} drawn within sample streams of {len(streams.ids)} points; "
                         "narrow them with subset_streams")
    rows = [fill(torch.empty(like.shape[1:], dtype=like.dtype), generator) for generator in streams.generators()]
    return torch.stack(rows).to(like.device) if rows else torch.empty_like(like)


def uniform_like(like: torch.Tensor, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """Uniform noise on [low, high) shaped like ``like``: per point inside :func:`sample_streams`, else
    from the global generator (``torch.empty_like(like).uniform_(low, high)``)."""
    noise = _per_point(like, lambda row, generator: row.uniform_(low, high, generator=generator))
    return torch.empty_like(like).uniform_(low, high) if noise is None else noise


def normal_like(like: torch.Tensor) -> torch.Tensor:
    """Standard normal noise shaped like ``like``, per point as :func:`uniform_like`."""
    noise = _per_point(like, lambda row, generator: row.normal_(generator=generator))
    return torch.empty_like(like).normal_() if noise is None else noise


def per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape one value per sample, shape (N,), to broadcast against a batch shaped like ``like``."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def normalize_l2(vectors: torch.Tensor) -> torch.Tensor:
    """Scale each sample to unit l2 norm, all-zero samples staying zero.

    Applied to a gradient this is the l2 steepest-ascent direction. The guard is the dtype's
    smallest normal number, not a fixed epsilon, so tiny but non-zero gradients still give unit steps.
    """
    norms = vectors.flatten(1).norm(dim=1).clamp_min(torch.finfo(vectors.dtype).tiny)
    return vectors / per_sample(norms, vectors)


def logits_and_input_jacobian(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits (N, K) and their Jacobian with respect to the input, shape (N, K, *x.shape[1:]).

    One backward pass per class; summing each logit over the batch keeps samples independent.
    Only the input needs a gradient, so parameter gradients are never accumulated.
    """
    x_var = x.detach().requires_grad_(True)
    logits = model(x_var)
    num_classes = logits.shape[1]
    rows = [
        finite(torch.autograd.grad(logits[:, k].sum(), x_var, retain_graph=k < num_classes - 1)[0])
        for k in range(num_classes)
    ]
    return logits.detach(), torch.stack(rows, dim=1)


def project_linf(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Projection onto the l-inf ball of radius eps around x intersected with the [0, 1] box.

    Clipping the perturbation (rather than x_adv) is torchattacks' arithmetic in PGD and MI-FGSM,
    so those agree with it bit for bit (its BIM clips x_adv against x - eps and x + eps: an ulp apart).
    """
    return torch.clamp(x + torch.clamp(x_adv - x, -eps, eps), 0.0, 1.0)


def project_l2(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Projection onto the l2 ball of radius eps around x, then clipping to [0, 1].

    Clipping after the ball projection keeps the norm within eps (clipping only moves points
    towards x along each coordinate), which is what the bounds check requires.
    """
    delta = x_adv - x
    norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))
    delta = delta * torch.clamp(eps / norms, max=1.0)
    return torch.clamp(x + delta, 0.0, 1.0)


def perturbation_norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-sample norm of a perturbation, for ``norm`` in {"linf", "l2"}."""
    flat = delta.flatten(1)
    if norm == "linf":
        return flat.abs().amax(dim=1)
    if norm == "l2":
        return flat.norm(dim=1)
    raise ValueError(f"unknown norm {norm!r}; valid: linf, l2")


def check_bounds(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> None:
    """Raise AttackBoundsError unless every x_adv lies in the eps-ball around x and in [0, 1]."""
    if x_adv.shape != x.shape:
        raise AttackBoundsError(f"attack returned shape {tuple(x_adv.shape)} for inputs of shape {tuple(x.shape)}")
    if not torch.isfinite(x_adv).all():
        raise AttackBoundsError("attack returned NaN or infinite inputs")
    low, high = x_adv.min().item(), x_adv.max().item()
    if low < -BOUNDS_TOLERANCE or high > 1 + BOUNDS_TOLERANCE:
        raise AttackBoundsError(f"attack left the [0, 1] box: values in [{low:.6g}, {high:.6g}]")
    largest = perturbation_norm(x_adv - x, norm).max().item() if len(x) else 0.0
    if largest > eps + BOUNDS_TOLERANCE:
        raise AttackBoundsError(f"attack left the {norm} ball: perturbation {largest:.6g} > eps {eps:.6g}")


def in_mode_of(wrapper: nn.Module, model: nn.Module) -> nn.Module:
    """``wrapper`` (a new module around ``model``) in ``model``'s train/eval mode, returned.

    A new module starts in train mode; ``wrapper.train(...)`` would set every submodule's mode, so only the
    wrapper's own flag is set and each submodule of ``model`` keeps its own (a dropout kept on at test time,
    say). Attacks that restore the mode they found (torchattacks does) then restore the model's.
    """
    wrapper.training = model.training
    return wrapper


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """Eval mode and no parameter gradients inside the block; mode and ``requires_grad`` flags restored after.

    Attacks need input gradients only: frozen parameters keep batch-norm statistics fixed, build
    no graph through the weights, and leave ``.grad`` untouched even for an attack that calls
    ``backward()``.
    """
    was_training = model.training
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    model.eval()
    for parameter in trainable:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter in trainable:
            parameter.requires_grad_(True)
        model.train(was_training)


def craft(attack: Attack, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """Run ``attack`` on a model that is being trained, with the model :func:`frozen` meanwhile.

    Defenses use this so that crafting examples never updates batch-norm statistics or weights' gradients.
    """
    with frozen(model):
        return attack.perturb(model, x, y, eps).detach()
