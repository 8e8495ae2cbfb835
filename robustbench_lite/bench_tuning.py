"""``rbl bench --tune``: the fastest evaluation settings for a model on this device, by measurement.

Every batch size, in standard and channels-last memory order (image inputs only), passes the same
images forward and back (what gradient attacks iterate), timed in interleaved rounds as
:mod:`robustbench_lite.bench` times attacks; each candidate's predictions are checked against the
reference setting's, and the fastest with identical predictions is recommended as the ``rbl run``
flags that select it.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from tabulate import tabulate

from .acceleration import Acceleration
from .attack_utils import loss_gradient
from .bench import (MAX_SPREAD, ROUNDS, Contender, Ratio, Workload, check_models, interleaved,
                    make_workload, spec_list)
from .errors import UsageError
from .registry import Registry, default_registry
from .runner import resolve_device

TUNE_BATCH_SIZES = (32, 64, 128, 256, 512)


@dataclass
class Tuning:
    """One candidate setting of ``rbl run``'s evaluation for a model: attacked batch size and memory format,
    timed on forward+backward passes (what gradient attacks iterate), per image."""

    model: str
    device: str
    batch_size: int
    channels_last: bool
    round_seconds: list[float]  # per image, each round
    identical: bool  # the same predictions as the reference setting (the first candidate) on the same inputs
    fastest: bool = False  # the fastest candidate with identical predictions

    @property
    def seconds_per_image(self) -> float:
        return statistics.median(self.round_seconds)

    @property
    def flags(self) -> str:
        """The `rbl run` options that select this setting."""
        return f"--eval-batch-size {self.batch_size}" + (" --channels-last" if self.channels_last else "")

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "seconds_per_image": self.seconds_per_image, "flags": self.flags}


def tune(
    models: str | Iterable[str] = "cnn",
    batch_sizes: Sequence[int] = TUNE_BATCH_SIZES,
    device: str = "auto",
    repeats: int = ROUNDS,
    seed: int = 0,
    registry: Registry | None = None,
) -> list[Tuning]:
    """Every batch size, in standard and channels-last memory order (for image inputs), timed on the
    same images in interleaved rounds; the fastest whose predictions match the reference's is marked.

    The reference is the standard memory order at the largest batch size. Each candidate passes the
    same images (as many as the largest batch) forward and back per round, in batches of its size.
    """
    registry = registry or default_registry()
    sizes = sorted(set(batch_sizes), reverse=True)
    if not sizes or min(sizes) < 1:
        raise UsageError(f"batch sizes must be positive integers; got {list(batch_sizes)}")
    model_list = spec_list(models)
    check_models(model_list, sizes, registry)
    resolved = resolve_device(device)
    return [tuning for model in model_list for tuning in _tune_model(model, sizes, resolved, repeats, seed, registry)]


def _tune_model(model: str, sizes: Sequence[int], device: torch.device, repeats: int, seed: int,
                registry: Registry) -> list[Tuning]:
    standard = make_workload(model, sizes[0], device, seed, registry)
    layouts = [(False, standard)]
    if standard.x.dim() == 4:  # NHWC only means something for image batches
        layouts.append((True, make_workload(model, sizes[0], device, seed, registry, Acceleration(channels_last=True))))
    candidates = [(layout, workload, size) for layout, workload in layouts for size in sizes]
    contenders = [Contender(f"{size}{' channels-last' if layout else ''}", _passes_in_batches(workload, size))
                  for layout, workload, size in candidates]
    interleaved(contenders[0], contenders[1:], standard, repeats, seed)
    reference = standard.y  # the largest batch, standard layout: make_workload's own predictions
    results = []
    for (layout, workload, size), contender in zip(candidates, contenders):
        results.append(Tuning(
            model=standard.label, device=str(device), batch_size=size, channels_last=layout,
            round_seconds=[seconds / sizes[0] for seconds in contender.wall], identical=torch.equal(_predictions_in_batches(workload, size), reference),
        ))
    eligible = [tuning for tuning in results if tuning.identical]
    min(eligible, key=lambda tuning: tuning.seconds_per_image).fastest = True  # the reference itself is eligible
    return results


def _passes_in_batches(workload: Workload, size: int) -> Callable[[], None]:
    def run() -> None:
        for start in range(0, workload.batch_size, size):
            loss_gradient(workload.model, workload.x[start:start + size], workload.y[start:start + size])
    return run


def _predictions_in_batches(workload: Workload, size: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([workload.model(workload.x[start:start + size]).argmax(dim=1)
                          for start in range(0, workload.batch_size, size)])


def format_tuning(tunings: Sequence[Tuning], max_spread: float = MAX_SPREAD) -> str:
    """The candidates as a table, fastest first per model, each timed against the fastest with
    identical predictions (per round, as ratios are), and the `rbl run` flags of that one."""
    chosen = {tuning.model: tuning for tuning in tunings if tuning.fastest}
    rows = []
    for tuning in sorted(tunings, key=lambda tuning: (tuning.model, tuning.seconds_per_image)):
        ratio = Ratio.of(tuning.round_seconds, chosen[tuning.model].round_seconds)
        relative = "-" if ratio is None else ratio.text(max_spread)
        rows.append((tuning.model, tuning.batch_size, "yes" if tuning.channels_last else "no",
                     f"{1e3 * tuning.seconds_per_image:.3g}", relative, "yes" if tuning.identical else "NO",
                     "<- fastest" if tuning.fastest else ""))
    table = tabulate(rows, headers=("model", "batch", "channels last", "ms/image (fwd+bwd)", "time / fastest",
                                    "same predictions", ""), tablefmt="github", disable_numparse=True)
    return table + "\n" + "\n".join(f"{model}: rbl run ... {tuning.flags}" for model, tuning in chosen.items())
