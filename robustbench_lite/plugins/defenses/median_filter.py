"""Median smoothing, one of the feature squeezers of Xu, Evans & Qi (2018)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from robustbench_lite.errors import UsageError
from robustbench_lite.hookspecs import hookimpl
from robustbench_lite.options import Option

from ._common import Preprocessing


class MedianFilter(Preprocessing):
    """Each pixel of each channel replaced by the median of its k x k window (borders reflected).

    Built from torch ops, so it is differentiable almost everywhere: the gradient flows to the
    pixel that is each window's median, which is the exact gradient of the piecewise-linear
    filter. It is therefore declared differentiable and deterministic, and attacks differentiate
    through it directly; no BPDA row is needed. Images only.
    """

    name = "median-filter"
    description = "Inference-time k x k median filter (feature squeezing, Xu et al. 2018); differentiable a.e."
    options = (Option("kernel_size", int, 3, "odd window size k (1 leaves inputs unchanged)", minimum=1),)

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        if self.kernel_size % 2 == 0:
            raise UsageError(f"defense {self.name!r}: kernel_size must be odd, got {self.kernel_size}")

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        self.check_images(x)
        k, pad = self.kernel_size, self.kernel_size // 2
        if pad == 0:
            return x
        if min(x.shape[2:]) <= pad:
            raise UsageError(
                f"defense {self.name!r}: kernel_size {k} needs images larger than {pad} pixels; got shape {tuple(x.shape)}"
            )
        windows = F.pad(x, (pad, pad, pad, pad), mode="reflect").unfold(2, k, 1).unfold(3, k, 1)
        return windows.reshape(*x.shape, k * k).median(dim=-1).values


@hookimpl
def register_defenses(register):
    register(MedianFilter)
