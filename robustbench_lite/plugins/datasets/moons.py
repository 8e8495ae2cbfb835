"""The two-moons 2-D toy set, generated from its formula (no download, no scikit-learn)."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from robustbench_lite.hookspecs import Register, hookimpl
from robustbench_lite.interfaces import Dataset, DatasetLoader
from robustbench_lite.options import Option

from ._common import channel_stats, split_generators

# Fixed (not data-dependent) bounds mapped onto [0, 1], so eps means the same thing for every draw:
# the noiseless moons span x1 in [-1, 2] and x2 in [-0.5, 1]; the margins leave room for the noise.
LOW = torch.tensor([-1.5, -1.0])
HIGH = torch.tensor([2.5, 1.5])


def make_moons(n: int, noise: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` points, half on the upper moon (label 0) and half on the lower one (label 1), shuffled, in [0, 1]^2."""
    labels = (torch.arange(n) >= n // 2).to(torch.int64)
    t = torch.rand(n, generator=generator, dtype=torch.float64) * math.pi
    upper = torch.stack([torch.cos(t), torch.sin(t)], dim=1)
    lower = torch.stack([1.0 - torch.cos(t), 0.5 - torch.sin(t)], dim=1)
    points = torch.where(labels[:, None] == 0, upper, lower)
    points = points + noise * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    scaled = ((points.float() - LOW) / (HIGH - LOW)).clamp_(0.0, 1.0)
    order = torch.randperm(n, generator=generator)
    return scaled[order], labels[order]


class Moons(DatasetLoader):
    """Two interleaved half circles with Gaussian noise; features scaled from fixed bounds onto [0, 1]."""

    name = "moons"
    description = "Two-moons 2-D toy set, generated locally (outer/inner half circles plus Gaussian noise)"
    options = (
        Option("n_train", int, 1000, "training points", minimum=2),
        Option("n_test", int, 1000, "test points", minimum=2),
        Option("noise", float, 0.1, "std of the Gaussian noise added to each coordinate (before scaling)", minimum=0.0),
        Option("seed", int, 0, "generator seed; train and test are drawn independently from it", minimum=0),
    )
    default_eps = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
    default_train_eps = 0.1
    default_epochs = 30

    def load(self, data_dir: Path) -> Dataset:
        train_gen, test_gen = split_generators(self.seed, 2)
        x_train, y_train = make_moons(self.n_train, self.noise, train_gen)
        x_test, y_test = make_moons(self.n_test, self.noise, test_gen)
        mean, std = channel_stats(x_train)
        return Dataset(
            name=self.name,
            x_train=x_train,
            y_train=y_train,
            x_test=x_test,
            y_test=y_test,
            classes=["upper", "lower"],
            mean=mean,
            std=std,
            source=(
                f"generated two moons: n_train={self.n_train}, n_test={self.n_test}, noise={self.noise}, "
                f"seed={self.seed}, x1 in [-1.5, 2.5] and x2 in [-1.0, 1.5] scaled to [0, 1]"
            ),
        )


@hookimpl
def register_datasets(register: Register) -> None:
    register(Moons)
