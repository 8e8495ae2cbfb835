"""Model B of the reference benchmarks: a three-convolution network for small images (MNIST)."""

from __future__ import annotations

from torch import nn

from robustbench_lite.hookspecs import Register, hookimpl
from robustbench_lite.interfaces import ModelBuilder

from ._common import require_image

# Two valid 5x5 convs (-8), pool, a valid 5x5 conv (-4), pool: each side needs ((s - 8) // 2 - 4) // 2 >= 1.
MIN_SIZE = 20


def _feature_side(side: int) -> int:
    """Side length after the convolution/pooling stack, so the classifier fits any image size."""
    return ((side - 8) // 2 - 4) // 2


class CNN(ModelBuilder):
    name = "cnn"
    dataset = "mnist"
    description = "Model B: Conv16-Conv32-pool-Conv64-pool (5x5, ReLU), then Linear(100)-Linear; images >= 20x20"

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        channels, height, width = require_image(self.name, input_shape, min_size=MIN_SIZE)
        flat = 64 * _feature_side(height) * _feature_side(width)
        return nn.Sequential(
            nn.Conv2d(channels, 16, 5), nn.ReLU(),
            nn.Conv2d(16, 32, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(flat, 100), nn.ReLU(),
            nn.Linear(100, num_classes),
        )


@hookimpl
def register_models(register: Register) -> None:
    register(CNN)
