"""Planning a run before any work: which dataset it uses, and shape errors that say how to fix them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .errors import UsageError
from .interfaces import ModelBuilder

# The zero-config benchmark's dataset, used when neither --dataset nor any model names one.
DEFAULT_DATASET = "moons"


@dataclass(frozen=True)
class DatasetChoice:
    """The dataset spec a command uses and why, for the messages that depend on it."""

    spec: str
    reason: str  # "given", or how it was chosen: "what vgg19 is meant for", "the default"

    def describe(self, name: str) -> str:
        return f"dataset {name!r}" + ("" if self.reason == "given" else f" ({self.reason})")


def choose_dataset(dataset: str | None, builders: Sequence[ModelBuilder]) -> DatasetChoice:
    """``dataset`` when given; else the one dataset the models are meant for; else the default.

    Every ``rbl`` command follows this one rule, so ``rbl run --models vgg19`` runs on CIFAR-10
    and ``rbl plot examples --models cnn`` on MNIST without naming them.
    """
    if dataset is not None:
        return DatasetChoice(dataset, "given")
    meant = {builder.label: builder.dataset for builder in builders if builder.dataset is not None}
    wanted = sorted(set(meant.values()))
    if len(wanted) > 1:
        pairs = ", ".join(f"{label} -> {spec}" for label, spec in meant.items())
        raise UsageError(f"the models are meant for different datasets ({pairs}); choose one with --dataset "
                         f"({' or '.join(wanted)}), or run them separately")
    if wanted:
        verb = "is" if len(meant) == 1 else "are"
        return DatasetChoice(wanted[0], f"what {', '.join(meant)} {verb} meant for; --dataset to change")
    return DatasetChoice(DEFAULT_DATASET, "the default; --dataset to change")


def shape_hint(error: UsageError, builder: ModelBuilder, choice: DatasetChoice, name: str) -> UsageError:
    """``error`` (a model refusing the dataset's shapes) naming the dataset in use and the fix."""
    if builder.dataset is not None and builder.dataset != name:
        fix = f"model {builder.label!r} is meant for --dataset {builder.dataset}"
    else:
        fix = "pass --dataset with inputs it takes"
    return UsageError(f"{error}; that is {choice.describe(name)}: {fix}")
