"""Random Gaussian noise added to every input at test time (a randomized defense)."""

from __future__ import annotations

import torch

from robustbench_lite.hookspecs import hookimpl
from robustbench_lite.options import Option

from ._common import Preprocessing


class GaussianNoise(Preprocessing):
    """clip_[0,1](x + sigma * N(0, I)), fresh noise on every forward pass.

    Differentiable, but random: a single gradient is a noisy estimate, so the adaptive evaluation
    averages gradients over samples (EOT). Works on any input.
    """

    name = "gaussian-noise"
    description = "Inference-time Gaussian noise N(0, sigma^2), fresh on every forward pass; randomized"
    options = (Option("sigma", float, 0.1, "standard deviation of the noise (inputs are in [0, 1])", minimum=0.0),)
    randomized = True

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x + self.sigma * torch.randn_like(x), 0.0, 1.0)


@hookimpl
def register_defenses(register):
    register(GaussianNoise)
