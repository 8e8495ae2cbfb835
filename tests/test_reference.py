"""Cross-checks against torchattacks on identical models and inputs."""

import pytest

import robustbench_lite as rbl

torchattacks = pytest.importorskip("torchattacks")


@pytest.mark.parametrize("eps", [0.01, 0.1, 0.3])
def test_fgsm_is_identical_to_torchattacks(eps, conv_model_and_batch):
    model, x, y = conv_model_and_batch
    ours = rbl.get_attack("fgsm").perturb(model, x, y, eps)
    reference = torchattacks.FGSM(model, eps=eps)(x, y)
    assert (ours - reference).abs().max().item() == 0.0


@pytest.mark.parametrize("eps, steps, fraction", [(0.1, 10, 0.25), (0.3, 7, 2.5 / 7), (0.03, 1, 1.0)])
def test_pgd_without_random_start_is_identical_to_torchattacks(eps, steps, fraction, conv_model_and_batch):
    model, x, y = conv_model_and_batch
    ours = rbl.get_attack("pgd", steps=steps, rel_step_size=fraction, random_start=False).perturb(model, x, y, eps)
    reference = torchattacks.PGD(model, eps=eps, alpha=eps * fraction, steps=steps, random_start=False)(x, y)
    assert (ours - reference).abs().max().item() == 0.0
