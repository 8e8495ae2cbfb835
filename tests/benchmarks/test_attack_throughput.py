"""Attack throughput in images/s (pytest-benchmark), next to the physical bound and torchattacks.

Skipped by the default test run; run with

    pytest tests/benchmarks --benchmark-enable --benchmark-only

Every built-in attack (listed from the registry) runs on the small model, cnn on MNIST-shaped
inputs, at batch 128; FGSM and PGD also at batch 512, and FGSM and 3-step PGD on the large
model, resnet18 on CIFAR-shaped inputs, at batch 128: about 10 minutes on one core of a 2-core
CPU. ``RBL_BENCH_FULL=1`` runs every attack on cnn, resnet18 and vgg19 at batch 128 and 512
(hours on that CPU; meant for a GPU). ``RBL_BENCH_ROUNDS`` sets the interleaved rounds (default 5;
medians count). Threads are torch's default; on a machine busy with other work set
``OMP_NUM_THREADS=1``, as a second spinning thread can slow small models down many times over.

pytest-benchmark times our attack; in the same test, robustbench_lite.bench measures the bound
(forward and backward passes of the same model on the same batch, as many as the attack made)
and torchattacks' implementation in the same rounds, in turn with ours (pytest-benchmark's setup
runs them before each of its rounds), so that both ratios come from one process and one load. Each benchmark's
extra_info holds every figure (images_per_s, gradient_evaluations, forward_passes, device, the
bound, torchattacks, the attack's settings); a table of all of them is printed at the end.
Compare runs with ``--benchmark-autosave`` and ``--benchmark-compare``.
"""

from __future__ import annotations

import functools
import os

import pytest

from robustbench_lite import bench
from robustbench_lite.registry import default_registry

FULL = os.environ.get("RBL_BENCH_FULL") == "1"
ROUNDS = int(os.environ.get("RBL_BENCH_ROUNDS", "5"))

# Reduced budgets where an attack's defaults take minutes per batch on a 2-core CPU (defaults after #).
# Attacks not named here run with their defaults.
REDUCED = {
    "apgd-ce": "steps=10",  # steps=100
    "apgd-dlr": "steps=10",  # steps=100
    "cw-l2": "steps=10",  # steps=100
    "deepfool": "steps=3",  # steps=50; torchattacks' DeepFool loops over single images
    "fab": "steps=10",  # steps=100; torchattacks' FAB takes a Jacobian (a backward pass per class) every step
    "fab-l2": "steps=10",  # steps=100
    "square": "queries=50",  # queries=1000
    "hsja": "iterations=3,initial_evals=20,max_evals=50,init_trials=10",  # 20, 100, 1000, 100
    "aa": "steps=5,queries=50",  # steps=100, queries=1000
}
SMALL = "cnn@1x28x28"
LARGE = ("resnet18@3x32x32", "vgg19@3x32x32") if FULL else ("resnet18@3x32x32",)
QUICK = ("fgsm", "pgd")  # what the default run measures beyond the small model at batch 128
QUICK_LARGE = {"pgd": "steps=3"}  # the default run's PGD on the large model: 10 steps take 45 s per run on one core


def builtin_attacks() -> list[str]:
    """The attacks of this distribution (not those of installed plugin packages), in the registry's order."""
    infos = default_registry().infos("attacks").items()
    return [name for name, info in infos if info.distribution == "robustbench-lite"]


def spec(name: str, reduced: dict[str, str] = REDUCED) -> str:
    return f"{name}[{reduced[name]}]" if name in reduced else name


def cases() -> list:
    every = builtin_attacks()
    matrix = [(spec(name), SMALL, 128) for name in every]
    if FULL:
        matrix += [(spec(name), SMALL, 512) for name in every]
        matrix += [(spec(name), model, size) for model in LARGE for size in (128, 512) for name in every]
    else:
        matrix += [(spec(name), SMALL, 512) for name in QUICK]
        matrix += [(spec(name, QUICK_LARGE), model, 128) for model in LARGE for name in QUICK]
    # Ids of plain names ("pgd-resnet18-128"), so that -k can select them; the settings are in extra_info.
    return [
        pytest.param(attack, model, size, id=f"{attack.partition('[')[0]}-{model.partition('@')[0]}-{size}")
        for attack, model, size in matrix
    ]


@functools.cache
def workload(model: str, batch_size: int) -> bench.Workload:
    """One model and batch per (model, batch size), shared by its attacks; cuda when available."""
    return bench.make_workload(model, batch_size, "auto")


@pytest.mark.parametrize("attack, model, batch_size", cases())
def test_attack_throughput(benchmark, bench_results, attack, model, batch_size):
    def timer(run, setup, rounds):
        benchmark.pedantic(run, setup=setup, rounds=rounds, iterations=1)

    benchmark.group = f"{model}, batch {batch_size}"
    measurement = bench.measure(attack, workload(model, batch_size), repeats=ROUNDS, timer=timer)
    benchmark.extra_info.update(measurement.as_dict())
    bench_results.append(measurement)
