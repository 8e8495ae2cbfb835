"""The layer-wise regulariser LR of AT-LR: how far the MVL layers' representations move under attack.

Each variant maps the change delta = phi_l(x_hat) - phi_l(x) of one sample at one layer (all its
units flattened, d of them) to a number that does not grow with the layer's width, so one
weight ``lam`` suits every layer and architecture:

* ``l1``: ||delta||_1 / d, the mean absolute change of a unit;
* ``l2``: ||delta||_2 / sqrt(d), the root-mean-square change of a unit;
* ``l0``: the fraction of units that changed, smoothed so that it has a gradient:
  mean(delta^2 / (delta^2 + tau^2)), with tau = L0_SCALE times the root-mean-square of the clean
  output (detached). A unit whose change is far above tau counts ~1, an unchanged unit 0; being
  relative to the clean output's scale, the count does not depend on the layer's scale.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

L0_SCALE = 0.1
_SMALLEST_SCALE = 1e-12  # keeps the l0 term 0 (not 0/0) for an all-zero clean output and no change


def _mean_absolute_change(delta: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(delta, ord=1, dim=1) / delta.shape[1]


def _root_mean_square_change(delta: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    # vector_norm's gradient at a zero change is 0, where sqrt(mean(delta^2)) would give NaN.
    return torch.linalg.vector_norm(delta, ord=2, dim=1) / delta.shape[1] ** 0.5


def _changed_fraction(delta: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    scale = L0_SCALE * clean.detach().pow(2).mean(dim=1, keepdim=True).sqrt().clamp_min(_SMALLEST_SCALE)
    squared = delta.pow(2)
    return (squared / (squared + scale.pow(2))).mean(dim=1)


REGULARIZERS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "l0": _changed_fraction,
    "l1": _mean_absolute_change,
    "l2": _root_mean_square_change,
}


def representation_change(clean: torch.Tensor, adversarial: torch.Tensor, reg: str) -> torch.Tensor:
    """Per-sample size of the change from ``clean`` to ``adversarial`` (N, ...) layer outputs, for reg in l0, l1, l2."""
    clean_units = clean.flatten(1)
    return REGULARIZERS[reg](adversarial.flatten(1) - clean_units, clean_units)


def layerwise_regularization(
    clean: Mapping[str, torch.Tensor], adversarial: Mapping[str, torch.Tensor], reg: str
) -> torch.Tensor:
    """LR: the sum over the recorded layers of the batch mean of :func:`representation_change`."""
    return torch.stack([representation_change(clean[name], adversarial[name], reg).mean() for name in clean]).sum()
