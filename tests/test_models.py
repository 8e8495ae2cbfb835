"""The built-in model plugins: shapes, exact sizes, the binary-logit trick, errors and discovery."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustbench_lite.errors import UsageError
from robustbench_lite.interfaces import ModelBuilder
from robustbench_lite.plugins.models.cnn import CNN
from robustbench_lite.plugins.models.lenet import LeNet
from robustbench_lite.plugins.models.mlp import MLP
from robustbench_lite.plugins.models.resnet import ResNet18
from robustbench_lite.plugins.models.vgg import VGG19
from robustbench_lite.plugins.models.wide_resnet import WRN
from robustbench_lite.registry import Registry

CIFAR = (3, 32, 32)


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def big_models() -> dict[str, nn.Module]:
    """The three large CIFAR networks, built once for the whole module (building WRN-28-10 is slow)."""
    torch.manual_seed(0)
    return {builder.name: builder.build(CIFAR, 10) for builder in (VGG19(), ResNet18(), WRN())}


# --- output shapes ---------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "builder, input_shape, num_classes",
    [
        (MLP(), (2,), 2),
        (MLP(), (5,), 3),
        (CNN(), (1, 28, 28), 10),
        (CNN(), (3, 32, 24), 4),  # non-square: the flattened size is computed per side
        (CNN(), (1, 20, 20), 10),  # the smallest size it takes
        (LeNet(), CIFAR, 10),
        (LeNet(), (1, 32, 32), 5),
        (ResNet18(), (1, 8, 8), 7),
        (WRN(depth=10, widen_factor=1), CIFAR, 10),
        (WRN(depth=10, widen_factor=2), (1, 8, 12), 3),
    ],
    ids=lambda value: str(value) if not isinstance(value, ModelBuilder) else value.label,
)
def test_small_models_map_a_batch_to_one_logit_per_class(builder, input_shape, num_classes):
    model = builder.build(input_shape, num_classes)
    out = model(torch.rand(2, *input_shape))
    assert out.shape == (2, num_classes)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["vgg19", "resnet18", "wrn-28-10"])
def test_big_models_map_a_batch_to_one_logit_per_class(big_models, name):
    model = big_models[name].eval()
    with torch.no_grad():
        out = model(torch.rand(2, *CIFAR))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()


def test_big_models_train_mode_backward_reaches_every_parameter(big_models):
    model = big_models["resnet18"].train()
    F.cross_entropy(model(torch.rand(2, *CIFAR)), torch.tensor([1, 2])).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    model.zero_grad(set_to_none=True)


# --- exact parameter counts --------------------------------------------------------------------------

def test_lenet_has_the_reference_62006_parameters():
    assert count(LeNet().build(CIFAR, 10)) == 62_006


def test_resnet18_has_11173962_parameters(big_models):
    assert count(big_models["resnet18"]) == 11_173_962


def test_vgg19_parameter_count_matches_the_formula(big_models):
    cfg = [64, 64, 128, 128, 256, 256, 256, 256, 512, 512, 512, 512, 512, 512, 512, 512]
    expected, cin = 0, 3
    for cout in cfg:
        expected += cin * cout * 9 + cout  # 3x3 conv with bias
        expected += 2 * cout  # batch-norm weight and bias
        cin = cout
    expected += 512 * 10 + 10
    assert expected == 20_040_522
    assert count(big_models["vgg19"]) == expected


def wrn_formula(depth: int, k: int, in_channels: int = 3, classes: int = 10) -> int:
    """Pre-activation WRN: stem conv, n blocks per group, 1x1 projections where widths change, BN + linear head."""
    n = (depth - 4) // 6
    total, cin = in_channels * 16 * 9, 16
    for group, width in enumerate((16 * k, 32 * k, 64 * k)):
        for block in range(n):
            total += 2 * cin + cin * width * 9  # bn1, conv1
            total += 2 * width + width * width * 9  # bn2, conv2
            downsamples = group > 0 and block == 0
            if downsamples or cin != width:
                total += cin * width  # 1x1 projection shortcut
            cin = width
    return total + 2 * cin + cin * classes + classes


def test_wrn_28_10_parameter_count_matches_the_formula(big_models):
    assert wrn_formula(28, 10) == 36_479_194
    assert count(big_models["wrn-28-10"]) == wrn_formula(28, 10)


def test_tiny_wrn_parameter_count_matches_the_formula():
    # depth 10, k 1: the first group keeps 16 channels, so its block has no projection.
    assert count(WRN(depth=10, widen_factor=1).build(CIFAR, 10)) == wrn_formula(10, 1)


# --- the binary single-logit MLP ------------------------------------------------------------------------

def test_mlp_binary_logits_are_zero_and_z_and_cross_entropy_is_bce():
    model = MLP().build((2,), 2)
    assert isinstance(model[-2], nn.Linear) and model[-2].out_features == 1
    x, y = torch.rand(16, 2), torch.randint(0, 2, (16,))
    z = model[:-1](x)  # the single logit, before the two-class expansion
    logits = model(x)
    assert torch.equal(logits, torch.cat([torch.zeros_like(z), z], 1))
    assert torch.allclose(F.cross_entropy(logits, y), F.binary_cross_entropy_with_logits(z[:, 0], y.float()))
    assert torch.allclose(logits.softmax(1)[:, 1], torch.sigmoid(z[:, 0]))


def test_mlp_multiclass_has_one_output_per_class():
    model = MLP().build((4,), 3)
    assert [m.out_features for m in model if isinstance(m, nn.Linear)] == [100, 100, 100, 3]
    assert sum(isinstance(m, nn.ELU) for m in model) == 3


def test_lenet_outputs_log_probabilities():
    out = LeNet().build(CIFAR, 10)(torch.rand(3, *CIFAR))
    assert torch.allclose(out.exp().sum(1), torch.ones(3))


# --- shape mismatches ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "builder, input_shape, needs",
    [
        (MLP(), CIFAR, "use an image model such as cnn"),
        (MLP(), (28, 28), "flat feature vectors"),
        (CNN(), (2,), ">= 20"),
        (CNN(), (1, 19, 28), ">= 20"),
        (LeNet(), (1, 28, 28), "(C, 32, 32)"),
        (LeNet(), (2,), "(C, 32, 32)"),
        (VGG19(), (3, 64, 64), "(C, 32, 32)"),
        (ResNet18(), (3, 7, 32), ">= 8"),
        (ResNet18(), (32, 32), ">= 8"),
        (WRN(depth=10, widen_factor=1), (2,), ">= 8"),
        (WRN(depth=10, widen_factor=1), (3, 4, 4), ">= 8"),
    ],
    ids=lambda value: str(value) if not isinstance(value, ModelBuilder) else value.name,
)
def test_unusable_shapes_raise_one_line_usage_error_naming_the_shape(builder, input_shape, needs):
    with pytest.raises(UsageError) as error:
        builder.build(input_shape, 10)
    message = str(error.value)
    assert str(input_shape) in message
    assert needs in message
    assert repr(builder.name) in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "options, match",
    [
        ({"depth": 12}, r"\(depth - 4\) % 6 == 0.*got 12"),
        ({"depth": 4}, ">= 10"),
        ({"widen_factor": 0}, ">= 1"),
        ({"depth": "deep"}, "type int"),
    ],
)
def test_wrn_rejects_bad_options(options, match):
    with pytest.raises(UsageError, match=match):
        WRN(**options)


def test_wrn_label_shows_changed_options():
    assert WRN(depth="16", widen_factor="4").label == "wrn-28-10[depth=16,widen_factor=4]"


# --- optimizers ------------------------------------------------------------------------------------

def test_lenet_trains_with_the_reference_sgd():
    opt = LeNet().optimizer(LeNet().build(CIFAR, 10).parameters())
    assert type(opt) is torch.optim.SGD
    group = opt.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.001, 0.9, 0)


@pytest.mark.parametrize("builder", [VGG19(), ResNet18(), WRN()], ids=lambda b: b.name)
def test_cifar_networks_train_with_sgd_and_weight_decay(builder):
    opt = builder.optimizer([nn.Parameter(torch.zeros(1))])
    assert type(opt) is torch.optim.SGD
    group = opt.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.05, 0.9, 5e-4)


@pytest.mark.parametrize("builder", [MLP(), CNN()], ids=lambda b: b.name)
def test_small_models_keep_the_default_adam(builder):
    opt = builder.optimizer([nn.Parameter(torch.zeros(1))])
    assert type(opt) is torch.optim.Adam and opt.param_groups[0]["lr"] == 1e-3


# --- discovery -------------------------------------------------------------------------------------

MODEL_NAMES = ["mlp", "cnn", "lenet", "vgg19", "resnet18", "wrn-28-10"]


def test_models_are_discovered_through_the_installed_entry_points():
    # Other plugin kinds may be broken while they are being written; only ours must load cleanly.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        registry = Registry()
    about_models = [str(w.message) for w in caught if any(repr(name) in str(w.message) for name in MODEL_NAMES)]
    assert about_models == []
    infos = registry.infos("models")
    for name in MODEL_NAMES:
        assert infos[name].distribution == "robustbench-lite"
        assert infos[name].cls.name == name
    model = registry.create("models", "wrn-28-10[depth=10,widen_factor=1]").build(CIFAR, 10)
    assert model(torch.rand(2, *CIFAR)).shape == (2, 10)
