"""How the evaluation runs a model on its device: settings that buy attack throughput, mostly on GPUs.

* ``eval_batch_size``: points per attacked batch (default: the training batch size). A GPU is
  filled by larger batches than training uses; a batch that runs out of memory is halved anyway.
* ``precision="bf16"``: forward passes under bfloat16 autocast (inputs, gradients and
  adversarial examples stay float32). Faster on recent GPUs, but bfloat16 keeps about three
  significant digits, so predictions near the decision boundary can differ: such results are
  keyed and reported apart.
* ``channels_last``: the model's weights and its image inputs in NHWC memory order, which
  cuDNN's fastest convolutions (tensor cores) want.
* ``compile``: the model goes through ``torch.compile`` (compiled once per input shape, so the
  first batches of a run are slow).

Besides these, :func:`device_tuning` turns on cuDNN autotuning for CUDA runs that are not
``--deterministic``. Every setting other than the default is part of the results' keys.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .attack_utils import in_mode_of
from .choices import PRECISIONS
from .errors import UsageError



@dataclass(frozen=True)
class Acceleration:
    """The evaluation's speed settings (see the module's docstring)."""

    eval_batch_size: int | None = None
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise UsageError(f"unknown precision {self.precision!r}; valid choices: {', '.join(PRECISIONS)}")
        if self.eval_batch_size is not None and (isinstance(self.eval_batch_size, bool) or self.eval_batch_size < 1):
            raise UsageError(f"--eval-batch-size must be a positive number of points, got {self.eval_batch_size!r}")

    def settings(self) -> dict[str, Any]:
        """The settings that differ from the defaults: what results are keyed and reported with."""
        default = Acceleration()
        return {name: getattr(self, name) for name in self.__dataclass_fields__ if getattr(self, name) != getattr(default, name)}

    def apply(self, model: nn.Module) -> nn.Module:
        """``model`` as the evaluation runs it; ``model`` itself with the default settings."""
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if self.compile:
            model = torch.compile(model)
        if self.channels_last or self.precision != "fp32":
            model = in_mode_of(_Accelerated(model, self.channels_last, self.precision == "bf16"), model)
        return model


class _Accelerated(nn.Module):
    """Puts image batches in channels-last order and runs the forward pass under bf16 autocast."""

    def __init__(self, model: nn.Module, channels_last: bool, bf16: bool) -> None:
        super().__init__()
        self.model, self.channels_last, self.bf16 = model, channels_last, bf16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if not self.bf16:
            return self.model(x)
        with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):
            logits = self.model(x)
        return logits.float()  # losses, argmax and gradients downstream in float32


@contextlib.contextmanager
def device_tuning(device: torch.device, deterministic: bool) -> Iterator[None]:
    """cuDNN autotuning (the fastest convolution algorithm per shape, timed on first use) for CUDA
    runs that need not repeat bit for bit; the previous setting comes back afterwards."""
    if device.type != "cuda" or deterministic:
        yield
        return
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous
