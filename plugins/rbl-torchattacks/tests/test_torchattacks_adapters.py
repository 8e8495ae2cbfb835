"""The torchattacks adapters: discovery, introspected options, agreement with rbl's FGSM, the Attack contract."""

import inspect
import re

import pytest
import torch
from torch import nn

import robustbench_lite as rbl
from robustbench_lite import AttackWarning
from robustbench_lite.attack_utils import check_bounds, craft, perturbation_norm
from robustbench_lite.cli import main
from robustbench_lite.leaderboard import ranking
from robustbench_lite.registry import Registry

pytest.importorskip("rbl_torchattacks", reason="rbl-torchattacks is not installed: pip install -e plugins/rbl-torchattacks")
import torchattacks  # noqa: E402  (a dependency of rbl-torchattacks)
from rbl_torchattacks import ADAPTATIONS, ADAPTERS, SKIPPED  # noqa: E402
from rbl_torchattacks.adapters import BUDGET_PARAMETERS, SET_BY_ADAPTER, STEP_PARAMETER  # noqa: E402

# Every adapted attack with settings that keep it under a second on a 4-image batch.
FAST = [
    "ta-fgsm", "ta-ffgsm", "ta-bim[steps=3]", "ta-rfgsm[steps=3]", "ta-pgd[steps=3]", "ta-eotpgd[steps=3]",
    "ta-tpgd[steps=3]", "ta-mifgsm[steps=3]", "ta-upgd[steps=3]", "ta-difgsm[steps=3]", "ta-tifgsm[steps=3]",
    "ta-jitter[steps=3]", "ta-nifgsm[steps=3]", "ta-sinifgsm[steps=3]", "ta-vmifgsm[steps=3]", "ta-vnifgsm[steps=3]",
    "ta-pgdrs[steps=3,noise_batch_size=2]", "ta-spsa[nb_sample=8,max_batch_size=8]", "ta-pifgsm[num_iter_set=3]",
    "ta-pifgsmpp[num_iter_set=3]", "ta-pgdl2[steps=3]", "ta-pgdrsl2[steps=3,noise_batch_size=2]",
    "ta-apgd[steps=3]", "ta-apgd-l2[steps=3]", "ta-apgdt[steps=3]", "ta-apgdt-l2[steps=3]", "ta-fab[steps=3]",
    "ta-fab-l2[steps=3]", "ta-square[n_queries=20]", "ta-autoattack",
    "ta-cw[steps=10]", "ta-deepfool[steps=3]",
]


def small_model(classes: int = 10) -> nn.Module:
    torch.manual_seed(5)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 7 * 7, classes)
    ).eval().requires_grad_(False)


def images(model: nn.Module, n: int = 4, channels: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(n, channels, 16, 16)
    return x, model(x).argmax(1) if channels == 3 else torch.zeros(n, dtype=torch.long)


def test_every_adapter_is_discovered_from_rbl_torchattacks():
    infos = Registry().infos("attacks")
    for adaptation in ADAPTATIONS:
        assert infos[adaptation.name].distribution == "rbl-torchattacks"
    assert {"ta-fgsm", "ta-pgd", "ta-cw", "ta-square", "ta-autoattack", "ta-apgd-l2"} <= set(infos)


def test_the_contract_check_below_covers_every_adapter():
    assert sorted(spec.partition("[")[0] for spec in FAST) == sorted(adaptation.name for adaptation in ADAPTATIONS)


def test_every_torchattacks_attack_is_adapted_or_skipped_with_a_reason():
    adapted = {adaptation.attack for adaptation in ADAPTATIONS}
    assert adapted | set(SKIPPED) == set(torchattacks.__all__)
    assert not adapted & set(SKIPPED)


@pytest.mark.parametrize("adaptation", ADAPTATIONS, ids=lambda adaptation: adaptation.name)
def test_options_are_the_constructor_keywords_and_the_table_matches_torchattacks(adaptation):
    cls = getattr(torchattacks, adaptation.attack)
    parameters = inspect.signature(cls).parameters
    options = {option.name: option for option in rbl.get_attack(adaptation.name).options}
    expected = [name for name in parameters if name not in SET_BY_ADAPTER] + (["target"] if adaptation.targeted else [])
    assert list(options) == expected
    replaced = dict(adaptation.defaults)
    for name in expected[: len(expected) - adaptation.targeted]:
        if name == STEP_PARAMETER:  # eps-relative unless set
            assert options[name].default is None and options[name].type is float
            continue
        assert options[name].default == replaced.get(name, parameters[name].default)
        assert options[name].type is type(options[name].default)
    supported_modes = cls(small_model()).supported_mode
    assert ("targeted" in supported_modes) == adaptation.targeted
    assert adaptation.minimum_norm == (not set(BUDGET_PARAMETERS) & set(parameters))
    assert adaptation.multi_norm == ("norm" in parameters)


def test_options_read_well_and_validate():
    options = {option.name: option for option in rbl.get_attack("ta-pgd").options}
    assert options["alpha"].help == "step size; default: 2.5 * eps / steps (torchattacks' ratio at its defaults)"
    assert options["alpha"].default is None
    assert options["random_start"].type is bool and options["steps"].type is int
    assert rbl.get_attack("ta-cw", c=0.5).c == 0.5  # a real-valued option despite torchattacks' integer default
    assert rbl.get_attack("ta-pgd[steps=3,target=2]").label == "ta-pgd[steps=3,target=2]"
    assert rbl.get_attack("ta-apgd-l2").norm == "l2" and rbl.get_attack("ta-apgd").norm == "linf"
    with pytest.raises(rbl.UsageError, match="unknown option 'target'"):
        rbl.get_attack("ta-tpgd[target=1]")  # torchattacks' TPGD has no targeted mode
    with pytest.raises(rbl.UsageError, match="must be of type int"):
        rbl.get_attack("ta-pgd[steps=many]")


@pytest.mark.parametrize("eps", [0.01, 0.1, 0.3])
def test_ta_fgsm_equals_rbl_fgsm_exactly(eps):
    model = small_model()
    x, y = images(model, n=64)
    assert torch.equal(rbl.get_attack("ta-fgsm").perturb(model, x, y, eps), rbl.get_attack("fgsm").perturb(model, x, y, eps))


@pytest.mark.parametrize("spec", FAST)
def test_adapted_attacks_keep_the_attack_contract(spec):
    model = small_model()
    weights = [parameter.clone() for parameter in model.parameters()]
    x, y = images(model)
    attack = rbl.get_attack(spec)
    eps = 0.5 if attack.norm == "l2" else 0.05
    x_adv = attack.perturb(model, x, y, eps)
    check_bounds(x_adv, x, eps, attack.norm)  # the runner's check: shape, eps-ball, [0, 1]
    assert not model.training
    assert all(torch.equal(before, after) for before, after in zip(weights, model.parameters()))
    assert not any(parameter.requires_grad for parameter in model.parameters())


def test_a_model_in_training_keeps_its_mode_weights_and_empty_gradients():
    model = small_model().train().requires_grad_(True)
    x, y = images(model)
    craft(rbl.get_attack("ta-cw[steps=5]"), model, x, y, 0.5)  # CW calls backward() on its loss
    assert model.training
    assert all(parameter.requires_grad and parameter.grad is None for parameter in model.parameters())


def test_minimum_norm_attacks_return_x_where_they_exceed_eps():
    model = small_model()
    x, y = images(model, n=16)
    unbounded = torchattacks.CW(model, c=1.0, steps=10)(x, y)
    moved = perturbation_norm(unbounded - x, "l2")
    eps = moved[moved > 0].median().item()  # a budget some samples stay within and some exceed
    assert (moved > eps).any()
    x_adv = rbl.get_attack("ta-cw[steps=10]").perturb(model, x, y, eps)
    assert torch.equal(x_adv[moved > eps], x[moved > eps])
    assert torch.equal(x_adv[moved <= eps], unbounded[moved <= eps])


def test_targeted_mode_pushes_inputs_towards_the_target():
    model = small_model()
    x, y = images(model, n=32)
    target = 3
    x_adv = rbl.get_attack("ta-pgd", target=target, steps=20, alpha=0.02).perturb(model, x, y, 0.3)
    before = (model(x).argmax(1) == target).float().mean().item()
    after = (model(x_adv).argmax(1) == target).float().mean().item()
    assert after >= 0.9 > before
    with pytest.raises(ValueError, match="target class 10 does not exist; the model has 10 classes"):
        rbl.get_attack("ta-pgd", target=10).perturb(model, x, y, 0.3)


def test_rgb_only_attacks_refuse_other_inputs_clearly():
    model = nn.Sequential(nn.Flatten(), nn.Linear(256, 10)).eval().requires_grad_(False)
    x, y = images(model, channels=1)
    with pytest.raises(ValueError, match=r"ta-tifgsm cannot attack inputs of shape \(4, 1, 16, 16\): torchattacks' "
                                         r"implementation takes RGB images \(3, H, W\) only"):
        rbl.get_attack("ta-tifgsm").perturb(model, x, y, 0.1)


def moons_model() -> nn.Module:
    torch.manual_seed(5)
    return nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2)).eval().requires_grad_(False)


def mnist_model() -> nn.Module:
    torch.manual_seed(5)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10)).eval().requires_grad_(False)


SHAPES = {"moons": (moons_model, (2,)), "mnist": (mnist_model, (1, 28, 28))}


@pytest.mark.parametrize("data", SHAPES)
@pytest.mark.parametrize("spec", FAST)
def test_every_adapter_runs_on_moons_and_mnist_shapes_or_says_why_not(spec, data):
    """2-class feature vectors and 10-class grey images: the attack keeps the contract, or refuses with its reason."""
    build, shape = SHAPES[data]
    model = build()
    x = torch.rand(8, *shape)
    y = model(x).argmax(1)
    attack = rbl.get_attack(spec)
    eps = 0.5 if attack.norm == "l2" else 0.1
    reason = attack.unsupported(shape, model(x[:1]).shape[1])
    if reason is not None:
        with pytest.raises(ValueError, match=re.escape(reason)):
            attack.perturb(model, x, y, eps)
        return
    x_adv = attack.perturb(model, x, y, eps)
    check_bounds(x_adv, x, eps, attack.norm)


def test_only_the_attacks_torchattacks_limits_are_refused_on_these_shapes():
    refused = {
        data: sorted(spec.partition("[")[0] for spec in FAST
                     if rbl.get_attack(spec).unsupported(shape, build()(torch.rand(1, *shape)).shape[1]))
        for data, (build, shape) in SHAPES.items()
    }
    assert refused["mnist"] == ["ta-pifgsm", "ta-pifgsmpp", "ta-tifgsm"]  # RGB only
    assert refused["moons"] == ["ta-apgdt", "ta-apgdt-l2", "ta-autoattack", "ta-difgsm",  # DLR-targeted, resizing
                                "ta-pifgsm", "ta-pifgsmpp", "ta-tifgsm"]


def test_rbl_run_refuses_an_attack_the_dataset_does_not_suit_before_training(tmp_path, capsys):
    status = main(["run", "--attacks", "fgsm,ta-apgdt", "--out", str(tmp_path), "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert status == 2
    assert ("attack 'ta-apgdt' cannot run on dataset 'moons' (inputs of shape (2,), 2 classes): its loss needs at "
            "least 4 classes") in err
    assert not (tmp_path / "cache").exists()


@pytest.mark.filterwarnings("ignore:ta-pgd.alpha=0.01")  # the set step, on purpose
@pytest.mark.parametrize("eps", [8 / 255, 0.3])
@pytest.mark.parametrize("steps", [10, 40])
def test_ta_pgd_steps_follow_eps_by_rbls_rule_unless_set(eps, steps):
    """2.5 * eps / steps, rbl's own pgd rule (torchattacks' 2/255 at 8/255 and 10 steps), instead of a fixed 2/255."""
    model = small_model()
    x, y = images(model, n=16)
    ours = rbl.get_attack("ta-pgd", steps=steps, random_start=False).perturb(model, x, y, eps)
    reference = torchattacks.PGD(model, eps=eps, alpha=2.5 * eps / steps, steps=steps, random_start=False)(x, y)
    assert torch.equal(ours, reference)
    fixed = torchattacks.PGD(model, eps=eps, alpha=0.01, steps=steps, random_start=False)(x, y)
    assert torch.equal(rbl.get_attack("ta-pgd", steps=steps, alpha=0.01, random_start=False).perturb(model, x, y, eps), fixed)


def test_a_set_step_too_small_to_reach_eps_warns():
    model = small_model()
    x, y = images(model)
    with pytest.warns(AttackWarning, match=r"ta-pgd\[alpha=0\.01\]: 10 step\(s\) of 0\.01 reach 0\.1, short of eps 0\.3"):
        rbl.get_attack("ta-pgd", alpha=0.01).perturb(model, x, y, 0.3)


def test_a_step_too_small_to_reach_eps_flags_the_leaderboard_row(tmp_path):
    results = rbl.run(models="cnn", defenses="none", attacks="ta-pgd[alpha=0.001,steps=2]", eps="0,0.1",
                      dataset="synthetic[n_train=128,n_test=32]", epochs=1, seed=0, device="cpu",
                      cache_dir=tmp_path / "cache", out=tmp_path / "out", db=tmp_path / "results.db")
    (notes,) = results[(results["eps"] == 0.1) & (results["attack"] != "worst-case")]["notes"]
    assert notes == "ta-pgd[alpha=0.001,steps=2]: 2 step(s) of 0.001 reach 0.002, short of eps 0.1: " \
                    "this attack cannot use its whole budget (leave alpha unset for an eps-relative step)"
    assert "attack-warnings" in ranking(results)["flags"].iloc[0]


def test_rbl_run_with_ta_pgd_writes_its_leaderboard_row(tmp_path, capsys):
    status = main(["run", "--dataset", "synthetic[n_train=256,n_test=64]", "--models", "cnn", "--defenses", "none",
                   "--attacks", "fgsm,ta-pgd", "--eps", "0,0.1", "--epochs", "1", "--quiet", "--device", "cpu",
                   "--out", str(tmp_path), "--cache-dir", str(tmp_path / "cache"), "--name", "tiny"])
    out = capsys.readouterr().out
    assert status == 0
    assert "R&G ta-pgd" in out
    rows = (tmp_path / "tiny.csv").read_text().splitlines()
    assert any(row.split(",")[3] == "ta-pgd" for row in rows[1:])
    assert '"ta-pgd": "rbl-torchattacks 0.1.0, code ' in (tmp_path / "tiny.json").read_text()


def test_families_are_declared_for_the_sanity_checks():
    """single-step vs iterative vs black-box comparisons need every adapter's family."""
    from robustbench_lite.interfaces import ATTACK_FAMILIES

    families = {attack.name: attack.family for attack in ADAPTERS}
    assert set(families.values()) <= set(ATTACK_FAMILIES) - {"unspecified"}
    assert (families["ta-fgsm"], families["ta-pgd"], families["ta-square"], families["ta-cw"]) == (
        "single-step", "iterative", "score-based", "minimum-norm"
    )
