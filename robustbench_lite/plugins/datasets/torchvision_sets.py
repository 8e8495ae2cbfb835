"""MNIST and CIFAR-10 through torchvision, read from ``data_dir`` in torchvision's own layout.

The files are used if present (archives the user put there are unpacked locally, without network);
otherwise torchvision downloads them when ``download`` is on. When neither works, the error says
exactly which files to put where, so offline machines can be set up by hand.
"""

from __future__ import annotations

import abc
import contextlib
import tarfile
import importlib
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from robustbench_lite.errors import DatasetMissingError
from robustbench_lite.hookspecs import Register, hookimpl
from robustbench_lite.interfaces import Dataset, DatasetLoader, DatasetSize
from robustbench_lite.options import Option

from ._common import images_to_tensor, labels_to_tensor

if TYPE_CHECKING:
    from torchvision.datasets import VisionDataset

# torchvision is imported when a dataset loads, not with the plugin: importing it costs about as much
# as torch itself (it pulls in torch._dynamo), and every rbl command registers this plugin.


def _last_line(error: BaseException) -> str:
    """One line from an error whose message may span several (torchvision lists every mirror it tried)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[-1]}" if lines else type(error).__name__


class TorchvisionLoader(DatasetLoader):
    """Shared loading logic; subclasses say which torchvision class, statistics and files."""

    options = (Option("download", bool, True, "download into data_dir with torchvision when the files are missing"),)
    dataset_class: ClassVar[str]  # the torchvision.datasets class, by name
    title: ClassVar[str]
    mean: ClassVar[tuple[float, ...]]
    std: ClassVar[tuple[float, ...]]

    @abc.abstractmethod
    def files_hint(self, root: Path) -> str:
        """Which files to put where, e.g. ``put X, Y in /data/MNIST/raw/``."""

    @abc.abstractmethod
    def archives(self, root: Path) -> list[tuple[Path, Path]]:
        """(archive, what it unpacks to) pairs that count as present when only the archive is there."""

    @abc.abstractmethod
    def folder(self, root: Path) -> Path:
        """Where the loaded files live, for the dataset's ``source``."""

    @abc.abstractmethod
    def class_names(self, train: VisionDataset) -> list[str]:
        """Class names, index = label."""

    def load(self, data_dir: Path) -> Dataset:
        root = Path(data_dir).expanduser().absolute()
        self._unpack_local_archives(root)
        try:
            train, test = self._open(root, download=False)
        except RuntimeError:  # torchvision's "Dataset not found"
            if not self.download:
                raise self._missing(root, "download=false") from None
            absent = [folder for folder in (self.folder(root), *self.folder(root).parents) if not folder.exists()]
            try:
                train, test = self._open(root, download=True)
            except Exception as error:  # offline, HTTP or disk errors alike: the data is not to be had
                for folder in absent:  # deepest first; a failed download leaves no empty folders behind
                    with contextlib.suppress(OSError):  # not empty, or never created
                        folder.rmdir()
                raise self._missing(root, f"download failed: {_last_line(error)}") from None
        return Dataset(
            name=self.name,
            x_train=images_to_tensor(train.data),
            y_train=labels_to_tensor(train.targets),
            x_test=images_to_tensor(test.data),
            y_test=labels_to_tensor(test.targets),
            classes=self.class_names(train),
            mean=self.mean,
            std=self.std,
            source=f"torchvision {self.title}, {self.folder(root)}",
        )

    def _open(self, root: Path, download: bool) -> tuple[VisionDataset, VisionDataset]:
        dataset_class = getattr(importlib.import_module("torchvision.datasets"), self.dataset_class)
        return (
            dataset_class(root=str(root), train=True, download=download),
            dataset_class(root=str(root), train=False, download=download),
        )

    def _unpack_local_archives(self, root: Path) -> None:
        for archive, target in self.archives(root):
            if archive.is_file() and not target.exists():
                from torchvision.datasets.utils import extract_archive

                try:
                    extract_archive(str(archive), str(target.parent))
                except (OSError, EOFError, tarfile.TarError) as error:
                    raise DatasetMissingError(
                        f"{self.title}: cannot unpack {archive} into {target.parent} ({_last_line(error)})"
                    ) from None

    def _missing(self, root: Path, why: str) -> DatasetMissingError:
        return DatasetMissingError(
            f"{self.title} not found in {root}: {self.files_hint(root)} ({why}); to get them, run the same command "
            f"once on a machine with internet (torchvision downloads them into --data-dir) and copy that folder "
            f"here, or pass --data-dir where they already are"
        )


class Mnist(TorchvisionLoader):
    """Handwritten digits, 1x28x28, 10 classes."""

    name = "mnist"
    description = "MNIST handwritten digits (torchvision; files in <data-dir>/MNIST/raw/)"
    dataset_class = "MNIST"
    title = "MNIST"
    mean = (0.1307,)
    std = (0.3081,)
    default_eps = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
    default_train_eps = 0.3
    default_epochs = 3
    size = DatasetSize((1, 28, 28), 10, 60_000, 10_000)

    # torchvision's MNIST.resources, without their .gz (tests/test_datasets.py checks they agree)
    FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

    def folder(self, root: Path) -> Path:
        return root / "MNIST" / "raw"

    def files_hint(self, root: Path) -> str:
        return f"put {', '.join(self.FILES)} (or their .gz) in {self.folder(root)}/"

    def archives(self, root: Path) -> list[tuple[Path, Path]]:
        raw = self.folder(root)
        return [(raw / f"{name}.gz", raw / name) for name in self.FILES]

    def class_names(self, train: VisionDataset) -> list[str]:
        return [str(digit) for digit in range(10)]  # torchvision's "0 - zero" is awkward to type as a target


class Cifar10(TorchvisionLoader):
    """Small natural images, 3x32x32, 10 classes."""

    name = "cifar10"
    description = "CIFAR-10 (torchvision; cifar-10-python.tar.gz or cifar-10-batches-py/ in <data-dir>)"
    dataset_class = "CIFAR10"
    title = "CIFAR-10"
    # torchvision's CIFAR10.base_folder and CIFAR10.filename (tests/test_datasets.py checks they agree)
    BASE_FOLDER = "cifar-10-batches-py"
    ARCHIVE = "cifar-10-python.tar.gz"
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)
    default_eps = (0.0, 0.01, 0.03, 0.1, 0.2)
    default_train_eps = 8 / 255
    default_epochs = 10
    size = DatasetSize((3, 32, 32), 10, 50_000, 10_000)

    def folder(self, root: Path) -> Path:
        return root / self.BASE_FOLDER

    def files_hint(self, root: Path) -> str:
        return f"put {self.ARCHIVE} or the extracted {self.BASE_FOLDER}/ in {root}/"

    def archives(self, root: Path) -> list[tuple[Path, Path]]:
        return [(root / self.ARCHIVE, self.folder(root))]

    def class_names(self, train: VisionDataset) -> list[str]:
        return list(train.classes)


@hookimpl
def register_datasets(register: Register) -> None:
    register(Mnist)
    register(Cifar10)
