"""The evaluation's speed settings: what each does to the numbers and to the results' keys."""

from __future__ import annotations

import pytest
import torch

import robustbench_lite as rbl
from robustbench_lite import bench
from robustbench_lite.acceleration import Acceleration, device_tuning

RUN = dict(dataset="synthetic[n_train=256,n_test=64]", models="cnn", defenses="none", attacks="fgsm,pgd",
           eps="0,0.1,0.3", epochs=1, device="cpu")


def test_batch_size_and_memory_format_leave_every_number_as_it_is_but_are_keyed_apart(tmp_path):
    settings = dict(RUN, cache_dir=tmp_path / "cache", db=tmp_path / "results.db")
    default = rbl.run(**settings)
    assert "acceleration" not in default.attrs["metadata"]  # default sidecars unchanged
    for acceleration in (Acceleration(eval_batch_size=5), Acceleration(channels_last=True)):
        frame = rbl.run(**settings, acceleration=acceleration)
        assert list(frame["correct"]) == list(default["correct"])
        assert frame.attrs["metadata"]["acceleration"] == acceleration.settings()
        assert frame.attrs["metadata"]["work"]["cells_reused"] == 1  # only the clean predictions: attacks recomputed
    again = rbl.run(**settings)
    assert again.attrs["metadata"]["work"]["cells_computed"] == 0


def test_bf16_runs_the_forward_pass_in_bfloat16_and_keeps_examples_in_float32():
    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(144, 3))
    network.eval().requires_grad_(False)
    seen = []
    network[1].register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    model = Acceleration(precision="bf16", channels_last=True).apply(network)
    x = torch.rand(6, 1, 8, 8)
    logits = model(x)
    assert seen == [torch.bfloat16] and logits.dtype == torch.float32
    assert torch.allclose(logits, network.float()(x), atol=0.05)  # bfloat16 keeps about 3 significant digits
    x_adv = rbl.get_attack("pgd", steps=3).perturb(model, x, logits.argmax(1), 0.1)
    assert x_adv.dtype == torch.float32 and (x_adv - x).abs().max() <= 0.1 + 1e-6


def test_bf16_and_compiled_runs_agree_with_the_default_one(tmp_path):
    settings = dict(dataset="moons[n_train=200,n_test=60]", models="mlp", defenses="none", attacks="fgsm,pgd",
                    eps="0,0.1,0.3", epochs=2, device="cpu", cache_dir=tmp_path / "cache")
    default = rbl.run(**settings)
    bf16 = rbl.run(**settings, acceleration=Acceleration(precision="bf16"))
    assert (bf16["correct"] - default["correct"]).abs().max() <= 2  # of 60: a few points on the boundary may flip
    compiled = rbl.run(**settings, acceleration=Acceleration(compile=True))
    assert list(compiled["correct"]) == list(default["correct"])


def test_cudnn_autotuning_is_on_for_cuda_runs_unless_deterministic():
    before = torch.backends.cudnn.benchmark
    with device_tuning(torch.device("cuda"), deterministic=False):  # sets a flag only: no GPU needed
        assert torch.backends.cudnn.benchmark
    assert torch.backends.cudnn.benchmark == before
    for device, deterministic in ((torch.device("cuda"), True), (torch.device("cpu"), False)):
        with device_tuning(device, deterministic):
            assert torch.backends.cudnn.benchmark == before


def test_bench_measures_the_accelerated_model_and_says_so():
    (measurement,) = bench.bench("fgsm", "cnn", "8", "cpu", repeats=1, torchattacks=False,
                                 acceleration=Acceleration(channels_last=True))
    assert measurement.acceleration == {"channels_last": True}
    assert measurement.as_dict()["acceleration"] == {"channels_last": True}
    assert 'model run with {"channels_last": true}' in bench.describe_setting([measurement], 1)


@pytest.mark.parametrize("settings, message", [
    (dict(precision="fp16"), "unknown precision 'fp16'; valid choices: fp32, bf16"),
    (dict(eval_batch_size=0), "--eval-batch-size must be a positive number of points, got 0"),
])
def test_bad_settings_are_refused(settings, message):
    with pytest.raises(rbl.UsageError, match=message):
        Acceleration(**settings)
