"""What a run will cost, known before it starts: its matrix, what is cached or stored, and a timed estimate.

The estimate times one training batch of every model under every training recipe still to train, and
one attack batch of every attack on every model, on the run's own device, then scales them by the
number of batches the run takes. The attack part is an upper bound: ε carrying and clean-wrong
points leave fewer points to attack than the full batches counted here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from .errors import DatasetMissingError
from .interfaces import Attack, Dataset, DatasetLoader, Defense, ModelBuilder
from .options import budget_text
from .progress import clock

# Above this many estimated seconds on a CPU, the run warns before it starts.
LONG_CPU_RUN_SECONDS = 600.0
# Points of a timed batch, the time then scaled to the run's batch size: a dry run of a CIFAR-10 net on
# a CPU takes seconds, not minutes (per-point cost is about linear in the batch size on a CPU).
TIMING_POINTS = 16


@dataclass
class JobPlan:
    """One trained model of the matrix: its defenses, whether its weights are cached, its stored cells."""

    model: str
    trainer: str
    defenses: list[str]
    cached: bool | None  # None: not looked up (the dataset's files are missing)
    cells: int
    stored: int | None  # None where it cannot be told before training (randomized or preprocessing defenses)
    train_seconds: float | None = None  # None: cached, or the timing failed
    attack_seconds: dict[str, float | None] = field(default_factory=dict)


@dataclass
class RunPlan:
    """The whole matrix and its estimated cost."""

    dataset: str
    n_eval: int
    n_test: int
    grid: list[float]
    attacks: list[str]
    device: str
    jobs: list[JobPlan]
    missing: str | None = None  # why the data is a stand-in (its files are missing), if it is

    @property
    def cells(self) -> int:
        return sum(job.cells for job in self.jobs)

    @property
    def seconds(self) -> float:
        return sum((job.train_seconds or 0.0) + sum(s or 0.0 for s in job.attack_seconds.values()) for job in self.jobs)

    def too_long(self) -> bool:
        return self.device == "cpu" and self.seconds > LONG_CPU_RUN_SECONDS

    def lines(self) -> list[str]:
        """The plan as a person reads it: the matrix, per trained model what it costs, and the total."""
        defenses = sorted({name for job in self.jobs for name in job.defenses})
        eps = ", ".join(budget_text(value) for value in self.grid)
        text = [f"plan: {self.dataset}, {self.n_eval} of {self.n_test} test points, eps {eps}, on {self.device}",
                f"matrix: {len({job.model for job in self.jobs})} model(s) x {len(defenses)} defense(s) x "
                f"{len(self.attacks)} attack(s) x {len(self.grid)} eps = {self.cells} cells (worst case and "
                f"adaptive rows come on top), {len(self.jobs)} trained model(s)"]
        if self.missing:
            text.append("timed on random stand-in data of the dataset's declared shapes (the cache and the store "
                        f"not looked up), as its files are missing: {self.missing}")
        for job in self.jobs:
            training = "weights cached" if job.cached else f"train ~{_duration(job.train_seconds)}"
            stored = "stored cells not known before training" if job.stored is None else f"{job.stored}/{job.cells} cells stored"
            attacks = ", ".join(f"{name} ~{_duration(seconds)}" for name, seconds in job.attack_seconds.items())
            text.append(f"  {job.model}/{'+'.join(job.defenses)}: {training}; {stored}"
                        + (f"; attacks at most {attacks}" if attacks else ""))
        text.append(f"estimate: about {_duration(self.seconds)} in all (timed on one batch each; "
                    "the attacks' part is an upper bound)")
        if self.too_long():
            text.append(f"warning: more than {LONG_CPU_RUN_SECONDS / 60:g} minutes on a CPU; --n-examples, --epochs, "
                        "fewer defenses or attacks, or a GPU make it shorter")
        return text


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "? (timing failed)"
    return f"{seconds:.1f}s" if seconds < 60 else clock(seconds)


def _timed(work: Callable[[], object], device: torch.device) -> float | None:
    """Seconds ``work`` takes, or None where it fails (the run reports that failure in its cells)."""
    try:
        start = time.perf_counter()
        work()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start
    except Exception:
        return None


def training_batch_seconds(model: nn.Module, builder: ModelBuilder, trainer: Defense, data: Dataset,
                           batch_size: int, train_eps: float, device: torch.device) -> float | None:
    """One optimiser step of ``trainer``'s loss on a batch of ``batch_size`` (on a throwaway model),
    timed on at most :data:`TIMING_POINTS` points and scaled."""
    points = min(batch_size, TIMING_POINTS)
    x = data.x_train[:points].to(device)
    y = data.y_train[:points].to(device)
    optimizer = builder.optimizer(model.parameters())
    model.train()

    def step() -> None:
        optimizer.zero_grad()
        trainer.loss(model, x, y, trainer.training_eps(train_eps)).backward()
        optimizer.step()

    return scaled(_timed(step, device), batch_size / points)


def attack_batch_seconds(model: nn.Module, attack: Attack, x: torch.Tensor, y: torch.Tensor, eps: float,
                         device: torch.device) -> float | None:
    """One attack of the evaluation batch ``x`` at ``eps``, timed on at most :data:`TIMING_POINTS` points and scaled."""
    model.eval()
    points = min(len(x), TIMING_POINTS)
    seconds = _timed(lambda: attack.perturb(model, x[:points].to(device), y[:points].to(device), eps), device)
    return scaled(seconds, len(x) / points)


def scaled(seconds: float | None, factor: float) -> float | None:
    return None if seconds is None else seconds * factor


def evaluation_batches(n_eval: int, batch_size: int, grid: Sequence[float], rows: int) -> int:
    """Attacked batches of one attack on one trained model: every nonzero eps of every defense's row."""
    return math.ceil(n_eval / batch_size) * (len(grid) - 1) * rows


def stand_in(loader: DatasetLoader, missing: DatasetMissingError) -> Dataset:
    """Random data of the shapes ``loader`` declares (``size``), for a dry run whose files are missing;
    re-raises ``missing`` for a loader that declares none."""
    size = loader.size
    if size is None:
        raise missing
    shape = size.input_shape
    channels = shape[0]
    return Dataset(
        name=loader.name,
        x_train=torch.rand(1, *shape).expand(size.n_train, *shape),  # a view: the batch count, not the memory
        y_train=torch.arange(size.n_train) % size.num_classes,
        x_test=torch.rand(size.n_test, *shape),
        y_test=torch.arange(size.n_test) % size.num_classes,
        classes=[str(index) for index in range(size.num_classes)],
        mean=getattr(loader, "mean", (0.0,) * channels),
        std=getattr(loader, "std", (1.0,) * channels),
        source="random stand-in data (dry run)",
        extra={"stand_in": str(missing)},
    )
