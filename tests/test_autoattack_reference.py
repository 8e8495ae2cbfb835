"""aa[version=standard] and its members against the original AutoAttack (../shared/reference/auto-attack).

On the same model, points and eps: robust accuracy within 1 point of the original's and never more
than 1 point above it, and the same points broken for at least 98 % of them. APGD-CE and APGD-T
alone run in the default suite on the undefended MNIST cnn; the whole ensemble (FAB-T and Square
with 5,000 queries make it minutes per eps on a CPU) runs with the long real-data checks, on the
undefended and on a PGD-trained model.
"""

import pytest
import torch

import robustbench_lite as rbl
from robustbench_lite.attack_utils import sample_streams, subset_streams

POINTS = 200


def robust_after(model, x_adv, y):
    with torch.no_grad():
        return model(x_adv).argmax(1) == y


def ours(model, x, y, eps, members):
    """Our attacks in sequence, each on the points still robust, as AutoAttack runs its members."""
    with torch.no_grad():
        robust = model(x).argmax(1) == y
    with sample_streams(0, torch.arange(len(x))):
        for attack in members:
            index = robust.nonzero().squeeze(1)
            if len(index):
                with subset_streams(index):
                    robust[index] = robust_after(model, attack.perturb(model, x[index], y[index], eps), y[index])
    return robust


def original(autoattack, model, x, y, eps, version="custom", members=()):
    reference = autoattack.AutoAttack(model, norm="Linf", eps=eps, version=version, seed=0, device="cpu",
                                      verbose=False, attacks_to_run=list(members))
    reference.apgd.n_restarts = 1  # the standard version's APGD-CE (custom keeps the constructor's 5)
    return robust_after(model, reference.run_standard_evaluation(x, y, bs=len(x)), y)


def assert_agree(robust, reference):
    accuracy, reference_accuracy = 100 * robust.float().mean().item(), 100 * reference.float().mean().item()
    assert 5 < reference_accuracy < 95, "an uninformative budget"
    assert abs(accuracy - reference_accuracy) <= 1.0, (accuracy, reference_accuracy)
    assert (robust != reference).float().mean().item() <= 0.02, (accuracy, reference_accuracy)


@pytest.fixture(scope="module")
def mnist_points(mnist_cnn):
    model, data = mnist_cnn
    return model, data.x_test[:POINTS], data.y_test[:POINTS]


# APGD-CE's random start alone moves its count by 2 points on 200 points (93 to 97 robust over four
# seeds here, the original 96 to 97): it is compared on 500, where 1 point is 5 of them.
APGD_CE_POINTS = 500


TARGETS = range(1, 10)


def test_apgd_ce_agrees_with_the_original(mnist_cnn, autoattack_reference):
    model, data = mnist_cnn
    x, y = data.x_test[:APGD_CE_POINTS], data.y_test[:APGD_CE_POINTS]
    eps = 0.15
    assert_agree(ours(model, x, y, eps, [rbl.get_attack("apgd-ce")]),
                 original(autoattack_reference, model, x, y, eps, members=["apgd-ce"]))


@pytest.mark.parametrize("batched", [False, True], ids=["one-target-after-the-other", "all-targets-at-once"])
def test_apgd_t_agrees_with_the_original(batched, mnist_points, autoattack_reference):
    """APGD-T alone: 9 target classes, each on the points the earlier ones left robust, or all at once
    (``target_ranks``, as ``aa`` runs them on a GPU)."""
    model, x, y = mnist_points
    eps = 0.15
    members = ([rbl.get_attack("apgd-dlr", target_ranks=len(TARGETS))] if batched
               else [rbl.get_attack("apgd-dlr", target_rank=rank) for rank in TARGETS])
    assert_agree(ours(model, x, y, eps, members), original(autoattack_reference, model, x, y, eps, members=["apgd-t"]))


def test_aa_standard_runs_the_original_standard_members_in_order():
    labels = [attack.label for attack in rbl.get_attack("aa").members(10)]
    assert labels == (["apgd-ce"] + [f"apgd-dlr[target_rank={rank}]" for rank in TARGETS]
                      + [f"fab[target_rank={rank}]" for rank in TARGETS] + ["square[queries=5000,rescale=false]"])
    batched = [attack.label for attack in rbl.get_attack("aa").members(10, batch_targets=True)]
    assert batched == ["apgd-ce", "apgd-dlr[target_ranks=9]", "fab[target_ranks=9]", "square[queries=5000,rescale=false]"]


@pytest.mark.realdata
@pytest.mark.parametrize("defended, eps", [(False, 0.1), (True, 0.3)])
def test_aa_standard_agrees_with_the_original_standard(defended, eps, mnist_cnn, request, autoattack_reference):
    model, data = request.getfixturevalue("mnist_at_pgd") if defended else mnist_cnn
    x, y = data.x_test[:POINTS], data.y_test[:POINTS]
    assert_agree(ours(model, x, y, eps, [rbl.get_attack("aa")]),
                 original(autoattack_reference, model, x, y, eps, version="standard"))
