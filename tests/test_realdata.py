"""The core issue's real-data check: MNIST model B, trained on the real subset, evaluated on all 10k test images.

Takes several minutes on a 2-core CPU, so it runs only with RBL_REALDATA=1.
"""

import json

import pandas as pd
import pytest

import robustbench_lite as rbl
from robustbench_lite.cli import main

pytestmark = pytest.mark.realdata

ARGS = dict(dataset="mnist", models="cnn", defenses="none", attacks="fgsm,pgd", eps="0,0.1,0.2,0.3", seed=0)


def test_mnist_cnn_cli_and_api_agree_and_match_the_literature(shared_data, tmp_path, capsys):
    cache = tmp_path / "cache"
    status = main([
        "run", "--dataset", "mnist", "--data-dir", str(shared_data), "--models", "cnn", "--defenses", "none",
        "--attacks", "fgsm,pgd", "--eps", "0,0.1,0.2,0.3", "--out", str(tmp_path / "cli"),
        "--cache-dir", str(cache), "--quiet",
    ])
    capsys.readouterr()
    assert status == 0
    cli = json.loads((tmp_path / "cli" / "mnist.json").read_text())
    assert cli["dataset"]["n_examples"] == 10_000 and cli["dataset"]["n_train"] == 14_262

    api = rbl.run(**ARGS, data_dir=shared_data, cache_dir=tmp_path / "api-cache", progress=False)
    cli_cells = pd.DataFrame(cli["cells"])
    pd.testing.assert_series_equal(cli_cells["accuracy"], api["accuracy"], check_names=False)

    accuracy = api.set_index(["attack", "eps"])["accuracy"]
    assert accuracy[("fgsm", 0.0)] >= 97.0
    for eps in (0.1, 0.2, 0.3):
        assert accuracy[("pgd", eps)] <= accuracy[("fgsm", eps)]
    for attack in ("fgsm", "pgd"):
        values = [accuracy[(attack, eps)] for eps in (0.0, 0.1, 0.2, 0.3)]
        assert values == sorted(values, reverse=True) and values[0] > values[-1]
