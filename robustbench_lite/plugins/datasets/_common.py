"""Helpers shared by the built-in dataset loaders: uint8 images to [0, 1] tensors, statistics, seeding."""

from __future__ import annotations

import numpy as np
import torch


def images_to_tensor(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 images, (N, H, W, C) or grayscale (N, H, W), as float32 N x C x H x W in [0, 1]."""
    x = torch.as_tensor(images)
    if x.dim() == 3:
        x = x.unsqueeze(-1)
    # Reorder while still uint8 (a quarter of the bytes), then convert once into a contiguous float copy.
    return x.permute(0, 3, 1, 2).contiguous().to(torch.float32).div_(255.0)


def labels_to_tensor(labels: np.ndarray | torch.Tensor | list[int]) -> torch.Tensor:
    return torch.as_tensor(np.asarray(labels), dtype=torch.int64)


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std of each channel (dim 1) over all other dims: per channel for images, per feature for vectors."""
    dims = [0, *range(2, x.dim())]
    mean = x.mean(dim=dims)
    std = x.std(dim=dims)
    # A constant channel would make the model's normalisation divide by zero; leave it unscaled instead.
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    return tuple(mean.tolist()), tuple(std.tolist())


def split_generators(seed: int, count: int) -> list[torch.Generator]:
    """``count`` independent generators derived from one seed, so each split does not depend on the others' sizes."""
    root = torch.Generator().manual_seed(seed)
    seeds = torch.randint(0, 2**62, (count,), generator=root)
    return [torch.Generator().manual_seed(int(s)) for s in seeds]
