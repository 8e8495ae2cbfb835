"""Any local image dataset saved as a numpy ``.npz`` archive (e.g. the CIFAR-10 subset in ../shared/data)."""

from __future__ import annotations

import math
import zipfile
import zlib
from pathlib import Path

import numpy as np

from robustbench_lite.errors import DatasetMissingError, UsageError
from robustbench_lite.hookspecs import Register, hookimpl
from robustbench_lite.interfaces import Dataset, DatasetLoader
from robustbench_lite.options import Option

from ._common import channel_stats, images_to_tensor, labels_to_tensor

NPY_MAGIC = np.lib.format.MAGIC_PREFIX
MAX_ARRAY_BYTES = 8 * 2**30  # per member; the images then take 4x as float32 tensors
MAX_CLASSES = 100_000  # labels beyond would build as many class names (and logits)
REQUIRED = ("x_train", "y_train", "x_test", "y_test")
EXPECTED = (
    "expected a numpy .npz with x_train, x_test (uint8 images, (N, H, W, C) or grayscale (N, H, W)), "
    "y_train, y_test (integer labels, (N,)) and optionally classes (names)"
)


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """The required arrays (and ``classes`` if present) of the archive, checked; UsageError naming what is wrong."""

    def fail(problem: str) -> UsageError:
        return UsageError(f"npz file {path}: {problem}; {EXPECTED}")

    if not path.is_file():  # opening a FIFO would block, a device read for ever
        raise fail("is not a regular file (a directory, FIFO or device)")
    try:
        with open(path, "rb") as file:
            is_npy = file.read(len(NPY_MAGIC)) == NPY_MAGIC
        if is_npy:
            raise fail("is a single .npy array, not an .npz archive")
        # Checked here: numpy takes any other non-zip file for a pickle and suggests allow_pickle=True.
        if not zipfile.is_zipfile(path):
            raise fail("is not an .npz archive (not a zip file: another format, or truncated)")
        # allow_pickle=False: a data file must never be able to run code.
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in REQUIRED if key not in archive.files]
            if missing:
                raise fail(f"missing key(s) {', '.join(missing)} (has {', '.join(archive.files) or 'none'})")
            keys = [key for key in (*REQUIRED, "classes") if key in archive.files]
            for key in keys:  # from the headers, before a byte of data is read
                problem = member_problem(archive.zip, key)
                if problem:
                    raise fail(problem)
            arrays = {key: archive[key] for key in keys}
    # A damaged member surfaces as a zip, zlib or numpy header error, or as an unknown compression method.
    except (OSError, ValueError, EOFError, NotImplementedError, zipfile.BadZipFile, zlib.error) as error:
        raise fail(f"is not a readable .npz archive ({str(error) or type(error).__name__})") from None

    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype != np.uint8:
            raise fail(f"x_{split} has dtype {x.dtype}, not uint8")
        if x.ndim not in (3, 4) or min(x.shape, default=0) == 0:
            raise fail(f"x_{split} has shape {x.shape}, not (N, H, W, C) or (N, H, W)")
        if not np.issubdtype(y.dtype, np.integer):
            raise fail(f"y_{split} has dtype {y.dtype}, not an integer type")
        if y.shape != (len(x),):
            raise fail(f"y_{split} has shape {y.shape}, not ({len(x)},) to match x_{split}")
        if y.min() < 0:
            raise fail(f"y_{split} has negative labels")
        if y.max() >= MAX_CLASSES:
            raise fail(f"y_{split} has label {y.max()}, beyond the {MAX_CLASSES} classes a dataset may have")
    train_shape, test_shape = arrays["x_train"].shape[1:], arrays["x_test"].shape[1:]
    if train_shape != test_shape:
        raise fail(f"x_train images are {train_shape} but x_test images are {test_shape}")
    if "classes" in arrays:
        classes = arrays["classes"]
        top = max(int(arrays["y_train"].max()), int(arrays["y_test"].max()))
        if classes.ndim != 1 or top >= len(classes):
            raise fail(f"classes has shape {classes.shape}, but the labels need {top + 1} names")
    return arrays


def member_problem(archive: zipfile.ZipFile, key: str) -> str | None:
    """What makes member ``key`` unloadable, read from its .npy header alone: not an array, objects, or too large."""
    if key in archive.namelist():  # np.load hands a member without the .npy suffix back as bytes
        return f"member {key} is not a .npy array"
    with archive.open(f"{key}.npy") as member:
        if member.read(len(NPY_MAGIC)) != NPY_MAGIC:
            return f"member {key}.npy is not a .npy array"
        version = tuple(member.read(2))
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = reader(member)
    if dtype.hasobject:
        return f"{key} holds Python objects (never loaded: unpickling them could run code)"
    size = math.prod(shape) * dtype.itemsize
    if size > MAX_ARRAY_BYTES:
        return (f"{key} claims shape {shape} of {dtype}, {size / 2**30:.1f} GiB, beyond the "
                f"{MAX_ARRAY_BYTES // 2**30} GiB an array may take")
    return None


class Npz(DatasetLoader):
    """Images and labels from a local ``.npz``: x_train/y_train/x_test/y_test, optional class names."""

    name = "npz"
    description = "Local .npz file: uint8 images x_train/x_test (NHWC or NHW), labels y_train/y_test, optional classes"
    options = (
        Option("path", str, None, "the .npz file; relative paths are relative to the current directory"),
    )
    default_eps = (0.0, 0.01, 0.03, 0.1, 0.2)
    default_train_eps = 8 / 255
    default_epochs = 10

    def load(self, data_dir: Path) -> Dataset:
        if self.path is None:
            raise UsageError(
                "dataset 'npz' needs path=FILE, e.g. --dataset 'npz[path=../shared/data/cifar10-subset.npz]'"
            )
        # Relative to the current directory, not data_dir: the path is the user's own, typed on the command line.
        path = Path(self.path).expanduser().absolute()
        if not path.exists():
            raise DatasetMissingError(
                f"npz file {path} not found; give path= an existing .npz file "
                "(relative paths start at the current directory)"
            )
        arrays = read_arrays(path)
        x_train = images_to_tensor(arrays["x_train"])
        if "classes" in arrays:
            classes = [name.decode() if isinstance(name, bytes) else str(name) for name in arrays["classes"].tolist()]
        else:
            top = max(int(arrays["y_train"].max()), int(arrays["y_test"].max()))
            classes = [str(index) for index in range(top + 1)]
        mean, std = channel_stats(x_train)
        return Dataset(
            name=f"npz:{path.stem}",
            x_train=x_train,
            y_train=labels_to_tensor(arrays["y_train"]),
            x_test=images_to_tensor(arrays["x_test"]),
            y_test=labels_to_tensor(arrays["y_test"]),
            classes=classes,
            mean=mean,
            std=std,
            source=str(path),
        )


@hookimpl
def register_datasets(register: Register) -> None:
    register(Npz)
