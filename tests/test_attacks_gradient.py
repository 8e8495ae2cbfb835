"""The iterative gradient attacks against mathematics and each other: reductions between them,
hand-computed steps, targeted mode, expectation over transformation, the budget rule of the
minimum-norm attacks, and that no attack makes a model more accurate.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import robustbench_lite as rbl

CLASSES = 5


def prototype_data(n: int, seed: int, noise: float = 0.25) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy copies of one fixed random 1x8x8 prototype per class, clipped to [0, 1]."""
    generator = torch.Generator().manual_seed(0)
    prototypes = torch.rand(CLASSES, 1, 8, 8, generator=generator)
    generator.manual_seed(seed)
    y = torch.randint(0, CLASSES, (n,), generator=generator)
    return (prototypes[y] + noise * torch.randn(n, 1, 8, 8, generator=generator)).clamp(0, 1), y


@pytest.fixture(scope="module")
def small_cnn() -> nn.Module:
    """A small conv net whose random ReLU features get a ridge-regression head fitted on prototype
    data (closed form, no training loop): nonlinear, and it predicts every class (100% clean accuracy)."""
    torch.manual_seed(3)
    features = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten())
    head = nn.Linear(16 * 4 * 4, CLASSES)
    x, y = prototype_data(1000, seed=1)
    with torch.no_grad():
        h = torch.cat([features(x), torch.ones(len(x), 1)], dim=1)
        targets = 10.0 * F.one_hot(y, CLASSES).float() - 5.0
        solution = torch.linalg.solve(h.T @ h + torch.eye(h.shape[1]), h.T @ targets)
        head.weight.copy_(solution[:-1].T)
        head.bias.copy_(solution[-1])
    return nn.Sequential(features, head).eval().requires_grad_(False)


def predictions(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return (predictions(model, x) == y).float().mean().item()


def linear_model(dtype=torch.float64) -> nn.Module:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 4)).to(dtype)
    return model.eval().requires_grad_(False)


def box_batch(dtype=torch.float64):
    """64 inputs of shape 3x2x2, 8 of them at 0 and 8 at 1 so that the [0, 1] clipping is exercised."""
    torch.manual_seed(2)
    x = torch.rand(64, 3, 2, 2, dtype=dtype)
    x[:8] = 0.0
    x[8:16] = 1.0
    return x, torch.randint(0, 4, (64,))


def softmax_regression_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """grad_x CE(Wx + b, y) = W^T (softmax(Wx + b) - onehot(y)), in closed form."""
    weight, bias = model[1].weight, model[1].bias
    probabilities = torch.softmax(x.flatten(1) @ weight.T + bias, dim=1)
    return ((probabilities - F.one_hot(y, weight.shape[0]).to(x.dtype)) @ weight).reshape(x.shape)


SCHEDULES = [(0.1, 10, None), (0.2, 7, 0.3), (0.05, 1, 1.0)]


# ---------------------------------------------------------------------------------------------
# Reductions between the signed-gradient attacks.


@pytest.mark.parametrize("target", [None, 2])
@pytest.mark.parametrize("eps, steps, fraction", SCHEDULES)
def test_mifgsm_without_momentum_is_bim(small_cnn, eps, steps, fraction, target):
    """decay = 0 leaves only the current gradient over its positive mean|grad|, whose sign is the gradient's."""
    x, y = prototype_data(128, seed=2)
    mifgsm = rbl.get_attack("mifgsm", steps=steps, rel_step_size=fraction, decay=0.0, target=target)
    bim = rbl.get_attack("bim", steps=steps, rel_step_size=fraction, target=target)
    x_bim = bim.perturb(small_cnn, x, y, eps)
    assert torch.equal(mifgsm.perturb(small_cnn, x, y, eps), x_bim)
    # With momentum the attacks differ (for more than one step): the reduction is not vacuous.
    momentum = rbl.get_attack("mifgsm", steps=steps, rel_step_size=fraction, decay=1.0, target=target)
    assert torch.equal(momentum.perturb(small_cnn, x, y, eps), x_bim) == (steps == 1)


@pytest.mark.parametrize("target", [None, 2])
@pytest.mark.parametrize("eps, steps, fraction", SCHEDULES)
def test_bim_is_pgd_without_random_start(small_cnn, eps, steps, fraction, target):
    """BIM is PGD without the random start (and with one restart): the same examples, bit for bit."""
    x, y = prototype_data(128, seed=2)
    bim = rbl.get_attack("bim", steps=steps, rel_step_size=fraction, target=target)
    pgd = rbl.get_attack("pgd", steps=steps, rel_step_size=fraction, random_start=False, target=target)
    x_bim = bim.perturb(small_cnn, x, y, eps)
    assert torch.equal(x_bim, pgd.perturb(small_cnn, x, y, eps))
    assert (x_bim - x).abs().max() > eps / 2


@pytest.mark.parametrize("steps", [1, 2])
# One step of 0.8 eps cannot reach the edge of the ball: the attack says so (an AttackWarning), as it should.
@pytest.mark.filterwarnings("ignore::robustbench_lite.interfaces.AttackWarning")
def test_pgd_l2_iterates_normalised_gradient_steps_projected_onto_the_ball(steps):
    """Hand-made steps in float64 on softmax regression: x += step * g / ||g||_2, then the
    perturbation is scaled back to norm eps where longer, then clipped to [0, 1]."""
    model, (x, y) = linear_model(), box_batch()
    eps, step = 0.5, 0.4
    expected = x.clone()
    for _ in range(steps):
        gradient = softmax_regression_gradient(model, expected, y)
        moved = expected + step * gradient / gradient.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        delta = moved - x
        scale = torch.clamp(eps / delta.flatten(1).norm(dim=1), max=1.0)
        expected = (x + delta * scale.view(-1, 1, 1, 1)).clamp(0, 1)
    attack = rbl.get_attack("pgd-l2", steps=steps, rel_step_size=step / eps, random_start=False)
    assert torch.allclose(attack.perturb(model, x, y, eps), expected, atol=1e-12, rtol=0)
    norms = (expected - x).flatten(1).norm(dim=1)
    if steps == 2:  # the second step leaves the ball for some samples: the projection is exercised
        assert ((norms - eps).abs() < 1e-9).any() and (norms < eps - 1e-3).any()
    assert (expected == 0).any() and (expected == 1).any()  # and so is the clipping


# ---------------------------------------------------------------------------------------------
# Targeted mode.

TARGETED = [
    ("fgsm", {}, 0.2),
    ("bim", {}, 0.2),
    ("mifgsm", {}, 0.2),
    ("pgd-l2", {}, 1.5),
    ("cw-l2", {"c": 10.0, "lr": 0.05, "steps": 50}, 1.5),
]


@pytest.mark.parametrize("name, options, eps", TARGETED, ids=[name for name, _, _ in TARGETED])
@pytest.mark.parametrize("target", [0, 3])
def test_targeted_attacks_move_points_to_the_target(small_cnn, name, options, eps, target):
    """With target=k the attack sends far more points to class k than there were before, and than
    the untargeted attack sends there."""
    x, y = prototype_data(256, seed=2)
    before = (predictions(small_cnn, x) == target).sum().item()
    torch.manual_seed(0)
    untargeted = predictions(small_cnn, rbl.get_attack(name, **options).perturb(small_cnn, x, y, eps))
    torch.manual_seed(0)
    targeted = predictions(small_cnn, rbl.get_attack(name, target=target, **options).perturb(small_cnn, x, y, eps))
    hits = (targeted == target).sum().item()
    assert hits >= 2 * max(before, (untargeted == target).sum().item())
    assert hits >= 0.5 * len(x)


# ---------------------------------------------------------------------------------------------
# Expectation over transformation.


@pytest.mark.parametrize("eot", [2, 3, 4])
@pytest.mark.parametrize("name, eps", [("fgsm", 0.1), ("bim", 0.1), ("mifgsm", 0.1), ("pgd-l2", 1.0)])
def test_eot_on_a_deterministic_model_changes_nothing(small_cnn, name, eps, eot):
    """Averaging eot identical gradients. The average itself is exact only up to float rounding
    (e.g. (g + g + g) / 3 != g in the last bit), so the signed-gradient attacks agree exactly (a
    rounded positive multiple keeps its sign, zero stays zero) and pgd-l2 to float precision."""
    x, y = prototype_data(128, seed=2)
    options = {"random_start": False} if name == "pgd-l2" else {}
    once = rbl.get_attack(name, **options).perturb(small_cnn, x, y, eps)
    averaged = rbl.get_attack(name, eot=eot, **options).perturb(small_cnn, x, y, eps)
    if name == "pgd-l2":
        assert torch.allclose(averaged, once, atol=1e-6, rtol=0)
    else:
        assert torch.equal(averaged, once)


class NoisyLinear(nn.Module):
    """Softmax regression on the input plus fresh Gaussian noise at every forward pass: a randomised model."""

    def __init__(self, sigma: float):
        super().__init__()
        self.sigma = sigma
        self.linear = linear_model()

    def forward(self, x):
        return self.linear(x + self.sigma * torch.randn_like(x))


def fgsm_by_hand(model: NoisyLinear, x: torch.Tensor, y: torch.Tensor, eps: float, samples: int) -> torch.Tensor:
    """FGSM on the average of ``samples`` closed-form gradients at x + noise, the noise drawn as the model draws it."""
    gradient = torch.zeros_like(x)
    for _ in range(samples):
        noise = torch.randn_like(x)
        gradient += softmax_regression_gradient(model.linear, x + model.sigma * noise, y)
    return torch.clamp(x + eps * (gradient / samples).sign(), 0, 1)


@pytest.mark.parametrize("samples", [1, 8])
def test_fgsm_eot_averages_the_gradients_of_a_random_model(samples):
    model, (x, y) = NoisyLinear(sigma=2.0), box_batch()
    torch.manual_seed(10)
    ours = rbl.get_attack("fgsm", eot=samples).perturb(model, x, y, 0.1)
    torch.manual_seed(10)
    assert torch.equal(ours, fgsm_by_hand(model, x, y, 0.1, samples))
    torch.manual_seed(10)
    assert not torch.equal(ours, fgsm_by_hand(model, x, y, 0.1, 8 if samples == 1 else 1))  # the draws matter


def test_eot_steadies_the_gradient_sign_of_a_random_model():
    """The sign FGSM follows disagrees with the noise-free gradient's sign far less often with 16
    samples than with one."""
    model, (x, y) = NoisyLinear(sigma=2.0), box_batch()
    clean_sign = softmax_regression_gradient(model.linear, x, y).sign()
    disagreement = {}
    for samples in (1, 16):
        torch.manual_seed(11)
        step = rbl.get_attack("fgsm", eot=samples).perturb(model, x[16:], y[16:], 0.01) - x[16:]  # no clipping
        disagreement[samples] = (step.sign() != clean_sign[16:]).float().mean().item()
    assert disagreement[16] < disagreement[1] / 4 and disagreement[1] > 0.05


# ---------------------------------------------------------------------------------------------
# Minimum-norm attacks at a budget.


MINIMUM_NORM = [
    ("cw-l2", {"steps": 30, "lr": 0.05}),
    ("deepfool", {}),
    ("cw-l2", {"steps": 30, "lr": 0.05, "target": 1}),
]


@pytest.mark.parametrize("name, options", MINIMUM_NORM, ids=["cw-l2", "deepfool", "cw-l2-targeted"])
@pytest.mark.parametrize("eps", [0.6, 0.9, 1.2])
def test_minimum_norm_attacks_return_x_or_an_adversarial_example_within_budget(small_cnn, name, options, eps):
    """Per sample, the output is x itself, or within eps of x and reaching the goal (misclassified, or the target)."""
    x, y = prototype_data(128, seed=2)
    x_adv = rbl.get_attack(name, **options).perturb(small_cnn, x, y, eps)
    unchanged = (x_adv == x).flatten(1).all(dim=1)
    predicted = predictions(small_cnn, x_adv)
    reached = predicted == options["target"] if "target" in options else predicted != y
    within = (x_adv - x).flatten(1).norm(dim=1) <= eps + 1e-6
    assert bool((unchanged | (reached & within)).all())
    assert (~unchanged).any()  # some attacks succeed, so both branches are checked


def test_deepfool_fools_nearly_every_point_at_a_huge_budget(small_cnn):
    x, y = prototype_data(256, seed=2)
    x_adv = rbl.get_attack("deepfool").perturb(small_cnn, x, y, 1e3)
    assert accuracy(small_cnn, x, y) == 1.0 and accuracy(small_cnn, x_adv, y) <= 0.02


def test_deepfool_accuracy_does_not_increase_with_eps(small_cnn):
    """The examples found do not depend on eps; a larger budget keeps every in-budget success and
    projects the rest onto a larger ball. Per sample that need not be monotone (the segment from x to
    the example may cross the boundary twice), but the accuracy over the batch is."""
    x, y = prototype_data(256, seed=2)
    grid = [0.0, 0.25, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.25, 1.5, 3.0]
    attack = rbl.get_attack("deepfool")
    accuracies = [accuracy(small_cnn, attack.perturb(small_cnn, x, y, eps), y) for eps in grid]
    assert accuracies == sorted(accuracies, reverse=True)
    assert accuracies[0] == accuracy(small_cnn, x, y) and accuracies[-1] < 0.05


# ---------------------------------------------------------------------------------------------
# No attack helps the model.

NEVER_HELP = [
    ("fgsm", {}, (0.05, 0.15)),
    ("bim", {}, (0.05, 0.15)),
    ("mifgsm", {}, (0.05, 0.15)),
    ("pgd", {}, (0.05, 0.15)),
    ("pgd-l2", {}, (0.5, 1.0)),
    ("cw-l2", {"steps": 30, "lr": 0.05}, (0.5, 1.0)),
    ("deepfool", {}, (0.5, 1.0)),
]


@pytest.mark.parametrize("name, options, budgets", NEVER_HELP, ids=[name for name, _, _ in NEVER_HELP])
def test_no_attack_makes_the_model_more_accurate(small_cnn, name, options, budgets):
    """On noisier points (some misclassified, which an attack could in principle set right) accuracy
    never rises above clean, and drops at the larger budget."""
    x, y = prototype_data(256, seed=3, noise=0.5)
    clean = accuracy(small_cnn, x, y)
    assert 0.6 < clean < 0.98
    attack = rbl.get_attack(name, **options)
    robust = [accuracy(small_cnn, attack.perturb(small_cnn, x, y, eps), y) for eps in budgets]
    assert robust[0] <= clean and robust[1] <= robust[0] and robust[1] < clean - 0.1


def test_cw_linf_margin_loss_and_one_step_by_hand():
    """cw-linf is PGD on max_{i != y} z_i - z_y: the margin by hand, and one step of size eps as its signed gradient."""
    from robustbench_lite.attack_utils import margin_loss

    logits = torch.tensor([[2.0, 5.0, -1.0], [0.5, 0.0, 3.0]])
    assert torch.equal(margin_loss(logits, torch.tensor([1, 1])), torch.tensor([-3.0, 3.0]))

    torch.manual_seed(7)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5)).double().eval().requires_grad_(False)
    x = torch.rand(32, 3, 2, 2, dtype=torch.float64)
    y = torch.randint(0, 5, (32,))
    x_var = x.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(margin_loss(model(x_var), y).sum(), x_var)
    expected = torch.clamp(x + 0.1 * gradient.sign(), 0, 1)
    attack = rbl.get_attack("cw-linf", steps=1, rel_step_size=1.0, random_start=False)
    assert torch.equal(attack.perturb(model, x, y, 0.1), expected)
    targeted = rbl.get_attack("cw-linf", steps=20, target=2).perturb(model, x, y, 0.5)
    assert (model(targeted).argmax(1) == 2).float().mean() > 0.9
