"""A network's output as logits: what the core puts behind a model that returns something else.

Attacks, losses and the evaluation all take logits of shape (N, classes). Networks written
elsewhere often return more: a tuple (logits, features), a dict or a HuggingFace-style output
with a ``logits`` entry, or, for two classes, one logit ``z`` (sigmoid(z) the probability of
class 1). :func:`output_adapter` looks at one output of the built network and gives the module
that turns such an output into logits; ``[0, z]`` is the two-class equivalent of a single logit
(softmax([0, z]) = [1 - sigmoid(z), sigmoid(z)]). Anything else is refused, naming its type.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .errors import UsageError

TAKEN = ("a tensor of logits (N, classes), a tuple or list whose first element is one, a dict with the key "
         "'logits', an object with a .logits tensor, or, for two classes, a single logit per input")


class OutputTypeError(UsageError):
    """A model's forward returns something the core cannot read logits from."""


class Logits(nn.Module):
    """Logits (N, classes) from a network's output of one known form (no parameters: weights are unaffected)."""

    FORMS = ("first", "key", "attribute", "single-logit")

    def __init__(self, form: str, key: str = "logits") -> None:
        super().__init__()
        if form not in self.FORMS:
            raise ValueError(f"unknown output form {form!r}; valid forms: {', '.join(self.FORMS)}")
        self.form, self.key = form, key

    def forward(self, output: Any) -> torch.Tensor:
        if self.form == "first":
            return output[0]
        if self.form == "key":
            return output[self.key]
        if self.form == "attribute":
            return output.logits
        z = output.reshape(-1, 1)
        return torch.cat([torch.zeros_like(z), z], dim=1)

    def extra_repr(self) -> str:
        return f"form={self.form!r}" + (f", key={self.key!r}" if self.form == "key" else "")


def output_adapter(output: Any, num_classes: int, model: str) -> Logits | None:
    """None where ``output`` (of a batch of N inputs) is already logits, else the module that reads them.

    Raises :class:`OutputTypeError`, in one line naming the type and what is taken, for anything else.
    """
    if isinstance(output, torch.Tensor):
        if num_classes == 2 and (output.dim() == 1 or (output.dim() == 2 and output.shape[1] == 1)):
            return Logits("single-logit")
        return None  # the caller checks its shape against the dataset's classes
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return Logits("first")
    if isinstance(output, Mapping) and isinstance(output.get("logits"), torch.Tensor):
        return Logits("key")
    if isinstance(getattr(output, "logits", None), torch.Tensor):
        return Logits("attribute")
    what = type(output).__name__
    if isinstance(output, Mapping):
        what += f" with keys {', '.join(map(repr, output)) or 'none'}"
    raise OutputTypeError(f"model {model!r} returns {what}; robustbench_lite takes {TAKEN}")
