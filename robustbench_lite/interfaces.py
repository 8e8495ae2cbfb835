"""The plugin contract: the four kinds of plugin and the data they exchange.

Every plugin is a class with a unique ``name``, a one-line ``description`` and declared
``options``; an instance carries one resolved setting of those options. Conventions every
plugin relies on:

* images and feature vectors are float tensors in [0, 1], shape (N, ...);
* labels are int64 class indices;
* models map inputs to logits (any per-sample shift of the logits, such as log-softmax, is fine)
  and normalise internally: the core wraps every built network in :class:`Normalize`.
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from .options import Option, format_value, resolve_options


class Plugin:
    """Common base: declared options resolved into attributes and a canonical label."""

    kind: ClassVar[str] = "plugin"
    name: ClassVar[str]
    description: ClassVar[str]
    options: ClassVar[tuple[Option, ...]] = ()

    def __init__(self, **options: Any) -> None:
        self.settings: dict[str, Any] = resolve_options(self.options, options, f"{self.kind} {self.name!r}")
        for key, value in self.settings.items():
            setattr(self, key, value)

    @property
    def label(self) -> str:
        """``name`` plus the options that differ from their defaults (and the labelled ones), e.g. ``pgd[steps=30]``."""
        changed = [
            f"{option.name}={format_value(self.settings[option.name])}"
            for option in self.options
            if option.labelled or self.settings[option.name] != option.default
        ]
        return f"{self.name}[{','.join(changed)}]" if changed else self.name

    def __repr__(self) -> str:
        return f"<{self.kind} {self.label}>"


# What an attack uses and how it searches, for the sanity checks that compare attacks (see sanity.py).
ATTACK_FAMILIES: dict[str, str] = {
    "single-step": "white-box, one gradient step (FGSM)",
    "iterative": "white-box, several gradient steps within the budget (PGD, BIM, APGD)",
    "minimum-norm": "white-box, searches the smallest perturbation, then fitted to the budget (C&W-l2, DeepFool)",
    "score-based": "black-box, uses the model's outputs only (Square)",
    "decision-based": "black-box, uses the predicted labels only (HopSkipJump)",
    "unspecified": "not declared; left out of the checks that compare attack families",
}
WHITE_BOX_FAMILIES = frozenset({"single-step", "iterative", "minimum-norm"})
BLACK_BOX_FAMILIES = frozenset({"score-based", "decision-based"})


class AttackWarning(UserWarning):
    """What an attack says about its own result that a reader of the leaderboard must see.

    Raise it with ``warnings.warn(AttackWarning(message, points=k))``, ``points`` being how many of
    the batch's inputs it concerns (None: the setting as a whole, e.g. a step too short to reach
    eps). The core records it with the cell (summing ``points`` over the batches, per message),
    keeps it in the results store, and flags the row ``attack-warnings`` with the message: AutoAttack's
    Square breaking points its white-box members left robust is one (a sign of gradient masking).
    Other warning categories are shown as usual and flag nothing.
    """

    def __init__(self, message: str, points: int | None = None) -> None:
        super().__init__(message)
        self.message, self.points = message, points

    def __str__(self) -> str:
        return self.message


class Attack(Plugin, abc.ABC):
    """An evasion attack bounded by ``eps`` in the norm ``norm`` (``"linf"`` or ``"l2"``).

    ``family`` (a key of :data:`ATTACK_FAMILIES`) says what the attack uses and how it searches;
    the sanity checks compare families (an iterative attack should beat a single-step one, a
    white-box attack a black-box one). An attack with an option named ``eot`` gets ``eot=K`` in
    the adaptive evaluation of a randomized model. An attack that doubts its own result says so
    with an :class:`AttackWarning`, which flags the row.
    """

    kind: ClassVar[str] = "attack"
    norm: ClassVar[str] = "linf"
    family: ClassVar[str] = "unspecified"

    @abc.abstractmethod
    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
        """Return adversarial inputs for ``(x, y)``: same shape, inside the eps-ball and [0, 1].

        ``model`` is in eval mode with its parameters frozen; the attack must not change either.
        """

    def unsupported(self, input_shape: tuple[int, ...], num_classes: int) -> str | None:
        """Why this attack cannot run on inputs of ``input_shape`` (per point) and ``num_classes`` classes.

        None (the default) where it can. The core asks before anything is trained and refuses the run
        with the reason, so a limit of the attack is one clear line, not a failure in every cell.
        """
        return None

    def reference(self, model: nn.Module, eps: float, num_classes: int) -> Callable[..., Any] | None:
        """Another implementation of this attack with the same settings, called as ``reference(x, y)``
        (torchattacks' for the built-ins), which ``rbl bench`` times and counts beside this one.

        None (the default) where there is none, or where it lacks one of this attack's settings.
        """
        return None


class Defense(Plugin, abc.ABC):
    """A training recipe (the loss minimised on each minibatch), optionally with an inference-time part.

    An inference-time defense overrides :meth:`preprocess`, which the runner puts in front of the
    trained model at evaluation: ``nn.Sequential(Preprocess(defense), model)``. It declares
    whether that preprocessing is ``differentiable`` (else adaptive attacks use BPDA: the real
    preprocessing forward, the identity backward) and ``randomized`` (else, unless the runner
    finds the model random anyway, no EOT). With ``training_recipe`` set to another defense's
    spec, e.g. ``"none"``, the model is trained by that defense, sharing its cached weights.
    """

    kind: ClassVar[str] = "defense"
    differentiable: ClassVar[bool] = True
    randomized: ClassVar[bool] = False
    training_recipe: ClassVar[str | None] = None

    @property
    def preprocesses(self) -> bool:
        """Whether this defense transforms inputs at inference time (it overrides :meth:`preprocess`)."""
        return type(self).preprocess is not Defense.preprocess

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """The inference-time transformation of a batch in [0, 1]; the identity unless overridden.

        Must return a tensor of the same shape in [0, 1] on ``x``'s device, and raise
        :class:`~robustbench_lite.errors.UsageError` for input shapes it cannot take (the runner
        calls it on two test points before any work starts).
        """
        return x

    def prepare(self, context: TrainingContext) -> None:
        """Called once before training starts (not when cached weights are reused).

        For recipes that need something computed first, e.g. AT-LR's most vulnerable layers
        from a normally trained model. Whatever it computes must follow from the cache key
        (model, dataset, defense options, training settings, seed).
        """

    def training_eps(self, run_eps: float) -> float:
        """The budget this defense trains at: ``run_eps`` (the run's ``--train-eps``) unless it has its
        own (the built-in adversarial trainings: their option ``eps``). The core passes it to
        :meth:`loss`, to :meth:`prepare` (``context.train_eps``) and to early stopping's validation
        attack, and keys the trained weights with it."""
        return run_eps

    @abc.abstractmethod
    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
        """Scalar training loss on one minibatch; ``eps`` is the training budget (:meth:`training_eps`).

        ``model`` is in train mode on entry and must be in train mode on return.
        """


class ModelBuilder(Plugin, abc.ABC):
    """Builds a fresh, randomly initialised network for a dataset's input shape and classes."""

    kind: ClassVar[str] = "model"
    # The dataset spec this architecture is meant for (e.g. "cifar10"): `rbl` commands use it when no
    # --dataset is given. None: any dataset whose shapes it takes.
    dataset: ClassVar[str | None] = None

    @abc.abstractmethod
    def build(self, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        """Return the network; raise :class:`~robustbench_lite.errors.UsageError` for shapes it cannot take."""

    def optimizer(self, parameters: Any) -> torch.optim.Optimizer:
        """The optimizer this architecture trains with; Adam(1e-3) unless a model says otherwise."""
        return torch.optim.Adam(parameters, lr=1e-3)


@dataclass(frozen=True)
class TrainingContext:
    """What a defense may use in :meth:`Defense.prepare`: the run's model, data and settings."""

    builder: ModelBuilder
    data: Dataset
    epochs: int
    batch_size: int
    train_eps: float
    seed: int
    device: torch.device
    cache_dir: Path | None


@dataclass
class Dataset:
    """A loaded dataset: inputs in [0, 1], int64 labels, and the statistics the model normalises with."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: Sequence[str]
    mean: Sequence[float]
    std: Sequence[float]
    source: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_test.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def digest(*tensors: torch.Tensor) -> str:
    """A fingerprint of tensors' contents: what identifies data in cache and store keys, wherever it lies on disk."""
    hasher = hashlib.sha256()
    for tensor in tensors:
        hasher.update(str((tuple(tensor.shape), tensor.dtype)).encode())
        hasher.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return hasher.hexdigest()[:32]


@dataclass(frozen=True)
class DatasetSize:
    """The shapes a loader's data will have, declared so that ``rbl run --dry-run`` can plan without the files."""

    input_shape: tuple[int, ...]
    num_classes: int
    n_train: int
    n_test: int


class DatasetLoader(Plugin, abc.ABC):
    """Loads a dataset and says which benchmark settings suit it by default."""

    kind: ClassVar[str] = "dataset"
    default_eps: ClassVar[tuple[float, ...]]
    default_train_eps: ClassVar[float]
    default_epochs: ClassVar[int]
    # What `load` returns, where it is known without loading (files a user must fetch): lets a dry run
    # estimate the cost on stand-in data of these shapes when the files are missing.
    size: ClassVar[DatasetSize | None] = None

    @abc.abstractmethod
    def load(self, data_dir: Path) -> Dataset:
        """Load train and test splits; raise DatasetMissingError naming the files and where they go."""


class Normalize(nn.Module):
    """Per-channel (or per-feature) standardisation, so that models take inputs in [0, 1]."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], input_shape: tuple[int, ...]) -> None:
        super().__init__()
        shape = (1, len(mean)) + (1,) * (len(input_shape) - 1)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).reshape(shape))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).reshape(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std
