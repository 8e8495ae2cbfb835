"""Which layers LSA measures, and forward hooks that record their outputs.

Layers are named by their module path in the model, e.g. ``net.0`` for the first layer of the
network behind the core's ``Normalize`` (``model.get_submodule("net.0")``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from robustbench_lite import UsageError

# The layers with weights: the ones whose sensitivity AT-LR can train down. Activations, pooling
# and normalisation only transform these outputs, and measuring them too would count (nearly)
# the same representation several times in LSA's mean and deviation.
MEASURED_LAYER_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def probed_layers(model: nn.Module) -> list[str]:
    """Module paths of every Conv and Linear layer of ``model``, in the order they were defined."""
    names = [name for name, module in model.named_modules() if isinstance(module, MEASURED_LAYER_TYPES)]
    if not names:
        raise UsageError("the model has no Conv or Linear layer for LSA to measure; name the layers explicitly")
    return names


def resolve_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule at path ``name``, or a UsageError listing the layers LSA would measure."""
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise UsageError(f"the model has no layer {name!r}; its Conv/Linear layers: {', '.join(probed_layers(model))}") from None


@dataclass
class ForwardPass:
    """One forward pass of a model: its input batch and what each recorded layer output."""

    input: torch.Tensor
    outputs: dict[str, torch.Tensor] = field(default_factory=dict)


class LayerRecorder:
    """Records every forward pass of ``model``: its input and the outputs of the named ``layers``.

    Use it as a context manager: the hooks exist only inside the ``with`` block, however it is
    left. With ``training_only``, passes made in eval mode are skipped: attacks craft in eval mode,
    so what remains of an adversarial-training loss are its training passes. A layer called
    several times in one pass keeps its last output.
    """

    def __init__(self, model: nn.Module, layers: Sequence[str], *, training_only: bool = False) -> None:
        self.model = model
        self.layers = {name: resolve_layer(model, name) for name in layers}
        self.training_only = training_only
        self.passes: list[ForwardPass] = []
        self._current: ForwardPass | None = None
        self._handles: list[RemovableHandle] = []

    def __enter__(self) -> LayerRecorder:
        self._handles.append(self.model.register_forward_pre_hook(self._start_pass))
        for name, layer in self.layers.items():
            self._handles.append(layer.register_forward_hook(functools.partial(self._record, name)))
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._current = None

    def _start_pass(self, model: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        if self.training_only and not model.training:
            self._current = None
            return
        self._current = ForwardPass(args[0])
        self.passes.append(self._current)

    def _record(self, name: str, layer: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if self._current is not None:
            # A copy: an in-place operation after the layer (ReLU(inplace=True)) would change the original.
            self._current.outputs[name] = output.clone()
