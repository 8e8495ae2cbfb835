"""FAB (fab, fab-l2): the exact box-constrained projection, the attack's budget rule, and agreement
with the original implementation (../shared/reference/auto-attack) and with torchattacks' FAB."""

import pytest
import torch

import robustbench_lite as rbl
from robustbench_lite.attack_utils import check_bounds, perturbation_norm
from robustbench_lite.plugins.attacks.fab import project_onto_hyperplane


def step(point, normal, offset, norm):
    return project_onto_hyperplane(torch.tensor([point]), torch.tensor([normal]), torch.tensor([offset]), norm)[0]


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_by_hand(norm):
    """From (0.9, 0.5) onto x1 + x2 = b: the first coordinate can only rise by 0.1 before the box stops it."""
    assert torch.allclose(step([0.5, 0.5], [1.0, 0.0], 0.8, norm), torch.tensor([0.3, 0.0]))
    assert torch.allclose(step([0.9, 0.5], [1.0, 1.0], 1.6, norm), torch.tensor([0.1, 0.1]))
    assert torch.allclose(step([0.9, 0.5], [1.0, 1.0], 1.9, norm), torch.tensor([0.1, 0.4]))
    assert torch.allclose(step([0.9, 0.5], [1.0, 1.0], 0.4, norm), torch.tensor([-0.5, -0.5]))  # downwards
    assert torch.allclose(step([0.9, 0.5], [1.0, 1.0], 3.0, norm), torch.tensor([0.1, 0.5]))  # out of reach: closest


def test_l2_projection_moves_along_the_normal_until_a_coordinate_saturates():
    # The l2 step is lambda * (2, 1) while inside the box: 5 lambda of progress, 0.5 needed here.
    assert torch.allclose(step([0.2, 0.2], [2.0, 1.0], 1.1, "l2"), torch.tensor([0.2, 0.1]), atol=1e-6)
    # From (0.8, 0.2) the first coordinate reaches the box at lambda = 0.1 (progress 0.5); then only the second moves.
    assert torch.allclose(step([0.8, 0.2], [2.0, 1.0], 2.5, "l2"), torch.tensor([0.2, 0.3]), atol=1e-6)


def random_hyperplanes(rows=400, dims=60):
    generator = torch.Generator().manual_seed(3)
    points = torch.rand(rows, dims, generator=generator)
    normal = torch.randn(rows, dims, generator=generator)
    normal[:, :7] = 0  # coordinates the hyperplane ignores
    offset = (normal * torch.rand(rows, dims, generator=generator)).sum(1)  # through a point of the box
    offset[:25] += 200  # beyond the box
    return points, normal, offset


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_lands_on_the_hyperplane_inside_the_box(norm):
    points, normal, offset = random_hyperplanes()
    moved = points + project_onto_hyperplane(points, normal, offset, norm)
    assert moved.min() >= 0 and moved.max() <= 1
    assert torch.allclose((normal * moved).sum(1)[25:], offset[25:], atol=1e-4)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_has_the_norm_of_the_original_implementation(norm, autoattack_reference):
    """Minimum-norm steps are unique in l2 and unique in norm in l-inf: the same as the original's
    sort-based projections, also where the box cannot reach the hyperplane (same progress there)."""
    from autoattack.fab_projections import projection_l2, projection_linf

    points, normal, offset = random_hyperplanes()
    ours = project_onto_hyperplane(points, normal, offset, norm)
    theirs = (projection_linf if norm == "linf" else projection_l2)(points, normal, offset)
    assert torch.allclose(perturbation_norm(ours[25:], norm), perturbation_norm(theirs[25:], norm), atol=1e-5)
    assert torch.allclose((normal * ours).sum(1)[:25], (normal * theirs).sum(1)[:25], atol=1e-4)


def test_fab_stays_in_the_ball_and_returns_x_where_it_fails(conv_model_and_batch):
    model, x, y = conv_model_and_batch
    for name, eps in (("fab", 0.1), ("fab-l2", 1.0)):
        attack = rbl.get_attack(name, steps=10)
        x_adv = attack.perturb(model, x, y, eps)
        check_bounds(x_adv, x, eps, attack.norm)
        fooled = model(x_adv).argmax(1) != y
        assert 0 < int(fooled.sum()) < len(y)
        assert torch.equal(x_adv[~fooled], x[~fooled])
    assert torch.equal(rbl.get_attack("fab").perturb(model, x, y, 0.0), x)


def test_fab_minimises_the_norm_when_not_stopped_at_a_budget(conv_model_and_batch):
    """Searching on after the first success finds smaller perturbations than stopping there."""
    model, x, y = conv_model_and_batch
    attack = rbl.get_attack("fab", steps=30)
    first = attack.search(model, x, y, stop_within=1.0, restart_radius=0.1).distance
    smallest = attack.search(model, x, y, stop_within=None, restart_radius=0.1).distance
    found = torch.isfinite(first)
    assert found.float().mean() > 0.9
    assert bool((smallest[found] <= first[found]).all()) and smallest[found].mean() < 0.95 * first[found].mean()


def robust_points(model, x_adv, y):
    with torch.no_grad():
        return model(x_adv).argmax(1) == y


@pytest.fixture(scope="module")
def mnist_points(mnist_cnn):
    model, data = mnist_cnn
    return model, data.x_test[:100], data.y_test[:100]


ORIGINAL_CASES = [  # (our attack, options, the original's norm, eps, targeted)
    ("fab", {}, "Linf", 0.15, False),
    ("fab", {"target_rank": 1}, "Linf", 0.15, True),
    ("fab-l2", {}, "L2", 1.5, False),
]


@pytest.mark.parametrize("name, options, norm, eps, targeted", ORIGINAL_CASES)
def test_fab_agrees_point_by_point_with_the_original(name, options, norm, eps, targeted, mnist_points,
                                                     autoattack_reference):
    """Same steps, restarts and targets as the original's FABAttack_PT (its first run has no random
    start, so both are deterministic): the same points broken, but for borderline ones."""
    from autoattack.fab_pt import FABAttack_PT

    model, x, y = mnist_points
    steps = 20
    ours = robust_points(model, rbl.get_attack(name, steps=steps, **options).perturb(model, x, y, eps), y)
    original = FABAttack_PT(model, norm=norm, n_restarts=1, n_iter=steps, eps=eps, seed=0, targeted=targeted,
                            device="cpu", n_target_classes=1)
    theirs = robust_points(model, original.perturb(x, y), y)
    assert 0.1 < ours.float().mean() < 0.9  # an informative budget
    assert (ours != theirs).float().mean() <= 0.02, (ours.float().mean(), theirs.float().mean())


def test_fab_targeted_over_nine_classes_matches_torchattacks(mnist_points):
    """torchattacks' FAB with multi_targeted runs the 9 likeliest wrong classes, as our aa runs FAB-T."""
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = mnist_points
    eps, steps = 0.15, 20
    robust = robust_points(model, x, y)
    for rank in range(1, 10):
        index = robust.nonzero().squeeze(1)
        x_adv = rbl.get_attack("fab", steps=steps, target_rank=rank).perturb(model, x[index], y[index], eps)
        robust[index] = robust_points(model, x_adv, y[index])
    reference = torchattacks.FAB(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, multi_targeted=True,
                                 n_classes=10)
    theirs = robust_points(model, reference(x, y), y)
    assert 0.05 < robust.float().mean() < 0.9
    assert (robust != theirs).float().mean() <= 0.02, (robust.float().mean(), theirs.float().mean())
