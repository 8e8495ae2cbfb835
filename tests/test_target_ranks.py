"""``target_ranks``: APGD-T and FAB-T against each input's k likeliest wrong classes in one batch.

AutoAttack loops over its 9 targets in Python; ours puts k copies of each input in one batch, and
a copy's siblings stop once it succeeds, so the batch costs no more than it must.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import robustbench_lite as rbl
from robustbench_lite.errors import UsageError
from robustbench_lite.plugins.attacks._common import TargetCopies, per_input_targets

ATTACKS = ["apgd-dlr", "fab"]


class _Counting(nn.Module):
    """Counts the inputs passed forward through ``model``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.rows = model, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += len(x)
        return self.model(x)


class _OneNearRival(nn.Module):
    """Class 0 at the all-0.5 input, class 1 a mean shift of 0.01 away, classes 2 and 3 out of reach."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shift = (x - 0.5).flatten(1).mean(dim=1)
        return torch.stack([torch.full_like(shift, 0.01), shift, 0.1 * shift - 100, 0.2 * shift - 100], dim=1)


def linear_model_and_batch():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 5)).eval().requires_grad_(False)
    x = torch.rand(32, 1, 4, 4)
    return model, x, model(x).argmax(dim=1)


def test_copies_are_rank_major_with_each_inputs_kth_likeliest_wrong_class():
    model, x, y = linear_model_and_batch()
    copies = TargetCopies.of(model, x, y, 3)
    assert copies.rows.tolist() == list(range(32)) * 3
    expected = [per_input_targets(model, x, y, None, rank, "test") for rank in (1, 2, 3)]
    assert torch.equal(copies.per_input(copies.targets), torch.stack(expected))
    with pytest.raises(UsageError, match="target_ranks 5 needs more than 5 classes"):
        TargetCopies.of(model, x, y, 5)


@pytest.mark.parametrize("name", ATTACKS)
def test_all_targets_at_once_break_what_the_targets_one_by_one_break(name):
    model, x, y = linear_model_and_batch()
    eps = 0.05
    together = model(rbl.get_attack(name, target_ranks=3).perturb(model, x, y, eps)).argmax(1) != y
    one_by_one = torch.zeros_like(together)
    for rank in (1, 2, 3):
        one_by_one |= model(rbl.get_attack(name, target_rank=rank).perturb(model, x, y, eps)).argmax(1) != y
    assert 0 < int(together.sum()) < len(x)  # the budget leaves something to decide
    assert torch.equal(together, one_by_one)


@pytest.mark.parametrize("name", ATTACKS)
def test_siblings_stop_once_one_target_is_reached(name):
    """Rank 1 (class 1) is reached in a step or two; ranks 2 and 3 never are. Without the stop their
    copies would run all 100 steps (about 1,600 more rows)."""
    model, x = _Counting(_OneNearRival()), torch.full((8, 1, 4, 4), 0.5)
    y = torch.zeros(8, dtype=torch.long)
    x_adv = rbl.get_attack(name, target_ranks=3).perturb(model, x, y, 0.1)
    assert (_OneNearRival()(x_adv).argmax(dim=1) == 1).all()
    assert model.rows <= 8 + 3 * 3 * 8  # the clean logits, then at most three batches of 3 x 8 copies


@pytest.mark.parametrize("name", ATTACKS)
def test_target_ranks_is_refused_beside_another_target_option(name):
    model, x, y = linear_model_and_batch()
    with pytest.raises(UsageError, match="set one of target_rank, target_ranks"):
        rbl.get_attack(name, target_rank=1, target_ranks=2).perturb(model, x, y, 0.05)
    assert "target_ranks 5 needs more than 5 classes" in rbl.get_attack(name, target_ranks=5).unsupported((16,), 5)


def test_autoattack_with_batched_targets_breaks_the_same_points():
    model, x, y = linear_model_and_batch()
    robust = {}
    for batched in (False, True):
        attack = rbl.get_attack("aa", steps=10, queries=100, targets=3, batch_targets=batched)
        robust[batched] = model(attack.perturb(model, x, y, 0.05)).argmax(1) == y
    assert 0 < int(robust[True].sum()) < len(x)
    assert torch.equal(robust[True], robust[False])
