"""Attack throughput: images/s of every attack, next to its physical bound and to torchattacks.

One implementation behind both ``rbl bench`` and the pytest-benchmark suite in
``tests/benchmarks``. For one attack, model and batch it measures, in one process:

* **ours**: the attack's ``perturb`` on the batch, and how many forward and backward passes
  through the model it made (counted by :class:`PassCounter`, in images, so a pass over the
  samples still searched counts only those);
* **the physical bound**: what those passes cost at least, measured on the same model and batch:
  ``plain forwards x t(forward) + graph forwards x t(graph forward) + gradient evaluations x
  t(backward)``, where a graph forward records the graph an input gradient needs and t(backward)
  is t(forward + input gradient) - t(graph forward). For a pure gradient attack this is k x one
  forward+backward, k = its gradient evaluations; a Jacobian (DeepFool) pays one graph forward for
  its K backward passes; forward-only queries (Square, HSJA, the extra checks of restarts and budget
  fits) add their plain forward passes;
* **torchattacks**: the same attack with the same settings in torchattacks, where it has one,
  counted the same way.

Every contender (ours, the bound's three primitives, torchattacks) is warmed up, then timed once per
round, in turn (the order alternating between rounds), for ``repeats`` rounds, each call from the
same seed so that every call does the same work: a load that comes and goes slows every contender of
a round alike, and a ratio is the median of the per-round ratios, with its spread. A ratio whose
spread exceeds ``max_spread`` is not printed (the table says "unsteady"): on a machine that busy, no
single figure would be honest. The model is a freshly initialised network behind the usual
normalisation, and the labels are its own predictions: every sample starts classified "correctly",
so attacks that stop per sample once it is fooled do real work. Timings depend on the machine; the
pass counts do not.
"""

from __future__ import annotations

import json
import math
import platform
import re
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from tabulate import tabulate
from torch import nn

from . import __version__
from .acceleration import Acceleration
from .attack_utils import loss_gradient
from .errors import UsageError
from .evaluation import PassCounter, guarded_perturb, model_unchanged
from .interfaces import Attack, Dataset
from .options import PluginSpec, split_outside_brackets
from .registry import Registry, default_registry
from .runner import build_model, cpu_name, resolve_device

# Budgets at which attacks are benchmarked, per norm: the usual CIFAR-10 ones. They matter only to
# attacks that stop early (per sample, once fooled); the pass counts show how much work was done.
EPS = {"linf": 8 / 255, "l2": 0.5}
MAX_BATCH_VALUES = 2**30  # input values of one batch: 4 GiB of float32, before the attack's copies
DEFAULT_SHAPE = (1, 28, 28)  # MNIST's; a model spec may name another with @CxHxW
NUM_CLASSES = 10
# Inputs are uniform in [0, 1]: the model normalises with that distribution's mean and std.
UNIFORM_MEAN, UNIFORM_STD = 0.5, 1 / math.sqrt(12)

# Interleaved rounds of every contender (:func:`interleaved`); the median counts.
ROUNDS = 5
# A ratio whose spread (see Ratio) exceeds this is not printed.
MAX_SPREAD = 0.10
MAX_REPLAY = 20  # most calls of one bound primitive per round (see Contender.repeat)
# A timer runs ``run`` ``rounds`` times, calling ``setup`` before each: :func:`plain_rounds`, or
# pytest-benchmark's pedantic timer, which also records the times of ``run`` (our attack). The
# figures come from the clocks each contender keeps itself, so both give the same ones.
Timer = Callable[[Callable[[], Any], Callable[[], None], int], Any]


@dataclass
class Workload:
    """A model on a device with a batch to attack: the model's own predictions serve as labels."""

    label: str  # the model's label and input shape, e.g. "resnet18@3x32x32"
    model: nn.Module  # eval mode, parameters frozen (bench_training's: train mode, for its training steps)
    x: torch.Tensor
    y: torch.Tensor
    acceleration: dict[str, Any] = field(default_factory=dict)  # Acceleration settings the model runs with

    @property
    def batch_size(self) -> int:
        return len(self.x)

    @property
    def device(self) -> torch.device:
        return self.x.device


def parse_model_spec(text: str) -> tuple[PluginSpec, tuple[int, ...]]:
    """``"name[key=value,...]@CxHxW"`` as the model's spec and input shape (default :data:`DEFAULT_SHAPE`)."""
    spec_text, shape = text.strip(), DEFAULT_SHAPE
    head, at, tail = spec_text.rpartition("@")
    if at and "]" not in tail:
        if not re.fullmatch(r"\s*\d+(\s*x\s*\d+)*\s*", tail) or not head.strip():
            raise UsageError(f"malformed model spec {text!r}; expected name[key=value,...]@CxHxW, e.g. resnet18@3x32x32")
        spec_text, shape = head, tuple(int(side) for side in tail.lower().split("x"))
        if min(shape) == 0:
            raise UsageError(f"input shape of {text!r} has a zero side")
    return PluginSpec.parse(spec_text), shape


def check_batch_values(model: str, shape: Sequence[int], batch_size: int) -> None:
    """Refuse, before the model is built, an input shape whose batches could not be allocated."""
    values = batch_size * math.prod(shape)
    if values > MAX_BATCH_VALUES:
        raise UsageError(
            f"model {model!r} at batch size {batch_size} takes batches of {values:,} values, beyond the "
            f"{MAX_BATCH_VALUES:,} (4 GiB of float32) rbl bench allocates; give a smaller @CxHxW or --batch-size"
        )


def shape_text(shape: Sequence[int]) -> str:
    return "x".join(map(str, shape))


def noise_dataset(shape: Sequence[int], size: int, seed: int) -> Dataset:
    """``size`` uniform-noise inputs of ``shape`` (train and test alike), labels 0, NUM_CLASSES classes:
    what build_model needs to put a network behind the normalisation `rbl run` uses."""
    x = torch.rand((size, *shape), generator=torch.Generator().manual_seed(seed))
    labels = torch.zeros(size, dtype=torch.long)
    return Dataset(name="noise", x_train=x, y_train=labels, x_test=x, y_test=labels,
                   classes=[str(k) for k in range(NUM_CLASSES)], mean=[UNIFORM_MEAN] * shape[0],
                   std=[UNIFORM_STD] * shape[0], source="uniform noise")


def make_workload(
    model: str, batch_size: int, device: str | torch.device = "cpu", seed: int = 0, registry: Registry | None = None,
    acceleration: Acceleration | None = None,
) -> Workload:
    """A freshly initialised model (spec ``name[options]@CxHxW``) and a batch of uniform noise for it,
    the model run with ``acceleration``'s precision, memory format and compilation."""
    registry = registry or default_registry()
    spec, shape = parse_model_spec(model)
    builder = registry.create("models", spec)
    device = resolve_device(device) if isinstance(device, str) else device
    data = noise_dataset(shape, batch_size, seed)
    x = data.x_test
    acceleration = acceleration or Acceleration()
    network = acceleration.apply(build_model(builder, data, seed).to(device).eval().requires_grad_(False))
    x = x.to(device)
    with torch.no_grad():
        y = network(x).argmax(dim=1)
    loss_gradient(network, x, y)  # warm up kernels and the allocator, so that no measurement pays for it
    return Workload(label=f"{builder.label}@{shape_text(shape)}", model=network, x=x, y=y,
                    acceleration=acceleration.settings())


def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work, so that a timer stops when the work is done, not when it is queued."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_rounds(run: Callable[[], Any], setup: Callable[[], None], rounds: int) -> None:
    """The default :data:`Timer`: ``rounds`` calls of ``run``, ``setup`` before each."""
    for _ in range(rounds):
        setup()
        run()


@dataclass(frozen=True)
class Ratio:
    """A time ratio measured in interleaved rounds: the median of its per-round values, and their
    spread: half their interquartile range, relative to the median (from 5 rounds on, one odd round
    at either end moves neither; None from fewer than 3 rounds, which cannot show a spread)."""

    median: float
    spread: float | None

    @classmethod
    def of(cls, numerators: Sequence[float], denominators: Sequence[float]) -> Ratio | None:
        """The ratio of two contenders timed in the same rounds; None where a denominator is not positive."""
        if not numerators or min(denominators) <= 0:
            return None
        values = [top / bottom for top, bottom in zip(numerators, denominators)]
        middle = statistics.median(values)
        if len(values) < 3:
            return cls(middle, None)
        lower, _, upper = statistics.quantiles(values, n=4, method="inclusive")
        return cls(middle, (upper - lower) / 2 / middle)

    def steady(self, max_spread: float) -> bool:
        """Whether the rounds agree well enough for the median to mean something."""
        return self.spread is not None and self.spread <= max_spread

    def text(self, max_spread: float) -> str:
        """``1.02 ±3%``; a ratio whose spread exceeds ``max_spread`` is not printed, only its spread."""
        if self.spread is None:
            return f"{self.median:.2f} ±?"
        if not self.steady(max_spread):
            return f"unsteady ±{100 * self.spread:.0f}%"
        return f"{self.median:.2f} ±{100 * self.spread:.0f}%"


@dataclass
class Contender:
    """Something timed in every round (an attack, or a bare model pass), its clocks per round and its passes."""

    name: str
    call: Callable[[], Any]
    counter: PassCounter | None = None  # counts the passes of an attack; None for the bound's primitives
    # Calls per timing, their mean recorded: a primitive replays as many passes as the attack made (up
    # to MAX_REPLAY), so that its clock spans as much of the round as the attack's and a spike of load
    # weighs alike on both.
    repeat: int = 1
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    calls: int = 0
    last: Any = None

    def timed(self, device: torch.device, seed: int) -> None:
        """``repeat`` calls from ``seed``, so that every call does the same work, clocked in wall and
        CPU seconds per call."""
        torch.manual_seed(seed)
        synchronize(device)
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(self.repeat):
            self.last = self.call()
        synchronize(device)
        self.wall.append((time.perf_counter() - wall) / self.repeat)
        self.cpu.append((time.process_time() - cpu) / self.repeat)
        self.calls += self.repeat

    def per_run(self, images: int, batch_size: int) -> float:
        """Images counted over every call, in full-batch equivalents per call."""
        return images / (max(self.calls, 1) * batch_size)


def interleaved(ours: Contender, others: Sequence[Contender], workload: Workload, rounds: int, seed: int,
                timer: Timer = plain_rounds) -> None:
    """Time every contender once per round, in turn, after an untimed warm-up call of each not
    called yet: a machine that gets busier or quieter slows every contender of a round alike, so
    per-round ratios cancel the load that separate blocks of runs would measure. The order
    alternates, the others before ours in even rounds and after ours in odd ones, so that neither
    always runs first and a pair of rounds also cancels a load that rises or falls within a round.
    (Ours is the timer's ``run``; the others run in its ``setup``, an odd round's in the next one's.)"""
    for contender in (*others, ours):
        if contender.calls == 0:
            warm_up(contender, workload, seed)
    finished = 0  # rounds of ours done

    def run_others() -> None:
        for contender in others:
            contender.timed(workload.device, seed)

    def setup() -> None:
        if finished % 2 == 1:
            return  # an odd round: ours first
        if finished > 0:
            run_others()  # the odd round before this one: its others after its ours
        run_others()

    def run() -> None:
        nonlocal finished
        ours.timed(workload.device, seed)
        finished += 1

    timer(run, setup, rounds)
    if finished % 2 == 0 and finished > 0:
        run_others()  # the last round was odd: its others still to come


def replay(primitives: Sequence[Contender], counts: Sequence[float]) -> None:
    """Each bound primitive called as many times per round as the attack made that pass (at least
    once, at most MAX_REPLAY; see Contender.repeat)."""
    for primitive, count in zip(primitives, counts):
        primitive.repeat = min(max(round(count), 1), MAX_REPLAY)


def warm_up(contender: Contender, workload: Workload, seed: int) -> None:
    """One untimed call (kernels, allocator, caches); its passes still count."""
    contender.timed(workload.device, seed)
    contender.wall.clear(), contender.cpu.clear()


def pass_contenders(workload: Workload) -> tuple[Contender, Contender, Contender]:
    """The bound's primitives on the batch: a plain forward pass, a forward pass recording the graph
    an input gradient needs, and that forward pass with the input gradient."""
    model, x, y = workload.model, workload.x, workload.y

    def forward() -> None:
        with torch.no_grad():
            model(x)

    def graph_forward() -> None:
        with torch.enable_grad():
            model(x.detach().requires_grad_(True))

    return (Contender("forward", forward), Contender("graph forward", graph_forward),
            Contender("forward+backward", lambda: loss_gradient(model, x, y)))  # what every gradient attack iterates


def torchattacks_counterpart(attack: Attack, model: nn.Module, eps: float) -> Any | None:
    """The attack's own reference implementation with its settings (:meth:`Attack.reference`, torchattacks'
    for the built-ins); None where it has none or torchattacks is not installed."""
    return attack.reference(model, eps, NUM_CLASSES)


class Throughput:
    """Images/s of a measurement with ``batch_size``, ``seconds`` and ``bound_seconds`` (an attack's or a training step's)."""

    batch_size: int
    seconds: float
    bound_seconds: float

    @property
    def images_per_s(self) -> float:
        return self.batch_size / self.seconds

    @property
    def bound_images_per_s(self) -> float | None:
        return self.batch_size / self.bound_seconds if self.bound_seconds > 0 else None


@dataclass
class Measurement(Throughput):
    """One attack on one model and batch: ours, its physical bound, and torchattacks, timed in
    interleaved rounds. Times in seconds, medians over the rounds; ratios are medians of per-round
    ratios, each with its spread (see :class:`Ratio`)."""

    attack: str
    model: str
    batch_size: int
    device: str
    eps: float
    rounds: int
    seconds: float
    cpu_seconds: float
    forward_passes: float
    graph_forward_passes: float  # of forward_passes, those recording a graph for an input gradient
    gradient_evaluations: float
    bound_seconds: float
    forward_seconds: float  # one forward pass of the batch
    graph_forward_seconds: float  # one forward pass recording the graph of an input gradient
    forward_backward_seconds: float  # one forward pass plus input gradient
    bound_ratio: float | None = None  # ours over the bound: 1 is the most the passes allow, above 1 is overhead
    bound_ratio_spread: float | None = None
    settings: dict[str, Any] = field(default_factory=dict)  # every option of the attack, defaults included
    torchattacks: str | None = None  # the counterpart's class, None where there is none
    torchattacks_seconds: float | None = None
    torchattacks_cpu_seconds: float | None = None
    torchattacks_forward_passes: float | None = None
    torchattacks_gradient_evaluations: float | None = None
    torchattacks_ratio: float | None = None  # ours over torchattacks: below 1, ours is faster
    torchattacks_ratio_spread: float | None = None
    # Every contender's wall seconds per round; for the bound's primitives, per call (the mean of its replays).
    round_seconds: dict[str, list[float]] = field(default_factory=dict)
    torch_threads: int = field(default_factory=torch.get_num_threads)
    acceleration: dict[str, Any] = field(default_factory=dict)  # the model's precision, memory format, compilation

    @property
    def torchattacks_images_per_s(self) -> float | None:
        return None if self.torchattacks_seconds is None else self.batch_size / self.torchattacks_seconds

    def ratio(self, against: str) -> Ratio | None:
        """``"bound"`` or ``"torchattacks"``: that time ratio with its spread, None where there is none."""
        median, spread = getattr(self, f"{against}_ratio"), getattr(self, f"{against}_ratio_spread")
        return None if median is None else Ratio(median, spread)

    def as_dict(self) -> dict[str, Any]:
        """Every field and derived figure, JSON-ready (pytest-benchmark's extra_info, ``rbl bench --json``)."""
        derived = ("images_per_s", "bound_images_per_s", "torchattacks_images_per_s")
        return {**asdict(self), **{name: getattr(self, name) for name in derived}}


def _eps(attack: Attack) -> float:
    if attack.norm not in EPS:
        raise UsageError(f"attack {attack.label!r} works in the {attack.norm} norm, which has no benchmark eps")
    return EPS[attack.norm]


def measure(
    attack: str | Attack,
    workload: Workload,
    repeats: int = ROUNDS,
    seed: int = 0,
    timer: Timer = plain_rounds,
    torchattacks: bool = True,
    registry: Registry | None = None,
) -> Measurement:
    """Time and count ``attack`` (a spec or an instance) on ``workload``, its physical bound, and
    torchattacks, in ``repeats`` interleaved rounds (:func:`interleaved`).

    ``timer`` runs the rounds (pytest-benchmark passes its own, which also records our attack's times).
    """
    if isinstance(attack, str):
        attack = (registry or default_registry()).create("attacks", attack)
    eps = _eps(attack)
    # On copies, checked against the untouched batch: a fast attack that escapes its ball, edits its
    # input in place or changes the model is no result.
    counted = PassCounter(workload.model).eval()
    ours = Contender("ours", lambda: guarded_perturb(counted, attack, workload.x, workload.y, eps), counted)
    passes = pass_contenders(workload)
    reference = _torchattacks_contender(attack, workload, eps) if torchattacks else None
    what = f"attack {attack.label!r}" + (" or its torchattacks counterpart" if reference else "")
    with model_unchanged(workload.model, what):
        warm_up(ours, workload, seed)  # which also counts the passes the bound replays
        replay(passes, _pass_counts(ours, workload.batch_size))
        interleaved(ours, [*passes, *([reference] if reference else [])], workload, repeats, seed, timer)
    return _measurement(attack, workload, eps, ours, passes, reference)


def _pass_counts(ours: Contender, batch_size: int) -> tuple[float, float, float]:
    """Our attack's plain forward passes, graph-recording ones and input gradients, per run in full batches."""
    counter = ours.counter
    assert counter is not None
    forward, graph, gradients = (ours.per_run(images, batch_size) for images in (
        counter.forward_images, counter.graph_forward_images, counter.backward_images))
    return forward - graph, graph, gradients


def _torchattacks_contender(attack: Attack, workload: Workload, eps: float) -> Contender | None:
    counted = PassCounter(workload.model).eval()
    counterpart = torchattacks_counterpart(attack, counted, eps)
    if counterpart is None:
        return None
    return Contender(type(counterpart).__name__, lambda: counterpart(workload.x, workload.y), counted)


def _measurement(attack: Attack, workload: Workload, eps: float, ours: Contender,
                 passes: Sequence[Contender], reference: Contender | None) -> Measurement:
    size = workload.batch_size
    plain_count, graph, gradients = _pass_counts(ours, size)
    plain, graph_forward, forward_backward = passes
    # Per round: each plain forward at t(forward), each graph-recording one at t(graph forward), each
    # input gradient at t(forward+backward) - t(graph forward), the backward pass alone.
    bounds = [plain_count * f + graph * g + gradients * max(fb - g, 0.0)
              for f, g, fb in zip(plain.wall, graph_forward.wall, forward_backward.wall)]
    bound = Ratio.of(ours.wall, bounds)
    result = Measurement(
        attack=attack.label, model=workload.label, batch_size=size, device=str(workload.device), eps=eps,
        rounds=len(ours.wall), settings=dict(attack.settings), seconds=statistics.median(ours.wall),
        cpu_seconds=statistics.median(ours.cpu), forward_passes=plain_count + graph, graph_forward_passes=graph,
        gradient_evaluations=gradients, bound_seconds=statistics.median(bounds),
        forward_seconds=statistics.median(plain.wall), graph_forward_seconds=statistics.median(graph_forward.wall),
        forward_backward_seconds=statistics.median(forward_backward.wall),
        bound_ratio=bound and bound.median, bound_ratio_spread=bound and bound.spread,
        round_seconds={contender.name: list(contender.wall) for contender in (ours, *passes)},
        acceleration=dict(workload.acceleration),
    )
    if reference is not None:
        assert reference.counter is not None
        ratio = Ratio.of(ours.wall, reference.wall)
        result.torchattacks = reference.name
        result.torchattacks_seconds = statistics.median(reference.wall)
        result.torchattacks_cpu_seconds = statistics.median(reference.cpu)
        result.torchattacks_forward_passes = reference.per_run(reference.counter.forward_images, size)
        result.torchattacks_gradient_evaluations = reference.per_run(reference.counter.backward_images, size)
        result.torchattacks_ratio, result.torchattacks_ratio_spread = ratio and ratio.median, ratio and ratio.spread
        result.round_seconds["torchattacks"] = list(reference.wall)
    return result


def parse_batch_sizes(text: str) -> list[int]:
    """``"128,512"`` as positive ints, or raise UsageError."""
    try:
        sizes = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise UsageError(f"batch sizes must be positive integers separated by commas, e.g. 128,512; got {text!r}")
    return sizes


def check_models(models: Sequence[str], batch_sizes: Sequence[int], registry: Registry) -> None:
    """Refuse, before any work, a model spec that is unknown, cannot take its input shape, or whose
    batches could not be allocated: a builder says so now, not after an hour."""
    for model in models:
        spec, shape = parse_model_spec(model)
        check_batch_values(model, shape, max(batch_sizes, default=1))
        builder = registry.create("models", spec)
        try:
            builder.build(shape, NUM_CLASSES)
        except UsageError as error:
            raise UsageError(f"{error}; give it another input shape with @CxHxW, e.g. {spec.name}@3x32x32") from None


def spec_list(value: str | Iterable[str]) -> list[str]:
    """Comma-separated specs (commas inside brackets kept) or an iterable of them, stripped; none is an error."""
    items = split_outside_brackets(value, ",") if isinstance(value, str) else list(value)
    items = [item.strip() for item in items if item.strip()]
    if not items:
        raise UsageError(f"empty list {value!r}")
    return items


def bench(
    attacks: str | Iterable[str] = "fgsm,pgd",
    models: str | Iterable[str] = "cnn",
    batch_sizes: str | Iterable[int] = "128",
    device: str = "auto",
    repeats: int = ROUNDS,
    seed: int = 0,
    torchattacks: bool = True,
    progress: Callable[[str], None] | None = None,
    registry: Registry | None = None,
    acceleration: Acceleration | None = None,
) -> list[Measurement]:
    """:func:`measure` every attack on every model at every batch size; what ``rbl bench`` runs.

    With ``acceleration`` the model runs in that precision, memory format and compilation for all
    three measurements (ours, the bound and torchattacks).

    Every name is checked before any work starts: an unknown one raises UsageError.
    """
    registry = registry or default_registry()
    if repeats < 1:
        raise UsageError(f"repeats must be at least 1; got {repeats}")
    attack_list = [registry.create("attacks", spec) for spec in spec_list(attacks)]
    for attack in attack_list:
        _eps(attack)
    model_list = spec_list(models)
    sizes = parse_batch_sizes(batch_sizes) if isinstance(batch_sizes, str) else list(batch_sizes)
    check_models(model_list, sizes, registry)
    resolved = resolve_device(device)
    results = []
    for model in model_list:
        for size in sizes:
            workload = make_workload(model, size, resolved, seed, registry, acceleration)
            for attack in attack_list:
                if progress:
                    progress(f"{attack.label} on {workload.label}, batch {size}")
                results.append(measure(attack, workload, repeats, seed, torchattacks=torchattacks))
    return results


COLUMNS = (
    "attack", "model", "batch", "images/s", "grad evals", "bound images/s", "ours/bound",
    "torchattacks images/s", "ta grad evals", "ours/torchattacks",
)


def rate_text(value: float | None) -> str:
    """Images/s to three significant digits without an exponent (3.04, 58.1, 1840)."""
    if value is None:
        return "-"
    digits = max(0, 2 - math.floor(math.log10(value))) if value > 0 else 0
    return f"{value:.{digits}f}"


def _number(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _ratio(ratio: Ratio | None, max_spread: float) -> str:
    return "-" if ratio is None else ratio.text(max_spread)


def format_table(measurements: Iterable[Measurement], max_spread: float = MAX_SPREAD) -> str:
    """The measurements as a GitHub-readable table; ratios are time ratios (below 1: ours is faster),
    medians with their spread, or "unsteady" where the spread exceeds ``max_spread``."""
    rows = [
        (m.attack, m.model, m.batch_size, rate_text(m.images_per_s), _number(m.gradient_evaluations, ".4g"),
         rate_text(m.bound_images_per_s), _ratio(m.ratio("bound"), max_spread), rate_text(m.torchattacks_images_per_s),
         _number(m.torchattacks_gradient_evaluations, ".4g"), _ratio(m.ratio("torchattacks"), max_spread))
        for m in measurements
    ]
    # Formatted here, so that tabulate's number parsing cannot turn "1840" back into "1840.0".
    return tabulate(rows, headers=COLUMNS, tablefmt="github", disable_numparse=True,
                    colalign=("left", "left") + ("right",) * (len(COLUMNS) - 2))


def describe_setting(measurements: Sequence[Measurement], repeats: int) -> str:
    """One line on what the figures depend on: device, threads, budgets and timing."""
    devices = ", ".join(sorted({m.device for m in measurements})) or "no measurements"
    threads = ", ".join(str(t) for t in sorted({m.torch_threads for m in measurements}))
    eps = ", ".join(f"{norm} eps {value:.4g}" for norm, value in EPS.items())
    accelerations = sorted({json.dumps(m.acceleration, sort_keys=True) for m in measurements if m.acceleration})
    accelerated = f", model run with {'; '.join(accelerations)}" if accelerations else ""
    return f"{devices} ({threads} torch threads), {eps}, medians of {repeats} interleaved round(s){accelerated}"


# How a measurement's bound is computed, per round, for the JSON file.
ATTACK_BOUND = ("(forward_passes - graph_forward_passes) * forward_seconds + graph_forward_passes * graph_forward_seconds"
                " + gradient_evaluations * max(forward_backward_seconds - graph_forward_seconds, 0), per round")


def metadata(repeats: int, seed: int, bound: str | None = ATTACK_BOUND) -> dict[str, Any]:
    """Versions and settings the figures depend on, for the JSON file; ``bound`` says how the bound
    was computed (None: the results have none)."""
    try:
        torchattacks_version: str | None = version("torchattacks")
    except PackageNotFoundError:  # not installed: there is simply no comparison
        torchattacks_version = None
    return {
        "robustbench_lite": __version__, "torch": torch.__version__, "torchattacks": torchattacks_version,
        "python": platform.python_version(), "machine": platform.platform(), "processor": cpu_name(),
        "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "torch_threads": torch.get_num_threads(), "eps": EPS, "repeats": repeats, "seed": seed,
        "timing": "every contender warmed up, then timed once per round in turn; medians over the rounds, every "
                  "call from the same seed; ratios are medians of per-round ratios, spread = half their interquartile "
                  "range / median",
        **({"bound": bound} if bound is not None else {}),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_json(path: Path, results: Iterable[Any], repeats: int, seed: int, key: str = "measurements",
               bound: str | None = ATTACK_BOUND) -> None:
    """Results with an ``as_dict()`` (measurements, tunings, training measurements) under ``key``, with
    the metadata they depend on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"metadata": metadata(repeats, seed, bound), key: [result.as_dict() for result in results]}
    path.write_text(json.dumps(payload, indent=2) + "\n")

