"""Training options shared by every defense: the lr schedule, early stopping on validation robust accuracy,
and an optimizer imposed on every model."""

import json
import math
from pathlib import Path

import pytest
import torch

import robustbench_lite as rbl
from robustbench_lite import training
from robustbench_lite.cli import main
from robustbench_lite.optimizers import build_optimizer, canonical_optimizer
from robustbench_lite.registry import default_registry
from robustbench_lite.runner import build_model
from robustbench_lite.training import TrainingConfig, batches_per_run, cache_key, load_or_train

MOONS = "moons[n_train=200,n_test=50]"


def parts(defense: str = "none"):
    registry = default_registry()
    data = registry.create("datasets", MOONS).load(Path("data"))
    return registry.create("models", "mlp"), registry.create("defenses", defense), data


def train_once(config: TrainingConfig, defense: str = "none", advance=lambda batches: None):
    builder, recipe, data = parts(defense)
    model = build_model(builder, data, config.seed)
    record = load_or_train(model, builder, recipe, data, config, torch.device("cpu"), None, advance)
    return model, record, data


@pytest.mark.parametrize("schedule, expected", [
    ("none", [1e-3] * 4),
    ("cosine", [1e-3 * (1 + math.cos(math.pi * k / 4)) / 2 for k in range(4)]),
    ("step", [1e-3, 1e-3, 1e-4, 1e-5]),  # x0.1 after 50% and after 75% of the 4 epochs
])
def test_the_schedule_sets_each_epochs_lr_as_documented(schedule, expected):
    _, record, _ = train_once(TrainingConfig(epochs=4, batch_size=64, train_eps=0.1, seed=0, lr_schedule=schedule))
    assert record.epoch_lrs == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_default_settings_train_bit_identical_weights_to_the_loop_before_these_options():
    config = TrainingConfig(epochs=3, batch_size=64, train_eps=0.1, seed=0)
    model, record, data = train_once(config)
    # The training loop as it was: Adam from the model, seeded shuffling, every training point, no scheduler.
    builder, recipe, _ = parts()
    reference = build_model(builder, data, 0)
    optimizer = builder.optimizer(reference.parameters())
    shuffle = torch.Generator().manual_seed(0)
    reference.train()
    for _ in range(3):
        order = torch.randperm(len(data.x_train), generator=shuffle)
        for start in range(0, len(order), 64):
            index = order[start : start + 64]
            loss = recipe.loss(reference, data.x_train[index], data.y_train[index], 0.1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    for (name, ours), theirs in zip(model.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(ours, theirs), name
    assert record.val_robust_accuracy == [] and record.best_epoch is None


def test_the_cache_key_holds_the_new_options_only_when_set():
    builder, recipe, data = parts()
    base = TrainingConfig(epochs=3, batch_size=64, train_eps=0.1, seed=0)
    default_key = cache_key(builder, recipe, data, base)
    assert not {"lr_schedule", "early_stop", "optimizer"} & set(default_key)  # old cached weights still match
    keys = [json.dumps(cache_key(builder, recipe, data, config), sort_keys=True) for config in (
        base, TrainingConfig(3, 64, 0.1, 0, lr_schedule="cosine"), TrainingConfig(3, 64, 0.1, 0, lr_schedule="step"),
        TrainingConfig(3, 64, 0.1, 0, early_stop=2), TrainingConfig(3, 64, 0.1, 0, early_stop=3),
        TrainingConfig(3, 64, 0.1, 0, optimizer="sgd[lr=0.1,momentum=0.9,weight_decay=0.0,nesterov=false]"),
    )]
    assert len(set(keys)) == len(keys)


def test_early_stopping_keeps_the_best_epoch_and_stops_after_k_without_improvement(monkeypatch):
    scores = iter([50.0, 60.0, 55.0, 58.0, 90.0, 95.0])  # best at epoch 2, then 2 epochs without improvement
    snapshots, validations = [], []

    def fake_validation(model, validation, config, device):
        snapshots.append({name: tensor.clone() for name, tensor in model.state_dict().items()})
        validations.append(validation)
        return next(scores)

    monkeypatch.setattr(training, "validation_robust_accuracy", fake_validation)
    advanced = []
    config = TrainingConfig(epochs=6, batch_size=64, train_eps=0.1, seed=0, early_stop=2)
    model, record, data = train_once(config, advance=advanced.append)
    assert record.val_robust_accuracy == [50.0, 60.0, 55.0, 58.0]
    assert record.best_epoch == 2 and len(record.epoch_losses) == 4
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, snapshots[1][name]), name
    assert not all(torch.equal(snapshots[1][name], snapshots[3][name]) for name in snapshots[1])  # later epochs moved on
    # The validation split is the last 10% of the training set, and training never saw it.
    assert all(torch.equal(v.x_train, data.x_train[180:]) for v in validations)
    assert sum(advanced) == batches_per_run(data, config) == 6 * math.ceil(180 / 64)


def test_early_stopping_end_to_end_records_validation_accuracy_in_the_sidecar(tmp_path):
    frame = rbl.run(models="mlp", defenses="at-fgsm", attacks="fgsm", eps="0,0.1", dataset=MOONS, epochs=3,
                    batch_size=64, device="cpu", cache_dir=tmp_path / "cache", out=tmp_path / "out",
                    lr_schedule="cosine", early_stop=1)
    sidecar = json.loads(Path(frame.attrs["files"]["json"]).read_text())
    group = sidecar["training"]["mlp/at-fgsm"]
    assert 1 <= len(group["val_robust_accuracy"]) <= 3
    assert all(0 <= value <= 100 for value in group["val_robust_accuracy"])
    best = group["val_robust_accuracy"].index(max(group["val_robust_accuracy"])) + 1
    assert group["best_epoch"] == best
    assert len(group["epoch_lrs"]) == len(group["val_robust_accuracy"])
    assert sidecar["training_config"]["lr_schedule"] == "cosine" and sidecar["training_config"]["early_stop"] == 1
    # The same settings load the cached weights, with their record.
    again = rbl.run(models="mlp", defenses="at-fgsm", attacks="fgsm", eps="0,0.1", dataset=MOONS, epochs=3,
                    batch_size=64, device="cpu", cache_dir=tmp_path / "cache", lr_schedule="cosine", early_stop=1)
    cached = again.attrs["metadata"]["training"]["mlp/at-fgsm"]
    assert cached["from_cache"] and cached["best_epoch"] == group["best_epoch"]


def test_default_sidecar_has_no_new_training_fields(tmp_path):
    frame = rbl.run(models="mlp", defenses="none", attacks="fgsm", eps="0,0.1", dataset=MOONS, epochs=1,
                    batch_size=64, device="cpu", use_cache=False)
    metadata = frame.attrs["metadata"]
    assert set(metadata["training_config"]) == {"epochs", "batch_size", "train_eps"}
    assert not {"epoch_lrs", "val_robust_accuracy", "best_epoch"} & set(metadata["training"]["mlp/none"])


def test_an_imposed_optimizer_is_validated_written_canonically_and_used(tmp_path):
    assert canonical_optimizer("sgd[lr=0.1]") == canonical_optimizer(" sgd[momentum=0.9, lr=1e-1] ") == \
        "sgd[lr=0.1,momentum=0.9,weight_decay=0.0,nesterov=false]"
    built = build_optimizer("adamw[lr=0.002]", [torch.nn.Parameter(torch.zeros(2))])
    assert isinstance(built, torch.optim.AdamW)
    assert built.param_groups[0]["lr"] == 0.002 and built.param_groups[0]["weight_decay"] == 0.01
    settings = dict(models="mlp", defenses="none", attacks="fgsm", eps="0,0.1", dataset=MOONS, epochs=2,
                    batch_size=64, device="cpu", cache_dir=tmp_path)
    own = rbl.run(**settings)  # mlp's own: Adam(1e-3)
    imposed = rbl.run(**settings, optimizer="sgd[lr=0.5]")
    assert imposed.attrs["metadata"]["training_config"]["optimizer"] == canonical_optimizer("sgd[lr=0.5]")
    losses = [frame.attrs["metadata"]["training"]["mlp/none"]["epoch_losses"] for frame in (own, imposed)]
    assert losses[0] != losses[1]
    # The same optimizer written differently reuses the weights trained above.
    again = rbl.run(**settings, optimizer="sgd[momentum=0.9,lr=0.5]")
    assert again.attrs["metadata"]["training"]["mlp/none"]["from_cache"]
    # The training loop steps with the imposed optimizer, whose lr it records.
    _, record, _ = train_once(TrainingConfig(1, 64, 0.1, 0, optimizer=canonical_optimizer("sgd[lr=0.5,momentum=0]")))
    assert record.epoch_lrs == [0.5]


BAD_OPTIONS = [
    (["--optimizer", "rmsprop"], "unknown optimizer 'rmsprop'; valid choices: adam, adamw, sgd"),
    (["--optimizer", "sgd[lr=fast]"], "option 'lr' of optimizer 'sgd' must be of type float, got 'fast'"),
    (["--optimizer", "adam[momentum=0.9]"], "unknown option 'momentum' for optimizer 'adam'; valid options: lr, weight_decay"),
    (["--optimizer", "sgd[nesterov=true,momentum=0]"], "nesterov=true needs momentum > 0"),
    (["--lr-schedule", "linear"], "'linear' is not one of 'none', 'cosine', 'step'"),
    (["--early-stop", "0"], "--early-stop must be a positive number of epochs, got 0"),
    (["--early-stop", "soon"], "'soon' is not a valid integer"),
    (["--early-stop", "2", "--dataset", "moons[n_train=5]"], "--early-stop needs a validation split"),
]


@pytest.mark.parametrize("extra, message", BAD_OPTIONS, ids=[" ".join(extra) for extra, _ in BAD_OPTIONS])
def test_bad_training_options_are_one_line_and_exit_2(tmp_path, capsys, extra, message):
    status = main(["run", "--dataset", MOONS, "--defenses", "none", "--attacks", "fgsm", "--epochs", "1",
                   "--quiet", "--device", "cpu", "--out", str(tmp_path), *extra])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("rbl: error: ")
    assert message in err
    assert list(tmp_path.iterdir()) == []


def test_bad_training_options_in_the_python_api():
    with pytest.raises(rbl.UsageError, match="unknown --lr-schedule 'warm'; valid choices: none, cosine, step"):
        rbl.run(dataset=MOONS, lr_schedule="warm")
    with pytest.raises(rbl.UsageError, match="--early-stop must be a positive number of epochs"):
        rbl.trained_model(model="mlp", dataset=MOONS, early_stop=-1)
