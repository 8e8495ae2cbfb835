"""The AutoAttack suite against torchattacks on the real MNIST model: APGD (CE, DLR, targeted) and Square.

APGD and Square are randomised and ours stops each sample at its first success, so the results are
compared by robust accuracy (within 2 points on 100 test points, all classified correctly) and, for
APGD, by which points are fooled, not bit for bit. APGD runs 100 steps, the budget at which
torchattacks' integer checkpoint arithmetic gives exactly the paper's schedule (see the checkpoint
tests), so both halve step sizes at the same iterations; their halving rules differ only in edge
cases (torchattacks halves at exactly rho * period increases and never for stagnation at the first
checkpoint, ours follows the paper's strict inequality; ours drops the momentum after restarting
from the best point). Both draw their random starts from torch's generator seeded with 0.
"""

import math
from fractions import Fraction

import pytest
import torch
from torch import nn

import robustbench_lite as rbl
from robustbench_lite.plugins.attacks._apgd import APGD, checkpoints

torchattacks = pytest.importorskip("torchattacks")


POINTS = 100
STEPS = 100
APGD_EPS = 0.2  # robust accuracy ~15-20%: far from both 0 and clean
TOLERANCE = 0.02


def paper_checkpoints(steps: int) -> list[int]:
    """Croce & Hein (2020), section 3.2, in exact arithmetic: p_0 = 0, p_1 = 0.22,
    p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), checkpoints w_j = ceil(p_j * steps) for p_j <= 1."""
    p = [Fraction(0), Fraction(22, 100)]
    while p[-1] <= 1:
        p.append(p[-1] + max(p[-1] - p[-2] - Fraction(3, 100), Fraction(6, 100)))
    return sorted({math.ceil(q * steps) for q in p[1:] if q <= 1} - {0})


def torchattacks_checkpoints(steps: int) -> list[int]:
    """The iterations at which torchattacks' APGD.attack_single_run checks the step size: the first
    after steps_2 iterations, each later period shorter by size_decr, down to steps_min."""
    period = max(int(0.22 * steps), 1)
    shortest, decrease = max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)
    result, iteration = [], 0
    while iteration + period <= steps:
        iteration += period
        result.append(iteration)
        period = max(period - decrease, shortest)
    return result


@pytest.mark.parametrize("steps", [1, 3, 10, 37, 50, 100, 250, 1000, 12345])
def test_checkpoints_follow_the_papers_schedule(steps):
    """Computed in fractions, so a float rounding such as 0.22 * 100 = 22.000000000000004 cannot hide."""
    assert checkpoints(steps) == paper_checkpoints(steps)


def test_checkpoints_for_100_steps_are_torchattacks_checkpoints():
    """At 100 steps (the budget used below) torchattacks checks at the paper's iterations, 22, 41, ..., 99."""
    assert checkpoints(100) == torchattacks_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]


def test_apgd_checks_its_step_size_at_the_checkpoints(monkeypatch):
    """The schedule is what the search uses: on a model it cannot fool, the step-size check runs after
    exactly the checkpoint iterations (reconstructed from the periods it is given)."""
    periods = []
    original = APGD._checkpoint

    def recording(self, search, period, x):
        periods.append(period)
        return original(self, search, period, x)

    monkeypatch.setattr(APGD, "_checkpoint", recording)
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 10)).eval().requires_grad_(False)
    x = torch.rand(8, 1, 4, 4)
    y = model(x).argmax(1)
    result = rbl.get_attack("apgd-ce", steps=STEPS).search(model, x, y, 1e-6)
    assert not result.success.any()
    iterations = [sum(periods[: i + 1]) for i in range(len(periods))]
    assert iterations == checkpoints(STEPS)


@pytest.fixture(scope="module")
def mnist_points(mnist_cnn):
    model, data = mnist_cnn
    x, y = data.x_test[:POINTS], data.y_test[:POINTS]
    with torch.no_grad():
        assert bool((model(x).argmax(1) == y).all()), "torchattacks attacks only the correct points: keep all correct"
    return model, x, y


def robust_accuracy(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor) -> float:
    return 1.0 - fooled(model, x_adv, y).float().mean().item()


def fooled(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x_adv).argmax(1) != y


# Same algorithm, same random starts: beyond the accuracies, the fooled points themselves should
# coincide (they do on all 100 points for CE and DLR, on 99 for APGD-T).
MAX_DISAGREEMENTS = 3


@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_apgd_robust_accuracy_matches_torchattacks(mnist_points, loss):
    model, x, y = mnist_points
    torch.manual_seed(0)
    ours = rbl.get_attack(f"apgd-{loss}", steps=STEPS).perturb(model, x, y, APGD_EPS)
    reference = torchattacks.APGD(model, norm="Linf", eps=APGD_EPS, steps=STEPS, n_restarts=1, seed=0, loss=loss)
    theirs = reference(x, y)
    accuracies = robust_accuracy(model, ours, y), robust_accuracy(model, theirs, y)
    assert 0.05 < accuracies[1] < 0.5, accuracies  # informative: neither everything nor nothing fooled
    assert abs(accuracies[0] - accuracies[1]) <= TOLERANCE, accuracies
    assert (fooled(model, ours, y) != fooled(model, theirs, y)).sum() <= MAX_DISAGREEMENTS


def test_targeted_apgd_over_the_top_3_classes_matches_torchattacks_apgdt(mnist_points):
    """torchattacks' APGDT with n_classes=4 runs targeted-DLR APGD towards target_class 2, 3, 4, i.e. each
    input's 1st, 2nd and 3rd highest-scoring wrong class on its clean input (all inputs are classified
    correctly), each run on the inputs no earlier run misclassified. Ours is the same loop over
    apgd-dlr with target_rank 1, 2, 3, the APGD-T stage of aa (top_k=3); a point counts as fooled
    where the returned example is misclassified, as torchattacks counts it."""
    model, x, y = mnist_points
    torch.manual_seed(0)
    x_adv, robust = x.clone(), torch.ones_like(y, dtype=torch.bool)
    for rank in (1, 2, 3):
        index = robust.nonzero().squeeze(1)
        attack = rbl.get_attack("apgd-dlr", steps=STEPS, target_rank=rank)
        candidates = attack.perturb(model, x[index], y[index], APGD_EPS)
        now_fooled = fooled(model, candidates, y[index])
        x_adv[index[now_fooled]] = candidates[now_fooled]
        robust[index[now_fooled]] = False
    reference = torchattacks.APGDT(model, norm="Linf", eps=APGD_EPS, steps=STEPS, n_restarts=1, seed=0, n_classes=4)
    theirs = reference(x, y)
    accuracies = robust_accuracy(model, x_adv, y), robust_accuracy(model, theirs, y)
    assert 0.05 < accuracies[1] < 0.5, accuracies
    assert abs(accuracies[0] - accuracies[1]) <= TOLERANCE, accuracies
    assert (fooled(model, x_adv, y) != fooled(model, theirs, y)).sum() <= MAX_DISAGREEMENTS


SQUARE_EPS, SQUARE_QUERIES, SQUARE_SEEDS = 0.25, 1000, (0, 1)


def test_square_robust_accuracy_matches_torchattacks(mnist_points):
    """Same random-search iterations: our ``queries`` count the clean check and the initial stripes,
    torchattacks' ``n_queries`` only the iterations after them (and rescales its p schedule by it).

    Ours never wastes a query on a window already at the drawn vertex and draws windows per sample,
    so at a small budget it is stronger (300 queries, seeds 0-2: ours 13-14%, torchattacks 15-18%).
    At 1,000 queries, averaged over two seeds to tame the random search's spread, both settle.
    """
    model, x, y = mnist_points
    ours, theirs = [], []
    for seed in SQUARE_SEEDS:
        torch.manual_seed(seed)
        ours.append(robust_accuracy(model, rbl.get_attack("square", queries=SQUARE_QUERIES).perturb(model, x, y, SQUARE_EPS), y))
        reference = torchattacks.Square(
            model, norm="Linf", eps=SQUARE_EPS, n_queries=SQUARE_QUERIES - 2, n_restarts=1, p_init=0.8, seed=seed,
        )
        theirs.append(robust_accuracy(model, reference(x, y), y))
    ours, theirs = sum(ours) / len(ours), sum(theirs) / len(theirs)
    assert theirs < 0.5, theirs  # well below the clean 100%
    assert abs(ours - theirs) <= TOLERANCE, (ours, theirs)
