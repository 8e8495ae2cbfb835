"""--executor ray: the same matrix on a local Ray cluster gives the same numbers as the local executor."""

import pandas as pd
import pytest
import ray

from robustbench_lite import run
from robustbench_lite.cli import main

SETTINGS = dict(defenses="none,at-fgsm,at-pgd,gaussian-noise", attacks="fgsm,pgd", epochs=2, n_examples=300, device="cpu")
COMPARED = ["model", "defense", "attack", "eps", "accuracy", "correct", "n", "status", "evaluation"]


@pytest.fixture
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning", log_to_driver=False)
    yield
    ray.shutdown()


def test_the_moons_matrix_on_ray_equals_the_local_run(tmp_path, local_ray):
    local = run(**SETTINGS, cache_dir=tmp_path / "local-cache")
    # Its own weights cache and store: the Ray workers train and attack everything themselves.
    on_ray = run(**SETTINGS, cache_dir=tmp_path / "ray-cache", out=tmp_path / "lb", executor="ray")
    pd.testing.assert_frame_equal(local[COMPARED], on_ray[COMPARED])
    metadata = on_ray.attrs["metadata"]
    assert metadata["executor"] == "ray" and metadata["work"]["cells_reused"] < metadata["work"]["cells_computed"]
    assert set(metadata["training"]) == {"mlp/none", "mlp/at-fgsm", "mlp/at-pgd", "mlp/gaussian-noise"}
    assert metadata["training"]["mlp/gaussian-noise"]["trained_as"] == "none"
    # The workers wrote every cell to the run's store: the same command again computes nothing.
    again = run(**SETTINGS, cache_dir=tmp_path / "ray-cache", out=tmp_path / "lb", executor="ray")
    assert again.attrs["metadata"]["work"]["cells_computed"] == 0
    pd.testing.assert_frame_equal(local[COMPARED], again[COMPARED])


def test_an_unknown_executor_is_one_line_and_exit_2(capsys):
    assert main(["run", "--executor", "dask"]) == 2
    assert "Invalid value for '--executor'" in capsys.readouterr().err
