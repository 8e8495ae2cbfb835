"""Cross-checks of the iterative gradient attacks against torchattacks.

BIM, MI-FGSM and PGD-l2 are compared example by example on a small fixed model (bit for bit,
or to a tolerance where float arithmetic is ordered differently); PGD, PGD-l2, C&W and DeepFool
are compared by robust accuracy on the real MNIST cnn, where randomness or a documented
algorithmic difference rules out comparing examples.
"""


import pytest
import torch
from torch import nn

import robustbench_lite as rbl
from robustbench_lite.attack_utils import project_l2
from robustbench_lite.evaluation import PassCounter

torchattacks = pytest.importorskip("torchattacks")

# A float32 iterate is in [0, 1], where one ulp is at most 6e-8: differences of reordered
# arithmetic stay far below this, while a flipped gradient sign moves a pixel by 2 steps (>= 1e-3 here).
ULP_TOLERANCE = 1e-6



def targeted(reference, target: int | None, y: torch.Tensor) -> tuple[object, torch.Tensor]:
    """The torchattacks attack and the labels to call it with: ours take ``target=k``, torchattacks
    takes the target in place of the label."""
    if target is None:
        return reference, y
    reference.set_mode_targeted_by_label(quiet=True)
    return reference, torch.full_like(y, target)


def max_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


SCHEDULES = [(0.1, 10, 0.25), (0.3, 7, 2.5 / 7), (0.03, 1, 1.0), (0.05, 20, 0.1)]


@pytest.mark.parametrize("target", [None, 3])
@pytest.mark.parametrize("eps, steps, fraction", SCHEDULES)
def test_bim_matches_torchattacks_to_the_last_ulp(eps, steps, fraction, target, conv_model_and_batch):
    """Same alpha and steps as torchattacks.BIM. Not bit for bit: torchattacks projects by comparing
    the iterate with max(x - eps, 0) and x + eps, we clip the perturbation and add it back to x,
    and x + (x_adv - x) rounds to x_adv only up to an ulp. The signs of every step still agree."""
    model, x, y = conv_model_and_batch
    ours = rbl.get_attack("bim", steps=steps, rel_step_size=fraction, target=target).perturb(model, x, y, eps)
    reference, labels = targeted(torchattacks.BIM(model, eps=eps, alpha=eps * fraction, steps=steps), target, y)
    assert max_difference(ours, reference(x, labels)) <= ULP_TOLERANCE
    assert max_difference(ours, x) > eps / 2  # the attack moved: the comparison is not between two copies of x


@pytest.mark.parametrize("decay, target", [(1.0, None), (0.5, 3)])
@pytest.mark.parametrize("eps, steps, fraction", SCHEDULES)
def test_mifgsm_is_identical_to_torchattacks(eps, steps, fraction, decay, target, conv_model_and_batch):
    """Same decay, alpha and steps as torchattacks.MIFGSM: identical, because the normalisation by
    mean|grad| cancels the 1/128 between the summed and the batch-mean loss exactly."""
    model, x, y = conv_model_and_batch
    attack = rbl.get_attack("mifgsm", steps=steps, rel_step_size=fraction, decay=decay, target=target)
    reference, labels = targeted(
        torchattacks.MIFGSM(model, eps=eps, alpha=eps * fraction, steps=steps, decay=decay), target, y
    )
    assert max_difference(attack.perturb(model, x, y, eps), reference(x, labels)) == 0.0


class DeadBelowHalf(nn.Module):
    """A linear classifier of relu(x - 0.5): pixels below 0.5 get a zero gradient."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(6)
        self.linear = nn.Linear(36, 4)

    def forward(self, x):
        return self.linear(torch.relu(x - 0.5).flatten(1))


def test_mifgsm_zero_gradient_guard_is_the_only_difference_from_torchattacks():
    """The documented difference: where a sample's gradient vanishes, torchattacks divides 0 by 0 and
    its momentum turns NaN for good (torch takes sign(NaN) as 0, so the sample freezes), while ours
    keeps the accumulated momentum and goes on along it. Every other sample is identical.

    The first 8 samples have one live pixel at 0.52 whose loss gradient is negative: the first step
    (0.05) takes it to 0.47, below the dead zone's edge, and from then on the gradient is zero."""
    model = DeadBelowHalf().eval().requires_grad_(False)
    torch.manual_seed(7)
    x = torch.rand(32, 1, 6, 6)
    y = torch.randint(0, 4, (32,))
    x[:8] = 0.3
    x[:8, 0, 0, 0] = 0.52
    y[:8] = model.linear.weight[:, 0].argmax()  # d loss / d pixel = E_p[W[:, 0]] - W[y, 0] < 0
    ours = rbl.get_attack("mifgsm", steps=5, rel_step_size=0.5, decay=1.0).perturb(model, x, y, 0.1)
    reference = torchattacks.MIFGSM(model, eps=0.1, alpha=0.05, steps=5, decay=1.0)(x, y)
    expected = x[:8].clone()
    expected[:, 0, 0, 0] = 0.42  # momentum carries the pixel to the ball's edge, x - eps
    assert torch.allclose(ours[:8], expected, atol=ULP_TOLERANCE, rtol=0)
    assert (ours[:8, 0, 0, 0] - reference[:8, 0, 0, 0]).abs().min() > 0.04 or torch.isnan(reference[:8]).all()
    assert max_difference(ours[8:], reference[8:]) == 0.0 and max_difference(ours[8:], x[8:]) > 0


@pytest.mark.parametrize("target", [None, 3])
@pytest.mark.parametrize("eps, steps, fraction", [(1.0, 10, 0.25), (3.0, 7, 2.5 / 7), (0.3, 1, 1.0), (0.5, 20, 0.1)])
def test_pgd_l2_without_random_start_matches_torchattacks(eps, steps, fraction, target, conv_model_and_batch):
    """Same alpha and steps as torchattacks.PGDL2(random_start=False). Not bit for bit: torchattacks
    divides the gradient by its norm + 1e-10, we by the norm alone."""
    model, x, y = conv_model_and_batch
    attack = rbl.get_attack("pgd-l2", steps=steps, rel_step_size=fraction, random_start=False, target=target)
    reference, labels = targeted(
        torchattacks.PGDL2(model, eps=eps, alpha=eps * fraction, steps=steps, random_start=False), target, y
    )
    ours = attack.perturb(model, x, y, eps)
    assert max_difference(ours, reference(x, labels)) <= ULP_TOLERANCE
    assert (ours - x).flatten(1).norm(dim=1).max() > eps / 2


def test_seeded_pgd_l2_random_start_starts_where_torchattacks_does(conv_model_and_batch):
    """pgd-l2 draws its random start as torchattacks does, in the same order: seeded alike, the runs agree."""
    model, x, y = conv_model_and_batch
    torch.manual_seed(11)
    ours = rbl.get_attack("pgd-l2", steps=5, rel_step_size=0.5).perturb(model, x, y, 2.0)
    torch.manual_seed(11)
    reference = torchattacks.PGDL2(model, eps=2.0, alpha=1.0, steps=5)(x, y)
    torch.manual_seed(12)
    other_seed = rbl.get_attack("pgd-l2", steps=5, rel_step_size=0.5).perturb(model, x, y, 2.0)
    assert max_difference(ours, reference) <= ULP_TOLERANCE
    assert max_difference(ours, other_seed) > 1e-3  # the start matters, so the agreement is not vacuous


# ---------------------------------------------------------------------------------------------
# Robust accuracy on the real MNIST cnn.


def mnist_points(mnist_cnn, n: int):
    model, data = mnist_cnn
    return model, data.x_test[:n], data.y_test[:n]


def predictions(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1)


def accuracy(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor) -> float:
    """Robust accuracy in percent."""
    with torch.no_grad():
        return 100.0 * (model(x_adv).argmax(1) == y).sum().item() / len(y)


def accuracy_within_budget(
    model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, eps: float
) -> float:
    """Robust accuracy, in percent, of a minimum-norm attack's examples at an l2 budget: an example
    counts as adversarial only if misclassified and within eps of x."""
    with torch.no_grad():
        fooled = model(x_adv).argmax(1) != y
    within = (x_adv - x).flatten(1).norm(dim=1) <= eps
    return 100.0 * (len(y) - (fooled & within).sum().item()) / len(y)


def accuracy_fitted_to_budget(
    model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, eps: float
) -> float:
    """Robust accuracy, in percent, under our (and foolbox's) budget rule: an example counts as
    adversarial if its projection onto the l2 eps-ball is misclassified."""
    return accuracy(model, project_l2(x_adv, x, eps), y)


@pytest.mark.parametrize("eps", [0.1, 0.2])
def test_pgd_robust_accuracy_matches_torchattacks_on_mnist(mnist_cnn, eps):
    """PGD with random start, 10 steps of eps/4: robust accuracy within 1 point of torchattacks.PGD.

    Seeded alike, the two draw the same uniform start, so the examples agree too, up to the ulp
    by which our projected start x + clip((x + u) - x) may differ from torchattacks' x + u (which
    could flip the sign of a near-zero gradient component). That part catches what accuracy alone
    would not: a start drawn from a smaller box, or none at all. With different seeds the
    accuracies on 200 points differ by about a point of sampling noise."""
    model, x, y = mnist_points(mnist_cnn, 200)
    torch.manual_seed(0)
    ours = rbl.get_attack("pgd", steps=10, rel_step_size=0.25).perturb(model, x, y, eps)
    torch.manual_seed(0)
    reference = torchattacks.PGD(model, eps=eps, alpha=eps / 4, steps=10)(x, y)
    assert abs(accuracy(model, ours, y) - accuracy(model, reference, y)) <= 1.0
    assert accuracy(model, ours, y) < accuracy(model, x, y) - 10  # the budget is one where the attack matters
    assert ((ours - reference).abs() > ULP_TOLERANCE).float().mean() < 1e-4  # allow a stray flipped sign


def test_pgd_l2_robust_accuracy_matches_torchattacks_on_mnist(mnist_cnn):
    """PGD-l2 with random start at l2 eps 1.5: robust accuracy within 1 point of torchattacks.PGDL2 (seeded alike)."""
    model, x, y = mnist_points(mnist_cnn, 200)
    eps = 1.5
    torch.manual_seed(0)
    ours = accuracy(model, rbl.get_attack("pgd-l2", steps=10, rel_step_size=0.25).perturb(model, x, y, eps), y)
    torch.manual_seed(0)
    reference = accuracy(model, torchattacks.PGDL2(model, eps=eps, alpha=eps / 4, steps=10)(x, y), y)
    assert abs(ours - reference) <= 1.0
    assert 20 < ours < 90


def test_cw_l2_robust_accuracy_matches_torchattacks_on_mnist(mnist_cnn):
    """C&W with torchattacks' c=1 and kappa=0, 30 Adam steps of lr 0.1: robust accuracy at l2 budget
    2.0 within 2 points of torchattacks.CW's examples that are misclassified and within the budget.

    Not torchattacks' lr=0.01, 50 steps: MNIST pixels sit at exactly 0 or 1, where the tanh
    parametrisation barely moves them (torchattacks' w is infinite there, ours 7.25), so at that
    rate both attacks fool about 5% of the points at any budget (accuracy ~94.5%, nothing to
    compare). Not 50 steps at lr 0.1 either: torchattacks then stops the whole batch once the
    summed cost rises at a check (every steps//10 steps), which ours deliberately does not do
    (see cw_l2.py), and finds fewer examples (about 3 points of accuracy at eps 2 on these points).
    """
    model, x, y = mnist_points(mnist_cnn, 100)
    settings = dict(c=1.0, kappa=0.0, steps=30, lr=0.1)
    reference = torchattacks.CW(model, **settings)(x, y)
    ours = accuracy(model, rbl.get_attack("cw-l2", **settings).perturb(model, x, y, 2.0), y)
    assert abs(ours - accuracy_within_budget(model, x, reference, y, 2.0)) <= 2.0
    assert 50 < ours < 95


class Interior(nn.Module):
    """The MNIST cnn seen through z -> (z - 0.25) / 0.5: MNIST images map to z in [0.25, 0.75],
    so that DeepFool's iterates rarely reach the [0, 1] box. l2 distances in z are half those in x."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, z):
        return self.model((z - 0.25) / 0.5)


def test_deepfool_robust_accuracy_matches_torchattacks_on_mnist(mnist_cnn):
    """DeepFool (50 steps, overshoot 0.02) against torchattacks.DeepFool on the MNIST cnn, moved
    into the box's interior (see Interior).

    On the raw images the two differ by design: torchattacks clips every iterate to [0, 1] and
    builds the next step on the clipped point, losing the clipped part of each step; ours (like
    foolbox) accumulates the unclipped steps and clips x + (1 + overshoot) * sum. MNIST is mostly
    pixels at exactly 0, so torchattacks then stalls: on the first 200 test points it fools 112
    where ours fools all 200 (robust accuracy 84% against ours 64% at l2 eps 1.5), and its
    per-sample loop takes five times as long as ours, too long for this suite.
    Away from the box the two algorithms coincide (up to the 1e-4 step margin), which is compared here.

    At z-budget 0.5 (l2 1.0 on the images) the budget rules agree; at 0.75, ours also keeps examples
    beyond the budget whose projection onto the ball is still adversarial (fit_to_budget), so it
    is compared with the reference under that rule, and is at most as robust as under the plain rule.
    """
    model, x, y = mnist_points(mnist_cnn, 100)
    interior = Interior(model).eval()
    z = 0.25 + 0.5 * x
    reference = torchattacks.DeepFool(interior, steps=50, overshoot=0.02)(z, y)
    clipped = ((reference == 0) | (reference == 1)).flatten(1).any(dim=1)
    assert clipped.sum() <= 5  # only a few far examples reach the box
    attack = rbl.get_attack("deepfool", steps=50, overshoot=0.02)

    # At a budget no example reaches, ours are the examples found: the same points fooled, at the
    # same distances. The 1e-4 step margin makes them differ by ~1e-4 (relative; an overshoot of
    # 0.03 instead of 0.02 already makes it 1%), except where the box clipped an iterate or a
    # sample's path turned at a near tie between two rival classes (1 of these 100 with some weights).
    found = attack.perturb(interior, z, y, 1e3)
    assert torch.equal(predictions(interior, found) != y, predictions(interior, reference) != y)
    ours_norms, reference_norms = ((found - z).flatten(1).norm(dim=1), (reference - z).flatten(1).norm(dim=1))
    assert ((ours_norms - reference_norms).abs() <= 0.005 * reference_norms).float().mean() >= 0.95

    ours = accuracy(interior, attack.perturb(interior, z, y, 0.5), y)
    assert abs(ours - accuracy_within_budget(interior, z, reference, y, 0.5)) <= 2.0
    assert 50 < ours < 95

    ours = accuracy(interior, attack.perturb(interior, z, y, 0.75), y)
    assert abs(ours - accuracy_fitted_to_budget(interior, z, reference, y, 0.75)) <= 2.0
    assert ours <= accuracy_within_budget(interior, z, reference, y, 0.75) + 2.0
    assert 30 < ours < 90


@pytest.mark.parametrize("eps", [1.0, 2.0])
def test_cw_l2_early_abort_gives_the_full_budget_verdicts_with_fewer_gradient_steps(mnist_cnn, eps):
    """A sample with an adversarial example within eps stops: every point judged as after all
    100 steps, at a fraction of the input gradients."""
    model, x, y = mnist_points(mnist_cnn, 100)
    verdicts, gradients = {}, {}
    for early_abort in (True, False):
        counted = PassCounter(model)
        x_adv = rbl.get_attack("cw-l2", early_abort=early_abort).perturb(counted, x, y, eps)
        with torch.no_grad():
            verdicts[early_abort] = model(x_adv).argmax(1) == y
        gradients[early_abort] = counted.backward_images
    assert torch.equal(verdicts[True], verdicts[False])
    assert 5 < 100 * verdicts[True].float().mean().item() < 95, "an uninformative budget"
    robust = int(verdicts[True].sum())
    # Every point left robust ran all 100 steps either way; the broken ones stopped early.
    assert gradients[False] == 100 * len(x) and 100 * robust <= gradients[True] < gradients[False]
    print(f"cw-l2 at eps {eps}: {robust} of {len(x)} robust either way; input gradients "
          f"{gradients[True]} with early abort, {gradients[False]} without")
