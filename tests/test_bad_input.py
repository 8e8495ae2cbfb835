"""Every bad input to ``rbl run`` gives one ``rbl: error:`` line on stderr and exit status 2.

tests/test_cli.py holds the first cases; the table here adds the rest (docs/errors.md lists them
all). Then the inputs that are not errors: too large an --n-examples and an unusable cached
checkpoint warn in one line and the run goes on; a model with NaN logits fails its cells (exit 1).
"""

import io
import json
import math
import os
import urllib.error
import urllib.request
import zipfile

import numpy as np
import pandas as pd
import pytest
import torch

from robustbench_lite.cli import main
from robustbench_lite.registry import default_registry
from robustbench_lite.runner import parse_eps

FAST = ["--dataset", "moons", "--models", "mlp", "--defenses", "none", "--attacks", "fgsm", "--eps", "0,0.1",
        "--epochs", "1", "--n-examples", "8", "--device", "cpu", "--quiet"]

MODELS_PLUGIN = '''
import math
import torch
from torch import nn
from robustbench_lite import ModelBuilder, hookimpl

class ThreeLogits(ModelBuilder):
    name = "three-logits"
    description = "three outputs whatever the number of classes"

    def build(self, input_shape, num_classes):
        return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), 3))

class NanInEval(nn.Module):
    """Trains normally (finite loss), then answers NaN once evaluated."""

    def __init__(self, features, classes):
        super().__init__()
        self.linear = nn.Linear(features, classes)

    def forward(self, x):
        logits = self.linear(x.flatten(1))
        return logits if self.training else logits * float("nan")

class NanLogits(ModelBuilder):
    name = "nan-logits"
    description = "NaN logits in eval mode"

    def build(self, input_shape, num_classes):
        return NanInEval(math.prod(input_shape), num_classes)

@hookimpl
def register_models(register):
    register(ThreeLogits)
    register(NanLogits)
'''


@pytest.fixture(scope="module", autouse=True)
def bad_input_models(tmp_path_factory):
    """Models ``three-logits`` and ``nan-logits``, installed as a distribution once for this module."""
    site = tmp_path_factory.mktemp("site-packages")
    (site / "rbl_bad_input_models.py").write_text(MODELS_PLUGIN)
    info = site / "rbl_bad_input_models-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: rbl-bad-input-models\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[robustbench_lite]\nrbl_bad_input_models = rbl_bad_input_models\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(site))
        default_registry.cache_clear()
        yield
    default_registry.cache_clear()


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No network: torchvision's downloads fail at once, as on an offline machine, wherever the tests run."""

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Bad input files, one of each kind."""
    folder = tmp_path_factory.mktemp("inputs")
    (folder / "text.npz").write_text("x_train,y_train\n1,2\n")
    np.savez(folder / "labels-only.npz", y_train=np.arange(3))
    np.save(folder / "array.npy", np.zeros((2, 3, 3), np.uint8))
    with zipfile.ZipFile(folder / "damaged.npz", "w", zipfile.ZIP_DEFLATED) as archive:
        for key in ("x_train", "y_train", "x_test", "y_test"):  # x_train first: its data starts at a known offset
            archive.writestr(f"{key}.npy", bytes(1000))
    damaged = bytearray((folder / "damaged.npz").read_bytes())
    data_start = 30 + len("x_train.npy")  # zip local header, then the name, then (no extra field) the deflate stream
    damaged[data_start] |= 0b110  # block type 3, which deflate reserves: zlib refuses the member
    (folder / "damaged.npz").write_bytes(bytes(damaged))
    (folder / "regular-file").write_text("not a folder")
    (folder / "not-a-store.db").write_text("plain text, not SQLite " * 100)
    (folder / "read-only").mkdir(mode=0o555)
    x, y = np.zeros((4, 8, 8), np.uint8), np.array([0, 1, 0, 1])
    np.savez(folder / "label-1e9.npz", x_train=x, y_train=np.array([0, 1, 0, 10**9]), x_test=x, y_test=y)
    np.savez(folder / "objects.npz", x_train=np.array([{}] * 4, dtype=object), y_train=y, x_test=x, y_test=y)
    with zipfile.ZipFile(folder / "not-an-array.npz", "w") as archive:
        archive.writestr("x_train", b"plain bytes, no .npy header")  # np.load hands such a member back as bytes
        for key, value in (("y_train", y), ("x_test", x), ("y_test", y)):
            archive.writestr(f"{key}.npy", npy_bytes(value))
    with zipfile.ZipFile(folder / "huge-header.npz", "w") as archive:
        header = io.BytesIO()  # a header claiming 10^12 uint8 elements (931 GiB) over a few bytes of data
        claim = {"descr": "|u1", "fortran_order": False, "shape": (10**6, 10**3, 10**3)}
        np.lib.format.write_array_header_1_0(header, claim)
        archive.writestr("x_train.npy", header.getvalue() + bytes(64))
        for key, value in (("y_train", y), ("x_test", x), ("y_test", y)):
            archive.writestr(f"{key}.npy", npy_bytes(value))
    (folder / "folder.npz").mkdir()
    os.mkfifo(folder / "fifo.npz")
    # A writer holding the FIFO open with bytes in it: code that opens it reads them instead of blocking for ever.
    writer = os.open(folder / "fifo.npz", os.O_RDWR | os.O_NONBLOCK)
    os.write(writer, bytes(4096))
    yield folder
    os.close(writer)


def npy_bytes(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def run_fast(tmp_path, capsys, *extra):
    """``rbl run`` on moons with FAST settings; (exit status, stdout, stderr lines)."""
    status = main(["run", *FAST, "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out"), *extra])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    return status, captured.out, captured.err.splitlines()


# (id, arguments after FAST, a substring of the one error line); {tmp} is the test's tmp_path, {files} the bad files
BAD_INPUTS = [
    ("unknown model option", ["--models", "mlp[width=3]"],
     "unknown option 'width' for model 'mlp'; valid options: none"),
    ("unknown defense option", ["--defenses", "at-fgsm[alpa=0.5]"],
     "unknown option 'alpa' for defense 'at-fgsm'; valid options: alpha"),
    ("unknown dataset option", ["--dataset", "moons[noize=0.2]"],
     "unknown option 'noize' for dataset 'moons'; valid options: n_train, n_test, noise, seed"),
    ("float for an int option", ["--attacks", "pgd[steps=1.5]"],
     "option 'steps' of attack 'pgd' must be of type int, got '1.5'"),
    ("word for a float option", ["--defenses", "at-fgsm[alpha=half]"],
     "option 'alpha' of defense 'at-fgsm' must be of type float, got 'half'"),
    ("word for a bool option", ["--attacks", "pgd[random_start=maybe]"],
     "option 'random_start' of attack 'pgd' must be of type bool, got 'maybe'"),
    ("option below its minimum", ["--attacks", "pgd[steps=0]"], "option 'steps' of attack 'pgd' must be >= 1, got '0'"),
    ("NaN option", ["--dataset", "moons[noise=nan]"],
     "option 'noise' of dataset 'moons' must be a finite number, got 'nan'"),
    ("unclosed bracket", ["--attacks", "pgd[steps=5"],
     "malformed plugin spec 'pgd[steps=5'; expected name[key=value,...]"),
    ("option without value", ["--attacks", "pgd[steps]"],
     "malformed option 'steps' in 'pgd[steps]'; expected key=value"),
    ("empty attack list", ["--attacks", ","], "empty plugin list ','"),
    ("eps infinite", ["--eps", "0,inf"], "invalid epsilon 'inf': must lie in [0, 1]"),
    ("eps just above 1", ["--eps", "1.0001"], "invalid epsilon '1.0001': must lie in [0, 1]"),
    ("eps with a typo", ["--eps", "0.1,0.2x"], "invalid epsilon '0.2x': not a number; give values in [0, 1]"),
    ("eps empty", ["--eps", ""], "empty epsilon list ''; give values such as 0,0.1,0.2"),
    ("eps printing alike", ["--eps", "0,0.2,0.2000004"],
     "eps values '0.2' and '0.2000004' would share the leaderboard column eps=0.2"),
    ("eps closer than the resolution", ["--eps", "0.1234561,0.1234569"],
     "eps values '0.1234561' and '0.1234569' lie closer than the eps resolution 1e-06"),
    ("eps below the resolution", ["--eps", "0,3e-7"],
     "invalid epsilon '3e-7': nonzero but below the eps resolution 1e-06"),
    ("eps that underflows to 0", ["--eps", "0,1e-400"],
     "invalid epsilon '1e-400': nonzero but below the eps resolution 1e-06"),
    ("seed beyond 2^63-1", ["--seed", str(2**64)], f"--seed must lie in [0, {2**63 - 1}] (0 to 2^63-1), got {2**64}"),
    ("seed negative", ["--seed", "-1"], f"--seed must lie in [0, {2**63 - 1}] (0 to 2^63-1), got -1"),
    ("dataset seed beyond 2^63-1", ["--dataset", f"moons[seed={2**64}]"],
     f"option 'seed' of dataset 'moons' must lie in [0, {2**63 - 1}] (0 to 2^63-1), got '{2**64}'"),
    ("name too long for the file system", ["--name", "b" * 250],
     "benchmark name 'bbbbbbbbbbbbbbbbbbbb...' (250 characters) is too long: the file system allows file names "
     "of 255 bytes and the longest file the leaderboard writes (the temporary of <name>-accuracy.png) adds 51; "
     "give --name of at most 204 characters"),
    ("attack target beyond the classes", ["--attacks", "pgd[target=5]"],
     "option 'target' of attack 'pgd[target=5]' is class 5, but dataset 'moons' has 2 classes; valid targets: "
     "0 (upper), 1 (lower)"),
    ("attack target rank beyond the classes", ["--attacks", "apgd-dlr[target_rank=2]"],
     "option 'target_rank' of attack 'apgd-dlr[target_rank=2]' is 2, but dataset 'moons' has 2 classes; "
     "valid ranks: 1 to 1"),
    ("duplicate option key", ["--attacks", "pgd[steps=5,steps=6]"],
     "option 'steps' given twice in 'pgd[steps=5,steps=6]'; give each option once"),
    ("steps without bound", ["--attacks", "pgd[steps=1000000000]"],
     "option 'steps' of attack 'pgd' must be <= 100000, got '1000000000'"),
    ("restarts without bound", ["--attacks", "pgd[restarts=1000000000]"],
     "option 'restarts' of attack 'pgd' must be <= 1000, got '1000000000'"),
    ("queries without bound", ["--attacks", "square[queries=1000000000]"],
     "option 'queries' of attack 'square' must be <= 1000000, got '1000000000'"),
    ("attack eot without bound", ["--attacks", "pgd[eot=1000000000]"],
     "option 'eot' of attack 'pgd' must be <= 1000, got '1000000000'"),
    ("defense steps without bound", ["--defenses", "at-pgd[steps=1000000000]"],
     "option 'steps' of defense 'at-pgd' must be <= 100000, got '1000000000'"),
    ("epochs without bound", ["--epochs", "1000000000"], "--epochs must be at most 10000, got 1000000000"),
    ("eot without bound", ["--eot", "1000000000"], "--eot must be at most 1000 gradient samples, got 1000000000"),
    ("early stop without bound", ["--early-stop", "1000000000"],
     "--early-stop must be at most 10000 epochs, got 1000000000"),
    ("optimizer lr huge", ["--optimizer", "sgd[lr=1e308]"],
     "option 'lr' of optimizer 'sgd' must be <= 10.0, got '1e308'"),
    ("optimizer lr zero", ["--optimizer", "adam[lr=0]"], "option 'lr' of optimizer 'adam' must be >= 1e-10, got '0'"),
    ("optimizer momentum 1", ["--optimizer", "sgd[momentum=1]"],
     "option 'momentum' of optimizer 'sgd' must be <= 0.999, got '1'"),
    ("optimizer weight decay huge", ["--optimizer", "adamw[weight_decay=1e9]"],
     "option 'weight_decay' of optimizer 'adamw' must be <= 1.0, got '1e9'"),
    ("n-examples negative", ["--n-examples", "-5"], "--n-examples must be a positive number of test points, got -5"),
    ("mnist data dir missing", ["--dataset", "mnist", "--data-dir", "{tmp}/nowhere"],
     "MNIST not found in {tmp}/nowhere: put train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
     "t10k-labels-idx1-ubyte (or their .gz) in {tmp}/nowhere/MNIST/raw/ (download failed: "),
    ("cifar10 data dir missing", ["--dataset", "cifar10", "--data-dir", "{tmp}/nowhere"],
     "CIFAR-10 not found in {tmp}/nowhere: put cifar-10-python.tar.gz or the extracted cifar-10-batches-py/ "
     "in {tmp}/nowhere/"),
    ("npz without path", ["--dataset", "npz"], "dataset 'npz' needs path=FILE, e.g. --dataset 'npz[path="),
    ("npz file missing", ["--dataset", "npz[path={files}/missing.npz]"],
     "npz file {files}/missing.npz not found; give path= an existing .npz file"),
    ("npz is a text file", ["--dataset", "npz[path={files}/text.npz]"],
     "npz file {files}/text.npz: is not an .npz archive (not a zip file"),
    ("npz is a single array", ["--dataset", "npz[path={files}/array.npy]"],
     "is a single .npy array, not an .npz archive"),
    ("npz lacks arrays", ["--dataset", "npz[path={files}/labels-only.npz]"],
     "missing key(s) x_train, x_test, y_test (has y_train); expected a numpy .npz with x_train"),
    ("npz member damaged", ["--dataset", "npz[path={files}/damaged.npz]"],
     "npz file {files}/damaged.npz: is not a readable .npz archive (Error -3 while decompressing data"),
    ("npz member not an array", ["--dataset", "npz[path={files}/not-an-array.npz]"],
     "npz file {files}/not-an-array.npz: member x_train is not a .npy array"),
    ("npz member of Python objects", ["--dataset", "npz[path={files}/objects.npz]"],
     "npz file {files}/objects.npz: x_train holds Python objects (never loaded: unpickling them could run code)"),
    ("npz header claiming 10^12 elements", ["--dataset", "npz[path={files}/huge-header.npz]"],
     "npz file {files}/huge-header.npz: x_train claims shape (1000000, 1000, 1000) of uint8, 931.3 GiB, "
     "beyond the 8 GiB an array may take"),
    ("npz labels up to 10^9", ["--dataset", "npz[path={files}/label-1e9.npz]"],
     "npz file {files}/label-1e9.npz: y_train has label 1000000000, beyond the 100000 classes a dataset may have"),
    ("npz path is a FIFO", ["--dataset", "npz[path={files}/fifo.npz]"],
     "npz file {files}/fifo.npz: is not a regular file (a directory, FIFO or device)"),
    ("npz path is a folder", ["--dataset", "npz[path={files}/folder.npz]"],
     "npz file {files}/folder.npz: is not a regular file (a directory, FIFO or device)"),
    ("model outputs another number of classes", ["--models", "three-logits"],
     "model 'three-logits' outputs shape (3,) but dataset 'moons' has 2 classes"),
    ("image model on feature vectors", ["--models", "cnn"],
     "model 'cnn' takes images of shape (C, H, W) with H, W >= 20, but the dataset's inputs have shape (2,); "
     "that is dataset 'moons': model 'cnn' is meant for --dataset mnist"),
    ("out is a regular file", ["--out", "{files}/regular-file"],
     "output folder '{files}/regular-file' is not writable: File exists"),
    ("out in a read-only folder", ["--out", "{files}/read-only/leaderboards"],
     "output folder '{files}/read-only/leaderboards' is not writable: Permission denied"),
    ("epochs negative", ["--epochs", "-1"], "--epochs must be positive, got -1"),
    ("epochs zero", ["--epochs", "0"], "--epochs must be positive, got 0"),
    ("batch size negative", ["--batch-size", "-8"], "--batch-size must be positive, got -8"),
    ("batch size zero", ["--batch-size", "0"], "--batch-size must be positive, got 0"),
    ("train eps above 1", ["--train-eps", "1.5"], "--train-eps must lie in [0, 1], got 1.5"),
    ("unknown lr schedule", ["--lr-schedule", "linear"], "'linear' is not one of 'none', 'cosine', 'step'"),
    ("eot zero", ["--eot", "0"], "eot must be a positive number of gradient samples, got 0"),
    ("eot negative", ["--eot", "-3"], "eot must be a positive number of gradient samples, got -3"),
    ("eot not a number", ["--eot", "many"], "Invalid value for '--eot': 'many' is not a valid integer"),
    ("target index out of range", ["--target", "2"], "unknown target class '2'; valid: 0 (upper), 1 (lower)"),
    ("target index negative", ["--target", "-1"], "unknown target class '-1'; valid: 0 (upper), 1 (lower)"),
    ("target name unknown", ["--target", "middle"], "unknown target class 'middle'; valid: 0 (upper), 1 (lower)"),
    ("target with an untargeted attack", ["--attacks", "fgsm,deepfool", "--target", "1"],
     "--target needs attacks with a targeted mode; deepfool has none"),
    ("early stop zero", ["--early-stop", "0"], "--early-stop must be a positive number of epochs, got 0"),
    ("early stop negative", ["--early-stop", "-2"], "--early-stop must be a positive number of epochs, got -2"),
    ("early stop without validation points", ["--early-stop", "1", "--dataset", "moons[n_train=5]"],
     "--early-stop needs a validation split, but 10% of the 5 training points is none"),
    ("attack listed twice", ["--attacks", "fgsm,pgd,fgsm"], "attack listed twice: fgsm"),
    ("attack twice, once with its default options", ["--attacks", "pgd,pgd[steps=10]"], "attack listed twice: pgd"),
    ("defense listed twice", ["--defenses", "none,at-fgsm,none"], "defense listed twice: none"),
    ("shard out of range", ["--shard", "3/2"], "invalid shard '3/2': give i/n with 1 <= i <= n, e.g. 2/4"),
    ("shard not i/n", ["--shard", "half"], "invalid shard 'half'"),
    ("shard with no work", ["--shard", "2/2"], "--shard 2/2 gets no work: this run has only 1 trained model(s)"),
    ("unknown executor", ["--executor", "dask"], "Invalid value for '--executor': 'dask' is not one of 'local', 'ray'"),
    ("unknown optimizer", ["--optimizer", "rmsprop"], "unknown optimizer 'rmsprop'; valid choices: adam, adamw, sgd"),
    ("store that is not a database", ["--db", "{files}/not-a-store.db"],
     "results store '{files}/not-a-store.db' is not a usable SQLite database"),
    ("store below a regular file", ["--db", "{files}/regular-file/results.db"],
     "results store '{files}/regular-file/results.db' cannot be created: '{files}/regular-file' is a regular file, "
     "not a folder"),
    ("cache below a regular file", ["--cache-dir", "{files}/regular-file/cache"],
     "cache folder '{files}/regular-file/cache' is not writable: '{files}/regular-file' is a regular file, not a folder"),
    ("cache is a regular file", ["--cache-dir", "{files}/regular-file"],
     "cache folder '{files}/regular-file' is not writable: '{files}/regular-file' is a regular file, not a folder"),
    ("cache in a read-only folder", ["--cache-dir", "{files}/read-only/cache"],
     "cache folder '{files}/read-only/cache' is not writable: Permission denied"),
    ("eval batch size zero", ["--eval-batch-size", "0"], "--eval-batch-size must be a positive number of points, got 0"),
    ("unknown precision", ["--precision", "fp16"], "Invalid value for '--precision': 'fp16' is not one of 'fp32', 'bf16'"),
]


AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
ROOT_WRITES = pytest.mark.skipif(AS_ROOT, reason="root writes into read-only folders")
MARKS = {"out in a read-only folder": ROOT_WRITES, "cache in a read-only folder": ROOT_WRITES}


@pytest.mark.parametrize("extra, expected", [
    pytest.param(extra, expected, id=case_id, marks=MARKS.get(case_id, ())) for case_id, extra, expected in BAD_INPUTS
])
def test_bad_input_is_one_error_line_and_exit_2(tmp_path, files, capsys, extra, expected):
    def fill(text):
        return text.format(tmp=tmp_path, files=files)

    status, _, err = run_fast(tmp_path, capsys, *map(fill, extra))
    assert status == 2
    (line,) = err
    assert line.startswith("rbl: error: ")
    assert fill(expected) in line
    assert not (tmp_path / "cache").exists()  # nothing trained
    assert not [path for path in tmp_path.rglob("*") if path.suffix in (".csv", ".md", ".json")]  # no leaderboard
    assert not (tmp_path / "nowhere").exists()  # a failed download leaves no empty data folders behind
    assert not [path for path in tmp_path.rglob("*.db") if "not-a-store" not in path.name]  # no empty store


IMAGES_ONLY_ATTACK = '''
from robustbench_lite import Attack, hookimpl

class ImagesOnly(Attack):
    name = "images-only"
    description = "an attack that takes images only"

    def unsupported(self, input_shape, num_classes):
        return None if len(input_shape) == 3 else "it convolves its inputs: images (C, H, W) only"

    def perturb(self, model, x, y, eps):
        raise AssertionError("never called: the run is refused before any work")

@hookimpl
def register_attacks(register):
    register(ImagesOnly)
'''


def test_an_attack_that_cannot_take_the_inputs_is_refused_before_any_work(tmp_path, capsys, install_plugin):
    install_plugin("rbl-images-only", "rbl_images_only", IMAGES_ONLY_ATTACK)
    status, _, err = run_fast(tmp_path, capsys, "--attacks", "fgsm,images-only")
    assert status == 2
    assert err == ["rbl: error: attack 'images-only' cannot run on dataset 'moons' (inputs of shape (2,), 2 classes): "
                   "it convolves its inputs: images (C, H, W) only; choose other attacks"]
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("args, expected", [
    (["--db", "{tmp}/missing.db"], "Invalid value for '--db': File '{tmp}/missing.db' does not exist"),
    (["--db", "{files}/not-a-store.db"], "results store '{files}/not-a-store.db' is not a usable SQLite database"),
    (["--db", "{files}/not-a-store.db", "--format", "xml"], "Invalid value for '--format': 'xml' is not one of"),
])
def test_bad_leaderboard_input_is_one_error_line_and_exit_2(tmp_path, files, capsys, args, expected):
    status = main(["leaderboard", *(arg.format(tmp=tmp_path, files=files) for arg in args)])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and err[0].startswith("rbl: error: ")
    assert expected.format(tmp=tmp_path, files=files) in err[0]


def sidecar(tmp_path):
    return json.loads((tmp_path / "out" / "moons.json").read_text())


def test_n_examples_beyond_the_test_set_warns_and_runs_on_all(tmp_path, capsys):
    status, out, err = run_fast(tmp_path, capsys, "--dataset", "moons[n_train=64,n_test=20]", "--n-examples", "50")
    assert status == 0
    assert err == ["rbl: warning: --n-examples 50 exceeds the 20 test points; using all 20"]
    assert sidecar(tmp_path)["dataset"]["n_examples"] == 20
    assert "R&G worst-case" in out


def truncate(checkpoint, other):
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])


def overwrite_with_bytes(checkpoint, other):
    checkpoint.write_bytes(b"\x00not a checkpoint" * 64)


def copy_other_defenses(checkpoint, other):
    checkpoint.write_bytes(other.read_bytes())


def put_other_weights(checkpoint, other):
    """The right key with weights of a network with one more layer, as after a plugin changed its architecture.

    Most tensors fit: loading them before noticing the extra one would retrain from the other weights.
    """
    saved = torch.load(checkpoint, weights_only=True)
    saved["state_dict"] = {**torch.load(other, weights_only=True)["state_dict"], "net.8.weight": torch.zeros(2, 2)}
    torch.save(saved, checkpoint)


@pytest.mark.parametrize("damage, warning", [
    (truncate, "it is corrupt or truncated (RuntimeError: PytorchStreamReader failed reading zip archive"),
    (overwrite_with_bytes, "it is corrupt or truncated (UnpicklingError: Weights only load failed); retraining"),
    (copy_other_defenses, "it was saved for other settings (ValueError: code, defense, defense_options differ); retraining"),
    (put_other_weights, "it holds weights that do not fit this model (ValueError: tensors missing, extra or of "
                        "another shape: net.8.weight); retraining"),
], ids=["truncated", "not a checkpoint", "another defense's", "another architecture's weights"])
def test_unusable_checkpoint_warns_in_one_line_and_is_retrained(tmp_path, capsys, damage, warning):
    args = ["--defenses", "none,at-fgsm"]
    assert run_fast(tmp_path, capsys, *args)[0] == 0
    trained = sidecar(tmp_path)["training"]["mlp/at-fgsm"]
    checkpoint = next((tmp_path / "cache").glob("mlp-moons-at-fgsm-*.pt"))
    damage(checkpoint, next((tmp_path / "cache").glob("mlp-moons-none-*.pt")))

    status, out, err = run_fast(tmp_path, capsys, *args)
    assert status == 0 and "R&G worst-case" in out
    (line,) = err
    assert line.startswith(f"rbl: warning: ignoring checkpoint {checkpoint}: ") and warning in line
    retrained = sidecar(tmp_path)["training"]["mlp/at-fgsm"]
    assert retrained["from_cache"] is False
    assert retrained["epoch_losses"] == trained["epoch_losses"]  # from the seeded initialisation, not the bad weights
    assert run_fast(tmp_path, capsys, *args)[2] == []  # the retrained weights replaced the bad file


def test_nan_logits_fail_the_cells_with_exit_1(tmp_path, capsys):
    status, out, err = run_fast(tmp_path, capsys, "--models", "nan-logits")
    assert status == 1
    assert err[-1].endswith("cell(s) failed or are incomplete; see the leaderboard")
    cells = sidecar(tmp_path)["cells"]
    assert cells and {cell["status"] for cell in cells} == {"failed"}
    assert {cell["error"] for cell in cells} == {
        "clean evaluation failed: NonFiniteOutputError: the model produced NaN or infinite logits"
    }


def test_the_eps_grid_prints_what_it_computes_and_rg_is_the_sum_of_the_printed_row(tmp_path, capsys):
    status, _, err = run_fast(tmp_path, capsys, "--attacks", "fgsm,pgd", "--eps", "-0,0.1,0.0313725,0.10")
    assert status == 0, err
    assert sidecar(tmp_path)["eps"] == [0.0, 0.0313725, 0.1]
    assert math.copysign(1.0, sidecar(tmp_path)["eps"][0]) == 1.0  # -0 became 0
    table = pd.read_csv(tmp_path / "out" / "moons.csv")
    columns = [column for column in table.columns if column.startswith("eps=")]
    assert columns == ["eps=0", "eps=0.0313725", "eps=0.1"]
    assert len(table) == 3  # fgsm, pgd, worst-case
    # 8 test points: every accuracy is a multiple of 12.5 %, so the printed (2-decimal) row sums exactly.
    assert (table[columns].sum(axis=1) == table["R&G"]).all()


@pytest.mark.parametrize("given, grid", [
    ("0,0.1,0.2,0.3,0.4,0.5", [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]),
    ("0.001", [0.0, 0.001]),
    ("0.0313725,0.1,0.1", [0.0, 0.0313725, 0.1]),  # an exact repeat is the same column, not an error
    ([8 / 255, 16 / 255], [0.0, 8 / 255, 16 / 255]),
    ("-0,1e-6,1", [0.0, 1e-6, 1.0]),
])
def test_valid_eps_grids_keep_their_floats(given, grid):
    parsed = parse_eps(given, ())
    assert parsed == grid and all(math.copysign(1.0, eps) == 1.0 for eps in parsed)


def test_every_dataset_default_grid_is_valid():
    for info in default_registry().infos("datasets").values():
        default = info.cls.default_eps
        assert parse_eps(None, default) == sorted(set(default) | {0.0})
