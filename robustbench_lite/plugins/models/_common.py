"""Helpers shared by the built-in models: input-shape checks (so every mismatch reads the same
way) and the SGD setting of the CIFAR-10 reference networks."""

from __future__ import annotations

from typing import Any

import torch

from robustbench_lite.errors import UsageError

# Named in the error a feature-vector model raises for images, so the user knows what to pick instead.
IMAGE_MODELS = "cnn, lenet, vgg19, resnet18, wrn-28-10"


def _shape_text(input_shape: tuple[int, ...]) -> str:
    return str(tuple(input_shape))


def require_features(model: str, input_shape: tuple[int, ...]) -> int:
    """Return the feature count of a 1-D input shape, or raise UsageError naming the shape."""
    if len(input_shape) != 1:
        raise UsageError(
            f"model {model!r} takes flat feature vectors, but the dataset's inputs have shape "
            f"{_shape_text(input_shape)}; use an image model such as {IMAGE_MODELS}"
        )
    return input_shape[0]


def require_image(
    model: str, input_shape: tuple[int, ...], *, min_size: int = 1, exact_size: int | None = None
) -> tuple[int, int, int]:
    """Return ``(C, H, W)`` of an image shape whose sides are >= ``min_size`` (or == ``exact_size``).

    Raises UsageError naming the shape and the size the model needs.
    """
    if exact_size is not None:
        need = f"images of shape (C, {exact_size}, {exact_size})"
    else:
        need = f"images of shape (C, H, W) with H, W >= {min_size}"
    fits = len(input_shape) == 3 and (
        input_shape[1] == input_shape[2] == exact_size
        if exact_size is not None
        else min(input_shape[1:]) >= min_size
    )
    if not fits:
        raise UsageError(
            f"model {model!r} takes {need}, but the dataset's inputs have shape {_shape_text(input_shape)}"
        )
    channels, height, width = input_shape
    return channels, height, width


def cifar_sgd(parameters: Any) -> torch.optim.Optimizer:
    """SGD(lr 0.05, momentum 0.9, weight decay 5e-4): the usual recipe for VGG and ResNets on CIFAR-10."""
    return torch.optim.SGD(parameters, lr=0.05, momentum=0.9, weight_decay=5e-4)
