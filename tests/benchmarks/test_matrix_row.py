"""A PGD row of the matrix on the real MNIST cnn against torchattacks' PGD at every eps (pytest-benchmark).

The matrix attacks only the clean-correct points, and at each eps only those that PGD has not yet
broken at a smaller one; torchattacks, as a plain evaluation loop would use it, attacks every test
point at every eps. Both run the same PGD-10 (step 2.5 eps / 10, random start) on the model
``rbl run --dataset mnist --models cnn`` trains (from the weights cache, else trained first), so
their robust accuracies agree within sampling noise and the time ratio is the work saved. On the
first 1,000 test points; ``RBL_BENCH_FULL=1`` uses all 10,000. Needs ``../shared/data``.
extra_info holds both times, their ratio and both accuracies per eps.
"""

from __future__ import annotations

import math
import os
import time

import pytest
import torch

import robustbench_lite as rbl
from robustbench_lite.evaluation import predict

torchattacks = pytest.importorskip("torchattacks")

GRID = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
POINTS = 10_000 if os.environ.get("RBL_BENCH_FULL") == "1" else 1_000
BATCH = 128


def torchattacks_row(model, x, y):
    """Robust accuracy (%) per eps > 0 of torchattacks' PGD-10 on every point, as a plain loop runs it."""
    clean = predict(model, x, BATCH) == y
    accuracy = {}
    for eps in GRID[1:]:
        attack = torchattacks.PGD(model, eps=eps, alpha=2.5 * eps / 10, steps=10, random_start=True)
        robust = torch.cat([
            predict(model, attack(x[start:start + BATCH], y[start:start + BATCH]), BATCH) == y[start:start + BATCH]
            for start in range(0, len(y), BATCH)
        ])
        accuracy[eps] = 100.0 * int((clean & robust).sum()) / len(y)
    return accuracy


def test_pgd_row_on_the_mnist_cnn_against_torchattacks(benchmark, shared_data):
    settings = dict(dataset="mnist", data_dir=shared_data, device="auto")
    model, data = rbl.trained_model(**settings, model="cnn", defense="none")
    x, y = data.x_test[:POINTS].to(next(model.parameters()).device), data.y_test[:POINTS].to(next(model.parameters()).device)

    def matrix_row():
        return rbl.run(**settings, models="cnn", defenses="none", attacks="pgd", eps=GRID, n_examples=POINTS)

    benchmark.group = f"PGD-10 row on the MNIST cnn, {POINTS} points"
    frame = benchmark.pedantic(matrix_row, rounds=1, iterations=1)
    ours_seconds = benchmark.stats.stats.min
    start = time.perf_counter()
    theirs = torchattacks_row(model, x, y)
    theirs_seconds = time.perf_counter() - start

    ours = {row.eps: row.accuracy for row in frame.query("attack == 'pgd' and eps > 0").itertuples()}
    benchmark.extra_info.update({
        "points": POINTS, "seconds": ours_seconds, "torchattacks_seconds": theirs_seconds,
        "ours/torchattacks": ours_seconds / theirs_seconds, "accuracy": ours, "torchattacks_accuracy": theirs,
    })
    print(f"\nPGD-10 row, {POINTS} points: ours {ours_seconds:.1f} s, torchattacks {theirs_seconds:.1f} s, "
          f"ratio {ours_seconds / theirs_seconds:.2f}; robust accuracy ours {ours}, torchattacks {theirs}")
    # Same attack, other random starts, and the matrix keeps a point broken at a smaller eps: its
    # accuracy may be lower, never higher beyond sampling noise (two standard errors).
    noise = max(1.0, 200 * math.sqrt(0.25 / POINTS))
    for eps in GRID[1:]:
        assert ours[eps] <= theirs[eps] + noise
        assert ours[eps] >= theirs[eps] - 3 * noise
