"""The rbl command line: listing, running, and one clear line with exit 2 for every bad input."""

import subprocess
import sys

import pytest
import torch

from robustbench_lite.cli import main

TINY = ["--dataset", "synthetic[n_train=256,n_test=64]", "--models", "cnn", "--defenses", "none",
        "--attacks", "fgsm", "--eps", "0,0.1", "--epochs", "1", "--quiet", "--device", "cpu"]


def run_cli(capsys, *args):
    status = main(list(args))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_list_verbose_shows_name_provider_description_and_options(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    status, out, _ = run_cli(capsys, "list", "--verbose")
    assert status == 0
    for expected in ("attacks", "defenses", "models", "datasets", "fgsm", "pgd", "at-pgd", "wrn-28-10",
                     "robustbench-lite 0.1.0", "Projected gradient descent", "steps=10", "alpha=0.5", "moons"):
        assert expected in out
    status, out, _ = run_cli(capsys, "list", "attacks")
    assert status == 0 and "pgd" in out and "moons" not in out and "steps=10" not in out


def test_run_writes_the_leaderboard_and_prints_the_ranking(tmp_path, capsys):
    status, out, _ = run_cli(capsys, "run", *TINY, "--out", str(tmp_path / "lb"), "--cache-dir", str(tmp_path / "c"),
                             "--name", "tiny")
    assert status == 0
    assert "R&G worst-case" in out
    assert sorted(path.name for path in (tmp_path / "lb").iterdir()) == [
        "results.db", "tiny-accuracy.png", "tiny.csv", "tiny.json", "tiny.md"]


def test_failed_cells_give_exit_status_1_after_the_whole_matrix(tmp_path, capsys, install_plugin):
    install_plugin("rbl-faulty", "rbl_faulty_cli", '''
from robustbench_lite import Attack, hookimpl

class Exploding(Attack):
    name = "exploding"
    description = "raises"
    def perturb(self, model, x, y, eps):
        raise RuntimeError("boom")

@hookimpl
def register_attacks(register):
    register(Exploding)
''')
    args = [arg if arg != "fgsm" else "exploding,fgsm" for arg in TINY]
    status, out, err = run_cli(capsys, "run", *args, "--out", str(tmp_path), "--cache-dir", str(tmp_path / "c"))
    assert status == 1
    assert "failed" in out and "boom" in err
    assert (tmp_path / "synthetic.md").exists()


BAD_INPUTS = [
    (["--models", "mlpp"], "unknown model 'mlpp' (did you mean 'mlp'?); valid choices:"),
    (["--attacks", "fgsm,pgdd"], "unknown attack 'pgdd' (did you mean 'pgd'?)"),
    (["--defenses", "madry"], "unknown defense 'madry'"),
    (["--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    (["--attacks", "pgd[steps=zero]"], "option 'steps' of attack 'pgd' must be of type int, got 'zero'"),
    (["--attacks", "pgd[stepz=3]"], "unknown option 'stepz' for attack 'pgd'; valid options: steps"),
    (["--eps", "0,-0.1"], "invalid epsilon '-0.1': must lie in [0, 1]"),
    (["--eps", "0,abc"], "invalid epsilon 'abc': not a number"),
    (["--eps", "nan"], "invalid epsilon 'nan'"),
    (["--eps", "1.5"], "invalid epsilon '1.5'"),
    (["--eps", ","], "empty epsilon list"),
    (["--n-examples", "0"], "--n-examples must be a positive number of test points, got 0"),
    (["--n-examples", "many"], "'many' is not a valid integer"),
    (["--models", "cnn,cnn"], "model listed twice: cnn"),
    (["--models", "mlp"], "model 'mlp' takes flat feature vectors"),
    (["--dataset", "synthetic[shape=3x32x32]", "--models", "mlp"], "(3, 32, 32)"),
    (["--device", "tpu"], "'tpu' is not one of 'auto', 'cpu', 'cuda'"),
    (["--bogus"], "No such option '--bogus'"),
]


@pytest.mark.parametrize("extra, message", BAD_INPUTS, ids=[" ".join(extra) for extra, _ in BAD_INPUTS])
def test_bad_input_is_one_clear_line_and_exit_2(tmp_path, capsys, extra, message):
    status, out, err = run_cli(capsys, "run", *TINY, "--out", str(tmp_path), *extra)
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("rbl: error: ")
    assert message in err
    assert list(tmp_path.iterdir()) == []  # nothing trained, nothing written


def test_missing_dataset_says_where_to_put_which_files(tmp_path, capsys):
    status, _, err = run_cli(capsys, "run", "--dataset", "mnist[download=false]", "--data-dir", str(tmp_path),
                             "--models", "cnn", "--quiet")
    assert status == 2 and err.count("\n") == 1
    assert "train-images-idx3-ubyte" in err and str(tmp_path / "MNIST" / "raw") in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_refused(tmp_path, capsys):
    status, _, err = run_cli(capsys, "run", *TINY, "--device", "cuda", "--out", str(tmp_path))
    assert status == 2 and "CUDA is not available" in err


def test_unwritable_output_folder_is_refused(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    status, _, err = run_cli(capsys, "run", *TINY, "--out", str(blocker / "lb"))
    assert status == 2 and "is not writable" in err and err.count("\n") == 1


def test_real_process_prints_no_traceback():
    process = subprocess.run(
        [sys.executable, "-m", "robustbench_lite", "run", "--attacks", "fgsm,pgdd", "--quiet"],
        capture_output=True, text=True, timeout=120,
    )
    assert process.returncode == 2
    assert "Traceback" not in process.stderr
    (line,) = process.stderr.strip().splitlines()
    assert line.startswith("rbl: error: unknown attack 'pgdd' (did you mean 'pgd'?); valid choices: ")


def test_run_and_plot_declare_the_trained_model_options_once():
    """The options that pick the trained model (and its cached weights) are one declaration, shared."""
    from robustbench_lite.cli import cli

    def training_options(command):
        return {param.name: (param.opts, param.default, getattr(param, "help", None)) for param in command.params
                if param.name in {"epochs", "batch_size", "train_eps", "lr_schedule", "early_stop", "optimizer", "seed",
                                  "device", "cache_dir"}}

    run = training_options(cli.get_command(None, "run"))
    plot = cli.get_command(None, "plot")
    assert len(run) == 9
    for name in ("examples", "confusion"):
        assert training_options(plot.get_command(None, name)) == run
