"""The built-in training recipes trades, fast-at, at-apgd and at-mix: each loss against an independent
computation of its formula, the contract every defense keeps, bad at-mix specs, and a short run."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import robustbench_lite as rbl
from robustbench_lite.attack_utils import craft
from robustbench_lite.cli import main

EPS = 0.1


def tiny_model() -> nn.Module:
    """Batch norm makes train and eval mode give different outputs, so the mode of every forward matters."""
    torch.manual_seed(123)
    return nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3)).train()


@pytest.fixture
def model() -> nn.Module:
    return tiny_model()


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(32, 6, generator=generator)
    x[:6, :2], x[6:12, 2:4] = 0.0, 1.0  # values on the box's faces, where clipping matters
    return x, torch.randint(0, 3, (32,), generator=generator)


def seeded(function, seed: int = 7):
    torch.manual_seed(seed)
    return function()


def loss_of(defense, model, x, y, eps=EPS, seed=7) -> torch.Tensor:
    """The defense's loss on a copy of ``model`` (train-mode passes update batch-norm statistics)."""
    return seeded(lambda: defense.loss(copy.deepcopy(model), x, y, eps), seed)


def clean_ce(model, x, y) -> torch.Tensor:
    return F.cross_entropy(copy.deepcopy(model)(x), y)


class Recorder:
    """Records every forward pass of a model: its mode and its input."""

    def __init__(self, model: nn.Module) -> None:
        self.calls: list[tuple[bool, torch.Tensor]] = []
        model.register_forward_pre_hook(lambda module, args: self.calls.append((module.training, args[0].detach())))

    @property
    def modes(self) -> list[bool]:
        return [training for training, _ in self.calls]

    @property
    def training_inputs(self) -> list[torch.Tensor]:
        return [inputs for training, inputs in self.calls if training]


def assert_in_ball_and_box(x_adv, x, eps):
    assert (x_adv - x).abs().max() <= eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1


# ---- the contract every defense keeps ------------------------------------------------------------

CHEAP = {
    "trades[steps=3]": 2,  # forward passes in train mode: f(x) and f(x_adv)
    "fast-at": 1,
    "at-apgd[steps=3]": 1,
    "at-mix[attacks=fgsm+pgd[steps=2]]": 3,
}


@pytest.mark.parametrize("spec", CHEAP)
def test_crafting_runs_in_eval_mode_and_leaves_no_parameter_gradient(spec, model, batch):
    x, y = batch
    recorder = Recorder(model)
    defense = rbl.get_defense(spec)
    torch.manual_seed(7)
    loss = defense.loss(model, x, y, EPS)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert model.training  # back in train mode on return
    assert all(parameter.grad is None for parameter in model.parameters())  # crafting took input gradients only
    training = CHEAP[spec]
    assert recorder.modes == [False] * (len(recorder.modes) - training) + [True] * training  # craft, then train
    assert len(recorder.modes) > training
    loss.backward()
    assert all(parameter.grad is not None and parameter.grad.abs().sum() > 0 for parameter in model.parameters())


def test_new_defenses_are_registered_with_their_options():
    infos = rbl.default_registry().infos("defenses")
    expected = {"trades": {"beta", "steps", "rel_step_size", "eps"}, "fast-at": {"rel_step_size", "eps"},
                "at-apgd": {"steps", "eps"}, "at-mix": {"attacks", "weights", "eps"}}
    for name, options in expected.items():
        assert {option.name for option in infos[name].cls.options} == options
        assert infos[name].provider.startswith("robustbench-lite ")


# ---- trades --------------------------------------------------------------------------------------


def reference_trades_loss(model, x_natural, y, step_size, epsilon, perturb_steps, beta):
    """``trades_loss`` of github.com/yaodongyu/TRADES (trades.py, l-inf), transcribed for the CPU."""
    criterion_kl = nn.KLDivLoss(reduction="sum")
    model.eval()
    batch_size = len(x_natural)
    x_adv = x_natural.detach() + 0.001 * torch.randn_like(x_natural).detach()
    for _ in range(perturb_steps):
        x_adv.requires_grad_()
        with torch.enable_grad():
            loss_kl = criterion_kl(F.log_softmax(model(x_adv), dim=1), F.softmax(model(x_natural), dim=1))
        grad = torch.autograd.grad(loss_kl, [x_adv])[0]
        x_adv = x_adv.detach() + step_size * torch.sign(grad.detach())
        x_adv = torch.min(torch.max(x_adv, x_natural - epsilon), x_natural + epsilon)
        x_adv = torch.clamp(x_adv, 0.0, 1.0)
    model.train()
    x_adv = torch.clamp(x_adv, 0.0, 1.0).detach()
    logits = model(x_natural)
    loss_natural = F.cross_entropy(logits, y)
    loss_robust = (1.0 / batch_size) * criterion_kl(
        F.log_softmax(model(x_adv), dim=1), F.softmax(model(x_natural), dim=1)
    )
    return loss_natural + beta * loss_robust


@pytest.mark.parametrize("beta, steps, rel_step_size", [(6.0, 3, None), (1.0, 2, 0.3)])
def test_trades_matches_the_reference_implementation(model, batch, beta, steps, rel_step_size):
    x, y = batch
    defense = rbl.get_defense("trades", beta=beta, steps=steps, rel_step_size=rel_step_size)
    step = EPS * (rel_step_size if rel_step_size is not None else 2.5 / steps)
    expected = seeded(lambda: reference_trades_loss(copy.deepcopy(model), x, y, step, EPS, steps, beta))
    torch.testing.assert_close(loss_of(defense, model, x, y), expected)
    assert expected > clean_ce(model, x, y)  # the KL term is really there


def test_trades_with_beta_zero_is_exactly_clean_cross_entropy(model, batch):
    x, y = batch
    assert torch.equal(loss_of(rbl.get_defense("trades[beta=0]"), model, x, y), clean_ce(model, x, y))


def test_trades_kl_term_is_positive_and_vanishes_at_eps_zero(model, batch):
    x, y = batch
    kl = {
        eps: loss_of(rbl.get_defense("trades[beta=1,steps=3]"), model, x, y, eps) - clean_ce(model, x, y)
        for eps in (0.0, EPS)
    }
    assert kl[EPS] > 1e-4
    assert abs(kl[0.0]) < 1e-7


def test_trades_inner_maximisation_stays_in_bounds_and_beats_random_noise(model, batch):
    x, y = batch
    trades = rbl.get_defense("trades[steps=5]")
    x_adv = seeded(lambda: trades.adversarial(model, x, EPS))
    assert model.training
    assert_in_ball_and_box(x_adv, x, EPS)
    assert torch.equal(seeded(lambda: trades.adversarial(model, x, 0.0)), x)
    noise = (x + torch.empty_like(x).uniform_(-EPS, EPS)).clamp(0, 1)
    with torch.no_grad():
        evaluating = copy.deepcopy(model).eval()
        clean = F.softmax(evaluating(x), dim=1)
        divergence = {
            name: F.kl_div(F.log_softmax(evaluating(point), dim=1), clean, reduction="batchmean")
            for name, point in (("adversarial", x_adv), ("noise", noise))
        }
    assert divergence["adversarial"] > 2 * divergence["noise"]


# ---- fast-at -------------------------------------------------------------------------------------


def test_fast_at_trains_on_one_fgsm_step_from_a_uniform_start(model, batch):
    x, y = batch
    untrained = copy.deepcopy(model)  # the train-mode pass below updates the batch-norm statistics
    recorder = Recorder(model)
    loss = seeded(lambda: rbl.get_defense("fast-at").loss(model, x, y, EPS))
    (x_train,) = recorder.training_inputs
    assert_in_ball_and_box(x_train, x, EPS)
    assert (x_train != x).float().mean() > 0.9
    assert (x_train - x).abs().max() > 0.99 * EPS
    torch.testing.assert_close(loss, F.cross_entropy(copy.deepcopy(untrained)(x_train), y))

    # Wong et al.'s train_fgsm.py step by step (crafted here in eval mode, as the harness does).
    def reference():
        attacked = copy.deepcopy(untrained).eval()
        delta = torch.empty_like(x).uniform_(-EPS, EPS)
        delta = torch.max(torch.min(delta, 1 - x), 0 - x).requires_grad_(True)
        F.cross_entropy(attacked(x + delta), y).backward()
        delta = torch.clamp(delta + 1.25 * EPS * torch.sign(delta.grad), -EPS, EPS)
        return x + torch.max(torch.min(delta, 1 - x), 0 - x).detach()

    torch.testing.assert_close(x_train, seeded(reference))


# rel_step_size=0 is a step that cannot leave x: the PGD inside says so (an AttackWarning), as it should.
@pytest.mark.filterwarnings("ignore::robustbench_lite.interfaces.AttackWarning")
def test_fast_at_step_size_option_is_used(model, batch):
    x, y = batch
    small = Recorder(model)
    seeded(lambda: rbl.get_defense("fast-at[rel_step_size=0]").loss(model, x, y, EPS))
    start = seeded(lambda: (x + torch.empty_like(x).uniform_(-EPS, EPS)).clamp(0, 1))
    torch.testing.assert_close(small.training_inputs[0], start)  # no step: the random start itself


# ---- at-apgd -------------------------------------------------------------------------------------


def test_at_apgd_is_cross_entropy_on_the_apgd_ce_example(model, batch):
    x, y = batch
    apgd = rbl.get_attack("apgd-ce", steps=4)
    expected_model = copy.deepcopy(model)
    x_adv = seeded(lambda: craft(apgd, expected_model, x, y, EPS))
    expected = F.cross_entropy(expected_model(x_adv), y)
    actual = loss_of(rbl.get_defense("at-apgd[steps=4]"), model, x, y)
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)
    assert actual > clean_ce(model, x, y)


# ---- at-mix --------------------------------------------------------------------------------------


def test_at_mix_with_only_the_clean_weight_is_standard_training(model, batch):
    x, y = batch
    recorder = Recorder(model)
    mix = rbl.get_defense("at-mix[weights=1+0+0]")
    loss = seeded(lambda: mix.loss(model, x, y, EPS))
    assert recorder.modes == [True]  # zero weights: no crafting and no forward pass
    assert torch.equal(loss, clean_ce(tiny_model(), x, y))


@pytest.mark.parametrize("weights, alpha", [("0+1", 0.0), ("0.3+0.7", 0.3), (None, 0.5)])
def test_at_mix_with_fgsm_equals_at_fgsm(model, batch, weights, alpha):
    x, y = batch
    mix = rbl.get_defense("at-mix", attacks="fgsm", weights=weights)
    expected = loss_of(rbl.get_defense("at-fgsm", alpha=alpha), model, x, y)
    if alpha == 0:
        assert torch.equal(loss_of(mix, model, x, y), expected)
    else:
        torch.testing.assert_close(loss_of(mix, model, x, y), expected)


def test_at_mix_is_the_weighted_sum_of_the_cross_entropies(model, batch):
    x, y = batch
    mix = rbl.get_defense("at-mix[attacks=fgsm+pgd[steps=2],weights=0.2+0.3+0.5]")
    assert mix.mixture == [("clean", 0.2), ("fgsm", 0.3), ("pgd[steps=2]", 0.5)]
    fgsm, pgd = rbl.get_attack("fgsm"), rbl.get_attack("pgd[steps=2]")

    def by_hand():
        network = copy.deepcopy(model)
        x_fgsm, x_pgd = craft(fgsm, network, x, y, EPS), craft(pgd, network, x, y, EPS)
        return sum(w * F.cross_entropy(network(inputs), y) for w, inputs in ((0.2, x), (0.3, x_fgsm), (0.5, x_pgd)))

    torch.testing.assert_close(loss_of(mix, model, x, y), seeded(by_hand))


def test_at_mix_default_weights_and_lists_from_python(model, batch):
    assert rbl.get_defense("at-mix").mixture == [("clean", 1 / 3), ("fgsm", 1 / 3), ("pgd", 1 / 3)]
    mix = rbl.get_defense("at-mix", attacks=["fgsm", "pgd[steps=2]"], weights=[0, 1, 2])
    assert mix.label == "at-mix[attacks=fgsm+pgd[steps=2],weights=0.0+1.0+2.0]"
    assert mix.mixture == [("clean", 0.0), ("fgsm", 1.0), ("pgd[steps=2]", 2.0)]  # used as given, not normalised
    assert rbl.get_defense(mix.label).mixture == mix.mixture  # the label reads back as the same recipe
    x, y = batch
    recorder = Recorder(model)
    seeded(lambda: mix.loss(model, x, y, EPS))
    assert recorder.modes.count(True) == 2  # no clean forward pass for weight 0


@pytest.mark.parametrize("spec, message", [
    ("at-mix[attacks=fgsm+pgdd]", "unknown attack 'pgdd' (did you mean 'pgd'?); valid choices: "),
    ("at-mix[attacks=fgsm++pgd]", "empty attack name in attacks='fgsm++pgd'"),
    ("at-mix[attacks=pgd[stepz=2]]", "unknown option 'stepz' for attack 'pgd'"),
    ("at-mix[weights=0.5+0.5]", "weights needs 3 '+'-separated entries (the clean loss's, then one per attack: "
                                "fgsm, pgd), got 2"),
    ("at-mix[attacks=fgsm,weights=0.5+x]", "weight 'x' in weights='0.5+x' is not a number"),
    ("at-mix[attacks=fgsm,weights=1.5+-0.5]", "weights must be finite and >= 0, got '-0.5'"),
    ("at-mix[attacks=fgsm,weights=1+inf]", "weights must be finite and >= 0, got 'inf'"),
    ("at-mix[attacks=fgsm,weights=0+0]", "weights must not all be 0"),
])
def test_bad_at_mix_specs_are_usage_errors(spec, message):
    with pytest.raises(rbl.UsageError) as error:
        rbl.get_defense(spec)
    assert str(error.value).startswith("defense 'at-mix': ")
    assert message in str(error.value) and "\n" not in str(error.value)


def test_bad_at_mix_spec_on_the_command_line_is_one_line_and_exit_2(capsys, tmp_path):
    status = main(["run", "--dataset", "synthetic[shape=6,classes=3,n_train=32,n_test=16]", "--models", "mlp",
                   "--defenses", "none,at-mix[weights=1+1]", "--attacks", "fgsm", "--quiet", "--device", "cpu",
                   "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert status == 2
    assert err.strip().count("\n") == 0 and "weights needs 3" in err
    assert not (tmp_path / "cache").exists()  # rejected before any training


# ---- end to end ----------------------------------------------------------------------------------


def test_a_run_trains_and_scores_every_new_defense(tmp_path):
    defenses = ["none", "trades[steps=2]", "fast-at", "at-apgd[steps=2]", "at-mix[attacks=fgsm+pgd[steps=2]]"]
    results = rbl.run(
        dataset="synthetic[shape=10,classes=3,n_train=128,n_test=48]", models="mlp", defenses=",".join(defenses),
        attacks="fgsm", eps="0,0.1", epochs=2, batch_size=64, seed=0, device="cpu",
        cache_dir=tmp_path / "cache", out=tmp_path / "out",
    )
    assert set(results["status"]) == {"ok"}
    assert set(results["defense"]) == set(defenses)
    assert len(results) == len(defenses) * 2 * 2  # fgsm and worst-case, at two eps
    assert (results["n"] == 48).all()
    assert len(list((tmp_path / "cache").glob("*.pt"))) == len(defenses)
    training = results.attrs["metadata"]["training"]
    for defense in defenses:
        assert training[f"mlp/{defense}"]["status"] == "ok"
    # All trained at the run's budget: no view per budget.
    assert "at its own training budget" not in next((tmp_path / "out").glob("*.md")).read_text()
    assert not list((tmp_path / "out").glob("*-train-eps.png"))


# ---- each adversarial training's own budget ------------------------------------------------------


@pytest.mark.parametrize("spec", ["at-fgsm", "at-pgd", "trades", "fast-at", "at-apgd", "at-mix"])
def test_every_adversarial_training_takes_its_own_eps_falling_back_to_the_runs(spec):
    registry = rbl.default_registry()
    assert registry.create("defenses", spec).training_eps(0.3) == 0.3
    assert registry.create("defenses", f"{spec}[eps=0.05]").training_eps(0.3) == 0.05
    assert registry.create("defenses", "none").training_eps(0.3) == 0.3


def test_a_defense_trains_at_its_own_eps_and_is_cached_apart(tmp_path, monkeypatch):
    """One matrix, three budgets of the same recipe: each loss sees its own eps, each gets its weights."""
    seen = []
    loss = type(rbl.default_registry().create("defenses", "at-fgsm")).loss
    monkeypatch.setattr(type(rbl.default_registry().create("defenses", "at-fgsm")), "loss",
                        lambda self, model, x, y, eps: seen.append((self.label, eps)) or loss(self, model, x, y, eps))
    defenses = ["at-fgsm[alpha=0.0,eps=0.01]", "at-fgsm[alpha=0.0,eps=0.1]", "at-fgsm[alpha=0.0]"]
    results = rbl.run(
        dataset="synthetic[shape=10,classes=3,n_train=64,n_test=16]", models="mlp", defenses=",".join(defenses),
        attacks="fgsm", eps="0,0.1", epochs=1, batch_size=64, train_eps=0.2, seed=0, device="cpu",
        cache_dir=tmp_path / "cache", out=tmp_path / "out", name="budgets",
    )
    assert set(results["status"]) == {"ok"} and set(results["defense"]) == set(defenses)
    assert sorted(set(seen)) == sorted(zip(defenses, [0.01, 0.1, 0.2]))
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 3
    training = results.attrs["metadata"]["training"]
    assert [training[f"mlp/{defense}"]["train_eps"] for defense in defenses] == [0.01, 0.1, 0.2]  # in the sidecar
    # The matched view: each defense at its own budget, where the grid has it.
    sidecar = json.loads((tmp_path / "out" / "budgets.json").read_text())
    at_its_eps = {(row["defense"], row["train eps"]): row["fgsm at train eps %"] for row in sidecar["matched"]}
    fgsm = results[(results["attack"] == "fgsm") & (results["eps"] == 0.1)].set_index("defense")["accuracy"]
    assert at_its_eps[(defenses[1], 0.1)] == fgsm[defenses[1]]
    assert at_its_eps[(defenses[0], 0.01)] is None and at_its_eps[(defenses[2], 0.2)] is None  # not on the grid
    markdown = (tmp_path / "out" / "budgets.md").read_text()
    section = markdown[markdown.index("## Each defense at its own training budget"):]
    assert f"| {defenses[0]} | 0.01 " in section and "not on the eps grid" in section
    # ... and its figure, accuracy against the training budget, drawn and linked.
    figure = tmp_path / "out" / "budgets-train-eps.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "(budgets-train-eps.png)" in section
