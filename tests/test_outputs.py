"""Models that return more than logits: tuples, dicts, HuggingFace-style outputs, one logit for two classes."""

from __future__ import annotations

from collections import OrderedDict

import pandas as pd
import pytest
import torch

from robustbench_lite.cli import main
from robustbench_lite.outputs import Logits, OutputTypeError, output_adapter

LOGITS = torch.randn(4, 3)


class HuggingFaceStyle:  # what transformers' ImageClassifierOutput offers: a .logits tensor
    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = logits


@pytest.mark.parametrize("output, form", [
    ((LOGITS, torch.zeros(4, 7)), "first"),
    ([LOGITS], "first"),
    ({"logits": LOGITS, "features": torch.zeros(4, 7)}, "key"),
    (OrderedDict(logits=LOGITS), "key"),
    (HuggingFaceStyle(LOGITS), "attribute"),
])
def test_the_logits_are_read_from_each_form(output, form):
    adapter = output_adapter(output, num_classes=3, model="m")
    assert adapter.form == form
    assert torch.equal(adapter(output), LOGITS)


def test_logits_pass_unchanged_and_a_single_logit_becomes_two_class_logits():
    assert output_adapter(LOGITS, num_classes=3, model="m") is None
    z = torch.randn(5, 1)
    for single in (z, z.flatten()):
        adapter = output_adapter(single, num_classes=2, model="m")
        logits = adapter(single)
        assert logits.shape == (5, 2)
        assert torch.allclose(logits.softmax(1)[:, 1], torch.sigmoid(z.flatten()))
    assert output_adapter(z, num_classes=3, model="m") is None  # the shape check then names the mismatch


@pytest.mark.parametrize("output, what", [
    ("logits", "str"),
    ({"scores": LOGITS}, "dict with keys 'scores'"),
    ((), "tuple"),
    (None, "NoneType"),
])
def test_anything_else_is_refused_naming_its_type(output, what):
    with pytest.raises(OutputTypeError, match=rf"^model 'm' returns {what}; robustbench_lite takes a tensor of logits"):
        output_adapter(output, num_classes=3, model="m")
    with pytest.raises(ValueError, match="unknown output form 'second'; valid forms: first, key, attribute"):
        Logits("second")


MODELS_PLUGIN = '''
import torch
from torch import nn
from robustbench_lite import hookimpl
from robustbench_lite.plugins.models.cnn import CNN
from robustbench_lite.plugins.models.mlp import MLP


class Returns(nn.Module):
    """The same network, its logits returned in another form."""

    def __init__(self, net, form):
        super().__init__()
        self.net, self.form = net, form

    def forward(self, x):
        logits = self.net(x)
        if self.form == "tuple":
            return logits, x.flatten(1)
        if self.form == "dict":
            return {"logits": logits, "features": x.flatten(1)}
        if self.form == "object":
            return type("Output", (), {"logits": logits})()
        return {"scores": logits}


def variant(base, form):
    class Variant(base):
        name = f"{form}-{base.name}"
        description = f"{base.name} returning a {form}"

        def build(self, input_shape, num_classes):
            return Returns(super().build(input_shape, num_classes), form)

    return Variant


class OneLogitMLP(MLP):
    name = "one-logit-mlp"
    description = "mlp ending in its single logit, without the two-class step"

    def build(self, input_shape, num_classes):
        return nn.Sequential(*list(super().build(input_shape, num_classes))[:-1])


@hookimpl
def register_models(register):
    for form in ("tuple", "dict", "object", "odd"):
        register(variant(CNN, form))
    register(OneLogitMLP)
'''


def _rg(frame: pd.DataFrame, model: str) -> list[list]:
    """A model's rows of the leaderboard CSV: defense, attack, the accuracy at every eps and R&G."""
    rows = frame[frame["model"] == model].sort_values(["defense", "attack"])
    table = rows.filter(regex=r"^(defense|attack|eps=.*|R&G)$").values.tolist()
    assert len(table) == 6 and len(table[0]) >= 5  # 2 defenses x (fgsm, pgd, worst case); eps columns and R&G
    return table


def test_models_of_every_form_score_exactly_as_the_network_they_wrap(tmp_path, install_plugin, capsys):
    install_plugin("rbl-forms", "rbl_forms", MODELS_PLUGIN)
    common = ["--defenses", "none,at-fgsm", "--attacks", "fgsm,pgd", "--epochs", "1", "--quiet", "--device", "cpu",
              "--cache-dir", str(tmp_path / "cache")]
    assert main(["run", "--dataset", "synthetic[n_train=256,n_test=48]", "--models", "cnn,tuple-cnn,dict-cnn,object-cnn",
                 "--eps", "0,0.1", *common, "--out", str(tmp_path / "images"), "--name", "forms"]) == 0
    assert main(["run", "--models", "mlp,one-logit-mlp", "--n-examples", "64", *common,
                 "--out", str(tmp_path / "moons"), "--name", "forms"]) == 0
    images = pd.read_csv(tmp_path / "images" / "forms.csv")
    moons = pd.read_csv(tmp_path / "moons" / "forms.csv")
    assert _rg(images, "cnn") and _rg(images, "cnn") == _rg(images, "tuple-cnn") == _rg(images, "dict-cnn") == \
        _rg(images, "object-cnn")
    assert _rg(moons, "mlp") and _rg(moons, "mlp") == _rg(moons, "one-logit-mlp")
    capsys.readouterr()

    status = main(["run", "--dataset", "synthetic[n_train=64,n_test=16]", "--models", "odd-cnn", *common,
                   "--out", str(tmp_path / "odd")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert err == ["rbl: error: model 'odd-cnn' returns dict with keys 'scores'; robustbench_lite takes a tensor of "
                   "logits (N, classes), a tuple or list whose first element is one, a dict with the key 'logits', an "
                   "object with a .logits tensor, or, for two classes, a single logit per input"]
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").glob("*odd*"))
