"""What built-in defenses share: adversarial trainings their own training budget; inference-time defenses
their training like ``none`` and their input checks."""

from __future__ import annotations

import abc
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from robustbench_lite.errors import UsageError
from robustbench_lite.interfaces import Defense
from robustbench_lite.options import Option

# Every adversarial training's own budget, so that one matrix can compare trainings at several eps.
TRAIN_EPS_OPTION = Option("eps", float, None, "training budget of this defense (default: the run's --train-eps)",
                          minimum=0.0, maximum=1.0)


class OwnTrainingEps:
    """For a defense with :data:`TRAIN_EPS_OPTION`: it trains at its ``eps`` where set."""

    eps: float | None

    def training_eps(self, run_eps: float) -> float:
        return run_eps if self.eps is None else self.eps


class Preprocessing(Defense, abc.ABC):
    """An input transformation in front of a normally trained model.

    The model itself is trained by ``none`` (plain cross-entropy on clean inputs): the runner
    trains it through ``training_recipe``, so the weights and their cache entry are ``none``'s.
    """

    training_recipe = "none"

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
        return F.cross_entropy(model(x), y)

    @abc.abstractmethod
    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """The transformation applied to every input at test time."""

    def check_images(self, x: torch.Tensor, channels: Sequence[int] | None = None) -> None:
        """Raise a UsageError unless ``x`` is a batch of images (N, C, H, W), with C in ``channels`` if given."""
        if x.dim() != 4 or (channels is not None and x.shape[1] not in channels):
            wanted = f" with {' or '.join(map(str, channels))} channels" if channels else ""
            raise UsageError(
                f"defense {self.name!r} needs images shaped (N, C, H, W){wanted}; got inputs of shape {tuple(x.shape)}"
            )
