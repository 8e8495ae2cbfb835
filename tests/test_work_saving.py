"""The matrix does not attack again a point that an attack already broke at a smaller eps of the grid.

Compared with the naive loop, which attacks every clean-correct point at every eps and counts a point
broken at eps when the attack broke it at any eps' <= eps (an example of the smaller ball lies in the
larger one): every per-point result must be identical, at a fraction of the model passes.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

import robustbench_lite as rbl
from robustbench_lite.attack_utils import normal_like, sample_streams, subset_streams, uniform_like
from robustbench_lite.evaluation import PassCounter, adversarial_predictions, predict

ATTACKS = ["fgsm", "pgd[restarts=2]", "apgd-ce[steps=20,restarts=2]"]


def naive_loop(model, x, y, attacks, grid, batch_size, seed):
    """Per (attack, eps) the number of robust points, and the input gradients the loop took."""
    counted = PassCounter(model)
    clean = predict(model, x, batch_size)
    correct = {}
    for spec in attacks:
        attack = rbl.get_attack(spec)
        broken = torch.zeros(len(y), dtype=torch.bool)
        for eps in grid[1:]:
            torch.manual_seed(seed)
            predicted = adversarial_predictions(counted, attack, x, y, eps, clean, batch_size, seed=seed)
            broken |= predicted != y
            correct[spec, eps] = int(((clean == y) & ~broken).sum())
    return correct, counted.backward_images


def test_skipping_broken_points_changes_no_result_and_saves_most_gradients(tmp_path):
    grid = [0.0, 0.2, 0.3, 0.4, 0.5]
    settings = dict(dataset="synthetic[n_train=512,n_test=96]", epochs=2, device="cpu", cache_dir=tmp_path / "cache")
    frame = rbl.run(**settings, models="cnn", defenses="none", attacks=ATTACKS, eps=grid, progress=False)
    model, data = rbl.trained_model(**settings, model="cnn", defense="none")
    # Another batch size than the run's: each point's random start is its own, whatever its batch.
    naive, naive_gradients = naive_loop(model, data.x_test, data.y_test, ATTACKS, grid, batch_size=7, seed=0)

    attacked = frame[(frame.attack != "worst-case") & (frame.eps > 0)]
    assert {(row.attack, row.eps): row.correct for row in attacked.itertuples()} == naive
    clean_correct = int(frame.query("attack == 'fgsm' and eps == 0")["correct"].iloc[0])
    assert naive[ATTACKS[1], 0.3] < clean_correct / 2  # the grid breaks most points early: much to save
    # APGD-CE already stops each point once broken, so the points skipped cost it little; FGSM and PGD
    # save every point broken at a smaller eps.
    assert naive_gradients >= 1.5 * attacked["backward_images"].sum()


# Input gradients per attacked point at one eps without any early stop: FGSM one, PGD-10 ten,
# APGD-CE its start and 100 steps.
FULL_BUDGET = {"fgsm": 1, "pgd": 10, "apgd-ce": 101}


@pytest.mark.realdata
@pytest.mark.parametrize("defense", ["none", "at-pgd"])
def test_on_real_mnist_the_matrix_matches_the_naive_loop_with_half_the_gradients(shared_data, defense):
    """The issue's MNIST matrix (fgsm, pgd, apgd-ce x 6 eps) on the first 1,000 test points, with the
    models of the committed leaderboards (trained once into the default weights cache)."""
    grid, n = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5], 1000
    attacks = list(FULL_BUDGET)
    settings = dict(dataset="mnist", data_dir=shared_data, device="cpu")
    frame = rbl.run(**settings, models="cnn", defenses=defense, attacks=attacks, eps=grid, n_examples=n,
                    progress=False)
    model, data = rbl.trained_model(**settings, model="cnn", defense=defense)
    naive, naive_gradients = naive_loop(model, data.x_test[:n], data.y_test[:n], attacks, grid, batch_size=128, seed=0)

    attacked = frame[(frame.attack != "worst-case") & (frame.eps > 0)]
    assert {(row.attack, row.eps): row.correct for row in attacked.itertuples()} == naive
    clean_correct = int(frame.query("attack == 'fgsm' and eps == 0")["correct"].iloc[0])
    full_budget = sum(FULL_BUDGET.values()) * (len(grid) - 1) * clean_correct
    matrix_gradients = int(attacked["backward_images"].sum())
    print(f"{defense}: input gradients {matrix_gradients} (matrix), {naive_gradients} (naive loop with "
          f"APGD's own early stop), {full_budget} (naive loop, full budget)")
    assert 2 * matrix_gradients <= full_budget


def test_random_numbers_inside_sample_streams_belong_to_the_point_not_to_its_row():
    torch.manual_seed(3)
    outside = torch.empty(4, 2).uniform_(-1, 1)
    torch.manual_seed(3)
    assert torch.equal(uniform_like(torch.zeros(4, 2), -1, 1), outside)  # no streams: the global generator

    with sample_streams(seed=0, ids=[10, 11, 12]):
        first, second = uniform_like(torch.zeros(3, 5)), normal_like(torch.zeros(3, 5))
    with sample_streams(seed=0, ids=[12, 10]):
        reordered = uniform_like(torch.zeros(2, 5))
        with subset_streams(torch.tensor([1])):  # the point 10 alone, second draw
            alone = normal_like(torch.zeros(1, 5))
    assert torch.equal(reordered, first[[2, 0]])
    assert torch.equal(alone, second[[0]])
    assert not torch.equal(first, second) and 0 <= first.min() and first.max() < 1
    with sample_streams(seed=1, ids=[10, 11, 12]):
        assert not torch.equal(uniform_like(torch.zeros(3, 5)), first)  # another seed, other numbers
    with sample_streams(seed=0, ids=[10, 11]), pytest.raises(ValueError, match="a batch of 3 drawn within sample streams of 2 points"):
        uniform_like(torch.zeros(3, 5))


EXAMPLE_TOLERANCE = 1e-5  # per input element: float rounding carried through the attack's steps


@pytest.mark.parametrize("spec", ["pgd[restarts=2]", "pgd-l2[restarts=2]", "apgd-ce[steps=10,restarts=3]",
                                  "cw-linf[steps=10]", "aa[version=fast,steps=10]"])
@pytest.mark.parametrize("threads", [1, 2])  # the suite runs on one thread; kernels may sum otherwise on more
def test_a_points_adversarial_example_does_not_depend_on_its_batch(spec, threads):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        check_batch_independence(spec)
    finally:
        torch.set_num_threads(previous)


def check_batch_independence(spec: str) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 5)
    ).eval().requires_grad_(False)
    x = torch.rand(40, 1, 8, 8)
    y = model(x).argmax(1)
    attack, eps = rbl.get_attack(spec), 0.3 if "l2" in spec else 0.03
    order = torch.randperm(40)
    batches = order.split(7)

    def in_batches(streams: bool) -> torch.Tensor:
        torch.manual_seed(1)
        pieces = []
        for index in batches:
            with sample_streams(0, index) if streams else contextlib.nullcontext():
                pieces.append(attack.perturb(model, x[index], y[index], eps))
        return torch.cat(pieces)

    with sample_streams(0, range(40)):
        whole = attack.perturb(model, x, y, eps)
    batched = in_batches(streams=True)
    # What is guaranteed (docs/reproducibility.md): the same decision per point, and the same example up to
    # float rounding; a batch of another size may sum in another order (seen: 1.2e-7 apart on 2 threads).
    assert torch.equal(model(batched).argmax(1), model(whole[order]).argmax(1))
    assert torch.allclose(batched, whole[order], rtol=0, atol=EXAMPLE_TOLERANCE)
    torch.manual_seed(1)
    unstreamed = in_batches(streams=False)
    assert not torch.allclose(unstreamed, attack.perturb(model, x, y, eps)[order], rtol=0, atol=EXAMPLE_TOLERANCE)
    broken = model(whole).argmax(1) != y
    assert 0 < int(broken.sum()) < len(y)  # some points broken, some not: the restarts and subsets were used


def test_targeted_runs_carry_the_points_already_moved_to_the_target(tmp_path):
    frame = rbl.run(dataset="synthetic[n_train=512,n_test=96]", epochs=2, device="cpu", cache_dir=tmp_path / "cache",
                    models="cnn", defenses="none", attacks="pgd", eps=[0.0, 0.2, 0.3, 0.4, 0.5], target=1)
    row = frame.query("attack == 'pgd[target=1]' and eps > 0").sort_values("eps")
    success = list(row["target_success"])
    assert success == sorted(success) and success[-1] > 50 > success[0]
    # PGD-10 attacks, at each eps, the clean-correct points of other classes not yet moved to the target.
    targetable = row["backward_images"].iloc[0] // 10
    hit = [round(rate * targetable / 100) for rate in success]
    assert list(row["backward_images"] // 10) == [targetable] + [targetable - count for count in hit[:-1]]
