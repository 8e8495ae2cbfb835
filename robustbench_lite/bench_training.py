"""``rbl bench --training``: adversarial training's images/s next to the bound of its passes.

A training step of a defense crafts its examples (k input gradients for a k-step PGD) and then
updates the weights. Its bound is what those passes cost at least on the same model and batch:
the crafting's passes on the frozen model (as :func:`~robustbench_lite.attack_utils.craft` runs
attacks), priced as :mod:`robustbench_lite.bench` prices an attack's, plus one forward+backward to
the parameters per train-mode forward pass of the loss (one for at-pgd; two for TRADES, on x and
on x_adv): about (k + 1) forward+backward passes for a k-step defense. Every contender is timed in
interleaved rounds, as attacks are; the optimizer's step is charged to the defense, not to the bound.
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from tabulate import tabulate
from torch import nn

from .bench import (EPS, MAX_SPREAD, ROUNDS, Contender, Ratio, Throughput, Workload, check_batch_values,
                    check_models, interleaved, noise_dataset, parse_model_spec, pass_contenders, rate_text, replay,
                    shape_text, spec_list, warm_up)
from .evaluation import PassCounter
from .interfaces import Defense, ModelBuilder, TrainingContext
from .registry import Registry, default_registry
from .runner import build_model, resolve_device

TRAINING_DEFENSES = "at-pgd,trades,at-apgd"  # the iterative adversarial trainings, whose inner loops dominate
# How a training measurement's bound is computed, per round, for the JSON file.
TRAINING_BOUND = ("(forward_passes - graph_forward_passes - training_forward_passes) * t(forward) + graph_forward_passes"
                  " * t(graph forward) + input_gradients * max(t(forward+backward) - t(graph forward), 0) + "
                  "training_forward_passes * t(update), the first three on the frozen model, per round")


@dataclass
class TrainingMeasurement(Throughput):
    """One defense's training step on one model and batch, and its bound. Seconds are medians over the rounds."""

    defense: str
    model: str
    batch_size: int
    device: str
    eps: float
    rounds: int
    seconds: float  # one training step: crafting, forward, backward, optimizer step
    cpu_seconds: float
    forward_passes: float  # per step, in full batches, the update's forward passes included
    graph_forward_passes: float  # of forward_passes, those recording an input gradient's graph (the crafting)
    training_forward_passes: float  # of forward_passes, those in train mode that the update backpropagates through
    input_gradients: float  # k: the crafting's gradient evaluations per step
    bound_seconds: float
    bound_ratio: float | None = None  # the step's time over the bound's: 1 is the most the passes allow
    bound_ratio_spread: float | None = None
    round_seconds: dict[str, list[float]] = field(default_factory=dict)
    torch_threads: int = field(default_factory=torch.get_num_threads)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "images_per_s": self.images_per_s, "bound_images_per_s": self.bound_images_per_s}


@dataclass
class _Trainee:
    """A fresh model in train mode with its optimizer, on a batch of noise labelled by its own predictions."""

    builder: ModelBuilder
    model: nn.Module
    optimizer: torch.optim.Optimizer
    workload: Workload

    @classmethod
    def of(cls, model: str, batch_size: int, device: torch.device, seed: int, registry: Registry) -> _Trainee:
        spec, shape = parse_model_spec(model)
        check_batch_values(model, shape, batch_size)
        builder = registry.create("models", spec)
        data = noise_dataset(shape, batch_size, seed)
        network = build_model(builder, data, seed).to(device)
        x = data.x_test.to(device)
        with torch.no_grad():
            y = network.eval()(x).argmax(dim=1)
        label = f"{builder.label}@{shape_text(shape)}"
        return cls(builder, network.train(), builder.optimizer(network.parameters()), Workload(label, network, x, y))


def measure_training(
    defense: str | Defense, model: str = "cnn", batch_size: int = 128, device: str = "auto", repeats: int = ROUNDS,
    seed: int = 0, registry: Registry | None = None,
) -> TrainingMeasurement:
    """Time ``defense``'s training step on a fresh ``model`` and the bound of its passes, in interleaved rounds."""
    registry = registry or default_registry()
    if isinstance(defense, str):
        defense = registry.create("defenses", defense)
    resolved = resolve_device(device)
    trainee = _Trainee.of(model, batch_size, resolved, seed, registry)
    eps = EPS["linf"]
    defense.prepare(TrainingContext(trainee.builder, noise_dataset(trainee.workload.x.shape[1:], batch_size, seed),
                                    1, batch_size, eps, seed, resolved, None))
    counted = PassCounter(trainee.model)
    step = Contender("training step", _training_step(defense, counted, trainee, eps), counted)
    warm_up(step, trainee.workload, seed)  # which also counts the passes the bound replays
    passes = _pass_contenders(trainee)
    replay(passes, _pass_counts(step, batch_size))
    interleaved(step, passes, trainee.workload, repeats, seed)
    return _training_measurement(defense, trainee, eps, step, passes)


def _training_step(defense: Defense, counted: PassCounter, trainee: _Trainee, eps: float) -> Callable[[], None]:
    x, y = trainee.workload.x, trainee.workload.y

    def step() -> None:
        loss = defense.loss(counted, x, y, eps)
        trainee.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        trainee.optimizer.step()

    return step


def _pass_contenders(trainee: _Trainee) -> list[Contender]:
    """The bound's primitives: :func:`~robustbench_lite.bench.pass_contenders` on a copy of the model
    frozen as :func:`~robustbench_lite.attack_utils.craft` freezes it for crafting, and a forward+backward to the parameters on a
    train-mode copy (the update); copies, since the training steps change the weights."""
    crafting = copy.deepcopy(trainee.model).eval().requires_grad_(False)
    updated = copy.deepcopy(trainee.model)
    x, y = trainee.workload.x, trainee.workload.y

    def update() -> None:
        F.cross_entropy(updated(x), y).backward()
        updated.zero_grad(set_to_none=True)

    return [*pass_contenders(Workload(trainee.workload.label, crafting, x, y)), Contender("update", update)]


def _pass_counts(step: Contender, batch_size: int) -> tuple[float, float, float, float]:
    """Per step, in full batches: the crafting's plain forward passes, graph-recording ones and input
    gradients, and the train-mode forward passes the update backpropagates through, each priced with
    its backward pass (TRADES makes two, on x and on x_adv; at-pgd one)."""
    counter = step.counter
    assert counter is not None
    forward, graph, training, gradients = (step.per_run(images, batch_size) for images in (
        counter.forward_images, counter.graph_forward_images, counter.training_forward_images,
        counter.backward_images))
    return forward - graph - training, graph, gradients, training


def _training_measurement(defense: Defense, trainee: _Trainee, eps: float, step: Contender,
                          passes: list[Contender]) -> TrainingMeasurement:
    size = trainee.workload.batch_size
    plain, graph, gradients, training = _pass_counts(step, size)
    bounds = [plain * f + graph * g + gradients * max(ig - g, 0.0) + training * update
              for f, g, ig, update in zip(*(contender.wall for contender in passes))]
    ratio = Ratio.of(step.wall, bounds)
    return TrainingMeasurement(
        defense=defense.label, model=trainee.workload.label, batch_size=size, device=str(trainee.workload.device),
        eps=eps, rounds=len(step.wall), seconds=statistics.median(step.wall), cpu_seconds=statistics.median(step.cpu),
        forward_passes=plain + graph + training, graph_forward_passes=graph, training_forward_passes=training,
        input_gradients=gradients,
        bound_seconds=statistics.median(bounds), bound_ratio=ratio and ratio.median,
        bound_ratio_spread=ratio and ratio.spread,
        round_seconds={contender.name: list(contender.wall) for contender in (step, *passes)},
    )


def bench_training(
    defenses: str | Iterable[str] = TRAINING_DEFENSES, models: str | Iterable[str] = "cnn", batch_size: int = 128,
    device: str = "auto", repeats: int = ROUNDS, seed: int = 0, progress: Callable[[str], None] | None = None,
    registry: Registry | None = None,
) -> list[TrainingMeasurement]:
    """:func:`measure_training` for every defense on every model; every name checked before any work."""
    registry = registry or default_registry()
    defense_list = [registry.create("defenses", spec) for spec in spec_list(defenses)]
    model_list = spec_list(models)
    check_models(model_list, [batch_size], registry)
    results = []
    for model in model_list:
        for defense in defense_list:
            if progress:
                progress(f"{defense.label} training on {model}, batch {batch_size}")
            results.append(measure_training(defense, model, batch_size, device, repeats, seed, registry))
    return results


COLUMNS = ("defense", "model", "batch", "train images/s", "input grads/step", "bound images/s", "step/bound")


def format_training(measurements: Iterable[TrainingMeasurement], max_spread: float = MAX_SPREAD) -> str:
    """The training measurements as a table; step/bound >= 1 is the overhead beyond the model's own passes."""
    rows = []
    for m in measurements:
        ratio = None if m.bound_ratio is None else Ratio(m.bound_ratio, m.bound_ratio_spread)
        rows.append((m.defense, m.model, m.batch_size, rate_text(m.images_per_s), f"{m.input_gradients:.4g}",
                     rate_text(m.bound_images_per_s), "-" if ratio is None else ratio.text(max_spread)))
    return tabulate(rows, headers=COLUMNS, tablefmt="github", disable_numparse=True,
                    colalign=("left", "left") + ("right",) * (len(COLUMNS) - 2))
