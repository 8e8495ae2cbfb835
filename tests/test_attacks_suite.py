"""The AutoAttack suite's behaviour: APGD (CE, DLR, targeted), Square, HopSkipJump and the aa ensemble.

Mostly tiny synthetic models, so that each property is checked exactly and fast; the ordering
of the attacks' strength is checked on the real MNIST model of conftest.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import robustbench_lite as rbl
from robustbench_lite.attack_utils import check_bounds
from robustbench_lite.errors import UsageError
from robustbench_lite.plugins.attacks.apgd_dlr import APGDDLR, dlr_loss, targeted_dlr_loss
from robustbench_lite.plugins.attacks.fab import FAB
from robustbench_lite.plugins.attacks.square import Square


def tiny_cnn() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10)
    ).eval().requires_grad_(False)


def images(model: nn.Module, n: int = 64):
    """Random 1x6x6 images labelled as the model classifies them: clean accuracy 100%."""
    torch.manual_seed(4)
    x = torch.rand(n, 1, 6, 6)
    return x, model(x).argmax(1)


def with_wrong_labels(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every third label replaced by a wrong one; returns the labels and the mask of the wrong ones."""
    wrong = torch.zeros_like(y, dtype=torch.bool)
    wrong[::3] = True
    y = y.clone()
    y[wrong] = (y[wrong] + 1 + torch.arange(int(wrong.sum())) % 9) % 10
    return y, wrong


def fooled(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x_adv).argmax(1) != y


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return 1.0 - fooled(model, x, y).float().mean().item()


class Spy(nn.Module):
    """Forwards to ``model`` and records, per call, the batch size and whether a gradient could flow."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.sizes: list[int] = []
        self.gradient_possible: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(len(x))
        self.gradient_possible.append(torch.is_grad_enabled() and x.requires_grad)
        return self.model(x)


class LabelsOnly(nn.Module):
    """Shows only the predicted label: one-hot 'logits' carry no score an attack could exploit."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        return F.one_hot(logits.argmax(1), logits.shape[1]).to(x.dtype)


class Threshold(nn.Module):
    """Two classes on feature vectors: class 1 exactly where the first feature exceeds 0.5."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = 10 * (x[:, 0] - 0.5)
        return torch.stack([torch.zeros_like(score), score], dim=1)


# --- the ordering of strength on the real MNIST model ---------------------------------------------------------------


def test_stronger_attacks_give_lower_accuracy_on_mnist_at_eps_03(mnist_cnn):
    """The issue's must-show: acc(aa) <= acc(apgd-ce) <= acc(pgd) <= acc(fgsm) < clean, default settings."""
    model, data = mnist_cnn
    x, y = data.x_test[:200], data.y_test[:200]
    accuracies = {"clean": accuracy(model, x, y)}
    for name in ("fgsm", "pgd", "apgd-ce", "aa"):
        torch.manual_seed(0)
        accuracies[name] = accuracy(model, rbl.get_attack(name).perturb(model, x, y, 0.3), y)
    assert accuracies["aa"] <= accuracies["apgd-ce"] <= accuracies["pgd"] <= accuracies["fgsm"], accuracies
    assert accuracies["fgsm"] < accuracies["clean"] - 0.5, accuracies


MID_EPS = 0.15  # where fgsm, pgd and apgd-ce leave clearly different accuracies on this model


@pytest.fixture(scope="module")
def mid_eps_runs(mnist_cnn):
    """The first 100 test points the model gets right, attacked at MID_EPS with reduced budgets, seed 0 each.

    Only correctly classified points, so that aa's APGD-CE member draws exactly the random start
    that a stand-alone APGD-CE with the same seed draws (it attacks the clean-robust points only).
    """
    model, data = mnist_cnn
    x, y = data.x_test[:150], data.y_test[:150]
    right = ~fooled(model, x, y)
    x, y = x[right][:100], y[right][:100]
    assert len(x) == 100
    runs = {}
    for label, attack in {
        "fgsm": rbl.get_attack("fgsm"),
        "pgd": rbl.get_attack("pgd"),
        "apgd-ce": rbl.get_attack("apgd-ce", steps=20),
        "aa": rbl.get_attack("aa", steps=20, queries=50),
    }.items():
        torch.manual_seed(0)
        runs[label] = attack.perturb(model, x, y, MID_EPS)
    return model, x, y, runs


def test_stronger_attacks_give_lower_accuracy_on_mnist_at_a_middle_eps(mid_eps_runs):
    """At eps 0.15 the accuracies are informative (not all 0): the same order, and aa well below fgsm."""
    model, x, y, runs = mid_eps_runs
    accuracies = {label: accuracy(model, x_adv, y) for label, x_adv in runs.items()}
    assert accuracies["aa"] <= accuracies["apgd-ce"] <= accuracies["pgd"] <= accuracies["fgsm"], accuracies
    assert accuracies["aa"] < accuracies["fgsm"] - 0.1, accuracies


def test_aa_is_the_per_sample_worst_case_of_its_members(mid_eps_runs):
    """Every point that aa's first member (APGD-CE, same seed and steps) fools, aa fools too; the
    points aa leaves robust come back as the clean input, the others stay in the eps-ball."""
    model, x, y, runs = mid_eps_runs
    by_apgd, by_aa = fooled(model, runs["apgd-ce"], y), fooled(model, runs["aa"], y)
    assert 0 < by_apgd.sum() < len(y)  # the check below is not vacuous
    assert bool((by_aa >= by_apgd).all())
    assert torch.equal(runs["aa"][~by_aa], x[~by_aa])
    check_bounds(runs["aa"], x, MID_EPS, "linf")


# --- the aa ensemble on a tiny model --------------------------------------------------------------------------------


def must_not_run(*args, **kwargs):
    raise AssertionError("FAB was called")


def test_aa_fast_runs_no_fab_and_standard_does(monkeypatch):
    """version=fast (this project's ensemble) never calls FAB; version=standard (AutoAttack's) does,
    so the patch does intercept aa's member."""
    model = tiny_cnn()
    x, y = images(model)
    monkeypatch.setattr(FAB, "perturb", must_not_run)
    eps = 1e-3  # too small to fool most points: every member gets its turn
    x_adv = rbl.get_attack("aa", version="fast", steps=5, queries=20).perturb(model, x, y, eps)
    assert fooled(model, x_adv, y).float().mean() < 0.5  # points left for FAB, had it been called
    with pytest.raises(AssertionError, match="FAB was called"):
        rbl.get_attack("aa", version="standard", steps=5, queries=20).perturb(model, x, y, eps)


@pytest.mark.parametrize("version", ["standard", "plus", "rand", "fast"])
def test_aa_names_its_version_in_every_label(version):
    assert rbl.get_attack("aa", version=version).label == f"aa[version={version}]"
    assert rbl.get_attack("aa", version=version, steps=7).label == f"aa[version={version},steps=7]"


def test_aa_refuses_a_model_with_too_few_classes_for_its_dlr_members():
    assert "needs at least 4 classes" in rbl.get_attack("aa").unsupported((2,), 2)
    assert "needs at least 3 classes" in rbl.get_attack("aa", version="rand").unsupported((2,), 2)
    assert rbl.get_attack("aa").unsupported((1, 28, 28), 10) is None


def test_aa_returns_misclassified_inputs_unchanged_and_robust_ones_as_x():
    """Inputs misclassified already are returned as they are; every other output is either x or misclassified."""
    model = tiny_cnn()
    x, y = images(model)
    y, wrong = with_wrong_labels(y)
    x_adv = rbl.get_attack("aa", steps=10, queries=100).perturb(model, x, y, 0.02)
    assert torch.equal(x_adv[wrong], x[wrong])
    now_fooled = fooled(model, x_adv, y)
    assert 0 < now_fooled[~wrong].sum() < (~wrong).sum()  # some fooled, some robust: both branches checked
    assert torch.equal(x_adv[~now_fooled], x[~now_fooled])
    check_bounds(x_adv, x, 0.02, "linf")


# --- the DLR losses -------------------------------------------------------------------------------------------------


def test_dlr_loss_hand_computed_values():
    """-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3): sorted logits (3, 2, 1, 0) divide by 3 - 1 = 2."""
    logits = torch.tensor([[3.0, 1.0, 2.0, 0.0], [3.0, 1.0, 2.0, 0.0], [0.0, 5.0, 5.0, 1.0]], dtype=torch.float64)
    y = torch.tensor([0, 2, 1])
    expected = torch.tensor([-(3 - 2) / 2, -(2 - 3) / 2, 0.0], dtype=torch.float64)  # a tie is the boundary: 0
    assert torch.allclose(dlr_loss(logits, y), expected, atol=1e-10, rtol=0)


def test_targeted_dlr_loss_hand_computed_values():
    """-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2): sorted logits (4, 3, 2, 1, 0) divide by 4 - 1.5 = 2.5."""
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]] * 3, dtype=torch.float64)
    y, target = torch.tensor([0, 2, 4]), torch.tensor([1, 0, 2])
    expected = torch.tensor([-(4 - 3) / 2.5, -(2 - 4) / 2.5, -(0 - 2) / 2.5], dtype=torch.float64)
    assert torch.allclose(targeted_dlr_loss(logits, y, target), expected, atol=1e-10, rtol=0)


@pytest.mark.parametrize("scale, shift", [(1e-2, 0.0), (7.0, -50.0), (1e3, 3.0)])
def test_dlr_losses_ignore_positive_scaling_and_shifting_of_the_logits(scale, shift):
    """The point of DLR: a defense rescaling its logits cannot flatten it (cross-entropy does change)."""
    torch.manual_seed(0)
    logits = torch.randn(64, 10, dtype=torch.float64)
    y, target = torch.randint(0, 10, (64,)), torch.randint(0, 10, (64,))
    moved = scale * logits + shift
    assert torch.allclose(dlr_loss(moved, y), dlr_loss(logits, y), rtol=1e-9, atol=1e-12)
    assert torch.allclose(
        targeted_dlr_loss(moved, y, target), targeted_dlr_loss(logits, y, target), rtol=1e-9, atol=1e-12
    )
    assert not torch.allclose(F.cross_entropy(moved, y, reduction="none"), F.cross_entropy(logits, y, reduction="none"))


def test_dlr_loss_is_positive_exactly_on_misclassified_samples():
    torch.manual_seed(0)
    logits = torch.randn(256, 10)
    y = torch.randint(0, 10, (256,))
    assert torch.equal(dlr_loss(logits, y) > 0, logits.argmax(1) != y)


def test_dlr_losses_reject_too_few_classes():
    """DLR needs z_pi3 (3 classes), targeted DLR z_pi4 (4); fewer is the user's mistake, also through the attack."""
    y = torch.tensor([0, 1])
    dlr_loss(torch.randn(2, 3), y)  # enough
    targeted_dlr_loss(torch.randn(2, 4), y, torch.tensor([1, 0]))
    with pytest.raises(UsageError, match="at least 3 classes"):
        dlr_loss(torch.randn(2, 2), y)
    with pytest.raises(UsageError, match="at least 4 classes"):
        targeted_dlr_loss(torch.randn(2, 3), y, torch.tensor([1, 0]))
    two_classes = nn.Sequential(nn.Flatten(), nn.Linear(4, 2)).eval()
    with pytest.raises(UsageError):
        rbl.get_attack("apgd-dlr", steps=2).perturb(two_classes, torch.rand(2, 1, 2, 2), y, 0.1)


# --- APGD: restarts and targets -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["apgd-ce", "apgd-dlr"])
def test_apgd_restarts_never_make_a_sample_worse(name):
    """With the same seed the first restart replays the single run: every success stays (with its example),
    and samples never fooled keep at least the loss they reached. Restarts do fool more here."""
    model = tiny_cnn()
    x, y = images(model)
    torch.manual_seed(0)
    once = rbl.get_attack(name, steps=2).search(model, x, y, 0.05)
    torch.manual_seed(0)
    again = rbl.get_attack(name, steps=2, restarts=4).search(model, x, y, 0.05)
    assert bool((again.success >= once.success).all())
    assert again.success.sum() > once.success.sum()
    assert torch.equal(again.x_adv[once.success], once.x_adv[once.success])
    never = ~again.success
    assert bool((again.best_loss[never] >= once.best_loss[never]).all())
    for result in (once, again):  # the reported successes are real
        assert torch.equal(fooled(model, result.x_adv, y), result.success)


def expected_targets(model: nn.Module, x: torch.Tensor, y: torch.Tensor, rank: int) -> torch.Tensor:
    """Per sample its rank-th highest-scoring wrong class on the clean input, by an explicit loop."""
    logits = model(x)
    targets = []
    for row, label in zip(logits, y):
        wrong = [c for c in sorted(range(len(row)), key=lambda c: -row[c].item()) if c != label]
        targets.append(wrong[rank - 1])
    return torch.tensor(targets)


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_apgd_target_rank_pushes_towards_the_kth_likeliest_wrong_class(rank, monkeypatch):
    """target_rank=1 is the highest-scoring wrong class, 2 the next...: the loss is given those targets,
    and the inputs reported successful are classified as their target."""
    model = tiny_cnn()
    x, y = images(model)
    seen = []
    original = APGDDLR.objective

    def recording(self, logits, labels, target):
        seen.append(target)
        return original(self, logits, labels, target)

    monkeypatch.setattr(APGDDLR, "objective", recording)
    want = expected_targets(model, x, y, rank)
    result = rbl.get_attack("apgd-dlr", steps=20, target_rank=rank).search(model, x, y, 0.3)
    assert torch.equal(seen[0], want)
    assert result.success.float().mean() > 0.9
    with torch.no_grad():
        assert torch.equal(model(result.x_adv[result.success]).argmax(1), want[result.success])


@pytest.mark.parametrize("name", ["apgd-ce", "apgd-dlr"])
def test_apgd_fixed_target_reaches_that_class(name):
    """target=1, a class the model rarely predicts on clean inputs (4 of 64): APGD gets nearly every
    other input there, and the inputs reported successful are classified as 1."""
    model = tiny_cnn()
    x, y = images(model)
    keep = y != 1
    x, y = x[keep], y[keep]
    result = rbl.get_attack(name, steps=20, target=1).search(model, x, y, 0.3)
    assert result.success.float().mean() > 0.9
    with torch.no_grad():
        assert torch.equal(model(result.x_adv).argmax(1) == 1, result.success)


def test_apgd_rejects_target_and_target_rank_together_and_ranks_beyond_the_classes():
    model = tiny_cnn()
    x, y = images(model, 4)
    with pytest.raises(UsageError, match="set one of target, target_rank, not several"):
        rbl.get_attack("apgd-dlr", target=1, target_rank=1).perturb(model, x, y, 0.1)
    with pytest.raises(UsageError, match="target_rank 10"):
        rbl.get_attack("apgd-dlr", target_rank=10).perturb(model, x, y, 0.1)
    rbl.get_attack("apgd-dlr", steps=1, target_rank=9).perturb(model, x, y, 0.1)  # the last wrong class is fine


# --- Square ---------------------------------------------------------------------------------------------------------


def test_square_uses_no_gradient():
    """Every forward pass runs without autograd on an input that requires no gradient, even though the
    model's parameters would take one; the same spy does see APGD's gradient passes."""
    model = tiny_cnn().requires_grad_(True)
    x, y = images(model)
    spy = Spy(model)
    rbl.get_attack("square", queries=50).perturb(spy, x, y, 0.05)
    assert len(spy.sizes) == 50 and not any(spy.gradient_possible)
    assert all(p.grad is None for p in model.parameters())
    control = Spy(model)
    rbl.get_attack("apgd-ce", steps=2).perturb(control, x, y, 0.05)
    assert any(control.gradient_possible)


def threshold_points(n: int = 40) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Feature vectors of class 0 for Threshold: the first half 0.05 below the boundary (foolable at
    eps 0.1), the second half 0.4 below (never foolable at eps 0.1)."""
    torch.manual_seed(6)
    x = torch.rand(n, 16)
    foolable = torch.arange(n) < n // 2
    x[:, 0] = torch.where(foolable, 0.45, 0.1)
    return x, torch.zeros(n, dtype=torch.long), foolable


def test_square_spends_its_query_budget_and_stops_early_on_fooled_samples():
    """Samples never fooled cost exactly ``queries`` forward passes (the clean check included); fooled
    ones drop out of the batch, so the batches shrink to the robust half and the total stays below budget."""
    x, y, foolable = threshold_points()
    spy = Spy(Threshold())
    queries = 200
    x_adv = rbl.get_attack("square", queries=queries).perturb(spy, x, y, 0.1)
    assert len(spy.sizes) == queries
    assert spy.sizes[:2] == [len(x), len(x)]  # the clean check, then the initial stripes
    assert all(a >= b for a, b in zip(spy.sizes, spy.sizes[1:]))
    assert spy.sizes[-1] == (~foolable).sum()
    assert sum(spy.sizes) < queries * len(x)
    assert torch.equal(fooled(Threshold(), x_adv, y), foolable)
    check_bounds(x_adv, x, 0.1, "linf")


def test_square_works_on_feature_vectors():
    """(N, D) inputs: the result keeps the shape, stays in the ball and fools a linear model at a large eps."""
    torch.manual_seed(1)
    model = nn.Linear(16, 3).eval().requires_grad_(False)
    torch.manual_seed(2)
    x = torch.rand(64, 16)
    y = model(x).argmax(1)
    x_adv = rbl.get_attack("square", queries=100).perturb(model, x, y, 0.3)
    assert x_adv.shape == x.shape
    check_bounds(x_adv, x, 0.3, "linf")
    assert fooled(model, x_adv, y).float().mean() > 0.8


def test_square_at_eps_zero_returns_x_without_querying():
    model = tiny_cnn()
    x, y = images(model)
    spy = Spy(model)
    assert torch.equal(rbl.get_attack("square").perturb(spy, x, y, 0.0), x)
    assert spy.sizes == []


def test_square_returns_misclassified_inputs_unchanged():
    model = tiny_cnn()
    x, y = images(model)
    y, wrong = with_wrong_labels(y)
    x_adv = rbl.get_attack("square", queries=100).perturb(model, x, y, 0.1)
    assert torch.equal(x_adv[wrong], x[wrong])
    assert fooled(model, x_adv[~wrong], y[~wrong]).any()  # and the others were attacked


# --- HopSkipJump ----------------------------------------------------------------------------------------------------


def test_hsja_sees_only_labels():
    """Decision-based: showing the model's labels only (one-hot outputs) gives the identical result,
    and no forward pass could carry a gradient."""
    model = tiny_cnn()
    x, y = images(model)
    spy = Spy(model)
    torch.manual_seed(0)
    with_scores = rbl.get_attack("hsja").perturb(spy, x, y, 0.05)
    torch.manual_seed(0)
    with_labels = rbl.get_attack("hsja").perturb(LabelsOnly(model), x, y, 0.05)
    assert torch.equal(with_scores, with_labels)
    assert not any(spy.gradient_possible)
    assert 0 < fooled(model, with_scores, y).sum() < len(y)  # both outcomes occur, so equality means something


@pytest.mark.parametrize("eps", [0.1, 0.5])
def test_hsja_fools_most_points_at_a_large_eps_within_the_ball(eps):
    model = tiny_cnn()
    x, y = images(model)
    x_adv = rbl.get_attack("hsja").perturb(model, x, y, eps)
    check_bounds(x_adv, x, eps, "linf")
    assert fooled(model, x_adv, y).float().mean() > 0.9
    unfooled = ~fooled(model, x_adv, y)
    assert torch.equal(x_adv[unfooled], x[unfooled])  # at budget eps: the example found, or x


def test_hsja_at_a_tiny_eps_returns_x():
    """No boundary lies within 1e-4 of these inputs: the minimum-norm search finds nothing within budget."""
    model = tiny_cnn()
    x, y = images(model)
    assert torch.equal(rbl.get_attack("hsja", iterations=5).perturb(model, x, y, 1e-4), x)


def test_hsja_returns_misclassified_inputs_unchanged():
    model = tiny_cnn()
    x, y = images(model)
    y, wrong = with_wrong_labels(y)
    x_adv = rbl.get_attack("hsja").perturb(model, x, y, 0.2)
    assert torch.equal(x_adv[wrong], x[wrong])
    assert fooled(model, x_adv[~wrong], y[~wrong]).float().mean() > 0.9


# --- all of them ----------------------------------------------------------------------------------------------------


SUITE = [
    ("apgd-ce", {"steps": 10}),
    ("apgd-dlr", {"steps": 10}),
    ("apgd-dlr", {"steps": 10, "target_rank": 1}),
    ("square", {"queries": 100}),
    ("hsja", {}),
    ("aa", {"steps": 10, "queries": 100}),
]


@pytest.mark.parametrize("name, options", SUITE, ids=lambda value: str(value))
@pytest.mark.parametrize("eps", [0.01, 0.05])
def test_every_attack_lowers_accuracy_and_never_raises_it(name, options, eps):
    """A third of the labels are wrong (clean accuracy ~66%): an attack that re-classified misclassified
    inputs correctly would raise accuracy; one that moved the wrong way would barely lower it (all of
    them bring it under 15% at eps 0.05)."""
    model = tiny_cnn()
    x, y = images(model)
    y, _ = with_wrong_labels(y)
    x_adv = rbl.get_attack(name, **options).perturb(model, x, y, eps)
    check_bounds(x_adv, x, eps, "linf")
    clean, attacked = accuracy(model, x, y), accuracy(model, x_adv, y)
    assert attacked < clean
    if eps == 0.05:
        assert attacked < 0.25, attacked


def test_square_schedule_is_stretched_to_the_budget_unless_told_not_to():
    """The window halves after 10, 50, 200, ... of 10,000 queries; rescaled to 1,000 queries that is
    after 1, 5, 20, ...; AutoAttack's fixed schedule (rescale=false) halves at the raw counts."""
    images = torch.zeros(1, 1, 28, 28)
    stretched, fixed = Square(queries=1002), Square(queries=1002, rescale=False)
    side = [stretched._window_side(i, 1000, images) for i in (0, 2, 6)]
    assert side == [round((0.8 * 784) ** 0.5), round((0.4 * 784) ** 0.5), round((0.2 * 784) ** 0.5)]
    assert [fixed._window_side(i, 1000, images) for i in (0, 2, 6, 11)] == side[:1] * 3 + side[1:2]
