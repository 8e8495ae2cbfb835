"""LSA: the comparison measure, the per-layer table, Algorithm 1 and the hooks it uses."""

from collections import OrderedDict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import robustbench_lite as rbl
from robustbench_lite.interfaces import Normalize

pytest.importorskip("rbl_lsa", reason="rbl-lsa is not installed: pip install -e plugins/rbl-lsa")

from rbl_lsa import (  # noqa: E402
    LayerRecorder,
    comparison_measures,
    layer_sustainability,
    most_vulnerable_layers,
    probed_layers,
    sustainability_statistics,
    sustainability_table,
    vulnerability_threshold,
)


class FixedAttack(rbl.Attack):
    """Returns the inputs it was built with: a hand-made 'adversarial' batch."""

    name = "fixed"
    description = "returns a given batch"

    def __init__(self, x_adv: torch.Tensor) -> None:
        super().__init__()
        self.x_adv = x_adv

    def perturb(self, model, x, y, eps):
        return self.x_adv


class Identity(rbl.Attack):
    name = "identity"
    description = "returns x"

    def perturb(self, model, x, y, eps):
        return x


def two_layer_model() -> nn.Module:
    """Linear(2, 2) with W = diag(1, 2) -> ReLU -> Linear(2, 1) with W = (1, 1), no biases, behind Normalize(0, 1)."""
    first, second = nn.Linear(2, 2, bias=False), nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        first.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        second.weight.copy_(torch.tensor([[1.0, 1.0]]))
    network = nn.Sequential(first, nn.ReLU(), second)
    return nn.Sequential(OrderedDict(normalize=Normalize([0.0, 0.0], [1.0, 1.0], (2,)), net=network)).eval()


def synthetic_cnn() -> tuple[nn.Module, rbl.Dataset]:
    data = rbl.get_dataset("synthetic", n_train=8, n_test=16).load(Path("unused"))
    return rbl.build_model(rbl.get_model("cnn"), data, seed=0).eval().requires_grad_(False), data


def test_measured_layers_are_the_conv_and_linear_layers_by_module_path():
    assert probed_layers(two_layer_model()) == ["net.0", "net.2"]
    model, _ = synthetic_cnn()
    assert probed_layers(model) == ["net.0", "net.2", "net.5", "net.9", "net.11"]


def test_comparison_measure_on_a_hand_made_two_layer_network():
    model = two_layer_model()
    x = torch.tensor([[0.3, 0.4], [0.5, 0.5]])
    x_adv = torch.tensor([[0.3, 0.5], [0.4, 0.5]])
    # phi_1 = (x1, 2*x2): (0.3, 0.8) -> (0.3, 1.0) and (0.5, 1.0) -> (0.4, 1.0)
    # phi_2 = x1 + 2*x2:  1.1 -> 1.3 and 1.5 -> 1.4
    expected = torch.tensor([[0.2 / np.hypot(0.3, 0.8), 0.2 / 1.1], [0.1 / np.hypot(0.5, 1.0), 0.1 / 1.5]])
    measures = comparison_measures(model, x, x_adv, ["net.0", "net.2"])
    torch.testing.assert_close(measures, expected.float())

    table = layer_sustainability(model, x, torch.zeros(2, dtype=torch.long), FixedAttack(x_adv), eps=0.1)
    assert table["layer"].tolist() == ["net.0", "net.2"]
    assert table["type"].tolist() == ["Linear", "Linear"]
    np.testing.assert_allclose(table["mean_cm"], expected.mean(0).numpy(), rtol=1e-6)
    np.testing.assert_allclose(table["std_cm"], expected.std(0, correction=0).numpy(), rtol=1e-5)


def test_batches_give_the_same_measures_as_one_batch():
    model, data = synthetic_cnn()
    x_adv = (data.x_test + 0.05 * torch.randn_like(data.x_test)).clamp(0, 1)
    layers = probed_layers(model)
    torch.testing.assert_close(
        comparison_measures(model, data.x_test, x_adv, layers, batch_size=5),
        comparison_measures(model, data.x_test, x_adv, layers, batch_size=16),
    )


def test_cm_is_zero_when_the_attack_returns_x():
    model, data = synthetic_cnn()
    table = layer_sustainability(model, data.x_test, data.y_test, Identity(), eps=0.1)
    assert (table["mean_cm"] == 0).all() and (table["std_cm"] == 0).all()
    assert most_vulnerable_layers(table, eta=0.0) == []


def test_pooled_mu_and_sigma_are_over_every_sample_and_layer():
    measures = torch.rand(50, 4, generator=torch.Generator().manual_seed(1))
    table = sustainability_table(nn.Sequential(*[nn.Linear(1, 1) for _ in range(4)]), ["0", "1", "2", "3"], measures)
    mu, sigma = sustainability_statistics(table)
    assert mu == pytest.approx(measures.mean().item(), rel=1e-6)
    assert sigma == pytest.approx(measures.std(correction=0).item(), rel=1e-5)


def test_mvl_rule_on_a_synthetic_table():
    # No spread within a layer: mu and sigma are those of the four means, 0.3 and 0.2915.
    table = pd.DataFrame({"layer": ["a", "b", "c", "d"], "type": "Linear",
                          "mean_cm": [0.1, 0.2, 0.8, 0.1], "std_cm": [0.0, 0.0, 0.0, 0.0]})
    mu, sigma = np.mean([0.1, 0.2, 0.8, 0.1]), np.std([0.1, 0.2, 0.8, 0.1])
    assert sustainability_statistics(table) == pytest.approx((mu, sigma))
    assert vulnerability_threshold(table, 1.0) == pytest.approx(mu + sigma)
    assert most_vulnerable_layers(table, eta=1.0) == ["c"]  # 0.8 - 0.3 > 0.2915
    assert most_vulnerable_layers(table, eta=2.0) == []  # 0.5 < 2 * 0.2915
    assert most_vulnerable_layers(table, eta=-0.5) == ["b", "c"]  # above 0.3 - 0.146
    # Spread inside the layers raises sigma, and so the cut-off.
    assert most_vulnerable_layers(table.assign(std_cm=0.5), eta=1.0) == []


def hooks(model: nn.Module) -> int:
    return sum(len(module._forward_hooks) + len(module._forward_pre_hooks) for module in model.modules())


def test_hooks_are_removed_after_use_even_after_an_error():
    model, data = synthetic_cnn()
    layer_sustainability(model, data.x_test, data.y_test, rbl.get_attack("fgsm"), eps=0.1)
    assert hooks(model) == 0
    with pytest.raises(RuntimeError, match="boom"):
        with LayerRecorder(model, probed_layers(model)) as recorder:
            assert hooks(model) == 1 + len(probed_layers(model))
            model(data.x_test[:2])
            raise RuntimeError("boom")
    assert hooks(model) == 0
    assert set(recorder.passes[0].outputs) == set(probed_layers(model))


def test_unknown_layer_names_list_the_measurable_ones():
    with pytest.raises(rbl.UsageError, match=r"no layer 'net\.7'.*net\.0, net\.2"):
        LayerRecorder(two_layer_model(), ["net.7"])
