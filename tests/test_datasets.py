"""The built-in dataset loaders: generated sets, local .npz files, torchvision MNIST / CIFAR-10, real data."""

import gzip
import pickle
import shutil
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torchvision

from robustbench_lite.errors import DatasetMissingError, UsageError
from robustbench_lite.interfaces import Dataset
from robustbench_lite.plugins.datasets.moons import Moons
from robustbench_lite.plugins.datasets.npz import Npz
from robustbench_lite.plugins.datasets.synthetic import Synthetic
from robustbench_lite.plugins.datasets.torchvision_sets import Cifar10, Mnist
from robustbench_lite.registry import Registry

MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def check_contract(data: Dataset, n_train: int, n_test: int, input_shape: tuple, num_classes: int) -> None:
    """What every loader promises: shapes, dtypes, [0, 1] inputs, label range, statistics, a source."""
    assert data.x_train.shape == (n_train, *input_shape) and data.x_test.shape == (n_test, *input_shape)
    assert data.y_train.shape == (n_train,) and data.y_test.shape == (n_test,)
    assert data.x_train.dtype == data.x_test.dtype == torch.float32
    assert data.y_train.dtype == data.y_test.dtype == torch.int64
    for x in (data.x_train, data.x_test):
        assert x.min() >= 0.0 and x.max() <= 1.0
    for y in (data.y_train, data.y_test):
        assert y.min() >= 0 and y.max() < num_classes
    assert data.num_classes == num_classes and data.input_shape == input_shape
    assert len(data.mean) == len(data.std) == input_shape[0]
    assert all(s > 0 for s in data.std)
    assert isinstance(data.source, str) and data.source


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("loader, eps, train_eps, epochs", [
    (Moons, (0.0, 0.1, 0.2, 0.3, 0.4, 0.5), 0.1, 30),
    (Synthetic, (0.0, 0.05, 0.1), 0.05, 2),
    (Npz, (0.0, 0.01, 0.03, 0.1, 0.2), 8 / 255, 10),
    (Mnist, (0.0, 0.1, 0.2, 0.3, 0.4, 0.5), 0.3, 3),
    (Cifar10, (0.0, 0.01, 0.03, 0.1, 0.2), 8 / 255, 10),
])
def test_benchmark_defaults(loader, eps, train_eps, epochs):
    assert loader.default_eps == eps and loader.default_train_eps == pytest.approx(train_eps)
    assert loader.default_epochs == epochs


def test_registry_lists_every_builtin_dataset_from_this_distribution():
    infos = Registry().infos("datasets")
    names = {"moons", "synthetic", "npz", "mnist", "cifar10"}
    assert names <= set(infos)
    assert {infos[name].distribution for name in names} == {"robustbench-lite"}
    assert infos["mnist"].cls is Mnist and infos["npz"].cls is Npz


# --- moons -------------------------------------------------------------------------------------------------------


def test_moons_contract_and_balanced_classes(tmp_path):
    data = Moons().load(tmp_path)
    check_contract(data, 1000, 1000, (2,), 2)
    assert list(data.classes) == ["upper", "lower"] and data.name == "moons"
    assert data.y_train.bincount().tolist() == [500, 500]
    assert data.mean == pytest.approx(data.x_train.mean(0).tolist())
    assert data.std == pytest.approx(data.x_train.std(0).tolist())
    assert "seed=0" in data.source and "noise=0.1" in data.source


def test_moons_is_deterministic_per_seed_and_splits_are_independent(tmp_path):
    first, again = Moons(seed=3).load(tmp_path), Moons(seed=3).load(tmp_path)
    assert torch.equal(first.x_train, again.x_train) and torch.equal(first.x_test, again.x_test)
    assert torch.equal(first.y_train, again.y_train)
    other = Moons(seed=4).load(tmp_path)
    assert not torch.equal(first.x_train, other.x_train) and not torch.equal(first.x_test, other.x_test)
    assert not torch.equal(first.x_train, first.x_test)
    # The test split is its own draw: changing the training size leaves it unchanged.
    assert torch.equal(Moons(seed=3, n_train=50).load(tmp_path).x_test, first.x_test)
    before = torch.get_rng_state()
    Moons(seed=5).load(tmp_path)
    assert torch.equal(before, torch.get_rng_state())  # the global RNG is left alone


def test_moons_fixed_scaling_bounds(tmp_path):
    data = Moons(noise=0.0, n_train=400).load(tmp_path)
    # Undo the documented map x1: [-1.5, 2.5] -> [0, 1], x2: [-1.0, 1.5] -> [0, 1]; noiseless points lie on the moons.
    x1 = data.x_train[:, 0].double() * 4.0 - 1.5
    x2 = data.x_train[:, 1].double() * 2.5 - 1.0
    upper, lower = data.y_train == 0, data.y_train == 1
    ones = torch.ones(200, dtype=torch.float64)
    assert torch.allclose(x1[upper] ** 2 + x2[upper] ** 2, ones, atol=1e-5)
    assert torch.allclose((1 - x1[lower]) ** 2 + (0.5 - x2[lower]) ** 2, ones, atol=1e-5)
    assert (x2[upper] >= -1e-6).all() and (x2[lower] <= 0.5 + 1e-6).all()
    # Bounds are fixed, not fitted to the data: noiseless moons stay strictly inside (0, 1).
    assert data.x_train[:, 0].min() >= 0.125 - 1e-6 and data.x_train[:, 0].max() <= 0.875 + 1e-6
    assert data.x_train[:, 1].min() >= 0.2 - 1e-6 and data.x_train[:, 1].max() <= 0.8 + 1e-6
    noisy = Moons(noise=3.0).load(tmp_path).x_train
    assert noisy.min() == 0.0 and noisy.max() == 1.0  # clamped


# --- synthetic ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape, input_shape", [("1x28x28", (1, 28, 28)), ("3x9x7", (3, 9, 7)), ("20", (20,))])
def test_synthetic_contract(tmp_path, shape, input_shape):
    data = Synthetic(shape=shape, classes=4, n_train=40, n_test=24).load(tmp_path)
    check_contract(data, 40, 24, input_shape, 4)
    assert list(data.classes) == ["0", "1", "2", "3"] and data.name == "synthetic"
    assert data.y_train.bincount().tolist() == [10, 10, 10, 10]


def test_synthetic_defaults_and_determinism(tmp_path):
    data = Synthetic().load(tmp_path)
    check_contract(data, 512, 256, (1, 28, 28), 10)
    again = Synthetic().load(tmp_path)
    assert torch.equal(data.x_train, again.x_train) and torch.equal(data.y_test, again.y_test)
    other = Synthetic(seed=1).load(tmp_path)
    assert not torch.equal(data.x_train, other.x_train)
    # Samples sit near their class prototype: each sample is closer to its own class mean than to any other.
    means = torch.stack([data.x_train[data.y_train == k].mean(0) for k in range(10)]).flatten(1)
    distances = torch.cdist(data.x_test.flatten(1), means)
    assert (distances.argmin(1) == data.y_test).all()


@pytest.mark.parametrize("bad", ["1x28", "abc", "0x4x4", "2x-3x3", "1x28x", "1x2x3x4"])
def test_synthetic_rejects_bad_shapes_when_created(bad):
    with pytest.raises(UsageError) as error:
        Synthetic(shape=bad)
    message = one_line(error)
    assert repr(bad) in message and "CxHxW" in message


# --- npz ---------------------------------------------------------------------------------------------------------


def save_npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def images(rng: np.random.Generator, n: int, shape: tuple) -> np.ndarray:
    return rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)


def test_npz_round_trip_hwc_with_class_names(tmp_path):
    rng = np.random.default_rng(0)
    x_train, x_test = images(rng, 12, (5, 4, 3)), images(rng, 6, (5, 4, 3))
    y_train, y_test = np.arange(12) % 3, np.array([2, 1, 0, 0, 1, 2])
    path = save_npz(tmp_path / "toy.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                    classes=np.array(["cat", "dog", "deer"]))
    data = Npz(path=str(path)).load(tmp_path / "ignored")
    check_contract(data, 12, 6, (3, 5, 4), 3)
    assert data.name == "npz:toy" and list(data.classes) == ["cat", "dog", "deer"] and data.source == str(path)
    expected = torch.from_numpy(x_train).permute(0, 3, 1, 2).float() / 255
    assert torch.allclose(data.x_train, expected) and data.x_train.is_contiguous()
    assert data.y_test.tolist() == y_test.tolist()
    assert data.mean == pytest.approx(expected.mean(dim=(0, 2, 3)).tolist())
    assert data.std == pytest.approx(expected.std(dim=(0, 2, 3)).tolist())


def test_npz_grayscale_without_names_relative_to_the_current_directory(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    (tmp_path / "sub").mkdir()
    save_npz(tmp_path / "sub" / "gray.npz", x_train=images(rng, 8, (6, 6)), y_train=np.arange(8) % 4,
             x_test=images(rng, 4, (6, 6)), y_test=np.array([0, 1, 2, 4]))
    monkeypatch.chdir(tmp_path)
    data = Npz(path="sub/gray.npz").load(tmp_path / "elsewhere")
    check_contract(data, 8, 4, (1, 6, 6), 5)
    assert list(data.classes) == ["0", "1", "2", "3", "4"]  # from the largest label in either split
    assert data.source == str(tmp_path / "sub" / "gray.npz")


def test_npz_needs_a_path(tmp_path):
    with pytest.raises(UsageError) as error:
        Npz().load(tmp_path)
    assert "dataset 'npz' needs path=FILE" in one_line(error)


def test_npz_missing_file(tmp_path):
    with pytest.raises(DatasetMissingError) as error:
        Npz(path=str(tmp_path / "nope.npz")).load(tmp_path)
    assert str(tmp_path / "nope.npz") in one_line(error)


def valid_arrays(rng: np.random.Generator) -> dict:
    return dict(x_train=images(rng, 4, (3, 3, 3)), y_train=np.arange(4), x_test=images(rng, 2, (3, 3, 3)),
                y_test=np.arange(2))


@pytest.mark.parametrize("change, expected", [
    (lambda a: a.pop("y_test"), "missing key(s) y_test"),
    (lambda a: a.update(x_train=a["x_train"].astype(np.float32)), "x_train has dtype float32, not uint8"),
    (lambda a: a.update(x_test=np.zeros((2, 27), np.uint8)), "x_test has shape (2, 27)"),
    (lambda a: a.update(y_train=np.array([0.0, 1.0, 2.0, 3.0])), "y_train has dtype float64"),
    (lambda a: a.update(y_train=np.arange(3)), "y_train has shape (3,)"),
    (lambda a: a.update(classes=np.array(["a"])), "classes has shape (1,)"),
])
def test_npz_bad_contents_name_the_file_the_problem_and_the_expectation(tmp_path, change, expected):
    arrays = valid_arrays(np.random.default_rng(2))
    change(arrays)
    path = save_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(UsageError) as error:
        Npz(path=str(path)).load(tmp_path)
    assert not isinstance(error.value, DatasetMissingError)
    message = one_line(error)
    assert str(path) in message and expected in message and "expected a numpy .npz with x_train" in message


@pytest.mark.parametrize("write", [
    lambda p: p.write_text("not a zip archive\n"),
    lambda p: np.save(p.open("wb"), np.zeros(3, np.uint8)),
    lambda p: p.mkdir(),
], ids=["text", "npy", "directory"])
def test_npz_unreadable_file(tmp_path, write):
    path = tmp_path / "weird.npz"
    write(path)
    with pytest.raises(UsageError) as error:
        Npz(path=str(path)).load(tmp_path)
    message = one_line(error)
    assert str(path) in message and ".npz" in message


def test_real_cifar10_subset_through_npz(shared_data):
    data = Npz(path=str(shared_data / "cifar10-subset.npz")).load(shared_data)
    check_contract(data, 4660, 846, (3, 32, 32), 10)
    assert "deer" in data.classes and data.classes[4] == "deer" and data.name == "npz:cifar10-subset"
    assert data.mean == pytest.approx((0.49, 0.48, 0.45), abs=0.02)


# --- torchvision: MNIST and CIFAR-10 -------------------------------------------------------------------------------


@pytest.fixture
def no_download(monkeypatch):
    """Make any download attempt fail the test: tests must never touch the network."""

    def refuse(self):
        pytest.fail("a download was attempted")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", refuse)
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "download", refuse)


def test_file_names_agree_with_torchvisions():
    assert Mnist.FILES == tuple(name.removesuffix(".gz") for name, _ in torchvision.datasets.MNIST.resources)
    assert (Cifar10.BASE_FOLDER, Cifar10.ARCHIVE) == (torchvision.datasets.CIFAR10.base_folder,
                                                      torchvision.datasets.CIFAR10.filename)


def test_torchvision_is_imported_only_when_a_torchvision_dataset_loads(tmp_path):
    """It costs about as much as importing torch; a moons run or `rbl list` has no use for it."""
    import subprocess
    import sys

    script = ("import sys, robustbench_lite as rbl; rbl.run(dataset='synthetic[n_train=32,n_test=8,shape=4]', models='mlp', "
              "defenses='none', attacks='fgsm', epochs=1, use_cache=False, device='cpu'); "
              "from robustbench_lite.cli import main; main(['list']); print('torchvision' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, check=True)
    assert result.stdout.strip().splitlines()[-1] == "False"


def test_real_mnist(shared_data, no_download):
    data = Mnist(download=False).load(shared_data)
    check_contract(data, 14_262, 10_000, (1, 28, 28), 10)
    assert data.name == "mnist" and list(data.classes) == [str(d) for d in range(10)]
    assert set(data.y_test.tolist()) == set(range(10))
    assert data.mean == (0.1307,) and data.std == (0.3081,)
    assert data.x_test.mean().item() == pytest.approx(0.1307, abs=0.01)
    assert str(shared_data / "MNIST" / "raw") in data.source
    # download=True finds the files on disk and never goes online
    assert torch.equal(Mnist().load(shared_data).y_train, data.y_train)


def test_mnist_gz_files_are_used_without_download(shared_data, tmp_path, no_download):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in MNIST_FILES:
        with (shared_data / "MNIST" / "raw" / name).open("rb") as source, gzip.open(raw / f"{name}.gz", "wb", 1) as out:
            shutil.copyfileobj(source, out)
    data = Mnist(download=False).load(tmp_path)
    assert len(data.x_train) == 14_262 and len(data.x_test) == 10_000


def test_cifar10_reads_torchvision_batches_as_chw(shared_data, tmp_path, monkeypatch, no_download):
    # Real CIFAR-10 images in the official pickled-batch layout; the md5 checks are for the full files, so skip them.
    subset = np.load(shared_data / "cifar10-subset.npz")
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = {f"data_batch_{i}": (subset["x_train"][4 * i : 4 * i + 4], subset["y_train"][4 * i : 4 * i + 4])
               for i in range(1, 6)}
    batches["test_batch"] = subset["x_test"][:5], subset["y_test"][:5]
    for name, (x, y) in batches.items():
        chw_rows = x.transpose(0, 3, 1, 2).reshape(len(x), -1)
        (folder / name).write_bytes(pickle.dumps({"data": chw_rows, "labels": y.tolist()}))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": subset["classes"].tolist()}))
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args: True)

    data = Cifar10(download=False).load(tmp_path)
    check_contract(data, 20, 5, (3, 32, 32), 10)
    reference = Npz(path=str(shared_data / "cifar10-subset.npz")).load(shared_data)
    assert torch.equal(data.x_test, reference.x_test[:5]) and torch.equal(data.y_test, reference.y_test[:5])
    assert torch.equal(data.x_train[:4], reference.x_train[4:8])
    assert list(data.classes) == list(reference.classes) and data.name == "cifar10"
    assert data.mean == pytest.approx((0.4914, 0.4822, 0.4465), abs=1e-4)
    assert data.std == pytest.approx((0.2470, 0.2435, 0.2616), abs=1e-4)
    assert str(folder) in data.source


def test_mnist_missing_names_the_files_and_folder(tmp_path, no_download):
    with pytest.raises(DatasetMissingError) as error:
        Mnist(download=False).load(tmp_path)
    message = one_line(error)
    assert all(name in message for name in MNIST_FILES)
    assert f"in {tmp_path / 'MNIST' / 'raw'}/" in message and "download=false" in message


def test_cifar10_missing_names_the_archive_and_folder(tmp_path, no_download):
    with pytest.raises(DatasetMissingError) as error:
        Cifar10(download=False).load(tmp_path)
    message = one_line(error)
    assert "cifar-10-python.tar.gz" in message and "cifar-10-batches-py/" in message
    assert f"in {tmp_path}/" in message


@pytest.mark.parametrize("loader, torchvision_class", [(Mnist, "MNIST"), (Cifar10, "CIFAR10")])
def test_failed_download_is_one_line_with_the_reason(tmp_path, monkeypatch, loader, torchvision_class):
    def offline(self):
        raise RuntimeError(f"Error downloading:\nTried http://mirror, got:\n{URLError('no route to host')}\n")

    monkeypatch.setattr(getattr(torchvision.datasets, torchvision_class), "download", offline)
    with pytest.raises(DatasetMissingError) as error:
        loader().load(tmp_path)
    message = one_line(error)
    assert "download failed" in message and "no route to host" in message and str(tmp_path) in message

