"""Same command and seed, same numbers: on CPU always, on CUDA under the deterministic mode."""

import pandas as pd
import torch

from robustbench_lite import run
from robustbench_lite.runner import deterministic_mode

SETTINGS = dict(dataset="synthetic[n_train=256,n_test=48]", models="cnn", defenses="none,at-pgd",
                attacks="fgsm,pgd,square", eps="0,0.1,0.3", epochs=1, device="cpu", seed=3)
COMPARED = ["model", "defense", "attack", "eps", "accuracy", "correct", "status"]


def test_two_independent_runs_agree_exactly_and_the_deterministic_mode_changes_nothing_on_cpu(tmp_path):
    # Separate weight caches: both runs train from scratch (random init, shuffling, random starts).
    first = run(**SETTINGS, cache_dir=tmp_path / "a")
    second = run(**SETTINGS, cache_dir=tmp_path / "b", deterministic=True)
    pd.testing.assert_frame_equal(first[COMPARED], second[COMPARED])
    assert second.attrs["metadata"]["deterministic"] is True
    assert not torch.are_deterministic_algorithms_enabled()  # the global setting is restored
    other_seed = run(**{**SETTINGS, "seed": 4}, cache_dir=tmp_path / "c")
    assert not first[COMPARED].equals(other_seed[COMPARED])  # the seed does reach the numbers


def test_deterministic_mode_restores_the_previous_settings():
    torch.backends.cudnn.benchmark = True
    try:
        with deterministic_mode():
            assert torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.benchmark
        assert not torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.benchmark
    finally:
        torch.backends.cudnn.benchmark = False
