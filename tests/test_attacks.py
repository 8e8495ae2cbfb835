"""Attacks against mathematics: the FGSM formula, PGD's reduction to FGSM, and the threat-model invariant."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import robustbench_lite as rbl
from robustbench_lite.attack_utils import AttackBoundsError, NonFiniteGradientError, check_bounds
from robustbench_lite.registry import Registry


def linear_model(dtype=torch.float64) -> nn.Module:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 4)).to(dtype)
    return model.eval().requires_grad_(False)


def batch(dtype=torch.float64):
    torch.manual_seed(2)
    x = torch.rand(64, 3, 2, 2, dtype=dtype)
    x[:8] = 0.0  # points on the box's faces exercise the [0, 1] clipping
    x[8:16] = 1.0
    return x, torch.randint(0, 4, (64,))


def small_cnn() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 2 * 2, 5)
    ).eval().requires_grad_(False)


def test_fgsm_equals_the_closed_form_formula():
    """For softmax regression, grad_x CE = W^T (softmax(Wx + b) - onehot(y)); FGSM must be exactly its sign step."""
    model = linear_model()
    x, y = batch()
    weight, bias = model[1].weight, model[1].bias
    probabilities = torch.softmax(x.flatten(1) @ weight.T + bias, dim=1)
    gradient = ((probabilities - F.one_hot(y, 4).to(x.dtype)) @ weight).reshape(x.shape)
    expected = torch.clamp(x + 0.1 * gradient.sign(), 0, 1)
    assert torch.equal(rbl.get_attack("fgsm").perturb(model, x, y, 0.1), expected)


@pytest.mark.parametrize("eps", [0.0, 0.03, 0.3])
def test_pgd_with_one_step_of_size_eps_equals_fgsm(eps):
    model, (x, y) = small_cnn(), batch(torch.float32)
    pgd = rbl.get_attack("pgd", steps=1, rel_step_size=1.0, random_start=False)
    assert torch.equal(pgd.perturb(model, x, y, eps), rbl.get_attack("fgsm").perturb(model, x, y, eps))


def test_pgd_iterates_projected_sign_steps():
    """Two steps equal two hand-made projected sign steps (no random start)."""
    model, (x, y) = linear_model(), batch()
    eps, step = 0.1, 0.07
    expected = x.clone()
    for _ in range(2):
        x_var = expected.clone().requires_grad_(True)
        (gradient,) = torch.autograd.grad(F.cross_entropy(model(x_var), y, reduction="sum"), x_var)
        expected = torch.min(torch.max(expected + step * gradient.sign(), x - eps), x + eps).clamp(0, 1)
    pgd = rbl.get_attack("pgd", steps=2, rel_step_size=step / eps, random_start=False)
    assert torch.allclose(pgd.perturb(model, x, y, eps), expected, atol=1e-12, rtol=0)


def test_pgd_is_at_least_as_strong_as_fgsm_and_restarts_only_help():
    model, (x, y) = small_cnn(), batch(torch.float32)
    y = model(x).argmax(1)  # attack points the model gets right
    fooled = {}
    for label, attack in {
        "fgsm": rbl.get_attack("fgsm"),
        "pgd": rbl.get_attack("pgd", steps=20),
        "pgd-restarts": rbl.get_attack("pgd", steps=20, restarts=4),
    }.items():
        torch.manual_seed(0)  # the first restart replays the single run
        fooled[label] = model(attack.perturb(model, x, y, 0.05)).argmax(1) != y
    assert fooled["pgd"].sum() >= fooled["fgsm"].sum()
    assert bool((fooled["pgd-restarts"] >= fooled["pgd"]).all())
    assert fooled["pgd-restarts"].sum() > 0


def test_targeted_pgd_pushes_towards_the_target():
    model, (x, y) = small_cnn(), batch(torch.float32)
    target = 2
    hits_before = (model(x).argmax(1) == target).float().mean()
    x_adv = rbl.get_attack("pgd", steps=30, target=target).perturb(model, x, y, 0.3)
    hits_after = (model(x_adv).argmax(1) == target).float().mean()
    assert hits_after > max(0.9, hits_before)


ATTACK_SETTINGS = [
    (name, {}) for name in sorted(Registry().infos("attacks"))
] + [("pgd", {"restarts": 2}), ("pgd", {"target": 1}), ("pgd", {"random_start": False, "rel_step_size": 3.0})]


@pytest.mark.parametrize("name, options", ATTACK_SETTINGS, ids=lambda value: str(value))
@pytest.mark.parametrize("eps", [0.0, 0.01, 0.1, 0.5])
def test_every_attack_stays_in_the_eps_ball_and_the_box(name, options, eps):
    model, (x, y) = small_cnn(), batch(torch.float32)
    attack = rbl.get_attack(name, **options)
    parameters = [p.clone() for p in model.parameters()]
    x_before = x.clone()
    x_adv = attack.perturb(model, x, y, eps)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert (x_adv - x).abs().max() <= eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    check_bounds(x_adv, x, eps, attack.norm)
    assert torch.equal(x, x_before), "attacks must not modify their input"
    assert all(torch.equal(p, q) for p, q in zip(parameters, model.parameters())), "nor the model"
    assert not model.training


class _NaNBackward(torch.autograd.Function):
    """The identity forward, a NaN gradient backward: a model whose logits are fine but whose gradient is not."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return torch.full_like(grad, float("nan"))


class _NaNGradientModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = small_cnn()

    def forward(self, x):
        return self.net(_NaNBackward.apply(x))


BUILT_IN_ATTACKS = sorted(name for name, info in Registry().infos("attacks").items()
                          if info.distribution == "robustbench-lite")


@pytest.mark.parametrize("name", BUILT_IN_ATTACKS)
def test_a_nan_input_gradient_fails_the_attack_instead_of_leaving_points_unbroken(name):
    model, (x, y) = _NaNGradientModel().eval().requires_grad_(False), batch(torch.float32)
    attack = rbl.get_attack(name)
    if attack.family in ("score-based", "decision-based"):  # they never differentiate: nothing to detect
        check_bounds(attack.perturb(model, x, y, 0.1), x, 0.1, attack.norm)
        return
    with pytest.raises(NonFiniteGradientError, match="input gradient contains NaN"):
        attack.perturb(model, x, y, 0.1)


def test_bounds_check_rejects_escapes():
    x = torch.full((2, 3), 0.5)
    with pytest.raises(AttackBoundsError, match="linf ball"):
        check_bounds(x + 0.2, x, 0.1, "linf")
    with pytest.raises(AttackBoundsError, match=r"\[0, 1\] box"):
        check_bounds(x * 3, x, 1.0, "linf")
    with pytest.raises(AttackBoundsError, match="NaN"):
        check_bounds(torch.full_like(x, float("nan")), x, 0.1, "linf")
    with pytest.raises(AttackBoundsError, match="l2 ball"):
        check_bounds(x + 0.1, x, 0.1, "l2")


def test_craft_freezes_the_model_and_restores_it():
    """Crafting inside training: eval mode, no parameter gradients even if an attack calls backward()."""
    from robustbench_lite.attack_utils import craft

    class BackwardAttack(rbl.Attack):
        name = "backward"
        description = "calls backward() like some third-party attacks do"

        def perturb(self, model, x, y, eps):
            assert not model.training
            x_var = x.clone().requires_grad_(True)
            F.cross_entropy(model(x_var), y).backward()
            return torch.clamp(x + eps * x_var.grad.sign(), 0, 1)

    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 4), nn.BatchNorm1d(4)).train()
    model[2].weight.requires_grad_(False)  # a frozen layer stays frozen afterwards
    x, y = batch(torch.float32)
    craft(BackwardAttack(), model, x, y, 0.1)
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    assert [p.requires_grad for p in model.parameters()] == [True, True, False, True]
