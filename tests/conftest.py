"""Shared fixtures: the real data beside the project, and a fixed seed for every test."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
# The original AutoAttack (MIT), a reference for cross-checks only; imported from its source, not installed.
AUTOATTACK_SOURCE = SHARED_DATA.parent / "reference" / "auto-attack"


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data`` (real MNIST and a CIFAR-10 subset); tests using it skip where it is absent."""
    if not (SHARED_DATA / "MNIST" / "raw").is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def autoattack_reference():
    """The original ``autoattack`` package from ``../shared/reference``; tests using it skip where it is absent."""
    if not (AUTOATTACK_SOURCE / "autoattack").is_dir():
        pytest.skip(f"the original AutoAttack not found at {AUTOATTACK_SOURCE}")
    if str(AUTOATTACK_SOURCE) not in sys.path:
        sys.path.append(str(AUTOATTACK_SOURCE))
    import autoattack

    return autoattack


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def conv_model_and_batch() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """A fixed random conv net on 14x14 inputs, a batch of 128 and the model's own labels, for the
    reference cross-checks (128, a power of two, so that torchattacks' batch-mean loss has exactly
    1/128 times the gradient of our summed loss)."""
    torch.manual_seed(5)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
        torch.nn.Linear(8 * 6 * 6, 10),
    ).eval().requires_grad_(False)
    x = torch.rand(128, 1, 14, 14)
    return model, x, model(x).argmax(1)


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """One intra-op thread for the whole suite: its tensors are small, and on a busy 2-core machine
    a second spinning thread made attack and defense tests 4-8 times slower (measured side by side)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("RBL_REALDATA") == "1":
        return
    skip = pytest.mark.skip(reason="long real-data check; set RBL_REALDATA=1 to run")
    for item in items:
        if "realdata" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def install_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Install a one-module distribution with an entry point in our group, as pip would, for this test only."""
    from robustbench_lite.registry import default_registry

    site = tmp_path / "site-packages"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))

    def install(distribution: str, module: str, source: str) -> None:
        (site / f"{module}.py").write_text(textwrap.dedent(source))
        info = site / f"{distribution.replace('-', '_')}-1.2.3.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 1.2.3\n")
        (info / "entry_points.txt").write_text(f"[robustbench_lite]\n{module} = {module}\n")
        monkeypatch.delitem(sys.modules, module, raising=False)  # another test's module of that name is not this one
        default_registry.cache_clear()

    yield install
    default_registry.cache_clear()


@pytest.fixture(scope="session")
def mnist_cnn():
    """Model B trained for two epochs on the real MNIST subset, and the dataset.

    Reference cross-checks need a real model; its weights are cached in .rbl-cache/ (ignored by
    git) so that only the first run on a machine pays the minute of training.
    """
    if not (SHARED_DATA / "MNIST" / "raw").is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    import robustbench_lite as rbl

    return rbl.trained_model(
        model="cnn", defense="none", dataset="mnist[download=false]", data_dir=SHARED_DATA, epochs=2,
        device="cpu", seed=0, cache_dir=Path(__file__).resolve().parents[1] / ".rbl-cache" / "tests",
    )


@pytest.fixture(scope="session")
def mnist_at_pgd():
    """Model B trained with at-pgd for three epochs (as in the mnist-aa leaderboard), and the dataset;
    cached beside mnist_cnn's weights. Four CPU-minutes to train: for the long real-data checks."""
    if not (SHARED_DATA / "MNIST" / "raw").is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    import robustbench_lite as rbl

    return rbl.trained_model(
        model="cnn", defense="at-pgd", dataset="mnist[download=false]", data_dir=SHARED_DATA, epochs=3,
        device="cpu", seed=0, cache_dir=Path(__file__).resolve().parents[1] / ".rbl-cache" / "tests",
    )
