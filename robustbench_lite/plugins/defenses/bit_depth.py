"""Bit-depth reduction, one of the feature squeezers of Xu, Evans & Qi (2018)."""

from __future__ import annotations

import torch

from robustbench_lite.hookspecs import hookimpl
from robustbench_lite.options import Option

from ._common import Preprocessing


class BitDepth(Preprocessing):
    """Every value rounded to the nearest of 2^bits evenly spaced levels in [0, 1]: round(x (2^b - 1)) / (2^b - 1).

    Works on any input (images or feature vectors). Rounding's gradient is zero almost
    everywhere, so the defense is declared non-differentiable: adaptive attacks use BPDA.
    """

    name = "bit-depth"
    description = "Inference-time bit-depth reduction to 2^bits levels (feature squeezing, Xu et al. 2018); non-differentiable"
    options = (Option("bits", int, 4, "bits per value kept (1 = binarise at 0.5)", minimum=1, maximum=8),)
    differentiable = False

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        levels = 2**self.bits - 1
        return torch.round(x * levels) / levels


@hookimpl
def register_defenses(register):
    register(BitDepth)
