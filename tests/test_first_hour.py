"""A new user's first commands: the dataset follows from the models, and errors say how to fix them."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from robustbench_lite import UsageError, default_registry
from robustbench_lite.cli import main
from robustbench_lite.interfaces import ModelBuilder
from robustbench_lite.plan import DEFAULT_DATASET, choose_dataset


def builders(*specs: str) -> list[ModelBuilder]:
    return [default_registry().create("models", spec) for spec in specs]


@pytest.mark.parametrize("models, dataset", [
    (["vgg19"], "cifar10"), (["resnet18"], "cifar10"), (["wrn-28-10"], "cifar10"), (["lenet"], "cifar10"),
    (["cnn"], "mnist"), (["mlp"], "moons"), (["vgg19", "lenet"], "cifar10"),
])
def test_the_dataset_follows_from_the_models(models, dataset):
    assert choose_dataset(None, builders(*models)).spec == dataset


def test_a_given_dataset_wins_over_the_models():
    assert choose_dataset("mnist", builders("vgg19")).spec == "mnist"


def test_models_meant_for_nothing_in_particular_get_the_default():
    class Anything(ModelBuilder):
        name = "anything"
        description = "a third-party model that names no dataset"

        def build(self, input_shape, num_classes):
            raise NotImplementedError

    assert choose_dataset(None, [Anything()]).spec == DEFAULT_DATASET == "moons"


def test_models_meant_for_different_datasets_are_one_clear_error():
    with pytest.raises(UsageError, match=r"different datasets \(vgg19 -> cifar10, cnn -> mnist\); choose one with "
                                         r"--dataset \(cifar10 or mnist\)"):
        choose_dataset(None, builders("vgg19", "cnn"))


@pytest.fixture
def offline(monkeypatch):
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def test_the_headline_command_asks_for_cifar10_files_when_offline(tmp_path, capsys, offline):
    status = main(["run", "--models", "vgg19", "--attacks", "fgsm,pgd", "--data-dir", str(tmp_path / "data"),
                   "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1
    assert err[0].startswith(f"rbl: error: CIFAR-10 not found in {tmp_path / 'data'}: put cifar-10-python.tar.gz")
    assert "run the same command once on a machine with internet" in err[0]
    assert not (tmp_path / "out" / "results.db").exists()  # no store opened before the input decided it


def test_a_shape_mismatch_names_the_dataset_in_use_and_the_fix(tmp_path, capsys, shared_data):
    status = main(["run", "--models", "vgg19", "--dataset", "mnist", "--data-dir", str(shared_data),
                   "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert err.endswith("that is dataset 'mnist': model 'vgg19' is meant for --dataset cifar10")
