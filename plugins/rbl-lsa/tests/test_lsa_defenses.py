"""AT-LR: discovery, options, the loss and its regularisers, Algorithm 2 in prepare(), and rbl run."""

from pathlib import Path

import pytest
import torch

import robustbench_lite as rbl
from robustbench_lite.attack_utils import craft
from robustbench_lite.interfaces import TrainingContext
from robustbench_lite.registry import Registry

pytest.importorskip("rbl_lsa", reason="rbl-lsa is not installed: pip install -e plugins/rbl-lsa")

from rbl_lsa import LayerRecorder, layerwise_regularization, probed_layers, representation_change  # noqa: E402
from rbl_lsa.regularization import L0_SCALE  # noqa: E402

TINY = "synthetic[n_train=256,n_test=64]"


def training_model_and_batch() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    data = rbl.get_dataset(TINY).load(Path("unused"))
    model = rbl.build_model(rbl.get_model("cnn"), data, seed=0).train()
    return model, data.x_train[:32], data.y_train[:32]


def test_registry_lists_the_at_lr_defenses_from_rbl_lsa():
    infos = Registry().infos("defenses")
    own = ["reg", "lam", "eta", "layers"]
    for name, inherited in (("at-pgd-lr", ["steps", "rel_step_size", "eps"]), ("at-fgsm-lr", ["alpha", "eps"])):
        assert infos[name].distribution == "rbl-lsa"
        assert [option.name for option in infos[name].cls.options] == inherited + own
    defense = rbl.get_defense("at-pgd-lr[steps=3,reg=l1,layers=net.0+net.9]")
    assert defense.label == "at-pgd-lr[steps=3,reg=l1,layers=net.0+net.9]"
    assert defense.base_defense.label == "at-pgd[steps=3]"
    assert defense.most_vulnerable == ["net.0", "net.9"]
    # The base's own training budget is the AT-LR defense's too.
    assert rbl.get_defense("at-pgd-lr[eps=0.05,layers=net.0]").training_eps(0.3) == 0.05
    assert rbl.get_defense("at-pgd-lr[layers=net.0]").training_eps(0.3) == 0.3


@pytest.mark.parametrize("spec, message", [
    ("at-pgd-lr[reg=l3]", "must be one of l0, l1, l2"),
    ("at-pgd-lr[lam=-1]", "must be >= 0"),
    ("at-fgsm-lr[alpha=2]", "must be <= 1"),
    ("at-pgd-lr[layers=net.0++net.9]", "empty layer name"),
    ("at-pgd-lr[gamma=1]", "unknown option 'gamma'"),
])
def test_bad_options_are_usage_errors(spec, message):
    with pytest.raises(rbl.UsageError, match=message):
        rbl.get_defense(spec)


def test_an_unknown_mvl_layer_fails_at_the_first_loss_naming_the_valid_ones():
    model, x, y = training_model_and_batch()
    with pytest.raises(rbl.UsageError, match=r"no layer 'net\.99'.*net\.0, net\.2"):
        rbl.get_defense("at-fgsm-lr", layers="net.99").loss(model, x, y, 0.1)


@pytest.mark.parametrize("alpha", [0.0, 0.5])  # without and with a clean pass in the base loss
def test_at_lr_loss_is_the_base_loss_at_lam_0_and_adds_lam_times_lr(alpha):
    model, x, y = training_model_and_batch()
    layers = "net.0+net.9"
    base = rbl.get_defense("at-fgsm", alpha=alpha).loss(model, x, y, 0.1)
    assert rbl.get_defense("at-fgsm-lr", alpha=alpha, lam=0.0, layers=layers).loss(model, x, y, 0.1).item() == base.item()

    regularized = rbl.get_defense("at-fgsm-lr", alpha=alpha, lam=2.0, layers=layers).loss(model, x, y, 0.1)
    x_adv = craft(rbl.get_attack("fgsm"), model, x, y, 0.1)
    with LayerRecorder(model, ["net.0", "net.9"]) as recorder:
        model(x)
        model(x_adv)
    clean, adversarial = recorder.passes
    lr = layerwise_regularization(clean.outputs, adversarial.outputs, "l2")
    assert lr.item() > 0
    assert regularized.item() == pytest.approx(base.item() + 2.0 * lr.item(), rel=1e-5)
    assert model.training  # the loss contract: train mode on return


def test_at_pgd_lr_matches_at_pgd_at_lam_0_and_is_larger_above():
    model, x, y = training_model_and_batch()

    def seeded(spec: str) -> float:
        torch.manual_seed(3)  # the same PGD random start for every loss
        return rbl.get_defense(spec).loss(model, x, y, 0.1).item()

    base = seeded("at-pgd[steps=2]")
    assert seeded("at-pgd-lr[steps=2,lam=0,layers=net.11]") == base
    for reg in ("l0", "l1", "l2"):
        assert seeded(f"at-pgd-lr[steps=2,lam=1,reg={reg},layers=net.0+net.11]") > base


@pytest.mark.parametrize("base", ["at-fgsm[alpha=0]", "fast-at", "trades[steps=2]", "at-apgd[steps=2]"])
def test_every_base_gets_an_lr_variant_equal_to_it_at_lam_0(base):
    """The other AT bases of the paper (AT-FAST-LR, AT-TRADE-LR, AT-APGD-LR) regularise their own adversarial pass."""
    model, x, y = training_model_and_batch()
    name, _, options = base.partition("[")
    options = options.rstrip("]")
    variant = f"{name}-lr[{options + ',' if options else ''}layers=net.0+net.11"

    def seeded(spec: str) -> float:
        torch.manual_seed(3)
        return rbl.get_defense(spec).loss(model, x, y, 0.1).item()

    reference = seeded(base)
    assert seeded(f"{variant},lam=0]") == reference
    assert seeded(f"{variant},lam=1]") > reference


def test_each_regulariser_computes_its_intended_norm():
    clean = torch.tensor([[1.0, -2.0, 3.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    delta = torch.tensor([[0.0, 3.0, -4.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    adversarial = clean + delta
    torch.testing.assert_close(representation_change(clean, adversarial, "l1"), torch.tensor([7.0 / 4, 0.0]))
    torch.testing.assert_close(representation_change(clean, adversarial, "l2"), torch.tensor([5.0 / 2, 0.0]))
    scale = L0_SCALE * clean[0].pow(2).mean().sqrt()
    smooth_count = (delta[0] ** 2 / (delta[0] ** 2 + scale**2)).mean()
    torch.testing.assert_close(representation_change(clean, adversarial, "l0"), torch.stack([smooth_count, torch.tensor(0.0)]))
    assert smooth_count.item() == pytest.approx(2 / 4, abs=0.01)  # two of four units changed, by far more than tau
    # Layer outputs of any shape are flattened per sample.
    images = clean.reshape(2, 1, 2, 2)
    for reg in ("l0", "l1", "l2"):
        torch.testing.assert_close(representation_change(images, adversarial.reshape(2, 1, 2, 2), reg),
                                   representation_change(clean, adversarial, reg))


@pytest.mark.parametrize("reg", ["l0", "l1", "l2"])
def test_an_unchanged_representation_costs_0_with_finite_gradients(reg):
    clean = torch.tensor([[1.0, -2.0], [0.0, 0.0]], requires_grad=True)
    change = representation_change(clean, clean * 1.0, reg).sum()
    (gradient,) = torch.autograd.grad(change, clean)
    assert change.item() == 0.0 and torch.isfinite(gradient).all()


def context(cache_dir: Path) -> TrainingContext:
    data = rbl.get_dataset(TINY).load(Path("unused"))
    return TrainingContext(rbl.get_model("cnn"), data, epochs=1, batch_size=128, train_eps=0.05, seed=0,
                           device=torch.device("cpu"), cache_dir=cache_dir)


def test_prepare_finds_the_mvl_list_of_the_cached_standard_model(tmp_path):
    settings = context(tmp_path)
    defense = rbl.get_defense("at-pgd-lr", steps=2)
    defense.prepare(settings)
    layers = probed_layers(rbl.build_model(settings.builder, settings.data, 0))
    assert defense.most_vulnerable and set(defense.most_vulnerable) <= set(layers)
    (checkpoint,) = tmp_path.glob("*.pt")  # the standard model, trained once and cached
    assert checkpoint.name.startswith("cnn-synthetic-none-")
    modified = checkpoint.stat().st_mtime_ns

    again = rbl.get_defense("at-pgd-lr", steps=2)
    again.prepare(settings)
    assert again.most_vulnerable == defense.most_vulnerable  # deterministic given the settings
    assert list(tmp_path.glob("*.pt")) == [checkpoint] and checkpoint.stat().st_mtime_ns == modified

    # A cut-off no layer passes keeps the single most vulnerable layer (eta lowered until one does).
    strict = rbl.get_defense("at-pgd-lr", steps=2, eta=100.0)
    strict.prepare(settings)
    assert len(strict.most_vulnerable) == 1 and strict.most_vulnerable[0] in layers

    given = rbl.get_defense("at-pgd-lr", layers="net.5")
    given.prepare(settings)
    assert given.most_vulnerable == ["net.5"]


def test_training_without_prepare_or_layers_is_refused():
    model, x, y = training_model_and_batch()
    with pytest.raises(RuntimeError, match="prepare"):
        rbl.get_defense("at-pgd-lr").loss(model, x, y, 0.1)


def test_rbl_run_puts_at_pgd_lr_next_to_at_pgd(tmp_path):
    results = rbl.run(models="cnn", defenses="none,at-pgd,at-pgd-lr", attacks="fgsm", eps="0,0.1", dataset=TINY,
                      epochs=1, device="cpu", seed=0, cache_dir=tmp_path / "cache", out=tmp_path / "out")
    assert set(results["status"]) == {"ok"}
    assert set(rbl.ranking(results)["defense"]) == {"none", "at-pgd", "at-pgd-lr"}
    assert results.attrs["metadata"]["plugins"]["defenses"]["at-pgd-lr"].startswith("rbl-lsa 0.1.0, code ")
    leaderboard = (tmp_path / "out" / "synthetic.csv").read_text()
    assert ",at-pgd-lr," in leaderboard and ",at-pgd," in leaderboard
    # Algorithm 2 reused the run's standard model instead of training another one.
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 3
