"""Attack throughput in images/s (pytest-benchmark). Skipped by the default test run; run with

    pytest tests/benchmarks --benchmark-enable --benchmark-only

and compare runs with ``--benchmark-autosave`` / ``pytest-benchmark compare``.
"""

import pytest
import torch

import robustbench_lite as rbl

BATCH = 128
ATTACKS = ["fgsm", "pgd[steps=10]"]


@pytest.fixture(scope="module")
def mnist_cnn():
    network = rbl.get_model("cnn").build((1, 28, 28), 10)
    return network.eval().requires_grad_(False)


@pytest.mark.parametrize("spec", ATTACKS)
def test_attack_throughput_mnist_cnn(benchmark, mnist_cnn, spec):
    x, y = torch.rand(BATCH, 1, 28, 28), torch.randint(0, 10, (BATCH,))
    attack = rbl.get_attack(spec)
    x_adv = benchmark.pedantic(attack.perturb, args=(mnist_cnn, x, y, 0.1), rounds=5, warmup_rounds=1)
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6
    benchmark.extra_info.update(
        images_per_second=BATCH / benchmark.stats.stats.mean, batch_size=BATCH, device="cpu",
        torch_threads=torch.get_num_threads(),
    )
